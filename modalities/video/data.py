"""Video data: the embedded moving-digits set (scikit-learn's bundled 8×8 digits, enlarged and coloured, moving in
one of four directions, written as real H.264 mp4 files with FFmpeg through torchcodec and read back through the
same decoder a user's files go through), folders of video files and Hugging Face ``datasets``."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from zoo import ExampleSet
from zoo.data import folder_source
from zoo.paths import cache_dir, fresh_folder
from zoo.plugin import source_loader

DIRECTIONS = ["right", "left", "down", "up"]
_STEP = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
LABELS = ("direction", "digit", "digit-direction")


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def render_clip(image: np.ndarray, direction: str, rng: np.random.RandomState, *, frames: int = 32,
                size: int = 64, scale: int = 3) -> np.ndarray:
    """One clip ``[frames, size, size, 3]`` uint8: the digit (enlarged ``scale``×, a random bright colour) crosses a
    dark, slightly noisy background of a random tint at 0.8-1.2 pixels per frame in ``direction``."""
    glyph = np.kron(image, np.ones((scale, scale), dtype=np.float32))           # [8s, 8s] in [0, 1]
    g = glyph.shape[0]
    colour = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    colour[rng.randint(3)] = 1.0
    background = rng.uniform(0.0, 0.25, 3).astype(np.float32)
    speed = rng.uniform(0.8, 1.2)
    dy, dx = _STEP[direction]
    travel = speed * (frames - 1)
    free = size - g
    # start so that the whole path stays on the canvas along the motion, anywhere across it
    along = rng.uniform(0, max(free - travel, 0))
    across = rng.uniform(0, free)
    y0 = (along if dy > 0 else free - along) if dy else across
    x0 = (along if dx > 0 else free - along) if dx else across
    out = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        canvas = np.broadcast_to(background, (size, size, 3)).copy()
        y = int(round(np.clip(y0 + dy * speed * t, 0, free)))
        x = int(round(np.clip(x0 + dx * speed * t, 0, free)))
        region = canvas[y:y + g, x:x + g]
        alpha = glyph[..., None]
        canvas[y:y + g, x:x + g] = region * (1 - alpha) + colour * alpha
        out[t] = canvas
    out += rng.normal(0, 0.02, out.shape).astype(np.float32)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 16) -> Path:
    """``[T, H, W, 3]`` uint8 → an H.264 mp4 file (torchcodec's FFmpeg encoder), the same bytes every time. x264
    holds frames back (lookahead, B-frames) and read some after their buffer had been reused: with its defaults
    about one encode in four differed from run to run (a frame off by up to 9 levels; 3 in 50 with one thread
    and a synchronous lookahead). ``tune=zerolatency`` on one thread holds no frame back: 50 of 50 equal."""
    import torch
    from torchcodec.encoders import VideoEncoder
    data = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
    VideoEncoder(data, frame_rate=fps).to_file(str(path), codec="libx264", crf=18, preset="veryfast",
                                               extra_options={"threads": "1", "tune": "zerolatency"})
    return Path(path)


def make_moving_digits(root: str | Path, *, train: int = 800, test: int = 200, frames: int = 32, size: int = 64,
                       seed: int = 0, workers: int = 2) -> Path:
    """Write ``root/<split>/<direction>/<index>_digit<d>.mp4`` and ``metadata.csv`` (file_name, digit, direction,
    split). Train clips use the first 1400 of scikit-learn's 1797 digit images, test clips the other 397 (held-out
    handwriting). The same seed gives the same clips."""
    root = Path(root)
    if (root / "metadata.csv").is_file():
        return root
    images, targets = _digit_images()
    with fresh_folder(root) as tmp:
        _write_clips(tmp, images, targets, train, test, frames, size, seed, workers)
    return root


def _write_clips(tmp: Path, images: np.ndarray, targets: np.ndarray, train: int, test: int, frames: int, size: int,
                 seed: int, workers: int) -> None:
    jobs = []
    for s, (split, count, pool) in enumerate((("train", train, np.arange(0, 1400)),
                                              ("test", test, np.arange(1400, len(images))))):
        for i in range(count):
            rng = np.random.RandomState([seed, s, i])          # one stream per clip: order-free, parallel
            k = int(pool[rng.randint(len(pool))])
            direction = DIRECTIONS[i % len(DIRECTIONS)]
            rel = f"{split}/{direction}/{i:05d}_digit{targets[k]}.mp4"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            jobs.append((rel, k, direction, split, rng))

    def run(job: tuple) -> None:
        rel, k, direction, _, rng = job
        write_mp4(render_clip(images[k], direction, rng, frames=frames, size=size), tmp / rel)

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(run, jobs))
    rows = [(rel, int(targets[k]), direction, split) for rel, k, direction, split, _ in jobs]
    with open(tmp / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "digit", "direction", "split"])
        w.writerows(rows)


def _moving_digits(spec: dict[str, Any]) -> ExampleSet:
    """The embedded set; ``split`` train/test/all, ``label_column`` direction (needs motion), digit (needs appearance)
    or digit-direction (40 classes); ``clips``/``frames``/``size``/``seed`` pick a generated variant."""
    gen = {k: int(spec[k]) for k in ("frames", "size", "seed") if k in spec}
    train, test = int(spec.get("clips", 1000)) * 4 // 5, int(spec.get("clips", 1000)) // 5
    variant = "moving-digits" if not gen and "clips" not in spec else \
        "moving-digits-" + "-".join(f"{k}{v}" for k, v in sorted({**gen, "clips": train + test}.items()))
    root = make_moving_digits(spec.get("root") or cache_dir() / variant, train=train, test=test, **gen)
    label = spec.get("label_column", "direction")
    if label not in LABELS:
        raise ValueError(f"moving-digits label_column {label!r}: use one of {LABELS}")
    split = spec.get("split", "train")
    rows = [r for r in csv.DictReader(open(root / "metadata.csv")) if split == "all" or r["split"] == split]
    if "limit" in spec:
        rows = rows[: int(spec["limit"])]
    if label == "direction":
        labels, names = [DIRECTIONS.index(r["direction"]) for r in rows], DIRECTIONS
    elif label == "digit":
        labels, names = [int(r["digit"]) for r in rows], [str(i) for i in range(10)]
    else:
        labels = [int(r["digit"]) * 4 + DIRECTIONS.index(r["direction"]) for r in rows]
        names = [f"{d}-{m}" for d in range(10) for m in DIRECTIONS]
    return ExampleSet([str(root / r["file_name"]) for r in rows], labels, [r["file_name"] for r in rows], names)


def _prepare(ds: Any, spec: dict[str, Any]) -> Any:
    """Keep the encoded video (path/bytes): the processor seeks and decodes only the frames it needs, in a worker."""
    from datasets import Video
    return ds.cast_column(spec.get("input_column") or "video", Video(decode=False))


def _folder(spec: dict[str, Any]) -> ExampleSet:
    """``path``: a folder of video files, in one subfolder per class (``split`` picks ``path/<split>``)."""
    from .processor import VIDEO_SUFFIXES
    return folder_source(spec, VIDEO_SUFFIXES, "video")


SOURCES = {"moving-digits": _moving_digits, "folder": _folder}

load_data = source_loader("video", SOURCES, "moving-digits", hf_input="video", hf_prepare=_prepare)


if __name__ == "__main__":  # python -m modalities.video.data OUT_DIR: write the moving-digits set
    import sys
    out = make_moving_digits(sys.argv[1] if len(sys.argv) > 1 else cache_dir() / "moving-digits")
    print(f"{sum(1 for _ in out.rglob('*.mp4'))} clips in {out}")
