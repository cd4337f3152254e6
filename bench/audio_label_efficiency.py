"""What wav2vec 2.0 pretraining is for, at CPU scale: label efficiency (Baevski et al. 2020, §5.1) on the Free
Spoken Digit Dataset. The tiny encoder pretrained on 5 speakers (``audio-wav2vec2-tiny-fsdd``) is fine-tuned
end to end with 1%, 10% and 100% of the labelled training clips (a seeded, stratified sample), against the same
architecture trained from scratch on the same clips with the same settings, and MFCC statistics + logistic
regression; accuracy on the held-out speaker, mean ± std over seeds.
``python -m bench.audio_label_efficiency [OUT] [--seeds N] [--steps N]``."""

from __future__ import annotations

import statistics
from pathlib import Path

from modalities.audio.baselines import mfcc_features
from modalities.audio.data import data_dir
from pipelines.evaluate import linear_probe
from pipelines.finetune import finetune
from pipelines.pretrain import pretrain
from pipelines.recipe import load_recipe
from zoo import AutoProcessor, get_modality
from zoo.data import stratified_indices

from .harness import ResultLog, machine, publish_table, seeded_main

FRACTIONS = (0.01, 0.1, 1.0)
SETTINGS = {"batch_size": 16, "lr": 5e-4, "warmup_steps": 30, "weight_decay": 0.01, "checkpoint_every": 10**6}


def run(out: Path, seeds: int = 3, steps: int = 300) -> str:
    if not (data_dir() / "fsdd" / "recordings").is_dir():
        return f"### wav2vec 2.0 label efficiency on FSDD\n\nskipped: FSDD not found under {data_dir()} (set ZOO_DATA)"
    recipe = load_recipe("audio-wav2vec2-tiny-fsdd")
    summary = pretrain(recipe, out / "pretrain", resume=True)
    model = Path(summary["model_dir"])
    mod = get_modality("audio")
    spec = recipe.evaluate
    train = mod.load_data({k: v for k, v in spec["train"].items() if k != "limit"})
    test = mod.load_data(spec["test"])
    proc = AutoProcessor.from_pretrained(model)
    mfcc_train, mfcc_test = mfcc_features(train.examples, proc), mfcc_features(test.examples, proc)
    log = ResultLog(out / "runs.jsonl", ("features", "fraction", "seed"))
    rows: dict[tuple[str, float], list[float]] = {}
    sizes = {}
    for frac in FRACTIONS:
        for seed in range(seeds):
            idx = stratified_indices(train.labels, frac, seed)
            sizes[frac] = len(idx)
            subset = train.subset(idx)
            for kind in ("pretrained, fine-tuned", "from scratch", "MFCC + logistic regression"):
                key = (kind, frac, seed)
                if key not in log.done:
                    if kind.startswith("MFCC"):
                        acc = linear_probe(mfcc_train[idx], subset.labels, mfcc_test, test.labels, seed=seed)
                    else:
                        res = finetune(model, recipe, out / f"{kind.split(',')[0].replace(' ', '-')}-{frac}-{seed}",
                                       resume=False, train_set=subset, test_set=test,
                                       from_scratch=kind == "from scratch",
                                       settings={**SETTINGS, "steps": steps, "seed": seed})
                        acc = res["test_accuracy"]
                    log.add(key, acc)
                rows.setdefault((kind, frac), []).append(log.done[key])
    head = " | ".join(f"{f:.0%} ({sizes[f]} clips)" for f in FRACTIONS)
    lines = ["### wav2vec 2.0 on FSDD: label efficiency (held-out speaker)", "",
             f"Machine: {machine()}. Pretraining `{recipe.name}` ({summary['steps']} steps, "
             f"{summary['wall_seconds']:.0f} s); fine-tuning {steps} steps of {SETTINGS['batch_size']} clips, "
             f"lr {SETTINGS['lr']}, every weight trained, a linear head on the mean-pooled output; "
             f"{len(test)} test clips of the unseen speaker; mean ± std over {seeds} seeds (the labelled sample "
             "and the fine-tuning order).", "",
             f"| model | {head} |", "| --- |" + " ---: |" * len(FRACTIONS)]
    for kind in ("pretrained, fine-tuned", "from scratch", "MFCC + logistic regression"):
        cells = [f"{statistics.mean(rows[(kind, f)]):.3f} ± {statistics.pstdev(rows[(kind, f)]):.3f}"
                 for f in FRACTIONS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return publish_table(lines, out / "label_efficiency.md")


if __name__ == "__main__":
    seeded_main(__doc__, "audio-label-efficiency", run, seeds=3, steps=300)
