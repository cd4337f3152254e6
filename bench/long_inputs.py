"""Any length at inference (issue #27): ``zoo embed`` of a 1-minute and a 1-hour generated WAV and of a 1-minute
and a 10-minute generated mp4, each in a fresh process, with ``--pooling mean`` and ``--pooling none``: wall time
and peak RSS (``VmHWM``), and the result against the windows embedded one by one (a few windows decoded on their
own, through the processor's array path, and the mean row against the length-weighted mean of the window rows).

``python -m bench.long_inputs`` (writes ``bench/results/long-inputs/results.json`` and prints the table). The models
are the demo's (``demo/run/*-demo/model``, ``make demo``) when present, else the ``*-demo`` recipes' encoders with a
seeded random initialisation: what is measured is the windowing, not the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .harness import machine, results_dir

ROOT = Path(__file__).resolve().parents[1]
RATE, FPS, SIDE = 16000, 8, 64
CHILD = """
import json, sys, time
t = time.time()
from pipelines.cli import main
code = main(sys.argv[1:])
wall = time.time() - t
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("BENCH " + json.dumps({"code": code, "wall_s": wall, "peak_rss_mib": hwm / 1024}))
"""


def model(recipe: str, root: Path) -> Path:
    """The demo's trained model, else the recipe's encoder with a seeded random initialisation, saved."""
    trained = ROOT / "demo" / "run" / recipe / "model"
    if (trained / "config.json").is_file():
        return trained
    from pipelines.recipe import load_recipe
    from zoo import get_modality
    r = load_recipe(recipe)
    modality = get_modality(r.modality)
    arch = modality.architecture(r.architecture)
    torch.manual_seed(0)
    encoder = arch.encoder(arch.config.from_dict(r.encoder, where="encoder"))
    processor = modality.processor(modality.processor.config_class.from_dict(r.processor, where="processor"))
    return encoder.save_pretrained(root / recipe, processor=processor)


def write_audio(path: Path, seconds: int) -> Path:
    """Tones that change every second over noise, 16 kHz mono PCM-16, written a minute at a time."""
    import soundfile as sf
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16") as fh:
        for lo in range(0, seconds, 60):
            n = min(60, seconds - lo)
            pitch = np.repeat(rng.uniform(150, 1500, n), RATE)
            t = np.arange(n * RATE) / RATE
            fh.write((0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(n * RATE)).astype(np.float32))
    return path


def write_video(path: Path, seconds: int) -> Path:
    """A bright square bouncing over a noisy background, ``SIDE``² pixels at ``FPS`` frames a second (H.264)."""
    from modalities.video.data import write_mp4
    rng = np.random.default_rng(0)
    frames = FPS * seconds
    t = np.arange(frames)
    room = SIDE - 16                                        # the square's top-left corner bounces in [0, room]
    yx = np.stack([np.abs((t * 3) % (2 * room) - room), np.abs((t * 5) % (2 * room) - room)], 1)
    video = rng.integers(0, 60, (frames, SIDE, SIDE, 3), dtype=np.uint8)
    rows, cols = np.arange(SIDE), np.arange(SIDE)
    inside = ((rows[None, :, None] >= yx[:, 0, None, None]) & (rows[None, :, None] < yx[:, 0, None, None] + 16)
              & (cols[None, None, :] >= yx[:, 1, None, None]) & (cols[None, None, :] < yx[:, 1, None, None] + 16))
    video[inside] = (230, 200, 40)
    return write_mp4(video, path, fps=FPS)


def zoo_embed(model_dir: Path, path: Path, out: Path, pooling: str) -> dict:
    """``zoo embed`` in a fresh interpreter: its own wall time and peak RSS."""
    started = time.time()
    res = subprocess.run([sys.executable, "-c", CHILD, "embed", str(model_dir), str(path), "--pooling", pooling,
                          "--output", str(out)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    line = next((x for x in res.stdout.splitlines() if x.startswith("BENCH ")), None)
    if res.returncode or line is None:
        raise RuntimeError(f"zoo embed {path} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return {**json.loads(line[6:]), "process_s": time.time() - started}


def check(model_dir: Path, path: Path, mean_out: Path, none_out: Path) -> dict:
    """Max |difference| of a few window rows against those windows decoded alone and embedded one by one, and of
    the mean row against the length-weighted mean of all window rows."""
    from safetensors import safe_open

    from zoo import AutoEncoder, AutoProcessor
    enc, proc = AutoEncoder.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    with safe_open(str(none_out), "pt") as fh:
        rows, names = fh.get_tensor("embeddings"), json.loads(fh.metadata()["names"])
    with safe_open(str(mean_out), "pt") as fh:
        mean = fh.get_tensor("embeddings")
    spans = [tuple(float(v) for v in n.rsplit("[", 1)[1].rstrip("s]").split("-")) for n in names]
    weights = torch.tensor([b - a for a, b in spans], dtype=torch.float64)[:, None]
    expected = ((rows.double() * weights).sum(0) / weights.sum()).float()
    picks = sorted({0, 1, len(names) // 2, len(names) - 1})
    worst = 0.0
    for k in picks:
        a, b = spans[k]
        if proc.modality == "audio":
            import soundfile as sf
            data, sr = sf.read(str(path), start=round(a * RATE), stop=round(b * RATE), dtype="float32")
            item = proc((data, sr))              # max_seconds is the window: nothing is cut
        else:
            from torchcodec.decoders import VideoDecoder
            frames = VideoDecoder(str(path)).get_frames_in_range(round(a * FPS), round(b * FPS)).data
            item = proc(frames.permute(0, 2, 3, 1).numpy())
        with torch.no_grad():
            alone = enc(proc.collate([item])).pooled[0]
        worst = max(worst, float((alone - rows[k]).abs().max()))
    return {"windows": len(names), "checked_windows": picks, "max_abs_diff_windows": worst,
            "max_abs_diff_mean": float((mean[0] - expected).abs().max())}


def main() -> str:
    out = results_dir("long-inputs")
    results = []
    with tempfile.TemporaryDirectory(prefix="zoo-long-") as tmp:
        tmp = Path(tmp)
        cases = [("audio-wav2vec2-demo", "audio 1 min", lambda p: write_audio(p, 60), "wav"),
                 ("audio-wav2vec2-demo", "audio 1 h", lambda p: write_audio(p, 3600), "wav"),
                 ("video-videomae-demo", "video 1 min", lambda p: write_video(p, 60), "mp4"),
                 ("video-videomae-demo", "video 10 min", lambda p: write_video(p, 600), "mp4")]
        for recipe, label, make, suffix in cases:
            model_dir = model(recipe, tmp)
            path = make(tmp / f"{label.replace(' ', '-')}.{suffix}")
            row = {"input": label, "model": str(model_dir.relative_to(ROOT) if ROOT in model_dir.parents
                                                     else recipe + " (random init)"),
                   "file_mib": path.stat().st_size / 2**20}
            for pooling in ("mean", "none"):
                row[pooling] = zoo_embed(model_dir, path, tmp / f"{pooling}.safetensors", pooling)
            row["check"] = check(model_dir, path, tmp / "mean.safetensors", tmp / "none.safetensors")
            print(json.dumps(row), flush=True)
            results.append(row)
            path.unlink()
    (out / "results.json").write_text(json.dumps({"machine": machine(), "rows": results}, indent=2) + "\n")
    lines = [f"Machine: {machine()}", "",
             "| input | file | windows | mean: wall s | mean: peak RSS MiB | none: wall s | none: peak RSS MiB | "
             "max abs diff (windows alone / mean) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        c = r["check"]
        lines.append(f"| {r['input']} | {r['file_mib']:.1f} MiB | {c['windows']} | {r['mean']['wall_s']:.1f} | "
                     f"{r['mean']['peak_rss_mib']:.0f} | {r['none']['wall_s']:.1f} | {r['none']['peak_rss_mib']:.0f} "
                     f"| {c['max_abs_diff_windows']:.1e} / {c['max_abs_diff_mean']:.1e} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
