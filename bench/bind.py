"""Binding two modalities (issue #34, "Must show"): cross-modal retrieval on held-out pairs for each bind recipe —

- **bound**: each side first pretrained alone on its side of the training pairs (its own recipe and objective), then
  bound, every parameter trained;
- **aligned**: the same pretrained sides frozen, only the projections (and the temperature) trained;
- **random init**: both sides from random init, the same bind training;
- **chance**: a random ranking of the same number of pairs;

both directions, R@1/5/10 and the median rank, mean ± std over the seeds; zero-shot accuracy through the other
side. ``python -m bench.bind [--recipes planes-flights av-digits] [--seeds 3]``; the table in
``bench/results/bind.md``, numbers in ``bind.json``; runs cached in ``bench/results/bind/``.

``python -m bench.bind --diagnose`` measures what was tried while looking for that order (seed 0, after the main
runs, whose sides it reuses; ``bind-diagnose.md``/``.json``): scarce pairs (each variant on the first 400 training
pairs) and each side pretrained longer (its side probe, and aligned on it) — :data:`DIAGNOSES`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .harness import machine, publish_table, results_dir

RECIPES = {"planes-flights": 3, "av-digits": 1}           # recipe → seeds (the real set: 3)
VARIANTS = ("bound", "aligned", "random init")


def pretrained_alone(recipe: Any, out: Path, extra: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Each side pretrained alone, with its own recipe and objective, on its side of the training pairs only (with
    ``extra``: only the sides it names, with those overrides of their recipe)."""
    from pipelines.bind import side_recipe
    from pipelines.pairs import load_pairs, side_examples
    from pipelines.pretrain import pretrain
    pairs = load_pairs(recipe.data["train"], list(recipe.sides))
    found = {}
    for m, side in recipe.sides.items():
        if extra is not None and m not in extra:
            continue
        sets = ["train.quality_every=0", *(extra or {}).get(m, [])]
        own = side_recipe(m, side, None, recipe.train.seed).with_overrides(sets)
        folder = out / f"alone-{m}"
        if not (folder / "model" / "config.json").is_file():
            pretrain(own, folder, examples=side_examples(pairs, m))
        found[m] = folder / "model"
    return found


def side_probes(recipe: Any, alone: dict[str, Path]) -> dict[str, Any]:
    """What each side pretrained alone knows of the pairs' class on its own, held out: a linear probe on its frozen
    pooled embeddings (the vectors the aligned variant trains on) beside the modality's hand-made baselines on the
    same examples (:mod:`pipelines.baseline`). A side that cannot tell the classes apart gives a bind little to
    align beyond what the pairs themselves teach. Also the share of the commonest class among the held-out pairs
    (what zero-shot scores by always naming it)."""
    import torch

    import zoo
    from pipelines.baseline import baseline_scores
    from pipelines.bind import build_bind, frozen_once
    from pipelines.pairs import load_pairs
    from pipelines.probes import linear_probe
    from zoo import ExampleSet
    frozen = recipe.with_overrides(variant_overrides("aligned", recipe, alone))
    splits = {}
    for split, spec in (("train", frozen.data["train"]), ("test", frozen.evaluate["test"])):
        built = build_bind(frozen, pairs=load_pairs(spec, list(frozen.sides)))
        pairs, _ = frozen_once(built, skip_bad=True)
        keep = [i for i in range(len(pairs)) if all(torch.is_tensor(pairs.examples[i][m]) for m in frozen.sides)]
        splits[split] = (built.pairs.subset(keep), pairs.subset(keep))
    (raw_tr, vec_tr), (raw_te, vec_te) = splits["train"], splits["test"]
    out = {}
    for m in frozen.sides:
        x = {n: torch.stack([ex[m] for ex in v.examples]) for n, v in (("train", vec_tr), ("test", vec_te))}
        own = [ExampleSet([ex[m] for ex in raw.examples], raw.labels) for raw in (raw_tr, raw_te)]   # labelled
        base = baseline_scores(zoo.get_modality(m), zoo.AutoProcessor.from_pretrained(alone[m]), *own,
                               task="classification", metric="accuracy", num_classes=len(raw_tr.label_names or []))
        out[m] = {"probe": linear_probe(x["train"], vec_tr.labels, x["test"], vec_te.labels),
                  "baselines": base["scores"], "classes": len(raw_tr.label_names or [])}
    labels = list(vec_te.labels)
    return {"sides": out, "majority_class": max(labels.count(c) for c in set(labels)) / len(labels)}


