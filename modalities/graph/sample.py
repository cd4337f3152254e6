"""A tiny labelled graph set for the conformance suite: rings, stars and cliques as nodes.csv / edges.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData

KINDS = ("ring", "star", "clique")


def _edges(kind: str, n: int) -> list[tuple[int, int]]:
    if kind == "ring":
        pairs = [(i, (i + 1) % n) for i in range(n)]
    elif kind == "star":
        pairs = [(0, i) for i in range(1, n)]
    else:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return pairs + [(j, i) for i, j in pairs]                      # both directions


def sample_data(root: Path, per_class: int = 14, seed: int = 0) -> SampleData:
    """``root/graphs/nodes.csv`` (graph, id, two non-negative features — the node's degree and a random weight —
    and the kind) and ``edges.csv`` (graph, source, target): 6–10 nodes per graph; the kind (the label) shows in
    the degrees."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    data = Path(root) / "graphs"
    data.mkdir(parents=True, exist_ok=True)
    nodes, edges = [], []
    for kind in KINDS:
        for i in range(per_class):
            gid, n = f"{kind}-{i}", int(rng.integers(6, 11))
            pairs = _edges(kind, n)
            degree = np.bincount([a for a, _ in pairs], minlength=n)
            nodes += [{"graph": gid, "id": v, "degree": int(degree[v]), "weight": float(rng.uniform(0, 1)),
                       "kind": kind} for v in range(n)]
            edges += [{"graph": gid, "source": a, "target": b} for a, b in pairs]
    pd.DataFrame(nodes).to_csv(data / "nodes.csv", index=False)
    pd.DataFrame(edges).to_csv(data / "edges.csv", index=False)
    return SampleData(data=data, recipe="graph-graphmae-motifs", num_classes=len(KINDS), label_column="kind",
                      predict_inputs=[], predict_names=[],
                      pretrain_overrides=["train.steps=4", "train.batch_size=8", "train.warmup_steps=1"],
                      finetune_args=["--lr", "0.01"])
