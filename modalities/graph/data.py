"""Graph data: PyG's bundled KarateClub, generated graph-classification sets, Planetoid (Cora, CiteSeer)
and TU sets (MUTAG, PROTEINS, IMDB-BINARY) read offline from ``$ZOO_DATA`` — copied into a writable cache
first, because PyG writes ``processed/`` beside ``raw/``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from zoo import ExampleSet
from zoo.paths import cache_dir, data_dir
from zoo.plugin import source_loader


def _writable_copy(kind: str, name: str) -> Path:
    src = data_dir() / kind / name / "raw"
    if not src.is_dir():
        raise FileNotFoundError(f"{kind}/{name} not found under {data_dir()} (set ZOO_DATA)")
    root = cache_dir() / kind
    if not (root / name / "raw").is_dir():
        shutil.copytree(src, root / name / "raw")
    return root


def _karate(spec: dict[str, Any]) -> ExampleSet:
    from torch_geometric.datasets import KarateClub
    return ExampleSet([KarateClub()[0]], None, ["karate"], None)


def _planetoid(spec: dict[str, Any]) -> ExampleSet:
    from torch_geometric.datasets import Planetoid
    name = spec.get("name", "Cora")
    if name.lower() == "pubmed":
        raise FileNotFoundError("PubMed is skipped: the offline copy lacks ind.pubmed.allx and does not load")
    data = Planetoid(str(_writable_copy("planetoid", name)), name)[0]
    return ExampleSet([data], None, [name], None)


def _tu(spec: dict[str, Any]) -> ExampleSet:
    from torch_geometric.datasets import TUDataset
    name = spec.get("name", "MUTAG")
    ds = TUDataset(str(_writable_copy("tu", name)), name)
    graphs = [ds[i] for i in range(len(ds))]
    return ExampleSet(graphs, [int(g.y) for g in graphs], [f"{name}[{i}]" for i in range(len(graphs))], None)


def _motifs(spec: dict[str, Any]) -> ExampleSet:
    """Generated graph classification: rings vs stars vs paths vs complete graphs with random sizes and
    one-hot degree-free features (a constant plus noise), ``n`` graphs from ``seed``."""
    from torch_geometric.data import Data
    g = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    graphs, labels = [], []
    for i in range(int(spec.get("n", 120))):
        label = i % 4
        n = int(torch.randint(5, 13, (1,), generator=g))
        ar = torch.arange(n)
        if label == 0:
            src, dst = ar, (ar + 1) % n
        elif label == 1:
            src, dst = torch.zeros(n - 1, dtype=torch.long), ar[1:]
        elif label == 2:
            src, dst = ar[:-1], ar[1:]
        else:
            src, dst = torch.combinations(ar).T
        edges = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
        x = torch.cat([torch.ones(n, 1), 0.1 * torch.randn(n, 3, generator=g)], dim=1)
        graphs.append(Data(x=x, edge_index=edges))
        labels.append(label)
    return ExampleSet(graphs, labels, [f"motif[{i}]" for i in range(len(graphs))], ["ring", "star", "path", "clique"])


SOURCES = {"karate": _karate, "planetoid": _planetoid, "tu": _tu, "motifs": _motifs}

load_data = source_loader("graph", SOURCES, "motifs")
