"""Audio processor: decode (soundfile, torchcodec), mono, resample (torchaudio), per-utterance
normalisation, padding with lengths. Bad input gets a clear error naming the file and the field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig
from zoo.plugin import Window, check_window_seconds, decoder_message, example_name, numeric_array, window_spans


@dataclass
class AudioProcessorConfig(ProcessorConfig):
    sample_rate: int = 16000
    normalize: bool = True
    max_seconds: float | None = None      # what the model takes at once: training crops a longer clip to it at a
                                          # random place; prediction and evaluation see it whole, window by window
    min_samples: int = 400                # shorter clips are an error (the conv encoder's receptive field)
    max_channels: int = 2                 # more channels than this is an error rather than a silent downmix
    resample: bool = True                 # False: a clip at another rate is an error
    window_seconds: float | None = None   # zoo embed's windows: None → max_seconds, else WAV2VEC2_CROP_SECONDS
    hop_seconds: float | None = None      # between window starts: None → half a window (50% overlap)

    def validate(self) -> None:
        super().validate()
        self.check(self.sample_rate > 0, "sample_rate", "must be > 0")
        self.check(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be > 0")
        self.check(self.window_seconds is None or self.window_seconds > 0, "window_seconds", "must be > 0")
        self.check(self.hop_seconds is None or self.hop_seconds > 0, "hop_seconds", "must be > 0")
        self.check(self.min_samples >= 1, "min_samples", "must be >= 1")
        self.check(self.max_channels >= 1, "max_channels", "must be >= 1")


#: files that may hold a soundtrack beside a video: decoded through FFmpeg like audio files
CONTAINER_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")


def _decode_file(path: str) -> tuple[np.ndarray, int]:
    """Samples ``[channels, S]`` float32 and the rate: soundfile first, torchcodec (FFmpeg) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise BadExample(path, "path", "no such file")
    if p.stat().st_size == 0:
        raise BadExample(path, "path", "empty file")
    try:
        import soundfile as sf
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        return data.T, int(sr)
    except Exception as sf_err:  # formats libsndfile does not read: try FFmpeg through torchcodec
        try:
            from torchcodec.decoders import AudioDecoder
            samples = AudioDecoder(str(p)).get_all_samples()
            return samples.data.numpy().astype(np.float32), int(samples.sample_rate)
        except Exception as tc_err:
            from .data import AUDIO_SUFFIXES
            if p.suffix.lower() in CONTAINER_SUFFIXES:
                raise BadExample(path, "path", f"cannot decode audio: no audio track could be decoded from this "
                                               f"{p.suffix} file (a video without sound, or a damaged file?): "
                                               f"{decoder_message(tc_err, str(p))}") from None
            if p.suffix.lower() not in AUDIO_SUFFIXES:
                raise BadExample(path, "path", f"cannot decode audio: a {p.suffix or 'suffix-less'} file is not an "
                                               f"audio format ({', '.join(AUDIO_SUFFIXES)}): data of another kind?"
                                 ) from None
            raise BadExample(path, "path", f"cannot decode audio (soundfile: {decoder_message(sf_err, str(p))}; "
                                           f"FFmpeg through torchcodec: {decoder_message(tc_err, str(p))})") from None


#: wav2vec 2.0 pretrains on crops of 250k samples at 16 kHz (Baevski et al. 2020, §4.2): the window of a model
#: that sets no ``max_seconds``
WAV2VEC2_CROP_SECONDS = 250_000 / 16_000

MIN_RATE, MAX_RATE = 1_000, 1_000_000     # Hz: outside, a declared rate is taken as corrupt, not resampled