def variant_overrides(variant: str, recipe: Any, alone: dict[str, Path]) -> list[str]:
    sets = []
    for m in recipe.sides:
        if variant == "random init":
            sets += [f"bind.sides.{m}.init=null", f"bind.sides.{m}.train=full"]
        else:
            sets += [f"bind.sides.{m}.init={alone[m]}",
                     f"bind.sides.{m}.train={'frozen' if variant == 'aligned' else 'full'}"]
    return sets


def one(name: str, seeds: int, out: Path) -> dict[str, Any]:
    from pipelines.bind import bind, load_bind_recipe
    recipe = load_bind_recipe(name)
    alone = pretrained_alone(recipe, out / name)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for variant in VARIANTS:
        for seed in range(seeds):
            folder = out / name / f"{variant.replace(' ', '-')}-seed{seed}"
            done = folder / "evaluation.json"
            if not done.is_file():
                bind(recipe.with_overrides([*variant_overrides(variant, recipe, alone), f"train.seed={seed}"]),
                     folder, resume=True)
            report = json.loads(done.read_text())
            summary = json.loads((folder / "train_summary.json").read_text())
            runs[variant].append({**report, "wall_seconds": summary["wall_seconds"]})
    probes = out / name / "side-probes.json"
    if not probes.is_file():
        probes.write_text(json.dumps(side_probes(recipe, alone), indent=1) + "\n")
    return {"recipe": name, "seeds": seeds, "runs": runs, "chance": runs["bound"][0]["chance"],
            "pairs": runs["bound"][0]["pairs"], "side_probes": json.loads(probes.read_text())}


#: recipe → (what is tried, the bind's overrides, the variants run, a side pretrained again: (modality, overrides))
DIAGNOSES: dict[str, list[tuple[str, list[str], tuple[str, ...], tuple[str, list[str]] | None]]] = {
    "planes-flights": [("400 training pairs", ["data.train.limit=400"], VARIANTS, None),
                       ("tabular side pretrained 10x longer (2,000 steps)", [], ("aligned",),
                        ("tabular", ["train.steps=2000", "train.checkpoint_every=500"]))],
    "av-digits": [("video side pretrained 5x longer (1,500 steps)", [], ("aligned",),
                   ("video", ["train.steps=1500", "train.checkpoint_every=500"])),
                  ("audio side pretrained 5x longer (600 steps)", [], ("aligned",),
                   ("audio", ["train.steps=600", "train.checkpoint_every=300"]))]}


def diagnose(name: str, out: Path) -> list[dict[str, Any]]:
    """:data:`DIAGNOSES` of one recipe: each variant's R@1 per direction, and a retrained side's probe."""
    from pipelines.bind import bind, load_bind_recipe
    recipe = load_bind_recipe(name)
    alone = pretrained_alone(recipe, out / name)
    found = []
    for k, (what, sets, variants, side) in enumerate(DIAGNOSES.get(name, [])):
        root, sides, row = out / name / f"diagnose-{k}", dict(alone), {"what": what, "r1": {}}
        if side is not None:
            m = side[0]
            sides[m] = pretrained_alone(recipe, root, {m: side[1]})[m]
            before = json.loads((out / name / "side-probes.json").read_text())["sides"][m]["probe"]
            row["side_probe"] = {"side": m, "before": before, "after": side_probes(recipe, sides)["sides"][m]["probe"]}
        for variant in variants:
            folder = root / variant.replace(" ", "-")
            if not (folder / "evaluation.json").is_file():
                bind(recipe.with_overrides([*variant_overrides(variant, recipe, sides), *sets]), folder, resume=True)
            report = json.loads((folder / "evaluation.json").read_text())
            row["r1"][variant] = {d: r["R@1"] for d, r in report["retrieval"].items()}
        found.append(row)
    return found


