"""Generated audio-visual pairs (issue #34, binding two modalities in one embedding space, docs/architecture.md
"Several modalities in one example: binding"): each example is one mp4 whose video track shows a handwritten digit
(scikit-learn's bundled 8×8 digits, enlarged, coloured, moving) and whose audio track speaks the same digit
(espeak-ng), muxed with the FFmpeg command-line tool. A paired source reads each file once per side: the video
modality's processor decodes the frames, the audio modality's processor the soundtrack.

What the two tracks of one clip share, so that retrieval of the exact partner (not only of the class) is possible:

- the **class**: the digit shown is the digit spoken;
- the **onset**: the digit fades in on screen (over ``fade_s``, from ``onset_s``) when the word starts
  (``audio_onset_s``). The two times differ by a jitter drawn uniformly within ±``jitter_s`` (default 80 ms), and
  the onset itself is uniform over most of the clip, as in audio-visual synchronisation learning (Owens & Efros
  2018, "Audio-Visual Scene Analysis with Self-Supervised Multisensory Features": the shared event is *when*).

Nothing else is shared. What varies independently per track, so that the pairing is not trivial: the voice (accent
and variant), speaking rate and pitch, loudness, background noise at a random SNR and spectral tilt (audio); the
handwriting, colour, background tint, path of motion and pixel noise (video). The test split holds out voices
(accents *and* variants never heard in training) and handwriting (images from the last part of scikit-learn's
digits, as the video modality's moving-digits set does), so retrieval on it measures generalisation to new speakers
and writers. :func:`onset_baseline` measures how far the onset alone goes.

Layout (``make_av_digits``)::

    root/clips/<split>/<id>.mp4    H.264 video (``frames`` at ``fps``, ``size``×``size`` RGB) + AAC mono audio
    root/pairs.csv                 one row per clip: the columns of ``COLUMNS``
    root/metadata.json             the generation parameters; another request regenerates the folder

The soundtrack is AAC, which codes whole frames of 1024 samples: it runs to the end of the frame that covers the
video (32768 samples, 2.048 s, for 2 s of video at 16 kHz), so the decoded length is exactly the length written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.paths import fresh_folder

__all__ = ["make_av_digits", "read_pairs", "onset_baseline", "COLUMNS", "WORDS", "TRAIN_VOICES", "TEST_VOICES"]

FORMAT = 1
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng's own English voices (no MBROLA data) × its voice variants; test voices share neither with train
TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TEST_ACCENTS = ("en-029", "en-gb-scotland")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3")
TEST_VARIANTS = ("m6", "m7", "f4", "f5")
TRAIN_VOICES = tuple(f"{a}+{v}" for a in TRAIN_ACCENTS for v in TRAIN_VARIANTS)
TEST_VOICES = tuple(f"{a}+{v}" for a in TEST_ACCENTS for v in TEST_VARIANTS)
TRAIN_IMAGES = 1400          # scikit-learn digits [0, 1400) draw train clips, [1400, 1797) test clips
AAC_FRAME = 1024
ESPEAK_RATE = 22050
SPEEDS = (130, 200)          # words per minute, uniform
PITCHES = (20, 80)           # espeak-ng pitch 0-99, uniform
ONSET_MIN_S = 0.2            # earliest onset; the word ends at least END_MARGIN_S before the video does
END_MARGIN_S = 0.1
MUX_BATCH = 10             # clips per FFmpeg process

COLUMNS = ("file", "digit", "split", "voice", "speed", "pitch", "image", "onset_s", "audio_onset_s", "jitter_s",
           "word_s", "snr_db", "frames", "fps", "sample_rate", "samples")


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed: the audio-visual digits set needs it "
                           f"(Debian package {name}: apt-get install {name})")
    return exe


@dataclass(frozen=True)
class _Params:
    clips: int
    seed: int
    size: int
    frames: int
    fps: int
    sample_rate: int
    test_fraction: float
    jitter_s: float
    fade_s: float
    snr_db: tuple[float, float]

    def check(self) -> None:
        if self.clips < 2:
            raise ValueError(f"clips={self.clips}: at least 2 (one train and one test clip)")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction}: must lie in (0, 1)")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size={self.size}: an even number of pixels >= 16 (H.264 4:2:0 needs even sides)")
        if self.frames < 2 or self.fps < 1:
            raise ValueError(f"frames={self.frames}, fps={self.fps}: at least 2 frames and 1 frame per second")
        if not 0 <= self.jitter_s <= 0.2 or not 0 < self.fade_s <= 0.5:
            raise ValueError(f"jitter_s={self.jitter_s} must lie in [0, 0.2], fade_s={self.fade_s} in (0, 0.5]")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db={self.snr_db}: (low, high)")
        if self.duration < 1.5:
            raise ValueError(f"{self.frames} frames at {self.fps} fps last {self.duration:.2f} s: a clip needs at "
                             "least 1.5 s to hold a spoken word at a random onset")

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    @property
    def last_frame_s(self) -> float:
        return (self.frames - 1) / self.fps

    @property
    def samples(self) -> int:
        return math.ceil(self.duration * self.sample_rate / AAC_FRAME) * AAC_FRAME

    @property
    def test_clips(self) -> int:
        return min(self.clips - 1, max(1, round(self.clips * self.test_fraction)))

    def metadata(self) -> dict[str, Any]:
        return {"kind": "av-digits", "format": FORMAT, **asdict(self), "snr_db": list(self.snr_db)}


@dataclass
class _Clip:
    """What one clip draws before synthesis (all from its own random stream: order-free, parallel)."""
    id: int
    split: str
    digit: int
    image: int
    voice: str
    speed: int
    pitch: int
    onset_u: float        # where in the allowed range the onset falls; the range needs the word's length
    jitter_s: float
    snr_db: float
    gain: float
    tilt: float           # one-pole low-pass coefficient of the noise: 0 white, towards 1 dark
    seed: tuple[int, ...]

    @property
    def file(self) -> str:
        return f"clips/{self.split}/{self.id:05d}.mp4"


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def _plan(p: _Params, targets: np.ndarray) -> list[_Clip]:
    n_test = p.test_clips
    clips = []
    for i in range(p.clips):
        split, k = ("train", i) if i < p.clips - n_test else ("test", i - (p.clips - n_test))
        lo, hi = (0, TRAIN_IMAGES) if split == "train" else (TRAIN_IMAGES, len(targets))
        voices = TRAIN_VOICES if split == "train" else TEST_VOICES
        rng = np.random.RandomState([p.seed, i])
        digit = k % 10                                           # balanced classes within each split
        pool = np.nonzero(targets[lo:hi] == digit)[0] + lo
        clips.append(_Clip(
            id=i, split=split, digit=digit, image=int(pool[rng.randint(len(pool))]),
            voice=voices[rng.randint(len(voices))], speed=int(rng.randint(SPEEDS[0], SPEEDS[1] + 1)),
            pitch=int(rng.randint(PITCHES[0], PITCHES[1] + 1)), onset_u=float(rng.uniform()),
            jitter_s=float(rng.uniform(-p.jitter_s, p.jitter_s)), snr_db=float(rng.uniform(*p.snr_db)),
            gain=float(rng.uniform(0.3, 0.8)), tilt=float(rng.uniform(0.0, 0.95)), seed=(p.seed, i, 1)))
    return clips


def _speak(exe: str, clip: _Clip) -> np.ndarray:
    """The word as float32 at espeak-ng's 22.05 kHz, cut to its first and last sample above 1% of its peak (the
    word's onset is then its first sample)."""
    out = subprocess.run([exe, "-v", clip.voice, "-s", str(clip.speed), "-p", str(clip.pitch), "--stdout",
                          WORDS[clip.digit]], check=True, capture_output=True, timeout=60).stdout
    with wave.open(io.BytesIO(out)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng gave {w.getnchannels()} channels of {8 * w.getsampwidth()} bits at "
                               f"{w.getframerate()} Hz; expected 16-bit mono at {ESPEAK_RATE} Hz")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    loud = np.nonzero(np.abs(x) > 0.01 * np.abs(x).max())[0]
    if len(loud) == 0:
        raise RuntimeError(f"espeak-ng voice {clip.voice} gave silence for {WORDS[clip.digit]!r}")
    return x[loud[0]:loud[-1] + 1]


