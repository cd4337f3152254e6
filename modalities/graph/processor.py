"""Graph processor: PyG ``Data`` (or ``{"x", "edge_index"}``) → validated tensors; batches of graphs as one
disjoint union with a ``batch`` vector, as PyG does. Bad input (empty graph, edge index out of range,
NaN features, a feature width other than the model's) gets a clear error naming the graph and field.

The preprocessing GraphMAE (Hou et al. 2022) applies travels with the model: row-normalised features (PyG's
``NormalizeFeatures``, for the citation graphs), one-hot degrees for graphs without features, and self-loops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig
from zoo.plugin import numeric_array


@dataclass
class GraphProcessorConfig(ProcessorConfig):
    num_features: int = 0          # learned by fit; 0 = not fitted yet
    degree_features: int = 0       # > 0: graphs without x get one-hot degrees (clipped) of this width
    normalize: str = "none"        # "row": non-negative features divided by their row sum (if > 1), as PyG's
                                   # NormalizeFeatures does
    self_loops: bool = False       # replace any self-loops by exactly one per node
    max_nodes: int = 10_000_000    # a declared node count above this is refused before anything is allocated

    def validate(self) -> None:
        super().validate()
        self.check(self.num_features >= 0, "num_features", "must be >= 0")
        self.check(self.degree_features >= 0, "degree_features", "must be >= 0")
        self.check(self.normalize in ("none", "row"), "normalize", "must be 'none' or 'row'")


class GraphProcessor(Processor):
    config_class = GraphProcessorConfig

    def _fields(self, example: Any, name: str) -> tuple[Tensor | None, Tensor, int]:
        if isinstance(example, dict):
            x, ei, n = example.get("x"), example.get("edge_index"), example.get("num_nodes")
        elif hasattr(example, "edge_index") and hasattr(example, "num_nodes"):      # a PyG Data
            x, ei, n = getattr(example, "x", None), example.edge_index, example.num_nodes
        else:
            raise BadExample(name, "graph", f"expected a PyG Data or a dict with 'edge_index' (and 'x'), got "
                                            f"{type(example).__name__}")
        if ei is None:
            raise BadExample(name, "edge_index", "missing")
        ei = numeric_array(ei, name, "edge_index", integer=True)
        if ei.dim() != 2 or ei.shape[0] != 2:
            raise BadExample(name, "edge_index", f"expected shape [2, E], got {tuple(ei.shape)}")
        if x is not None:
            x = numeric_array(x, name, "x")
            if x.dim() != 2:
                raise BadExample(name, "x", f"expected node features [N, F], got shape {tuple(x.shape)}")
        if n is None:
            n = x.shape[0] if x is not None else (int(ei.max()) + 1 if ei.numel() else 0)
        try:
            n = int(n)
        except (TypeError, ValueError):
            raise BadExample(name, "num_nodes", f"expected an integer, got {n!r}") from None
        if x is not None and n != x.shape[0]:        # before any per-node allocation
            raise BadExample(name, "x", f"{x.shape[0]} feature rows for {n} nodes")
        if n > self.config.max_nodes:
            raise BadExample(name, "num_nodes", f"{n} nodes exceeds max_nodes={self.config.max_nodes} "
                                                "(raise it in the processor config for graphs this large)")
        return x, ei, n

    def _features(self, x: Tensor | None, ei: Tensor, n: int, name: str) -> Tensor:
        if x is None:
            if not self.config.degree_features:
                raise BadExample(name, "x", "the graph has no node features (set degree_features to use degrees)")
            deg = torch.bincount(ei[0], minlength=n).clamp(max=self.config.degree_features - 1)
            return torch.nn.functional.one_hot(deg, self.config.degree_features).float()
        return x

    def fit(self, examples: Any) -> GraphProcessor:
        first = examples[0]
        x, ei, n = self._fields(first, "0")
        self.config.num_features = int(self._features(x, ei, n, "0").shape[1])
        return self

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        name = name or "graph"
        x, ei, n = self._fields(example, name)
        if n == 0:
            raise BadExample(name, "num_nodes", "empty graph (0 nodes)")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            raise BadExample(name, "edge_index", f"node index out of range [0, {n}): min {int(ei.min())}, "
                                                 f"max {int(ei.max())}")
        x = self._features(x, ei, n, name)
        if x.shape[0] != n:
            raise BadExample(name, "x", f"{x.shape[0]} feature rows for {n} nodes")
        if not bool(torch.isfinite(x).all()):
            raise BadExample(name, "x", f"{int((~torch.isfinite(x)).sum())} NaN/inf feature values")
        if self.config.num_features and x.shape[1] != self.config.num_features:
            raise BadExample(name, "x", f"{x.shape[1]} features per node; the model expects "
                                        f"{self.config.num_features}")
        if self.config.normalize == "row":
            if bool((x < 0).any()):
                raise BadExample(name, "x", "negative feature values cannot be row-normalised (normalize: row)")
            x = x / x.sum(dim=1, keepdim=True).clamp(min=1.0)
        if self.config.self_loops:
            ei = torch.cat([ei[:, ei[0] != ei[1]], torch.arange(n).expand(2, n)], dim=1)
        out = {"x": x, "edge_index": ei}
        seeds = example.get("seed_mask") if isinstance(example, dict) else getattr(example, "seed_mask", None)
        if seeds is not None:                 # a sampled subgraph (modalities.graph.sampling): its seed nodes
            if not torch.is_tensor(seeds) or seeds.dtype != torch.bool or seeds.shape != (n,):
                raise BadExample(name, "seed_mask", f"expected a boolean tensor of {n} nodes")
            out["seed_mask"] = seeds
        return out

    def read_many(self, path: str) -> list[Any]:
        """Every graph of a graph folder (``nodes`` and ``edges`` tables with a ``graph`` column, as
        :func:`~modalities.graph.data.graph_folder` describes; a ``label`` column is not a feature)."""
        return [graph for _, graph in self.read_named(path)]

    def read_named(self, path: str) -> list[tuple[str, Any]]:
        """Every graph of a graph folder, named by its graph id."""
        from .data import graph_folder, load_data
        if not Path(path).is_dir():
            raise ValueError(f"{path}: graphs are read from a folder holding nodes.csv and edges.csv")
        data = load_data(graph_folder(path))
        return [(data.name(i), data.examples[i]) for i in range(len(data))]

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        sizes = torch.tensor([it["x"].shape[0] for it in items])
        offsets = torch.cumsum(sizes, 0) - sizes
        edges = torch.cat([it["edge_index"] + off for it, off in zip(items, offsets.tolist())], dim=1)
        batch = torch.repeat_interleave(torch.arange(len(items)), sizes)
        out = {"x": torch.cat([it["x"] for it in items]), "edge_index": edges, "batch": batch,
               "num_graphs": torch.tensor(len(items))}
        if all("seed_mask" in it for it in items):
            out["seed_mask"] = torch.cat([it["seed_mask"] for it in items])
        return out

    def encoder_config(self) -> dict[str, Any]:
        return {"in_dim": self.config.num_features}
