"""The data pipeline on ``audio-wav2vec2-tiny-fsdd`` (real FSDD recordings, decoded and resampled 8 → 16 kHz):

1. loader throughput (examples/s, nothing trained) with 0, 1 and 2 DataLoader workers, against what the
   training step consumes (examples/s of the step alone, on ready batches);
2. the share of step time spent waiting for data in a real run with 0 and 2 workers (goal: under 5% with 2);
3. the padded share of the batches with and without ``group_by_length``;
4. peak RSS of the same run over N and 8N generated clips (memory must not grow with the data).

``python -m bench.pipeline`` (about 5 minutes on 2 CPU cores); skipped without FSDD.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .harness import machine

RECIPE = "audio-wav2vec2-tiny-fsdd"


def _loader_rate(recipe, workers: int, batches: int = 40) -> float:
    from pipelines.build import build
    from pipelines.data import TrainData
    built = build(recipe)
    cfg = recipe.with_overrides([f"train.num_workers={workers}"]).train
    it = TrainData(built.data, built.processor, cfg).batches()
    next(it)                                       # workers started, first batch in
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["_names"])
    rate = n / (time.perf_counter() - t0)
    it.close()
    return rate


def _step_rate(recipe, steps: int = 15) -> float:
    from pipelines.build import build
    from pipelines.data import TrainData
    from pipelines.engine import build_optimizer, setup_run, train_step
    built = build(recipe)
    it = TrainData(built.data, built.processor, recipe.train).batches()
    ready = [next(it) for _ in range(steps + 2)]
    it.close()
    ctx = setup_run(recipe.train, tempfile.mkdtemp())
    model = built.pretrainer
    opt = build_optimizer(model, recipe.train)
    model.train()
    for i in range(2):
        train_step(ctx, model, model, opt, ready[i], i)
    t0, n = time.perf_counter(), 0
    for i in range(2, steps + 2):
        train_step(ctx, model, model, opt, ready[i], i)
        n += len(ready[i]["_names"])
    return n / (time.perf_counter() - t0)


def _run(args: list[str], out: Path) -> dict:
    exe = Path(sys.executable).parent / "zoo"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    res = subprocess.run([str(exe), "pretrain", *args, "--output", str(out), "--no-resume"], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    summary = json.loads((out / "train_summary.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = rows[5:]                               # the first steps start the workers and warm up
    wait = sum(r["data_wait_s"] for r in rows)
    total = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"] + rows[0]["data_wait_s"] + rows[0]["step_s"]
    return {"summary": summary, "wait_share": wait / total, "steps_per_s": len(rows) / total}


def _padded(recipe, grouped: bool, batches: int) -> float:
    from pipelines.build import build
    from pipelines.data import TrainData, padded_share
    built = build(recipe)
    cfg = recipe.with_overrides([f"train.group_by_length={str(grouped).lower()}"]).train
    it = TrainData(built.data, built.processor, cfg).batches()
    shares = [padded_share(next(it)) for _ in range(batches)]
    it.close()
    return sum(shares) / len(shares)


def _memory(tmp: Path, n: int = 200, seconds: float = 2.0) -> dict[str, float]:
    from tests.test_pipeline import _write_clips
    peaks = {}
    for label, count in (("N", n), ("8N", 8 * n)):
        root = tmp / f"clips-{label}"
        _write_clips(root, count, seconds)
        spec = json.dumps({"source": "fsdd", "root": str(root), "split": "all"})
        res = _run(["audio-wav2vec2-tiny", "--set", f"data.train={spec}", "--set", "train.steps=20",
                    "--set", "train.batch_size=8", "--set", "train.num_workers=2",
                    "--set", "train.checkpoint_every=20"], tmp / f"mem-{label}")
        peaks[label] = res["summary"]["peak_rss_mib"]
        peaks[f"{label} workers"] = res["summary"]["peak_rss_workers_mib"]
    peaks["clips"] = n
    peaks["decoded 8N (MiB)"] = 8 * n * seconds * 16000 * 4 / 2**20
    return peaks


def main() -> str:
    from modalities.audio.data import data_dir
    from pipelines.recipe import load_recipe
    if not (data_dir() / "fsdd" / "recordings").is_dir():
        text = f"### Data pipeline\n\nskipped: FSDD not found under {data_dir()} (set ZOO_DATA)"
        print(text)
        return text
    torch.set_num_threads(2)
    recipe = load_recipe(RECIPE)
    loader = {w: _loader_rate(recipe, w) for w in (0, 1, 2)}
    step = _step_rate(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {w: _run([RECIPE, "--set", "train.steps=80", "--set", f"train.num_workers={w}",
                         "--set", "train.checkpoint_every=80"], tmp / f"run{w}") for w in (0, 2)}
        memory = _memory(tmp)
    padded = {g: _padded(recipe, g, 60) for g in (False, True)}
    lines = ["### Data pipeline", "", f"Machine: {machine()}. Recipe `{RECIPE}`: batch "
             f"{recipe.train.batch_size}, FSDD clips decoded with soundfile and resampled 8 → 16 kHz in the loader.",
             "", "| loader | examples/s |", "| --- | ---: |"]
    lines += [f"| {w} worker{'s' if w != 1 else ''} (nothing trained) | {r:.0f} |" for w, r in loader.items()]
    lines += [f"| what the training step consumes (ready batches) | {step:.0f} |", "",
              "| run (80 steps, first 5 left out) | steps/s | share of step time waiting for data |",
              "| --- | ---: | ---: |"]
    lines += [f"| num_workers={w} | {r['steps_per_s']:.2f} | {100 * r['wait_share']:.1f}% |" for w, r in runs.items()]
    lines += ["", "| batches (first 60 of the run) | padded share |", "| --- | ---: |",
              f"| random batches | {100 * padded[False]:.1f}% |",
              f"| group_by_length (buckets of {recipe.train.length_buckets} batches) | {100 * padded[True]:.1f}% |", "",
              f"| same recipe (20 steps, 2 workers) on generated 2 s clips | N = {memory['clips']} | "
              f"8N = {8 * memory['clips']} |", "| --- | ---: | ---: |",
              f"| peak RSS, main process (MiB) | {memory['N']:.0f} | {memory['8N']:.0f} |",
              f"| peak RSS, largest worker (MiB) | {memory['N workers']:.0f} | {memory['8N workers']:.0f} |",
              f"| the 8N clips decoded, for scale (MiB) | | {memory['decoded 8N (MiB)']:.0f} |"]
    text = "\n".join(lines)
    print(text + "\n")
    return text


if __name__ == "__main__":
    main()