def _soundtrack(word: np.ndarray, clip: _Clip, p: _Params, rng: np.random.RandomState) -> tuple[np.ndarray, float,
                                                                                                 float]:
    """``[samples]`` float32: background noise at ``clip.snr_db`` below the word's power, the word from the audio
    onset. Returns the track, the (video) onset and the word's length in seconds. The onset is uniform between
    ``ONSET_MIN_S`` and the latest time at which the word still ends ``END_MARGIN_S`` before the video and the last
    frame shows the digit whole: a long word (a slow voice saying "seven") has a slightly narrower range."""
    from scipy.signal import lfilter, resample_poly
    g = math.gcd(p.sample_rate, ESPEAK_RATE)
    word = resample_poly(word, p.sample_rate // g, ESPEAK_RATE // g).astype(np.float32)
    word *= clip.gain / max(float(np.abs(word).max()), 1e-6)
    word_s = len(word) / p.sample_rate
    latest = min(p.duration - END_MARGIN_S - word_s - max(clip.jitter_s, 0.0), p.last_frame_s - p.fade_s)
    onset = ONSET_MIN_S + max(-clip.jitter_s, 0.0)
    onset += clip.onset_u * max(latest - onset, 0.0)
    start = int(round((onset + clip.jitter_s) * p.sample_rate))
    noise = lfilter([1.0 - clip.tilt], [1.0, -clip.tilt], rng.standard_normal(p.samples)).astype(np.float32)
    power = float(np.mean(word ** 2))
    noise *= math.sqrt(power / 10 ** (clip.snr_db / 10) / max(float(np.mean(noise ** 2)), 1e-12))
    track = noise
    end = min(start + len(word), p.samples)
    track[start:end] += word[: end - start]
    return np.clip(track, -1.0, 1.0), onset, word_s


def _frames(image: np.ndarray, onset: float, p: _Params, rng: np.random.RandomState) -> np.ndarray:
    """``[frames, size, size, 3]`` uint8: a background of a random tint with pixel noise; the digit (enlarged,
    a random bright colour) moves in a straight line between two random points and fades in linearly from
    ``onset`` over ``fade_s`` (the frame at ``t`` seconds shows it at opacity ``clip((t − onset) / fade_s, 0, 1)``,
    so the onset is legible between frames)."""
    scale = max(1, int(p.size * 3 / 64 + 0.5))
    glyph = np.kron(image, np.ones((scale, scale), dtype=np.float32))[..., None]
    free = p.size - glyph.shape[0]
    colour = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    colour[rng.randint(3)] = 1.0
    background = rng.uniform(0.0, 0.3, 3).astype(np.float32)
    a, b = rng.uniform(0, free, 2), rng.uniform(0, free, 2)
    sigma = rng.uniform(0.01, 0.05)
    out = np.empty((p.frames, p.size, p.size, 3), dtype=np.float32)
    out[:] = background
    for t in range(p.frames):
        alpha = min(max((t / p.fps - onset) / p.fade_s, 0.0), 1.0)
        y, x = np.round(a + (b - a) * t / (p.frames - 1)).astype(int)
        region = out[t, y:y + glyph.shape[0], x:x + glyph.shape[1]]
        region += alpha * glyph * (colour - region)
    out += rng.normal(0.0, sigma, out.shape).astype(np.float32)
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def _mux(ffmpeg: str, tracks: list[tuple[np.ndarray, np.ndarray, Path]], p: _Params, work: Path) -> None:
    """Several mp4 files from one FFmpeg process (its start-up, ~60 ms, costs more than encoding a clip): for each,
    the frames (raw RGB) → H.264 and the samples (raw float) → AAC mono, each output with encoders of its own, one
    thread each, and FFmpeg's bit-exact flags: the same bytes every run, whatever the grouping."""
    inputs: list[str] = []
    outputs: list[str] = []
    raws = []
    for k, (frames, audio, out) in enumerate(tracks):
        video_raw, audio_raw = work / f"{out.stem}.rgb", work / f"{out.stem}.f32"
        np.ascontiguousarray(frames).tofile(video_raw)
        audio.astype("<f4").tofile(audio_raw)
        raws += [video_raw, audio_raw]
        inputs += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{p.size}x{p.size}", "-framerate", str(p.fps),
                   "-i", str(video_raw), "-f", "f32le", "-ar", str(p.sample_rate), "-ac", "1", "-i", str(audio_raw)]
        outputs += ["-map", f"{2 * k}:v", "-map", f"{2 * k + 1}:a", "-threads", "1",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-tune", "zerolatency",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-fflags", "+bitexact",
                    "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1", str(out)]
    try:
        r = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs, *outputs],
                           capture_output=True, timeout=300)
    finally:
        for raw in raws:
            raw.unlink(missing_ok=True)
    if r.returncode != 0:
        names = ", ".join(out.name for _, _, out in tracks)
        raise RuntimeError(f"ffmpeg failed writing {names} (exit {r.returncode}): "
                           f"{r.stderr.decode(errors='replace')[-400:]}")