def diagnose_table(found: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["### Binding: what was tried for the order", "", f"Machine: {machine()}", "",
             "Seed 0. R@1 per direction; a side pretrained again: its linear probe on the held-out pairs' class "
             "(before → after) and aligned on it.", "",
             "| recipe | tried | variant | R@1 (each direction) | side probe: before → after |",
             "| --- | --- | --- | --- | --- |"]
    for name, rows in found.items():
        for row in rows:
            p = row.get("side_probe")
            probe = f"{p['side']} {p['before']:.3f} → {p['after']:.3f}" if p else "—"
            for variant, r1 in row["r1"].items():
                cells = ", ".join(f"{d} {v:.3f}" for d, v in r1.items())
                lines.append(f"| {name} | {row['what']} | {variant} | {cells} | {probe} |")
    return lines + [""]


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else \
        f"{values[0]:.3f}"


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["### Binding: cross-modal retrieval on held-out pairs", "", f"Machine: {machine()}", "",
             "Each side pretrained alone on its side of the training pairs, then: **bound** (every parameter "
             "trained), **aligned** (the pretrained sides frozen, only the projections trained), **random init** "
             "(both sides from random init, the same training); chance is a random ranking. Rank of each query's "
             "true partner among all held-out pairs; mean ± std over the seeds.", ""]
    for r in results:
        lines += [f"**{r['recipe']}** ({r['pairs']} held-out pairs, {r['seeds']} seed(s))", "",
                  "| model | direction | R@1 | R@5 | R@10 | median rank | zero-shot (prototypes) | bind (s) |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for variant, runs in r["runs"].items():
            for direction in runs[0]["retrieval"]:
                cells = [_mean_std([x["retrieval"][direction][k] for x in runs]) for k in ("R@1", "R@5", "R@10")]
                median = _mean_std([x["retrieval"][direction]["median_rank"] for x in runs])
                zs_key = f"{direction} prototypes"
                zs = _mean_std([x["zero_shot"][zs_key] for x in runs]) if "zero_shot" in runs[0] else "—"
                wall = statistics.mean(x["wall_seconds"] for x in runs)
                lines.append(f"| {variant} | {direction} | {' | '.join(cells)} | {median} | {zs} | {wall:.0f} |")
        c = r["chance"]
        majority = r.get("side_probes", {}).get("majority_class")
        zs_chance = f"{majority:.3f} (commonest class)" if majority is not None else "—"
        lines += [f"| chance | either | {c['R@1']:.3f} | {c['R@5']:.3f} | {c['R@10']:.3f} | {c['median_rank']:g} | "
                  f"{zs_chance} | — |", ""]
        if r.get("side_probes"):
            lines += ["Each side pretrained alone, on its own: linear probe of its frozen pooled embeddings on the "
                      "held-out pairs' class, beside the modality's hand-made baselines on the same examples:", ""]
            for m, p in r["side_probes"]["sides"].items():
                base = ", ".join(f"{k} {v:.3f}" for k, v in p["baselines"].items()) or "none"
                lines.append(f"- {m}: probe {p['probe']:.3f} ({p['classes']} classes); hand-made: {base}")
            lines.append("")
        order = _ordered(r)
        lines += [f"R@1, both directions, bound > aligned > random init > chance: {order}.", ""]
    return lines


def _ordered(r: dict[str, Any]) -> str:
    """Whether the means keep the issue's order on R@1 in every direction, said per direction."""
    out = []
    for direction in r["runs"]["bound"][0]["retrieval"]:
        means = [statistics.mean(x["retrieval"][direction]["R@1"] for x in r["runs"][v]) for v in VARIANTS]
        holds = means[0] > means[1] > means[2] > r["chance"]["R@1"]
        out.append(f"{direction} {'holds' if holds else 'does not hold'} ({', '.join(f'{m:.3f}' for m in means)})")
    return "; ".join(out)


def run(out: Path, recipes: dict[str, int] | None = None) -> str:
    results = [one(name, seeds, out) for name, seeds in (recipes or RECIPES).items()]
    root = Path(__file__).parent / "results"
    (root / "bind.json").write_text(json.dumps(results, indent=2) + "\n")
    return publish_table(table(results), root / "bind.md")


def main() -> str:
    return run(results_dir("bind"))


if __name__ == "__main__":
    import argparse
    import os
    os.environ.setdefault("TQDM_DISABLE", "1")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--recipes", nargs="*", default=list(RECIPES))
    p.add_argument("--seeds", type=int, default=None, help="seeds per recipe (default: 3 for the real set, else 1)")
    p.add_argument("--diagnose", action="store_true", help="what was tried for the order (DIAGNOSES), not the table")
    args = p.parse_args()
    if args.diagnose:
        found = {r: diagnose(r, results_dir("bind")) for r in args.recipes}
        root = Path(__file__).parent / "results"
        (root / "bind-diagnose.json").write_text(json.dumps(found, indent=2) + "\n")
        publish_table(diagnose_table(found), root / "bind-diagnose.md")
    else:
        run(results_dir("bind"), {r: args.seeds or RECIPES.get(r, 1) for r in args.recipes})
