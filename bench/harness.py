"""Timing helpers and the table every benchmark prints."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ResultLog", "Row", "measure_pair", "machine", "print_table", "publish_table", "results_dir",
           "seeded_main", "train_step_times"]


@dataclass
class Row:
    name: str
    config: str
    ours_ms: float
    ref_ms: float
    reference: str

    @property
    def speedup(self) -> float:
        return self.ref_ms / self.ours_ms


def measure_pair(ours: Callable[[], object], reference: Callable[[], object], *, warmup: int = 3,
                 repeat: int = 50) -> tuple[float, float]:
    """Median milliseconds of both, measured alternately so that machine drift hits both alike."""
    for _ in range(warmup):
        ours()
        reference()
    a, b = [], []
    for _ in range(repeat):
        for fn, acc in ((ours, a), (reference, b)):
            t0 = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(a), statistics.median(b)


def train_step_times(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], *, warmup: int,
                     steps: int, lr: float = 1e-4) -> list[float]:
    """Seconds of each of ``steps`` AdamW training steps (forward, backward, update) after ``warmup``, sorted."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads, {dev}; torch {torch.__version__}"


def print_table(title: str, rows: list[Row]) -> str:
    lines = [f"### {title}", "", f"Machine: {machine()}", "",
             "| benchmark | config | ours (ms) | reference (ms) | reference | speed-up |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    lines += [f"| {r.name} | {r.config} | {r.ours_ms:.3f} | {r.ref_ms:.3f} | {r.reference} | "
              f"{r.speedup:.1f}x |" for r in rows]
    text = "\n".join(lines)
    print(text + "\n")
    return text


def publish_table(lines: list[str], path: Path) -> str:
    """Print a benchmark's markdown table and keep it beside its runs."""
    text = "\n".join(lines)
    print(text + "\n")
    path.write_text(text + "\n")
    return text


def results_dir(name: str) -> Path:
    """``bench/results/<name>``, created."""
    out = Path(__file__).parent / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


class ResultLog:
    """A seeded benchmark's finished runs, one JSON line each (``keys`` name the run, ``accuracy`` its score),
    so that a killed benchmark picks up where it stopped."""

    def __init__(self, path: Path, keys: tuple[str, ...]) -> None:
        self.path, self.keys = path, keys
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
        self.done = {tuple(r[k] for k in keys): r["accuracy"] for r in rows}

    def add(self, key: tuple, accuracy: float) -> float:
        self.done[key] = accuracy
        with open(self.path, "a") as fh:
            fh.write(json.dumps({**dict(zip(self.keys, key)), "accuracy": accuracy}) + "\n")
        return accuracy


def seeded_main(doc: str | None, results: str, run: Callable[..., str], **options: int) -> None:
    """``python -m bench.<name> [OUT] [--option N ...]``: the results folder, then ``run(out, **options)``."""
    import argparse
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("out", nargs="?", default=None, help=f"default: bench/results/{results}")
    for name, default in options.items():
        p.add_argument(f"--{name}", type=int, default=default)
    args = p.parse_args()
    out = Path(args.out) if args.out else results_dir(results)
    out.mkdir(parents=True, exist_ok=True)
    run(out, **{name: getattr(args, name) for name in options})
