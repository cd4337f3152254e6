"""Video processor: decode only the frames a clip needs with torchcodec (FFmpeg), sample them as VideoMAE trains
(Tong et al. 2022: dense sampling with a temporal stride, segment sampling for short clips), resize the short side,
centre-crop, normalise per channel. Bad input gets :class:`BadExample` naming the file and the field.

Fewer frames than asked: ``short_clip`` decides (documented policy): ``repeat`` (default) spreads the clip's
frames evenly over the asked count, each frame held for a few steps (segment sampling); ``loop`` plays the clip
again from its start; ``pad`` holds the last frame (what the reference does: it starts at frame 0 and holds the last
frame it reaches); ``reject`` raises.

At inference the processor is deterministic (the centre clip, the centre crop). Training examples go through
:meth:`VideoProcessor.augmented`: the reference's random clip start (segment sampling: a random frame in each
segment), multi-scale crop and horizontal flip, drawn from a generator seeded by (seed, epoch, example), so a
killed run still resumes bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig
from zoo.plugin import Window, check_window_seconds, decoder_message, example_name, numeric_array, window_spans

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SAMPLING = ("auto", "dense", "segment")
SHORT_CLIP = ("repeat", "loop", "pad", "reject")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".gif")


@dataclass
class VideoProcessorConfig(ProcessorConfig):
    """``num_frames`` frames per clip. ``sampling``: ``dense`` takes every ``frame_stride``-th frame of the centre
    ``(num_frames − 1)·frame_stride + 1`` frames (Kinetics); ``segment`` takes the middle frame of each of
    ``num_frames`` equal segments (Something-Something); ``auto`` is dense when the clip is long enough, else
    segment. ``image_size``: side of the square centre crop after the short side is resized to ``resize``
    (default ``image_size``); ``None`` keeps the native size. ``mean``/``std`` per channel on ``[0, 1]`` pixels
    (ImageNet, as VideoMAE), refitted on the training clips when ``fit_statistics``."""

    num_frames: int = 16
    frame_stride: int = 4
    sampling: str = "auto"
    short_clip: str = "repeat"
    image_size: int | None = 224
    resize: int | None = None
    channels: int = 3
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    fit_statistics: bool = False
    seek_mode: str = "exact"
    fit_examples: int = 200
    max_decode_pixels: int = 1920 * 1080      # larger frames are decoded scaled down to this many pixels
    augment_jitter: bool = True       # training: a random clip start (dense) or frame per segment (segment)
    augment_scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])   # training: crop sides
    augment_flip: bool = True         # training: horizontal flip with probability 1/2
    window_frames: int | None = None  # zoo embed's windows, in frames: None → one clip's span (see clip_span)
    hop_frames: int | None = None     # between window starts: None → half a window (50% overlap)

    def validate(self) -> None:
        super().validate()
        self.check(self.num_frames >= 1, "num_frames", "must be >= 1")
        self.check(self.frame_stride >= 1, "frame_stride", "must be >= 1")
        self.check(self.sampling in SAMPLING, "sampling", f"must be one of {SAMPLING}")
        self.check(self.short_clip in SHORT_CLIP, "short_clip", f"must be one of {SHORT_CLIP}")
        self.check(self.image_size is None or self.image_size >= 1, "image_size", "must be >= 1 or null")
        self.check(self.resize is None or (self.image_size is not None and self.resize >= self.image_size),
                   "resize", "needs image_size and must be >= image_size")
        self.check(self.channels >= 1, "channels", "must be >= 1")
        self.check(self.max_decode_pixels >= 64 * 64, "max_decode_pixels", "must be >= 4096")
        self.check(len(self.mean) == self.channels and len(self.std) == self.channels, "mean",
                   f"mean and std need one value per channel ({self.channels})")
        self.check(all(s > 0 for s in self.std), "std", "must be > 0")
        self.check(all(math.isfinite(v) for v in [*self.mean, *self.std]), "mean", "mean and std must be finite")
        self.check(len(self.augment_scales) >= 1 and all(0 < v <= 1 for v in self.augment_scales), "augment_scales",
                   "needs at least one crop scale in (0, 1] ([1.0]: no multi-scale crop)")
        self.check(self.seek_mode in ("exact", "approximate"), "seek_mode", "must be 'exact' or 'approximate'")
        self.check(self.window_frames is None or self.window_frames >= 1, "window_frames", "must be >= 1")
        self.check(self.hop_frames is None or self.hop_frames >= 1, "hop_frames", "must be >= 1")

    @property
    def clip_span(self) -> int:
        """The frames one clip covers at inference when dense: ``(num_frames − 1)·frame_stride + 1``."""
        return (self.num_frames - 1) * self.frame_stride + 1


def frame_indices(total: int, config: VideoProcessorConfig, name: str,
                  generator: torch.Generator | None = None) -> np.ndarray:
    """The indices of the frames a clip of ``total`` frames contributes (see :class:`VideoProcessorConfig`); with a
    ``generator`` (training) the clip starts at a random frame (dense) or takes a random frame of each segment."""
    n, stride = config.num_frames, config.frame_stride
    if total < 1:
        raise BadExample(name, "frames", "the clip has zero frames")
    span = (n - 1) * stride + 1
    dense = config.sampling == "dense" or (config.sampling == "auto" and total >= span)
    need = span if dense else n
    if total < need and config.short_clip == "reject":
        raise BadExample(name, "frames", f"{total} frames; {need} are needed ({n} frames"
                                         + (f" at stride {stride})" if dense else ")") + " and short_clip is 'reject'")
    segments = np.floor((np.arange(n) + 0.5) * total / n).astype(np.int64)      # the middle of n equal segments
    jitter = generator is not None and config.augment_jitter
    if dense:
        room = total - span
        start = max(0, room // 2) if not jitter or room <= 0 else \
            int(torch.randint(0, room + 1, (1,), generator=generator))
        idx = start + np.arange(n) * stride
    elif total >= n and jitter:
        offsets = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
        idx = np.minimum(np.floor((np.arange(n) + offsets) * total / n).astype(np.int64), total - 1)
    else:
        idx = segments if total >= n else np.arange(n)
    if idx[-1] >= total:                                   # short: the clip's own policy
        if config.short_clip == "loop":
            idx = idx % total
        elif config.short_clip == "pad":
            idx = np.minimum(idx, total - 1)
        else:                                              # repeat: stretch the clip over the asked span
            idx = segments
    return idx.astype(np.int64)


class VideoProcessor(Processor):
    """Accepts a file path (anything FFmpeg reads), a ``datasets`` Video value (a torchcodec ``VideoDecoder``, or
    ``{"path"}``/``{"bytes"}`` when not decoded), or frames ``[T, H, W, C]`` (uint8, or float in ``[0, 1]``).
    Returns ``{"pixel_values": [T, C, H, W]}`` float32; :meth:`collate` stacks to ``[B, T, C, H, W]``."""

    config_class = VideoProcessorConfig

    # --- decoding ----------------------------------------------------------------------------
    def _decode(self, source: Any, name: str, generator: torch.Generator | None = None) -> Tensor:
        """Only the sampled frames of a file/bytes/decoder, ``[T, C, H, W]`` uint8."""
        decoder = self._open(source, name)
        return self._decoded(decoder, frame_indices(len(decoder), self.config, name, generator), name)

    def _open(self, source: Any, name: str) -> Any:
        """A decoder of a file/bytes (or the given decoder), its frames at most ``max_decode_pixels``."""
        from torchcodec.decoders import VideoDecoder
        if isinstance(source, VideoDecoder) or hasattr(source, "get_frames_at"):
            decoder = source
        else:
            if isinstance(source, (str, Path)):
                p = Path(source)
                if not p.is_file():
                    raise BadExample(name, "path", "no such file")
                if p.stat().st_size == 0:
                    raise BadExample(name, "path", "empty file")
                source = str(p)
            elif not source:
                raise BadExample(name, "bytes", "empty video bytes")
            try:
                decoder = VideoDecoder(source, seek_mode=self.config.seek_mode, dimension_order="NCHW")
            except Exception as err:
                if isinstance(source, str) and Path(source).suffix.lower() not in VIDEO_SUFFIXES:
                    raise BadExample(name, "path", f"cannot decode video: a {Path(source).suffix or 'suffix-less'} "
                                                   f"file is not a video format ({', '.join(VIDEO_SUFFIXES)}): "
                                                   "data of another kind?") from None
                raise BadExample(name, "path" if isinstance(source, str) else "bytes",
                                 f"cannot decode video: {decoder_message(err, str(source))}") from None
        return self._bounded(decoder, source, name)

    def _decoded(self, decoder: Any, idx: np.ndarray, name: str) -> Tensor:
        """Frames ``idx`` of an open decoder, ``[T, C, H, W]`` uint8 (each distinct frame decoded once)."""
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = decoder.get_frames_at(indices=unique.tolist()).data
        except Exception as err:
            raise BadExample(name, "frames", f"cannot decode frames {unique.tolist()}: "
                                             f"{str(err).splitlines()[-1][-200:]}") from None
        if frames.shape[1] != self.config.channels:
            raise BadExample(name, "channels", f"{frames.shape[1]} channels decoded; the model expects "
                                               f"{self.config.channels}")
        return frames[torch.as_tensor(inverse)]

    def _bounded(self, decoder: Any, source: Any, name: str) -> Any:
        """A decoder whose frames hold at most ``max_decode_pixels`` pixels: a larger frame (two 8192×8192 frames
        in a 16 KB mp4 would ask for gigabytes) is scaled down by FFmpeg while decoding, aspect ratio kept."""
        meta = getattr(decoder, "metadata", None)
        w, h = getattr(meta, "width", None), getattr(meta, "height", None)
        limit = self.config.max_decode_pixels
        if not w or not h or w * h <= limit or not isinstance(source, (str, bytes)):
            return decoder
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize
        scale = math.sqrt(limit / (w * h))
        size = (max(2, int(h * scale) // 2 * 2), max(2, int(w * scale) // 2 * 2))
        try:
            return VideoDecoder(source, seek_mode=self.config.seek_mode, dimension_order="NCHW",
                                transforms=[Resize(size)])
        except Exception as err:
            raise BadExample(name, "frames", f"{w}x{h} frames exceed max_decode_pixels={limit} and cannot be "
                                             f"decoded scaled down: {str(err).splitlines()[0][:200]}") from None

    def _array(self, x: Any, name: str, generator: torch.Generator | None = None) -> Tensor:
        """Frames ``[T, H, W, C]`` → the sampled frames ``[T', C, H, W]`` float in ``[0, 1]``."""
        try:
            raw = x if isinstance(x, Tensor) else np.asarray(x)
        except ValueError:         # ragged frames: numeric_array names the field
            raw = x
        if getattr(raw, "dtype", None) in (torch.uint8, np.uint8):
            t = torch.as_tensor(raw)
        else:                      # complex, text, ragged frames are refused, never cast
            t = numeric_array(raw, name, "frames")
        if t.dim() != 4:
            raise BadExample(name, "frames", f"expected frames [T, H, W, C], got shape {tuple(t.shape)}")
        if t.shape[-1] != self.config.channels:
            kind = {1: "grey (1 channel)", 4: "four-channel (RGBA?)"}.get(int(t.shape[-1]), f"{t.shape[-1]}-channel")
            hint = " Frames are [T, H, W, C], channels last." if t.shape[1] == self.config.channels else ""
            raise BadExample(name, "channels", f"{kind} frames of shape {tuple(t.shape)}; the model expects "
                                               f"{self.config.channels} channels (convert to RGB first).{hint}")
        if t.shape[0] == 0 or t.numel() == 0:
            raise BadExample(name, "frames", f"the clip has zero frames (shape {tuple(t.shape)})")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.is_floating_point():
            t = t.float()
            if not bool(torch.isfinite(t).all()):
                raise BadExample(name, "frames", f"{int((~torch.isfinite(t)).sum())} NaN/inf values")
            lo, hi = float(t.min()), float(t.max())
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise BadExample(name, "frames", f"float frames must lie in [0, 1], got [{lo:g}, {hi:g}] "
                                                 "(pass uint8, or divide by 255)")
        else:
            raise BadExample(name, "frames", f"unsupported dtype {t.dtype}: pass uint8 or float frames")
        idx = frame_indices(int(t.shape[0]), self.config, name, generator)
        return t[torch.as_tensor(idx)].permute(0, 3, 1, 2)

    def frames(self, example: Any, name: str, generator: torch.Generator | None = None) -> Tensor:
        """Sampled frames ``[T, C, H, W]`` float in ``[0, 1]``, before resizing (``generator``: training draws)."""
        g = generator
        if isinstance(example, dict):
            if example.get("bytes"):
                return self._decode(example["bytes"], example.get("path") or name, g).float() / 255.0
            if example.get("path"):
                return self._decode(example["path"], example["path"], g).float() / 255.0
            raise BadExample(name, "video", f"unrecognised video dict with keys {sorted(example)}")
        if isinstance(example, (str, Path)) or hasattr(example, "get_frames_at") or isinstance(example, bytes):
            return self._decode(example, name, g).float() / 255.0
        if isinstance(example, (np.ndarray, Tensor, list)):
            return self._array(example, name, g)
        raise BadExample(name, "video", f"unsupported input type {type(example).__name__}")

    def _resize_crop(self, x: Tensor) -> Tensor:
        size = self.config.image_size
        if size is None:
            return x
        short = self.config.resize or size
        h, w = x.shape[-2:]
        scale = short / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        return x[..., top:top + size, left:left + size]

    def _scale_crop(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """VideoMAE's multi-scale crop (from TSN's ``GroupMultiScaleCrop``): after the short side is resized, crop
        sides of ``augment_scales`` × the short side (height and width at most one scale apart), at a random
        place, resized to ``image_size``; the same crop for every frame of the clip."""
        size, scales = self.config.image_size, self.config.augment_scales
        short = self.config.resize or size
        h, w = x.shape[-2:]
        nh, nw = max(size, round(h * short / min(h, w))), max(size, round(w * short / min(h, w)))
        pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales)) if abs(i - j) <= 1]
        i, j = pairs[int(torch.randint(0, len(pairs), (1,), generator=generator))]
        ch, cw = max(1, int(min(nh, nw) * scales[i])), max(1, int(min(nh, nw) * scales[j]))
        top = int(torch.randint(0, nh - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, nw - cw + 1, (1,), generator=generator))
        # crop in the original frame's coordinates, then one resize to the model's size
        sy, sx = h / nh, w / nw
        y0, y1 = int(top * sy), max(int(top * sy) + 1, round((top + ch) * sy))
        x0, x1 = int(left * sx), max(int(left * sx) + 1, round((left + cw) * sx))
        return F.interpolate(x[..., y0:y1, x0:x1], size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True)

    def _normalised(self, x: Tensor) -> dict[str, Tensor]:
        mean = torch.tensor(self.config.mean)[None, :, None, None]
        std = torch.tensor(self.config.std)[None, :, None, None]
        return {"pixel_values": ((x - mean) / std).contiguous()}

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        name = example_name(example, name)
        return self._normalised(self._resize_crop(self.frames(example, name)))

    def objective_config(self) -> dict[str, Any]:
        """The normalisation a pretraining objective undoes to regress ``[0, 1]`` pixels (``norm_targets: false``)."""
        return {"pixel_mean": list(self.config.mean), "pixel_std": list(self.config.std)}

    def _multiscale(self) -> bool:
        """Whether training crops at more than the full short side (an image size to crop to is set)."""
        c = self.config
        return c.image_size is not None and (len(c.augment_scales) > 1 or c.augment_scales[0] != 1.0)

    def augments(self) -> bool:
        return self.config.augment_jitter or self.config.augment_flip or self._multiscale()

    def augmented(self, example: Any, *, name: str | None = None, generator: torch.Generator) -> dict[str, Tensor]:
        """The reference's training view (Tong et al. 2022, §4 and its released pretraining): a random clip start,
        a multi-scale crop, a horizontal flip with probability 1/2 (see :class:`VideoProcessorConfig`)."""
        name = example_name(example, name)
        c = self.config
        x = self.frames(example, name, generator)
        x = self._scale_crop(x, generator) if self._multiscale() else self._resize_crop(x)
        if c.augment_flip and float(torch.rand(1, generator=generator)) < 0.5:
            x = x.flip(-1)
        return self._normalised(x)

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        shapes = {tuple(it["pixel_values"].shape) for it in items}
        if len(shapes) > 1:
            raise ValueError(f"clips of different shapes {sorted(shapes)} cannot share a batch: set image_size")
        return {"pixel_values": torch.stack([it["pixel_values"] for it in items])}

    def fit(self, examples: Any) -> VideoProcessor:
        """With ``fit_statistics``: per-channel mean and std of the (resized) training clips' pixels."""
        if not self.config.fit_statistics:
            return self
        total = torch.zeros(self.config.channels, dtype=torch.float64)
        sq, count = torch.zeros_like(total), 0
        for i, ex in enumerate(examples):
            x = self._resize_crop(self.frames(ex, str(ex) if isinstance(ex, (str, Path)) else f"example {i}"))
            total += x.double().sum(dim=(0, 2, 3))
            sq += x.double().pow(2).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
        if count == 0:
            raise ValueError("fit_statistics needs at least one training clip")
        mean = total / count
        std = (sq / count - mean ** 2).clamp(min=1e-8).sqrt()
        self.config.mean, self.config.std = mean.tolist(), std.tolist()
        return self

    # --- long inputs -------------------------------------------------------------------------
    windowed = True

    def windows(self, example: Any, *, name: str | None = None, window: float | None = None,
                hop: float | None = None) -> Iterator[Window]:
        """Windows of ``window_frames`` frames (default: one clip's span, the frames the model sees at once)
        every ``hop_frames`` (default half a window, 50% overlap), the last one shorter; each is processed as a
        clip of its own (its frames sampled by :func:`frame_indices`, a short last one by ``short_clip``), so
        its item equals ``self(frames[start:end])``. This extends VideoMAE's multi-clip testing (Tong et al.
        2022, §4: clips spread over the video, their scores averaged) to clips that cover every frame. A file
        decodes only each window's sampled frames, one window at a time. ``window``/``hop`` override in seconds
        (at the file's average frame rate); spans are in seconds for files, in frames for frame arrays."""
        name = example_name(example, name)
        source: Any = example
        if isinstance(example, dict):
            source = example.get("bytes") or example.get("path")
            if not source:
                raise BadExample(name, "video", f"unrecognised video dict with keys {sorted(example)}")
            name = example.get("path") or name
        if isinstance(source, (str, Path, bytes)) or hasattr(source, "get_frames_at"):
            decoder = self._open(source, name)
            total, fps = len(decoder), getattr(decoder.metadata, "average_fps", None)
        elif isinstance(source, (np.ndarray, Tensor, list)):
            decoder, total, fps = None, len(source), None
        else:
            raise BadExample(name, "video", f"unsupported input type {type(example).__name__}")
        win, step = self._window_frames(window, hop, fps, name)
        spans = window_spans(total, win, step) if total else [(0, 0)]
        scale, unit = (1.0 / fps, "s") if fps else (1.0, "frames")
        for start, stop in spans:
            where = name if len(spans) == 1 else f"{name}[{start * scale:.3f}-{stop * scale:.3f}{unit}]"
            if decoder is None:
                frames = self._array(source[start:stop], where)
            else:
                idx = start + frame_indices(stop - start, self.config, where)
                frames = self._decoded(decoder, idx, where).float() / 255.0
            yield Window(start * scale, stop * scale, unit, self._normalised(self._resize_crop(frames)), where)

    def _window_frames(self, window: float | None, hop: float | None, fps: float | None,
                       name: str) -> tuple[int, int]:
        """Window and hop in frames (see :meth:`windows`)."""
        c = self.config
        check_window_seconds(window, hop)
        if (window is not None or hop is not None) and not fps:
            raise BadExample(name, "frames", "frames without a frame rate: window and hop in seconds cannot apply "
                                             "(set the processor's window_frames/hop_frames)")
        win = max(1, round(window * fps)) if window is not None else c.window_frames or c.clip_span
        if hop is not None:
            step = max(1, round(hop * fps))
        else:
            step = c.hop_frames if c.hop_frames is not None and window is None else max(1, win // 2)
        if step > win:
            raise ValueError(f"video windows need hop <= window; got window {win} and hop {step} frames")
        return win, step

    def read(self, path: str) -> Any:
        return path
