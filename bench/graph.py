"""GraphMAE: paper vs ours, mean ± std over seeds, with the random-init encoder, epoch time and peak memory.

``python -m bench.graph`` runs MUTAG; ``python -m bench.graph --all`` every recipe whose data is here (Cora
about 7 minutes a seed on 2 CPU cores); ``python -m bench.graph cora citeseer --seeds 5`` picks recipes. Each
recipe runs in a fresh process so that its peak memory is its own. The table goes to
``bench/results/graph/table.md`` and the numbers to ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .harness import Row, machine, measure_pair, print_table

# GraphMAE (Hou et al. 2022), Tables 1 and 2: accuracy (%) mean ± std
PAPER = {"cora": (84.2, 0.4), "citeseer": (73.4, 0.4), "pubmed": (81.1, 0.4), "mutag": (88.19, 1.26),
         "proteins": (75.30, 0.39), "imdb-binary": (75.52, 0.66)}
DEFAULT = ("mutag",)
OUT = Path(__file__).parent / "results" / "graph"


def run(short: str, seeds: int, out: Path) -> dict:
    """Pretrain and evaluate one recipe for ``seeds`` seeds (in this process); accuracies in %."""
    import torch

    from pipelines.evaluate import evaluate_model
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe

    name = f"graph-graphmae-{short}"
    ours, epoch_s = [], []
    for seed in range(seeds):
        recipe = load_recipe(name, [f"train.seed={seed}"])
        summary = pretrain(recipe, out / f"{short}-s{seed}", resume=False)
        # the random-init encoder is one draw (torch seed 0) whatever the pretraining seed: evaluate it once
        report = evaluate_model(Path(summary["model_dir"]), recipe, baseline=seed == 0, write_card=False)
        key = "accuracy" if "accuracy" in report["pretrained"] else "linear_probe"
        ours.append(100 * report["pretrained"][key])
        if seed == 0:
            random_init = 100 * report["random_init"][key]
        per_epoch = max(1, summary["examples"] // recipe.train.batch_size)
        epoch_s.append(summary["wall_seconds"] / (summary["steps"] / per_epoch))
    peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"recipe": name, "seeds": seeds, "accuracy": ours, "random_init": random_init,
            "mean": statistics.mean(ours), "std": statistics.pstdev(ours),
            "epoch_s": statistics.mean(epoch_s), "peak_mib": peak,
            "memory": "peak CUDA allocated" if torch.cuda.is_available() else "peak RSS"}


def step_speed(name: str = "graph-graphmae-cora", repeat: int = 10) -> Row:
    """One pretraining step (forward + backward) of a node-level recipe: our decoder, which aggregates before
    projecting and scores only the masked nodes (``gat_rows``), vs the same model decoding every node with
    PyG's ``GATConv`` and indexing the masked rows afterwards."""
    import torch

    from modalities.graph.model import gat_rows
    from pipelines.build import build
    from pipelines.recipe import load_recipe
    from zoo.masking import node_mask
    from zoo.objectives import scaled_cosine_error

    built = build(load_recipe(name, []))
    data, proc, pre = built.data, built.processor, built.pretrainer
    batch = proc.collate([proc(data.examples[0])])
    x, edges, cfg = batch["x"], batch["edge_index"], pre.config

    def step(decode) -> None:
        nm = node_mask(x.shape[0], cfg.mask_rate, cfg.replace_rate, generator=torch.Generator().manual_seed(0))
        code = pre.to_decoder(pre.encoder.node_embeddings(batch, nm.apply(x, pre.mask_token)))
        code = pre.decoder_drop(code.masked_fill(nm.mask[:, None], 0.0))
        scaled_cosine_error(decode(code, nm.mask), x[nm.mask], cfg.gamma).backward()

    ours = measure_pair(lambda: step(lambda c, m: gat_rows(pre.decoder, c, edges, m.nonzero().squeeze(1))),
                        lambda: step(lambda c, m: pre.decoder(c, edges)[m]), warmup=2, repeat=repeat)
    n, d = x.shape
    return Row("GraphMAE step fwd+bwd",
               f"{data.names[0]}: N={n}, F={d}, hidden={pre.encoder.dim}, mask={cfg.mask_rate}",
               ours[0], ours[1], "same model, PyG GATConv decoder on every node")


def _in_fresh_process(short: str, seeds: int, out: Path) -> dict:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run, short, seeds, out).result()


