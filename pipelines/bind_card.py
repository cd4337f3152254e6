"""The model card of a bound model (Hugging Face conventions: YAML metadata with ``model-index`` holding the measured
retrieval results, then what it is, how to use it, how it was trained, its results against chance and the
similarity-matrix plot; docs/architecture.md, "Binding")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo.cards import FINGERPRINT_KEY, weights_fingerprint
from zoo.hub import CARD_NAME, CONFIG_NAME

SIMILARITY_PAIRS = 48                    # held-out pairs in the card's similarity matrix

__all__ = ["write_bound_card", "retrieval_table"]


CARD = """---
{yaml}
---

# {name}

A bound model made with [ssl-zoo](https://github.com/ssl-zoo/ssl-zoo): the encoders of {sides}, each
with a linear projection into one shared {dim}-dimensional space, trained with CLIP's symmetric
InfoNCE and a learned temperature (Radford et al. 2021), every side against `{a}` (ImageBind, Girdhar et al. 2023).
{description}

## Use

{usage}

## Sides

| side | start, training |
| --- | --- |
{side_rows}

Each side is an ordinary ssl-zoo folder (`{a}/`, `{b}/`) that loads alone.

## Results

{results}

## Training

| | |
| --- | --- |
{facts}

Reproduce: `{command}`

## Limits

Trained on the pairs named above only; retrieval among more or other pairs will score lower. Check it on your own
pairs (`zoo bind` with `evaluate.test`).
"""


def retrieval_table(report: dict[str, Any]) -> str:
    """Markdown: each direction's R@1/5/10 and median rank, and chance on the same number of pairs."""
    lines = ["| model | direction | R@1 | R@5 | R@10 | median rank |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for direction, m in report["retrieval"].items():
        lines.append(f"| this model | {direction} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | "
                     f"{m['median_rank']:g} |")
    c = report["chance"]
    lines.append(f"| chance | either | {c['R@1']:.3f} | {c['R@5']:.3f} | {c['R@10']:.3f} | {c['median_rank']:g} |")
    return "\n".join(lines)


def write_bound_card(folder: str | Path, recipe: Any, summary: dict[str, Any], report: dict[str, Any] | None,
                     repo_id: str | None = None) -> Path:
    folder = Path(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    sides = list(config["sides"])
    name = repo_id or recipe.name
    dataset = (recipe.evaluate.get("test") or {}).get("path") or "held-out pairs"
    dataset = Path(str(dataset)).name
    evals = []
    if report is not None:
        for direction, m in report["retrieval"].items():
            evals.append(EvalResult(task_type="cross-modal-retrieval", task_name=f"retrieval {direction}",
                                    dataset_type=dataset, dataset_name=dataset,
                                    dataset_split=str((recipe.evaluate.get("test") or {}).get("split", "test")),
                                    metric_type="recall@1", metric_name=f"R@1 {direction}",
                                    metric_value=round(m["R@1"], 4)))
    data = ModelCardData(library_name="ssl-zoo", license="apache-2.0", pipeline_tag="feature-extraction",
                         tags=["ssl-zoo", "self-supervised", "multimodal", "bound", *sides], model_name=name,
                         eval_results=evals or None, **{FINGERPRINT_KEY: weights_fingerprint(folder)})
    training = config.get("pretraining", {}).get("training", {})
    side_rows = "\n".join(f"| {m} | {v} |" for m, v in training.get("sides", {}).items())
    facts = "\n".join(f"| {k} | {v} |" for k, v in training.items() if k != "sides")
    a, b = sides[0], sides[1]
    usage = _usage(name, a, b, config["encoder"]["dim"])
    results = _results(report, folder)
    text = CARD.format(yaml=data.to_yaml(), name=name, sides=", ".join(sides), dim=config["encoder"]["dim"], a=a,
                       b=b, description=recipe.description, usage=usage, side_rows=side_rows, results=results,
                       facts=facts, command=config.get("pretraining", {}).get("command", "zoo bind " + recipe.name))
    card = ModelCard(text)
    path = folder / CARD_NAME
    card.save(str(path))
    return path


def _usage(name: str, a: str, b: str, dim: int) -> str:
    return (f"```python\nimport zoo\n\nmodel = zoo.AutoEncoder.from_pretrained({name!r})   # the bound model\n"
            f"za = model.embed({a!r}, [...])   # raw {a} inputs → unit vectors [N, {dim}]\n"
            f"zb = model.embed({b!r}, [...])\nsimilarity = za @ zb.T\n"
            f"{a}_alone = zoo.AutoEncoder.from_pretrained({name!r}, modality={a!r})   # one side, an ordinary "
            "encoder\n```\n\nFrom the command line: `zoo embed MODEL --modality "
            f"{b} FILES...` (the shared space), `zoo search MODEL --query FILE --index DIR --top-k 5`.")


def _results(report: dict[str, Any] | None, folder: Path) -> str:
    if report is None:
        return "No held-out pairs were evaluated (the recipe has no `evaluate.test`)."
    results = (f"Cross-modal retrieval on {report['pairs']} held-out pairs ({report['skipped']} more skipped): the "
               "rank of each query's true partner among all of them.\n\n" + retrieval_table(report))
    if report.get("zero_shot"):
        zs = {k: v for k, v in report["zero_shot"].items() if k.endswith(" prototypes")}
        majority = report["zero_shot"].get("majority_class")
        results += ("\n\nZero-shot classification through the other side (nearest class prototype, prototypes "
                    f"from the {report['zero_shot']['prototypes_from']}): "
                    + ", ".join(f"{_zero_shot_name(k)} {v:.3f}" for k, v in zs.items())
                    + (f"; always naming the commonest class scores {majority:.3f}." if majority is not None
                       else "."))
    if (folder / "similarity.png").is_file():
        shown = min(SIMILARITY_PAIRS, report["pairs"])
        results += ("\n\n![similarity of held-out pairs](similarity.png)\n\nCosine similarities of the first "
                    f"{shown} held-out pairs (sorted by class when labelled): each pair on the diagonal.")
    return results


def _zero_shot_name(key: str) -> str:
    """``"audio→video prototypes"`` (the report's key) as the card says it: which side is classified by which."""
    query, other = key.removesuffix(" prototypes").split("→")
    return f"{query} inputs by the nearest {other} class prototype"
