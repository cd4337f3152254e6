"""Node-level examples of one graph (docs/architecture.md, "The modality contract"): a node example is ``(the
shared graph, node index)``, so that node classification on one's own graph runs through the example-level
pipeline unchanged — stratified node splits, ``zoo finetune``, ``zoo predict`` naming nodes, the probes.

The processor turns a node example into the graph around it with the centre node marked
(:meth:`~modalities.graph.processor.GraphProcessor.__call__`); the encoder's ``pooled`` for such a batch is the
centre nodes' embeddings."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["SharedGraph", "NodeExample", "NodeExamples", "undirected", "checked_edges"]

_KEYS = itertools.count()


def checked_edges(edge_index: Any, num_nodes: int | None, where: str, rows: str = "edge") -> Tensor:
    """``edge_index`` as an int64 ``[2, E]`` tensor whose ids are integers in ``[0, num_nodes)``, else a
    :class:`~zoo.BadExample` naming ``where`` (the graph or file), the first bad edge (``rows``: what an edge is
    called there, e.g. ``edges.csv row``) and the field, source or target (docs/reliability.md). Never truncates
    (2.7 is not node 2) and never drops an edge. ``num_nodes`` None: the ids are checked to be integers only."""
    import numpy as np

    from zoo import BadExample
    from zoo.plugin import numeric_array
    if torch.is_tensor(edge_index) and not edge_index.is_floating_point() and not edge_index.is_complex():
        ei = edge_index.long()
    else:
        arr = np.asarray(edge_index.detach().cpu() if torch.is_tensor(edge_index) else edge_index)
        if arr.dtype.kind == "f" and arr.ndim == 2 and arr.shape[0] == 2:
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
            if bad.any():
                side, j = divmod(int(np.flatnonzero(bad.reshape(-1))[0]), arr.shape[1])
                raise BadExample(where, ("source", "target")[side], f"{rows} {j}: node id {float(arr[side, j]):g} "
                                                                     "is not an integer (ids are never truncated)")
        ei = numeric_array(arr, where, "edge_index", integer=True)
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise BadExample(where, "edge_index", f"expected shape [2, E] (sources, targets), got {tuple(ei.shape)}")
    if num_nodes is None:
        return ei
    bad = (ei < 0) | (ei >= num_nodes)
    if ei.numel() and bool(bad.any()):
        side, j = divmod(int(bad.reshape(-1).nonzero()[0]), ei.shape[1])
        raise BadExample(where, ("source", "target")[side],
                         f"{rows} {j}: node id {int(ei[side, j])} is outside the node table's {num_nodes} nodes "
                         f"(ids 0..{num_nodes - 1}); {int(bad.any(0).sum())} edge(s) in all")
    return ei


def undirected(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Every edge in both directions, each pair once (sorted by source, then target): an edge list read as an
    undirected graph, however it was listed (once, or both ways)."""
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1).long()
    key = torch.unique(both[0] * max(num_nodes, 1) + both[1])
    return torch.stack([key // max(num_nodes, 1), key % max(num_nodes, 1)])


class SharedGraph:
    """One graph whose nodes are examples. ``key`` identifies it inside a batch (a batch of node examples of
    one graph holds the graph once); the processor keeps its processed form here (``memo``), never pickled."""

    def __init__(self, data: Any, name: str) -> None:
        self.data, self.name, self.key = data, name, next(_KEYS)
        self.memo: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "memo": {}}


@dataclass(frozen=True)
class NodeExample:
    """Node ``index`` of ``graph`` (a :class:`SharedGraph`)."""

    graph: SharedGraph
    index: int


class NodeExamples(Sequence):
    """The node examples ``nodes`` (indices) of one shared graph, a lazy sequence with ``select``."""

    def __init__(self, graph: SharedGraph, nodes: Tensor) -> None:
        self.graph, self.nodes = graph, nodes.long()

    def __len__(self) -> int:
        return int(self.nodes.numel())

    def __getitem__(self, i: int) -> NodeExample:           # type: ignore[override]
        return NodeExample(self.graph, int(self.nodes[i]))

    def select(self, idx: Sequence[int]) -> NodeExamples:
        return NodeExamples(self.graph, self.nodes[torch.as_tensor(list(idx), dtype=torch.long)])
