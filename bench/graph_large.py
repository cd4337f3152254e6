"""Mini-batch GraphMAE on a large generated graph (issue #27): ``graph-graphmae-sbm-large`` at 50,000 and 200,000
nodes — pretraining on seeded subgraph batches, every node embedded layer by layer, the linear probe of the
pretrained encoder against the raw features and a random-init encoder — with wall times and peak RSS.

``python -m bench.graph_large`` runs both sizes, each in a fresh process so that its peak RSS (``VmHWM``) is its
own; ``--sizes 50000 --steps 20`` picks. The table goes to ``bench/results/graph_large/table.md`` and the numbers
to ``results.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "graph_large"
RECIPE = "graph-graphmae-sbm-large"


def _tensor_mib(*tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def one(n: int, steps: int, out: Path) -> dict:
    """Pretrain, embed and probe one size in this process; times in s, memory in MiB."""
    import torch

    from modalities.graph import GraphMAEEncoder, load_data
    from modalities.graph.evaluate import linear_probe
    from modalities.graph.layerwise import layerwise_node_embeddings
    from pipelines.distributed import peak_rss_mib
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe
    from zoo.auto import AutoEncoder, AutoProcessor

    base_rss = peak_rss_mib()["main"]
    recipe = load_recipe(RECIPE, [f"data.train.n={n}", f"evaluate.data.n={n}", f"train.steps={steps}"])
    summary = pretrain(recipe, out / f"n{n}", resume=False)
    pretrain_rss = peak_rss_mib()["main"]
    gc.collect()                                 # the training graph, before the evaluation loads its own
    encoder, processor = AutoEncoder.from_pretrained(summary["model_dir"]), AutoProcessor.from_pretrained(
        summary["model_dir"])
    probe = dict(recipe.evaluate["probe"])
    chunk = probe.pop("chunk_nodes")
    data = load_data(recipe.evaluate["data"]).examples[0]
    item = processor(data)                       # processed once for the three probes
    t0 = time.perf_counter()
    h = layerwise_node_embeddings(encoder.eval(), item["x"], item["edge_index"], chunk)
    embed_s = time.perf_counter() - t0
    pretrained = linear_probe(h, data, **probe)["linear_probe"]
    del h
    raw = linear_probe(item["x"], data, **probe)["linear_probe"]
    torch.manual_seed(0)
    random_encoder = GraphMAEEncoder(encoder.config).eval()
    random_init = linear_probe(layerwise_node_embeddings(random_encoder, item["x"], item["edge_index"], chunk),
                               data, **probe)["linear_probe"]
    return {"nodes": n, "edges": int(data.num_edges), "graph_mib": round(_tensor_mib(
                data.x, data.edge_index, data.y, data.train_mask, data.val_mask, data.test_mask), 1),
            "steps": summary["steps"], "pretrain_s": summary["wall_seconds"], "embed_s": round(embed_s, 2),
            "baseline_rss_mib": round(base_rss, 1), "pretrain_peak_rss_mib": round(pretrain_rss, 1),
            "peak_rss_mib": round(peak_rss_mib()["main"], 1), "final_loss": summary["final_loss"],
            "probe_pretrained": pretrained, "probe_raw_features": raw, "probe_random_init": random_init,
            "minibatch": recipe.data["train"]["minibatch"], "chunk_nodes": chunk}


def table(rows: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}. Recipe `{RECIPE}` ({rows[0]['steps']} steps of one subgraph each, "
             f"mini-batch {rows[0]['minibatch']}; layer-wise embedding in chunks of {rows[0]['chunk_nodes']} "
             "target nodes); each size in a fresh process.", "",
             "| nodes | edges (directed) | graph tensors MiB | pretrain s | embed s | peak RSS MiB (after imports"
             " / pretraining / whole run) | probe pretrained | raw features | random init |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['nodes']:,} | {r['edges']:,} | {r['graph_mib']:.0f} | {r['pretrain_s']:.0f} | "
                     f"{r['embed_s']:.1f} | {r['baseline_rss_mib']:.0f} / {r['pretrain_peak_rss_mib']:.0f} / "
                     f"{r['peak_rss_mib']:.0f} | {100 * r['probe_pretrained']:.1f} | "
                     f"{100 * r['probe_raw_features']:.1f} | {100 * r['probe_random_init']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the recipe's)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.steps is None:
        from pipelines.recipe import load_recipe
        args.steps = load_recipe(RECIPE).train.steps
    if args.one:
        print(json.dumps(one(args.one, args.steps, args.out / "runs")))
        return
    from .harness import machine
    rows = []
    for n in args.sizes:                         # a fresh process per size: its VmHWM is its own
        res = subprocess.run([sys.executable, "-m", "bench.graph_large", "--one", str(n), "--steps",
                              str(args.steps), "--out", str(args.out)], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{n} nodes failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    (args.out / "table.md").write_text(table(rows, machine()))
    print(table(rows, machine()))


if __name__ == "__main__":
    main()
