"""Probe quality of the tiny wav2vec 2.0 on the real Free Spoken Digit recordings (speaker-disjoint):
pretrained vs random init vs MFCC + logistic regression, and a per-layer probe. Skipped without FSDD."""

from __future__ import annotations

import sys
from pathlib import Path

from modalities.audio.data import data_dir
from pipelines.evaluate import comparison_markdown, evaluate_model
from pipelines.pretrain import pretrain
from pipelines.recipe import load_recipe

from .harness import machine


def main(out: Path = Path(__file__).parent / "results" / "audio-fsdd") -> str:
    if not (data_dir() / "fsdd" / "recordings").is_dir():
        text = f"### wav2vec 2.0 on FSDD\n\nskipped: FSDD not found under {data_dir()} (set ZOO_DATA)"
        print(text)
        return text
    recipe = load_recipe("audio-wav2vec2-tiny-fsdd")
    summary = pretrain(recipe, out, resume=False)
    report = evaluate_model(Path(summary["model_dir"]), recipe)
    text = "\n".join([f"### {recipe.name}: speaker-disjoint probes", "", f"Machine: {machine()}; pretraining "
                      f"{summary['steps']} steps took {summary['wall_seconds']:.0f} s.", "",
                      comparison_markdown(report).replace("### Compared with baselines\n\n", "")])
    print(text + "\n")
    return text


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "audio-fsdd")
