"""Graph processor: PyG ``Data`` (or ``{"x", "edge_index"}``) → validated tensors; batches of graphs as one
disjoint union with a ``batch`` vector, as PyG does. Bad input (empty graph, edge index out of range,
NaN features, a feature width other than the model's) gets a clear error naming the graph and field.

The preprocessing GraphMAE (Hou et al. 2022) applies travels with the model: row-normalised features (PyG's
``NormalizeFeatures``, for the citation graphs), one-hot degrees for graphs without features, and self-loops.
Edge lists are read as undirected graphs (each edge in both directions, once) unless ``directed: true``.

A node example (:mod:`modalities.graph.nodes`) becomes the graph around its node with the centre marked: the
whole graph up to ``whole_graph_nodes`` nodes (a batch of node examples of one graph holds it once: the centre
embeddings are exact, and GraphMAE pretrains on the whole graph as for one graph example), else its sampled
``len(node_fanout)``-hop neighbourhood (GraphSAGE's bounded fan-out, Hamilton et al. 2017; the draws seeded by the
node, so a node's neighbourhood is the same at every call)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig, Unreadable
from zoo.plugin import numeric_array

from .nodes import NodeExample, checked_edges, undirected

logger = logging.getLogger(__name__)


@dataclass
class GraphProcessorConfig(ProcessorConfig):
    num_features: int = 0          # learned by fit; 0 = not fitted yet
    degree_features: int = 0       # > 0: graphs without x get one-hot degrees (clipped) of this width
    append_degrees: bool = False   # with degree_features: graphs with x get those one-hot degrees after their x
    normalize: str = "none"        # "row": non-negative features divided by their row sum (if > 1), as PyG's
                                   # NormalizeFeatures does
    self_loops: bool = False       # replace any self-loops by exactly one per node
    max_nodes: int = 10_000_000    # a declared node count above this is refused before anything is allocated
    directed: bool = False         # False: an edge list is an undirected graph (reverses added, duplicates removed)
    whole_graph_nodes: int = 20_000    # a node example of a graph up to this size sees the whole graph
    node_fanout: list[int] = field(default_factory=lambda: [25, 25])   # larger graphs: neighbours per hop

    def validate(self) -> None:
        super().validate()
        self.check(self.whole_graph_nodes >= 0, "whole_graph_nodes", "must be >= 0")
        self.check(len(self.node_fanout) >= 1 and all(int(f) >= 1 for f in self.node_fanout), "node_fanout",
                   "one count >= 1 per hop (at least one hop)")
        self.check(self.num_features >= 0, "num_features", "must be >= 0")
        self.check(self.degree_features >= 0, "degree_features", "must be >= 0")
        self.check(not self.append_degrees or self.degree_features > 0, "append_degrees",
                   "needs degree_features > 0 (the width of the one-hot degrees)")
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
        ei = checked_edges(ei, None, name)
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
        if x is not None and (not self.config.append_degrees or x.shape[0] != n):
            return x                                          # (a row count that does not fit is named below)
        if not self.config.degree_features:
            raise BadExample(name, "x", "the graph has no node features (set degree_features to use degrees)")
        deg = torch.bincount(ei[0], minlength=n).clamp(max=self.config.degree_features - 1)
        degrees = torch.nn.functional.one_hot(deg, self.config.degree_features).to(x.dtype if x is not None
                                                                                   else torch.float32)
        return degrees if x is None else torch.cat([x, degrees], dim=1)

    def fit(self, examples: Any) -> GraphProcessor:
        first = examples[0]
        if isinstance(first, NodeExample):
            first = first.graph.data
        x, ei, n = self._fields(first, "0")
        self.config.num_features = int(self._features(x, ei, n, "0").shape[1])
        return self

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        name = name or "graph"
        if isinstance(example, Unreadable):          # a graph its tables could not give (zoo.plugin.Unreadable)
            raise example.error
        if isinstance(example, NodeExample):
            return self._node(example, name)
        return self._graph(example, name)

    def _node(self, example: NodeExample, name: str) -> dict[str, Tensor]:
        """A node example: the whole graph (small graphs; collated once per batch) or the node's sampled
        neighbourhood, with ``centre`` the node's position in it."""
        from .sampling import InEdges, _generator, sample_subgraph
        shared, i = example.graph, int(example.index)
        key = json.dumps(self.config.to_dict(), sort_keys=True)
        whole = shared.memo.get(key)
        if whole is None:                     # the graph processed once per processor settings (not per node)
            whole = self._graph(shared.data, shared.name)
            shared.memo.clear()
            shared.memo[key] = whole
        n = whole["x"].shape[0]
        if not 0 <= i < n:
            raise BadExample(name, "node", f"node index {i} outside the graph's {n} nodes")
        if n <= self.config.whole_graph_nodes:
            return {"x": whole["x"], "edge_index": whole["edge_index"], "centre": torch.tensor([i]),
                    "graph_key": torch.tensor([shared.key])}
        if "csr" not in whole:
            whole["csr"] = InEdges(whole["edge_index"], n)
        nodes, ei = sample_subgraph(whole["csr"], torch.tensor([i]), self.config.node_fanout, _generator(i))
        return {"x": whole["x"][nodes], "edge_index": ei, "centre": torch.tensor([0])}

    def _graph(self, example: Any, name: str) -> dict[str, Tensor]:
        x, ei, n = self._fields(example, name)
        if n == 0:
            raise BadExample(name, "num_nodes", "empty graph (0 nodes)")
        ei = checked_edges(ei, n, name)
        listed = ei.shape[1]
        if not self.config.directed:
            ei = undirected(ei, n)
        if not getattr(self, "_told", False):              # said once per processor, either way
            self._told = True
            if self.config.directed:
                logger.info("edges read as directed, one way as listed: %d (graph %s; processor.directed: false "
                            "reads each both ways)", listed, name)
            else:
                logger.info("edges read as undirected: %d listed, %d after adding reverses / duplicates removed "
                            "(graph %s; processor.directed: true keeps them one way)", listed, ei.shape[1], name)
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
                raise BadExample(name, "x", "negative feature values cannot be row-normalised (processor.normalize: "
                                            "row; --set processor.normalize=none reads them as they are)")
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
        if any("centre" in it for it in items):
            return self._collate_nodes(items)
        sizes = torch.tensor([it["x"].shape[0] for it in items])
        offsets = torch.cumsum(sizes, 0) - sizes
        edges = torch.cat([it["edge_index"] + off for it, off in zip(items, offsets.tolist())], dim=1)
        batch = torch.repeat_interleave(torch.arange(len(items)), sizes)
        slot = torch.arange(int(sizes.max()) if len(items) else 0)
        valid = slot < sizes[:, None]                   # the padded [B, N_max] layout, made here: the encoder reads
        out = {"x": torch.cat([it["x"] for it in items]), "edge_index": edges, "batch": batch,    # no size off a
               "num_graphs": torch.tensor(len(items)),                                            # tensor's value
               "node_slots": torch.where(valid, offsets[:, None] + slot, 0), "node_valid": valid}
        if all("seed_mask" in it for it in items):
            out["seed_mask"] = torch.cat([it["seed_mask"] for it in items])
        return out

    def _collate_nodes(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Node examples: their graphs as one disjoint union — a graph shared by several of them (``graph_key``)
        once — and ``centre [B]``, each example's node in it."""
        if not all("centre" in it for it in items):
            raise ValueError("a batch mixes node examples and graph examples")
        parts: list[dict[str, Tensor]] = []
        at: dict[int, int] = {}
        centre, offset = [], 0
        for it in items:
            key = int(it["graph_key"]) if "graph_key" in it else None
            if key is None or key not in at:
                if key is not None:
                    at[key] = offset
                parts.append(it)
                centre.append(offset + int(it["centre"]))
                offset += it["x"].shape[0]
            else:
                centre.append(at[key] + int(it["centre"]))
        out = self.collate([{"x": p["x"], "edge_index": p["edge_index"]} for p in parts])
        out["centre"] = torch.tensor(centre)
        return out

    def encoder_config(self) -> dict[str, Any]:
        return {"in_dim": self.config.num_features}