def _rate(sr: Any, name: str) -> int:
    """The sampling rate as an int within [MIN_RATE, MAX_RATE] Hz, else BadExample naming the field: a header
    claiming 1 Hz would otherwise make a 320 KB file a 44-hour clip at 16 kHz (10 GB)."""
    try:
        rate = int(sr)
        if rate != sr:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise BadExample(name, "sampling_rate", f"expected an integer rate in Hz, got {sr!r}") from None
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadExample(name, "sampling_rate", f"{rate} Hz is outside [{MIN_RATE}, {MAX_RATE}] Hz")
    return rate


class AudioProcessor(Processor):
    """Accepts a file path, ``(array, sample_rate)``, a ``datasets`` Audio value (``{"array",
    "sampling_rate"}``, ``{"path"}``/``{"bytes"}`` or a torchcodec decoder) or a bare array at the model
    rate. Returns ``{"input_values": [S]}``; :meth:`collate` pads to ``[B, S]`` with ``padding_mask``."""

    config_class = AudioProcessorConfig

    def _samples(self, example: Any, name: str) -> tuple[np.ndarray, int]:
        if isinstance(example, (str, Path)):
            return _decode_file(str(example))
        if hasattr(example, "get_all_samples"):               # datasets >= 4 decoded Audio value
            s = example.get_all_samples()
            return s.data.numpy(), int(s.sample_rate)
        if isinstance(example, dict):
            if example.get("array") is not None:
                if "sampling_rate" not in example:
                    raise BadExample(name, "sampling_rate", "an audio dict with 'array' needs 'sampling_rate'")
                return example["array"], example["sampling_rate"]
            if example.get("bytes"):
                import io

                import soundfile as sf
                try:
                    data, sr = sf.read(io.BytesIO(example["bytes"]), dtype="float32", always_2d=True)
                except Exception as err:
                    raise BadExample(example.get("path") or name, "bytes", f"cannot decode audio: {err}") from None
                return data.T, int(sr)
            if example.get("path"):
                return _decode_file(example["path"])
            raise BadExample(name, "audio", f"unrecognised audio dict with keys {sorted(example)}")
        if isinstance(example, tuple) and len(example) == 2:
            return example[0], example[1]
        if isinstance(example, (np.ndarray, torch.Tensor, list)):
            return example.numpy() if isinstance(example, torch.Tensor) else example, self.config.sample_rate
        raise BadExample(name, "audio", f"unsupported input type {type(example).__name__}")

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        """The clip's first ``max_seconds`` (one window's view; prediction and evaluation see it whole through
        :meth:`windows`, training through :meth:`cropped`)."""
        name = example_name(example, name)
        data, sr = self._samples(example, name)
        return self._prepared(data, sr, name, self.config.max_seconds)

    def whole(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        """The whole clip, processed as ``__call__`` processes it but never cut (e.g. for hand-made features)."""
        name = example_name(example, name)
        data, sr = self._samples(example, name)
        return self._prepared(data, sr, name, None)

    def crops(self) -> bool:
        return self.config.max_seconds is not None

    def cropped(self, example: Any, *, name: str | None = None, generator: torch.Generator) -> dict[str, Tensor]:
        """Training's view of a clip longer than ``max_seconds``: ``max_seconds`` from a start drawn uniformly from
        ``generator`` over the starts that keep the crop inside the clip (drawn anew each epoch, so training sees
        the whole clip, not only its start; docs/architecture.md, "Long inputs"); a shorter clip whole. A WAV, FLAC
        or OGG file is read from the crop's start only."""
        name = example_name(example, name)
        if self.config.max_seconds is None:
            return self(example, name=name)
        read, frames, sr = self._reader(example, name)
        rate = _rate(sr, name)
        size = int(np.ceil(self.config.max_seconds * rate))
        start = int(torch.randint(0, frames - size + 1, (1,), generator=generator)) if frames > size else 0
        return self._prepared(read(start, min(start + size, frames)), rate, name, self.config.max_seconds)

    def pools_windows(self) -> bool:
        return True

    def long_inputs(self) -> str | None:
        win, hop = self.window_hop()
        seen = (f"prediction and evaluation (zoo predict, Classifier.predict, the fine-tuning report, zoo evaluate's "
                f"probes and MFCC baseline) see every clip whole: windows of {win:g} s every {hop:g} s "
                "(processor.window_seconds, hop_seconds), their pooled embeddings averaged weighted by length, as "
                "zoo embed does")
        if self.config.max_seconds is None:
            return f"training takes every clip whole (processor.max_seconds is not set); {seen}"
        return (f"training takes a random {self.config.max_seconds:g} s crop of a longer clip, drawn anew each epoch "
                f"(processor.max_seconds); {seen}; processor(example) alone keeps a clip's first "
                f"{self.config.max_seconds:g} s")

    def _prepared(self, data: Any, sr: Any, name: str, max_seconds: float | None) -> dict[str, Tensor]:
        """Samples at rate ``sr`` → mono at the model rate, cut to ``max_seconds``, checked, normalised."""
        sr = _rate(sr, name)
        x = numeric_array(data, name, "audio")
        if x.numel() == 0:                     # before the channel logic: a header-only file is [1, 0]
            raise BadExample(name, "audio", "zero-length clip")
        if x.dim() == 2:
            if x.shape[0] > x.shape[1]:                        # [S, C] → [C, S]
                x = x.T
            if x.shape[0] > self.config.max_channels:
                raise BadExample(name, "channels", f"{x.shape[0]} channels; at most {self.config.max_channels} "
                                                   "are accepted (mixed down to mono)")
            x = x.mean(dim=0)
        elif x.dim() != 1:
            raise BadExample(name, "audio", f"expected 1-D or [channels, samples] audio, got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise BadExample(name, "audio", "zero-length clip")
        if not bool(torch.isfinite(x).all()):
            raise BadExample(name, "audio", f"{int((~torch.isfinite(x)).sum())} NaN/inf samples")
        if sr != self.config.sample_rate:
            if not self.config.resample:
                raise BadExample(name, "sampling_rate", f"{sr} Hz, the model expects {self.config.sample_rate} Hz "
                                                        "(resample is off)")
            if max_seconds is not None:     # cut before resampling: the work follows the kept part
                x = x[: int(np.ceil(max_seconds * sr)) + 1]
            import torchaudio.functional as AF
            x = AF.resample(x, sr, self.config.sample_rate)
        if max_seconds is not None:
            x = x[: int(max_seconds * self.config.sample_rate)]
        if x.numel() < self.config.min_samples:
            raise BadExample(name, "audio", f"{x.numel()} samples at {self.config.sample_rate} Hz; at least "
                                            f"{self.config.min_samples} are needed")
        if self.config.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        return {"input_values": x}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        lengths = torch.tensor([it["input_values"].numel() for it in items])
        values = torch.nn.utils.rnn.pad_sequence([it["input_values"] for it in items], batch_first=True)
        pad = torch.arange(values.shape[1])[None, :] >= lengths[:, None]
        return {"input_values": values, "padding_mask": pad, "lengths": lengths}

    # --- long inputs -------------------------------------------------------------------------
    windowed = True

    def window_hop(self, window: float | None = None, hop: float | None = None) -> tuple[float, float]:
        """Window and hop in seconds: the overrides, else ``window_seconds``/``hop_seconds``, else the length the
        model was made for (``max_seconds``; without one, wav2vec 2.0's 250k-sample pretraining crop) and half
        of it (50% overlap: every sample is seen twice, away from a window's edge once)."""
        c = self.config
        check_window_seconds(window, hop)
        win = window if window is not None else c.window_seconds or c.max_seconds or WAV2VEC2_CROP_SECONDS
        step = hop if hop is not None else c.hop_seconds if c.hop_seconds is not None and window is None else win / 2
        if not (win > 0 and 0 < step <= win):
            raise ValueError(f"audio windows need window > 0 and 0 < hop <= window (seconds); got window {win:g}, "
                             f"hop {step:g}")
        return float(win), float(step)

    def _reader(self, example: Any, name: str) -> tuple[Any, int, int]:
        """``(read(start, stop) → samples [C, stop - start], frames, rate)``: a WAV/FLAC/OGG file is read lazily
        (soundfile seeks to each window); other inputs are decoded once and sliced."""
        path = example.get("path") if isinstance(example, dict) and not example.get("bytes") \
            and example.get("array") is None else example
        if isinstance(path, (str, Path)) and Path(path).is_file() and Path(path).stat().st_size:
            import soundfile as sf
            try:
                fh = sf.SoundFile(str(path))
            except Exception:         # noqa: BLE001 - not a libsndfile format: decoded whole below (FFmpeg)
                fh = None
            if fh is not None:
                rate = int(fh.samplerate)

                def read_file(start: int, stop: int) -> np.ndarray:
                    try:
                        fh.seek(start)
                        return fh.read(stop - start, dtype="float32", always_2d=True).T
                    except Exception as err:  # noqa: BLE001 - a file damaged in its middle: name the file and where
                        said = (str(err).strip().splitlines() or [type(err).__name__])[0].removeprefix("Error : ")
                        raise BadExample(name, "audio", f"the file does not decode in the window "
                                                        f"{start / max(rate, 1):.3f}-{stop / max(rate, 1):.3f} s "
                                                        f"(samples {start}-{stop}: {said}): a damaged file?") \
                            from None
                return read_file, int(fh.frames), int(fh.samplerate)
        data, sr = self._samples(example, name)
        x = numeric_array(data, name, "audio")
        if x.dim() == 2 and x.shape[0] > x.shape[1]:          # [S, C] → [C, S], as __call__ decides
            x = x.T
        return (lambda start, stop: x[..., start:stop]), int(x.shape[-1]), sr

    def windows(self, example: Any, *, name: str | None = None, window: float | None = None,
                hop: float | None = None) -> Iterator[Window]:
        """Windows of ``window`` seconds every ``hop`` seconds (:meth:`window_hop`), the last one shorter, each
        processed as a clip of its own (mono, resampled, normalised: ``self((samples, rate))``); spans in seconds.
        A file is read one window at a time: memory holds a window, not the recording."""
        name = example_name(example, name)
        win, step = self.window_hop(window, hop)
        read, frames, sr = self._reader(example, name)
        rate = _rate(sr, name)
        if frames == 0:
            raise BadExample(name, "audio", "zero-length clip")
        spans = window_spans(frames, max(1, round(win * rate)), max(1, min(round(step * rate), round(win * rate))))
        for start, stop in spans:
            where = name if len(spans) == 1 else f"{name}[{start / rate:.3f}-{stop / rate:.3f}s]"
            yield Window(start / rate, stop / rate, "s", self._prepared(read(start, stop), rate, where, None), where)

    def read(self, path: str) -> Any:
        return path

    def length(self, example: Any) -> int | None:
        """Samples at the model rate after the ``max_seconds`` cut, from the file header (no decoding)."""
        if isinstance(example, dict) and example.get("path") and not example.get("bytes"):
            example = example["path"]
        if isinstance(example, (str, Path)):
            try:
                import soundfile as sf
                info = sf.info(str(example))
                frames, sr = info.frames, info.samplerate
            except Exception:
                return None
        elif isinstance(example, tuple) and len(example) == 2:
            frames, sr = np.shape(example[0])[-1], int(example[1])
        elif isinstance(example, dict) and example.get("array") is not None:
            frames, sr = np.shape(example["array"])[-1], int(example.get("sampling_rate", self.config.sample_rate))
        else:
            return None
        n = int(frames * self.config.sample_rate / sr)
        if self.config.max_seconds is not None:
            n = min(n, int(self.config.max_seconds * self.config.sample_rate))
        return n
