"""Fine-tuning modes on one's own labelled data (issue #16): frozen (linear probe on the frozen encoder), partial
(the top 2 layer groups), full, and the same architecture trained from scratch, each through ``finetune(...,
data=...)`` exactly as ``zoo finetune MODEL --data`` runs it: validation every ``eval_every`` steps on a
stratified tenth of the training data, the best checkpoint kept, early stopping. FSDD (class folders written
from ``$ZOO_DATA/fsdd``: 5 speakers train, the held-out speaker test) with ``audio-wav2vec2-tiny-fsdd``; UCI
Adult (its official test file) with ``tabular-tjepa-adult``. Accuracy and macro-F1 on the test set, mean ± std
over seeds. ``python -m bench.finetune [OUT] [--seeds N] [--steps N]``."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from pipelines.finetune import finetune
from pipelines.pretrain import pretrain
from pipelines.recipe import load_recipe
from zoo.paths import data_dir

from .harness import ResultLog, machine, publish_table, results_dir, seeded_main

MODES = {"frozen (linear probe)": {"mode": "frozen", "lr": 3e-3},
         "partial (top 2 layer groups)": {"mode": "partial", "top_layers": 2},
         "full": {"mode": "full"},
         "full, layer-wise decay 0.75": {"mode": "full", "layer_decay": 0.75},
         "from scratch (same architecture)": {"mode": "full", "from_scratch": True}}


def fsdd_folders(out: Path) -> Path:
    """FSDD as a user would hand it over: ``train/<digit>/*.wav`` (5 speakers) and ``test/<digit>/*.wav``."""
    root = out / "fsdd-folders"
    if (root / "test").is_dir():
        return root
    files = sorted((data_dir() / "fsdd" / "recordings").glob("*.wav"))
    held = sorted({f.stem.split("_")[1] for f in files})[-1]
    for f in files:
        digit, speaker, _ = f.stem.split("_")
        dest = root / ("test" if speaker == held else "train") / digit
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / f.name)
    return root


def adult_csvs(out: Path) -> tuple[Path, Path]:
    """UCI Adult's train and test files as CSV tables with an ``income`` column."""
    import pandas as pd

    from modalities.tabular.data import ADULT_COLUMNS
    paths = out / "adult-train.csv", out / "adult-test.csv"
    for name, path in zip(("adult.data", "adult.test"), paths):
        if not path.is_file():
            df = pd.read_csv(data_dir() / "adult" / name, header=None, names=ADULT_COLUMNS, skipinitialspace=True,
                             na_values=["?"], comment="|")
            df["income"] = df["income"].str.rstrip(".")
            df.to_csv(path, index=False)
    return paths


def table(out: Path, title: str, recipe_name: str, model: Path, data: Path, seeds: int, steps: int,
          extra: dict, label_column: str | None = None, test: Path | None = None) -> str:
    recipe = load_recipe(recipe_name)
    log = ResultLog(out / f"{recipe_name}.jsonl", ("mode", "seed", "metric"))
    for seed in range(seeds):
        for name, setting in MODES.items():
            if (name, seed, "accuracy") in log.done:
                continue
            setting = dict(setting)
            scratch = setting.pop("from_scratch", False)
            run_dir = out / recipe_name / f"{setting['mode']}-{len(log.done)}-s{seed}"
            kwargs = {"data": str(data), "label_column": label_column}
            if test is not None:                       # a separate test table: the held-out split is not used
                from zoo import get_modality
                mod = get_modality(recipe.modality)
                spec = {"source": "hf", "path": "csv", "label_column": label_column}
                kwargs = {"train_set": mod.load_data({**spec, "data_files": str(data)}),
                          "test_set": mod.load_data({**spec, "data_files": str(test)})}
            res = finetune(model, recipe, run_dir, resume=False, from_scratch=scratch,
                           settings={**extra, **setting, "steps": steps, "seed": seed}, **kwargs)
            log.add((name, seed, "accuracy"), res["test_accuracy"])
            log.add((name, seed, "macro_f1"), res["test_macro_f1"])
    lines = [f"### {title}", "", f"Machine: {machine()}. `{recipe_name}` pretrained, then fine-tuned {steps} steps "
             f"({', '.join(f'{k} {v}' for k, v in extra.items())}), validation every {extra['eval_every']} steps on "
             f"a stratified tenth of the training data, best checkpoint kept, patience {extra['patience']}; mean ± "
             f"std over {seeds} seeds.", "", "| fine-tuning | accuracy | macro-F1 |", "| --- | ---: | ---: |"]
    for name in MODES:
        cells = []
        for metric in ("accuracy", "macro_f1"):
            vals = [log.done[(name, s, metric)] for s in range(seeds)]
            cells.append(f"{statistics.mean(vals):.3f} ± {statistics.pstdev(vals):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return publish_table(lines, out / f"{recipe_name}.md")


def run(out: Path, seeds: int = 3, steps: int = 300, adult: int = 1) -> str:
    tables = []
    if (data_dir() / "fsdd" / "recordings").is_dir():
        recipe = load_recipe("audio-wav2vec2-tiny-fsdd")
        model = Path(pretrain(recipe, results_dir("audio-label-efficiency") / "pretrain", resume=True)["model_dir"])
        tables.append(table(out, "Fine-tuning on FSDD class folders (held-out speaker)", recipe.name, model,
                            fsdd_folders(out), seeds, steps,
                            {"batch_size": 16, "lr": 5e-4, "warmup_steps": 30, "weight_decay": 0.01,
                             "eval_every": 50, "patience": 3, "checkpoint_every": 50}))
    if adult and (data_dir() / "adult" / "adult.data").is_file():
        recipe = load_recipe("tabular-tjepa-adult")
        model = Path(pretrain(recipe, results_dir("tabular") / recipe.name, resume=True)["model_dir"])
        train, test = adult_csvs(out)
        tables.append(table(out, "Fine-tuning on UCI Adult (official test rows)", recipe.name, model, train,
                            seeds, steps, {"batch_size": 256, "lr": 5e-4, "warmup_steps": 30, "weight_decay": 0.01,
                                           "eval_every": 50, "patience": 3, "checkpoint_every": 50},
                            label_column="income", test=test))
    return "\n\n".join(tables) or "### Fine-tuning modes\n\nskipped: neither FSDD nor Adult under $ZOO_DATA"


def main() -> str:
    return run(results_dir("finetune"))


if __name__ == "__main__":
    seeded_main(__doc__, "finetune", run, seeds=3, steps=300, adult=1)
