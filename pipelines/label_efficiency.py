"""Label-efficiency curves (docs/architecture.md, "Label efficiency"; the encoders' features come from
:func:`pipelines.evaluate.label_efficiency`): the frozen-encoder linear probe trained on
a seeded, stratified fraction of the labelled training examples, for each fraction and seed, beside the same
architecture at random init and the modality's hand-made baselines on the same examples — how many labels the
pretraining saves, as ptls and VISSL report few-label results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.data import stratified_indices

__all__ = ["parse_fractions", "fraction_curves", "label_efficiency_markdown",
           "plot_label_efficiency"]

Features = tuple[torch.Tensor, torch.Tensor]       # (train [N, D], test [M, D])


def parse_fractions(text: str | Sequence[float]) -> list[float]:
    """``"0.01,0.05,0.1,0.5,1"`` → sorted distinct fractions, each in (0, 1]."""
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    try:
        values = sorted({float(t) for t in items})
    except ValueError:
        raise ValueError(f"--label-fractions {text!r}: expected numbers in (0, 1] separated by commas, e.g. "
                         "0.01,0.05,0.1,0.5,1") from None
    bad = [v for v in values if not 0 < v <= 1]
    if not values or bad:
        raise ValueError(f"--label-fractions {text!r}: every fraction must lie in (0, 1] (got {bad or 'none'})")
    return values


def fraction_curves(features: dict[str, Features], ytr: Sequence[int], yte: Sequence[int],
                    fractions: Sequence[float], seeds: int,
                    probe: Callable[..., float] | None = None) -> dict[str, Any]:
    """Each feature set's probe accuracy on the test examples, trained on ``stratified_indices(ytr, f, seed)``
    for every fraction ``f`` and seed ``0..seeds-1`` (the same subsets for every feature set): mean and standard
    deviation over seeds, and how many labelled examples each fraction gave."""
    if probe is None:
        from .probes import linear_probe
        probe = linear_probe
    ytr, yte = np.asarray(list(ytr)), list(yte)
    subsets = {(f, s): stratified_indices(ytr, f, s) for f in fractions for s in range(seeds)}
    same: list[float] = []                  # a fraction giving as many labels as a smaller one: the same cell
    for a, b in zip(fractions, fractions[1:]):
        if len(subsets[a, 0]) == len(subsets[b, 0]):
            same.append(a)
    fractions = [f for f in fractions if f not in same]
    curves: dict[str, dict[str, list[float]]] = {}
    for name, (tr, te) in features.items():
        scores = np.array([[probe(tr[subsets[f, s]], ytr[subsets[f, s]].tolist(), te, yte, seed=s)
                            for s in range(seeds)] for f in fractions])
        curves[name] = {"mean": [round(float(v), 4) for v in scores.mean(1)],
                        "std": [round(float(v), 4) for v in scores.std(1)]}
    return {"fractions": list(fractions), "seeds": seeds, "train_examples": len(ytr), "test_examples": len(yte),
            "labelled": [len(subsets[f, 0]) for f in fractions], "curves": curves,
            **({"merged": same} if same else {})}


def label_efficiency_markdown(result: dict[str, Any], png: str | None = None, protocol: str | None = None) -> str:
    """The curves as a Markdown table (accuracy, mean ± std over seeds, one column per fraction); ``protocol``: the
    recipe's own protocol, whose probe the curves do not use (said under the table)."""
    head = " | ".join(f"{f:g} ({n})" for f, n in zip(result["fractions"], result["labelled"]))
    seeds = result["seeds"]
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    lines = ["### Label efficiency", "",
             f"Linear-probe accuracy on {result['test_examples']} held-out examples, trained on a stratified "
             f"fraction of the {result['train_examples']} labelled training examples (labelled examples in "
             f"brackets; at least one per class); {spread}."
             + (f" Fractions {', '.join(f'{f:g}' for f in result['merged'])} gave as few labels as the next one "
                "and are left out." if result.get("merged") else "")
             + (f" The probe is the logistic regression of the other tables, not the `{protocol}` protocol's own, "
                "so its figure at 1 differs from the protocol's above." if protocol else ""), "",
             f"| features | {head} |", "| --- |" + " ---: |" * len(result["fractions"])]
    names = {"pretrained": "this encoder (frozen)", "random init": "same architecture, random init"}
    for name, c in result["curves"].items():
        cells = " | ".join(f"{m:.3f} ± {s:.3f}" if seeds > 1 else f"{m:.3f}" for m, s in zip(c["mean"], c["std"]))
        lines.append(f"| {names.get(name, name)} | {cells} |")
    if png:
        lines += ["", f"![label efficiency]({png})"]
    return "\n".join(lines)


def plot_label_efficiency(result: dict[str, Any], png: str | Path, title: str = "") -> Path:
    """Accuracy against labelled examples (log scale), one line with error bars per feature set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, c in result["curves"].items():
        ax.errorbar(result["labelled"], c["mean"], yerr=c["std"], marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xticks(result["labelled"], [str(n) for n in result["labelled"]])
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("accuracy (held out)")
    ax.set_title(title or "label efficiency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