def table(results: list[dict], skipped: dict[str, str]) -> str:
    lines = ["### GraphMAE: paper vs ours", "", f"Machine: {machine()}", "",
             "| data set | paper | ours | seeds | within one paper std | random-init encoder (seed 0) | s / epoch | "
             "peak memory (MiB) |", "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in results:
        short = r["recipe"].removeprefix("graph-graphmae-")
        p_mean, p_std = PAPER[short]
        gap = r["mean"] - (p_mean - p_std)
        ok = "yes" if gap >= 0 else f"no ({-gap:.2f} short)"
        lines.append(f"| {short} | {p_mean} ± {p_std} | {r['mean']:.2f} ± {r['std']:.2f} | {r['seeds']} | {ok} | "
                     f"{r['random_init']:.2f} | {r['epoch_s']:.3f} | {r['peak_mib']:.0f} |")
    for short, why in skipped.items():
        lines.append(f"| {short} | {PAPER[short][0]} ± {PAPER[short][1]} | not run: {why} | | | | | |")
    return "\n".join(lines)


DATASET_NAMES = {"cora": "Cora (public Planetoid split)", "citeseer": "CiteSeer (public Planetoid split)",
                 "pubmed": "PubMed (public Planetoid split)", "mutag": "MUTAG (10-fold cross-validation)",
                 "proteins": "PROTEINS (10-fold cross-validation)",
                 "imdb-binary": "IMDB-BINARY (10-fold cross-validation)"}


CARDS = Path(__file__).resolve().parents[1] / "model_cards"


def write_zoo_card(r: dict, out: Path, cards: Path = CARDS) -> Path:
    """The seed-0 model folder becomes the zoo entry: its card records the mean over seeds and the comparison
    with the paper and the random-init encoder; the card is copied to ``model_cards/<recipe>/``."""
    from zoo.cards import COMPARISON_HEADING, write_card
    short = r["recipe"].removeprefix("graph-graphmae-")
    node = short in ("cora", "citeseer", "pubmed")
    protocol = ("linear classifier on frozen node embeddings (test accuracy at the best validation epoch)" if node
                else "RBF SVM on pooled graph embeddings, C by inner 5-fold CV, 10-fold stratified CV")
    results = [{"task": "node-classification" if node else "graph-classification", "task_name": protocol,
                "dataset": short, "dataset_name": DATASET_NAMES[short], "split": "test", "metric": "accuracy",
                "metric_name": f"accuracy (mean of {r['seeds']} pretraining seeds)",
                "value": round(r["mean"] / 100, 4)}]
    p_mean, p_std = PAPER[short]
    comparison = "\n".join([
        COMPARISON_HEADING, "", f"Accuracy (%), mean ± std over {r['seeds']} pretraining seeds (this folder is "
        f"seed 0), measured on {machine()}:", "", "| encoder | accuracy |", "| --- | ---: |",
        f"| this recipe (ssl-zoo, PyG) | {r['mean']:.2f} ± {r['std']:.2f} |",
        f"| GraphMAE paper (Hou et al. 2022) | {p_mean} ± {p_std} |",
        f"| same architecture, random init (one draw, seed 0) | {r['random_init']:.2f} |"])
    model = out / f"{short}-s0" / "model"
    card = write_card(model, repo_id=f"ssl-zoo/{r['recipe']}", results=results, comparison=comparison,
                      tags=["graph-neural-network", "torch-geometric"])
    (cards / r["recipe"]).mkdir(parents=True, exist_ok=True)
    (cards / r["recipe"] / "README.md").write_text(card.read_text())
    return card


def main(names=DEFAULT, seeds: int = 5, out: Path = OUT, cards: bool = False) -> str:
    """Run ``names``; the rows of data sets not run now are kept from the previous ``results.json``."""
    results, skipped = [], {}
    for short in names:
        try:
            results.append(_in_fresh_process(short, seeds, out))
        except FileNotFoundError as err:
            skipped[short] = str(err)
            continue
        if cards:
            write_zoo_card(results[-1], out)
        print(table(results, skipped) + "\n", flush=True)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    ran = {r["recipe"] for r in results}
    results += [r for r in previous.get("results", []) if r["recipe"] not in ran]
    skipped.update({k: v for k, v in previous.get("skipped", {}).items() if k not in names})
    order = list(PAPER)
    results.sort(key=lambda r: order.index(r["recipe"].removeprefix("graph-graphmae-")))
    text = table(results, skipped)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"machine": machine(), "results": results, "skipped": skipped},
                                                 indent=2) + "\n")
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help=f"data sets among {', '.join(PAPER)} (default: mutag)")
    parser.add_argument("--all", action="store_true", help="every data set of the paper's table")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cards", action="store_true", help="write each seed-0 model's card to model_cards/")
    parser.add_argument("--speed", action="store_true", help="only the step-time comparison (Cora, seconds)")
    parser.add_argument("--rewrite-cards", action="store_true",
                        help="rewrite the zoo cards from results.json and the seed-0 folders, without training")
    args = parser.parse_args()
    if args.rewrite_cards:
        for r in json.loads((OUT / "results.json").read_text())["results"]:
            print(write_zoo_card(r, OUT))
        raise SystemExit(0)
    if args.speed:
        print_table("GraphMAE: step time", [step_speed()])
        raise SystemExit(0)
    unknown = set(args.recipes) - set(PAPER)
    if unknown:
        parser.error(f"unknown data sets {sorted(unknown)}; choose among {', '.join(PAPER)}")
    main(tuple(PAPER) if args.all else tuple(args.recipes) or DEFAULT, seeds=args.seeds, cards=args.cards)
