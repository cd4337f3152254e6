"""GraphMAE: paper vs ours, mean ± std over seeds, with epoch time and peak memory.

``python -m bench.graph`` runs the graph-level recipes found offline (MUTAG by default; ``--all`` adds
PROTEINS, IMDB-BINARY, Cora and CiteSeer, which take hours on 2 CPU cores: run them on a GPU).
"""

from __future__ import annotations

import resource
import statistics
import sys
from pathlib import Path

from pipelines.evaluate import evaluate_model
from pipelines.pretrain import pretrain
from pipelines.recipe import load_recipe

from .harness import machine

PAPER = {"graph-graphmae-cora": (84.2, 0.4), "graph-graphmae-citeseer": (73.4, 0.4),
         "graph-graphmae-mutag": (88.19, 1.26), "graph-graphmae-proteins": (75.30, 0.39),
         "graph-graphmae-imdb-binary": (75.52, 0.66)}
DEFAULT = ("graph-graphmae-mutag",)


def run(name: str, seeds: int, out: Path) -> dict:
    accs, epoch_s = [], []
    for seed in range(seeds):
        recipe = load_recipe(name, [f"train.seed={seed}"])
        summary = pretrain(recipe, out / f"{name}-s{seed}", resume=False)
        report = evaluate_model(Path(summary["model_dir"]), recipe, baseline=False, write_card=False)
        metric = report["pretrained"].get("accuracy", report["pretrained"].get("linear_probe"))
        accs.append(100 * metric)
        epoch_s.append(summary["wall_seconds"] / summary["steps"])
    return {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "step_s": statistics.mean(epoch_s),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(names=DEFAULT, seeds: int = 5, out: Path = Path(__file__).parent / "results" / "graph") -> str:
    lines = ["### GraphMAE: paper vs ours", "", f"Machine: {machine()}", "",
             f"| recipe | paper | ours ({seeds} seeds) | within one paper std | s / step | peak RSS (MiB) |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for name in names:
        try:
            r = run(name, seeds, out)
        except FileNotFoundError as err:
            lines.append(f"| {name} | {PAPER[name][0]} ± {PAPER[name][1]} | skipped: {err} | | | |")
            continue
        p_mean, p_std = PAPER[name]
        ok = "yes" if r["mean"] >= p_mean - p_std else "no"
        lines.append(f"| {name} | {p_mean} ± {p_std} | {r['mean']:.2f} ± {r['std']:.2f} | {ok} | "
                     f"{r['step_s']:.3f} | {r['peak_mib']:.0f} |")
    text = "\n".join(lines)
    print(text + "\n")
    (out / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    everything = "--all" in sys.argv
    main(tuple(PAPER) if everything else DEFAULT)