def _make_clips(batch: list[_Clip], p: _Params, images: np.ndarray, espeak: str, ffmpeg: str, tmp: Path,
                work: Path) -> list[dict[str, Any]]:
    rows, tracks = [], []
    for clip in batch:
        rng = np.random.RandomState(list(clip.seed))
        audio, onset, word_s = _soundtrack(_speak(espeak, clip), clip, p, rng)
        tracks.append((_frames(images[clip.image], onset, p, rng), audio, tmp / clip.file))
        rows.append({"file": clip.file, "digit": clip.digit, "split": clip.split, "voice": clip.voice,
                     "speed": clip.speed, "pitch": clip.pitch, "image": clip.image, "onset_s": f"{onset:.4f}",
                     "audio_onset_s": f"{onset + clip.jitter_s:.4f}", "jitter_s": f"{clip.jitter_s:.4f}",
                     "word_s": f"{word_s:.4f}", "snr_db": f"{clip.snr_db:.2f}", "frames": p.frames, "fps": p.fps,
                     "sample_rate": p.sample_rate, "samples": p.samples})
    _mux(ffmpeg, tracks, p, work)
    return rows


def _existing(root: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((root / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == "av-digits" else None


def make_av_digits(root: str | Path, *, clips: int = 600, seed: int = 0, size: int = 64, frames: int = 16,
                   fps: int = 8, sample_rate: int = 16_000, test_fraction: float = 0.2, jitter_s: float = 0.08,
                   fade_s: float = 0.25, snr_db: tuple[float, float] = (5.0, 20.0),
                   workers: int | None = None) -> Path:
    """Write the audio-visual digits set to ``root`` (see the module's docstring) and return ``root``.

    ``clips`` in all, the last ``round(clips · test_fraction)`` of them the test split (held-out voices and
    handwriting); the digits are balanced within each split. Each clip lasts ``frames / fps`` seconds (default 16
    frames at 8 fps: 2 s) of ``size``×``size`` video, with a soundtrack at ``sample_rate``. ``jitter_s`` bounds the
    offset between the word's onset and the digit's, ``fade_s`` is the fade-in, ``snr_db`` the range of the word's
    signal-to-noise ratio. The same parameters give the same files, byte for byte (``workers`` threads only change
    the speed).

    An existing ``root`` written with the same parameters is returned as it is; one written with others is
    regenerated (a folder that is not such a set is refused). The set is built in ``<root>.partial`` and moved into
    place when complete, so an interrupted run leaves no half set. Needs espeak-ng and ffmpeg (RuntimeError naming
    the Debian package otherwise) only when it generates.
    """
    p = _Params(clips=int(clips), seed=int(seed), size=int(size), frames=int(frames), fps=int(fps),
                sample_rate=int(sample_rate), test_fraction=float(test_fraction), jitter_s=float(jitter_s),
                fade_s=float(fade_s), snr_db=(float(snr_db[0]), float(snr_db[1])))
    p.check()
    root = Path(root)
    meta = _existing(root)
    if meta == p.metadata() and (root / "pairs.csv").is_file():
        return root
    if meta is None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an audio-visual digits set (no metadata.json of one): "
                              "refusing to replace it")
    espeak, ffmpeg = _tool("espeak-ng"), _tool("ffmpeg")
    images, targets = _digit_images()
    plan = _plan(p, targets)
    with fresh_folder(root) as tmp:
        work = tmp / ".work"
        for d in {tmp / "clips" / c.split for c in plan} | {work}:
            d.mkdir(parents=True, exist_ok=True)
        batches = [plan[i:i + MUX_BATCH] for i in range(0, len(plan), MUX_BATCH)]
        with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 2)) as ex:
            rows = [row for rows in ex.map(lambda b: _make_clips(b, p, images, espeak, ffmpeg, tmp, work), batches)
                    for row in rows]
        work.rmdir()
        with open(tmp / "pairs.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        (tmp / "metadata.json").write_text(json.dumps(p.metadata(), indent=1) + "\n")
        shutil.rmtree(root, ignore_errors=True)      # an outdated set of ours (checked above), or an empty folder
    return root


def read_pairs(root: str | Path, split: str = "all") -> list[dict[str, str]]:
    """The rows of ``root/pairs.csv`` (``split``: train, test or all), ``file`` made absolute."""
    root = Path(root)
    with open(root / "pairs.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if split == "all" or r["split"] == split]
    for r in rows:
        r["file"] = str(root / r["file"])
    return rows


def audio_onset(samples: np.ndarray, sample_rate: int, hop_s: float = 0.005) -> float:
    """The time (s) the short-time energy (20 ms windows every ``hop_s``) first rises halfway, in dB, from the
    background's level (its 20th percentile) to the loudest window's."""
    win, hop = int(0.02 * sample_rate), int(hop_s * sample_rate)
    starts = np.arange(0, len(samples) - win + 1, hop)
    frames = samples[starts[:, None] + np.arange(win)]
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    floor, peak = np.percentile(db, 20), db.max()
    first = int(np.argmax(db > floor + 0.5 * (peak - floor)))
    return float((starts[first] + win / 2) / sample_rate)


def video_onset(frames: np.ndarray, fps: float, fade_s: float) -> float:
    """The time (s) the digit starts to fade in: each frame's departure from the first one (the background:
    the onset is never before ``ONSET_MIN_S``) relative to the last one's (the digit at full opacity) is the
    frame's opacity; frames caught mid-fade read the onset as ``t − opacity · fade_s``."""
    x = frames.astype(np.float32)
    background = np.median(x[0].reshape(-1, x.shape[-1]), axis=0)
    mass = np.abs(x - background).sum(axis=(1, 2, 3))
    mass -= mass[0]
    opacity = np.clip(mass / max(float(mass[-1]), 1e-6), 0.0, 1.0)
    t = np.arange(len(frames)) / fps
    mid = (opacity > 0.05) & (opacity < 0.95)
    if mid.any():
        return float(np.mean(t[mid] - opacity[mid] * fade_s))
    first = int(np.argmax(opacity >= 0.95))
    return float(max(t[first] - fade_s, 0.0))


def _onsets(rows: list[dict[str, str]], fade_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's onset estimated from its audio and from its video, decoding the mp4 as a user's file."""
    from torchcodec.decoders import AudioDecoder, VideoDecoder
    a, v = [], []
    for r in rows:
        s = AudioDecoder(r["file"]).get_all_samples()
        a.append(audio_onset(s.data.numpy().mean(axis=0), int(s.sample_rate)))
        v.append(video_onset(VideoDecoder(r["file"], dimension_order="NHWC")[:].numpy(), float(r["fps"]), fade_s))
    return np.array(a), np.array(v)


def onset_baseline(root: str | Path, split: str = "test") -> dict[str, float]:
    """How far the shared onset alone pairs the tracks: for every clip of ``split``, the onset estimated from its
    audio (:func:`audio_onset`, shifted by the median audio-minus-video difference of the train pairs, the one
    number this baseline learns) retrieves the clip whose video onset (:func:`video_onset`) is nearest. Returns R@1
    over all clips of the split, R@1 among the clips of the same digit (what a model that also recognises the digit
    could reach by timing alone), chance for each, and the estimates' mean absolute errors against the CSV."""
    fade_s = float(json.loads((Path(root) / "metadata.json").read_text())["fade_s"])
    a_train, v_train = _onsets(read_pairs(root, "train"), fade_s)
    shift = float(np.median(a_train - v_train))
    rows = read_pairs(root, split)
    a, v = _onsets(rows, fade_s)
    digits = np.array([int(r["digit"]) for r in rows])
    dist = np.abs((a - shift)[:, None] - v[None, :])
    n = len(rows)
    hit = dist.argmin(axis=1) == np.arange(n)
    same = np.where(digits[:, None] == digits[None, :], dist, np.inf)
    hit_same = same.argmin(axis=1) == np.arange(n)
    per_class = np.array([(digits == d).sum() for d in digits])
    return {"clips": n, "r1": float(hit.mean()), "chance": 1.0 / n, "r1_same_digit": float(hit_same.mean()),
            "chance_same_digit": float(np.mean(1.0 / per_class)), "audio_shift_s": shift,
            "audio_onset_mae_s": float(np.mean(np.abs(a - [float(r["audio_onset_s"]) for r in rows]))),
            "video_onset_mae_s": float(np.mean(np.abs(v - [float(r["onset_s"]) for r in rows])))}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time
    ap = argparse.ArgumentParser(prog="python -m pipelines.av_digits",
                                 description="Write the generated audio-visual digits set (issue #34).")
    ap.add_argument("out", type=Path)
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--baseline", action="store_true", help="then measure the onset baseline on the test split")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = make_av_digits(args.out, clips=args.clips, seed=args.seed, size=args.size, workers=args.workers)
    print(f"{len(read_pairs(out))} clips in {out} ({time.perf_counter() - t0:.1f} s)")
    if args.baseline:
        print(json.dumps(onset_baseline(out), indent=1))


if __name__ == "__main__":
    main()
