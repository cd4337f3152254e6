"""Hand-made graph features for the probes (``Modality.baselines``; docs/architecture.md, "The modality
contract"): one entry that dispatches on the kind of example.

- Graph examples: structure — node and edge counts, degree statistics (mean, std, max, a histogram), local
  clustering coefficient statistics, the largest eigenvalues of the normalised Laplacian — plus the mean and std
  of the node features. The classical graph-kernel-free baseline (e.g. the degree/clustering/spectrum
  descriptors compared in Errica et al. 2020).
- Node examples: the node's features and their 1- and 2-hop propagations ``Â x, Â² x`` with
  ``Â = D^-1/2 (A + I) D^-1/2``, as SGC (Wu et al. 2019) computes them.

Every graph is read as the model's processor reads it (its features, normalisation, direction), then as an
undirected simple graph for the structure. All of it is vectorised over the nodes and edges of a batch of graphs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .nodes import NodeExample, NodeExamples, undirected

__all__ = ["structure_features", "graph_structure", "sgc_features", "DEGREE_BINS", "EIGENVALUES"]

DEGREE_BINS = (1, 2, 3, 4, 5, 8, 16)      # histogram bins: 0, 1, 2, 3, 4, 5-7, 8-15, 16+
EIGENVALUES = 8                           # largest eigenvalues of the normalised Laplacian kept (zero-padded)
DENSE_BUDGET = 20_000_000                 # entries of the padded Laplacians decomposed at once


def structure_features(examples: Sequence[Any], processor: Any) -> Tensor | None:
    """``[N, F]``: :func:`graph_structure` for graph examples, :func:`sgc_features` for node examples; ``None``
    for no examples."""
    if len(examples) == 0:
        return None
    if isinstance(examples[0], NodeExample):
        return sgc_features(examples, processor)
    items = [processor(examples[i], name=f"graph {i}") for i in range(len(examples))]
    batch = processor.collate(items)
    return graph_structure(batch["x"], batch["edge_index"], batch["batch"], len(items))


def _simple(edge_index: Tensor, n: int) -> Tensor:
    """Both directions, each pair once, no self-loops."""
    ei = undirected(edge_index, n)
    return ei[:, ei[0] != ei[1]]


def _scatter_mean_std(v: Tensor, index: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Per-group mean and (population) std of the rows of ``v`` ``[N, F]``."""
    count = torch.bincount(index, minlength=groups).clamp(min=1).to(v.dtype)[:, None]
    mean = torch.zeros(groups, v.shape[1], dtype=v.dtype).index_add_(0, index, v) / count
    var = torch.zeros(groups, v.shape[1], dtype=v.dtype).index_add_(0, index, (v - mean[index]) ** 2) / count
    return mean, var.sqrt()


def clustering(edge_index: Tensor, n: int) -> Tensor:
    """Local clustering coefficient of every node of a simple undirected graph (both directions listed):
    ``2 T_i / (d_i (d_i - 1))`` with ``T_i`` the triangles through ``i`` (``(A³)_ii / 2``); 0 below degree 2."""
    deg = torch.bincount(edge_index[0], minlength=n).double()
    if edge_index.shape[1] == 0:
        return deg
    adj = torch.sparse_coo_tensor(edge_index, torch.ones(edge_index.shape[1], dtype=torch.float64), (n, n),
                                  check_invariants=True)
    with warnings.catch_warnings():                           # "sparse support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        sq = torch.sparse.mm(adj, adj).coalesce()             # (A²)_ij: common neighbours of i and j
    keys = sq.indices()[0] * n + sq.indices()[1]
    want = edge_index[0] * n + edge_index[1]
    pos = torch.searchsorted(keys, want).clamp(max=keys.numel() - 1)
    common = torch.where(keys[pos] == want, sq.values()[pos], torch.zeros(()).double())
    triangles = torch.zeros(n, dtype=torch.float64).index_add_(0, edge_index[0], common) / 2
    return torch.where(deg > 1, 2 * triangles / (deg * (deg - 1)).clamp(min=1), torch.zeros(()).double())


def laplacian_top_eigenvalues(edge_index: Tensor, batch: Tensor, graphs: int, k: int = EIGENVALUES) -> Tensor:
    """``[G, k]``: each graph's ``k`` largest eigenvalues of ``L = I - D^-1/2 A D^-1/2`` (an isolated node's
    row is zero), largest first, zero-padded; the graphs decomposed as a batch of padded dense matrices."""
    from torch_geometric.utils import to_dense_adj
    sizes = torch.bincount(batch, minlength=graphs)
    out = torch.zeros(graphs, k, dtype=torch.float64)
    n_max = int(sizes.max()) if graphs else 0
    per = max(1, DENSE_BUDGET // max(n_max * n_max, 1))
    starts = torch.cumsum(sizes, 0) - sizes
    for g0 in range(0, graphs, per):                          # chunks of graphs, not nodes
        g1 = min(graphs, g0 + per)
        lo, hi = int(starts[g0]), int(starts[g1 - 1] + sizes[g1 - 1])
        keep = (edge_index[0] >= lo) & (edge_index[0] < hi)
        adj = to_dense_adj(edge_index[:, keep] - lo, batch[lo:hi] - g0, max_num_nodes=n_max,
                           batch_size=g1 - g0).double()
        deg = adj.sum(dim=2)
        dinv = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros(()).double())
        lap = torch.diag_embed((deg > 0).double()) - dinv[:, :, None] * adj * dinv[:, None, :]
        vals = torch.linalg.eigvalsh(lap).flip(1)[:, :k]      # descending; padding rows give 0
        out[g0:g1, :vals.shape[1]] = vals
    return out


def graph_structure(x: Tensor, edge_index: Tensor, batch: Tensor, graphs: int) -> Tensor:
    """``[G, F]`` per graph: log node and edge counts, degree mean/std/log max and histogram (shares of nodes
    per bin of :data:`DEGREE_BINS`), clustering mean/std/max, the :data:`EIGENVALUES` largest normalised-Laplacian
    eigenvalues, and the node features' mean and std."""
    n = x.shape[0]
    ei = _simple(edge_index, n)
    deg = torch.bincount(ei[0], minlength=n).double()
    nodes = torch.bincount(batch, minlength=graphs).double()
    edges = torch.zeros(graphs, dtype=torch.float64).index_add_(0, batch[ei[0]], torch.ones(ei.shape[1]).double()) / 2
    d_mean, d_std = _scatter_mean_std(deg[:, None], batch, graphs)
    d_max = torch.zeros(graphs, dtype=torch.float64).scatter_reduce_(0, batch, deg, "amax", include_self=False)
    bins = torch.bucketize(deg, torch.tensor(DEGREE_BINS, dtype=torch.float64), right=True)
    hist = torch.zeros(graphs, len(DEGREE_BINS) + 1, dtype=torch.float64).index_put_(
        (batch, bins), torch.ones(n, dtype=torch.float64), accumulate=True) / nodes.clamp(min=1)[:, None]
    c = clustering(ei, n)
    c_mean, c_std = _scatter_mean_std(c[:, None], batch, graphs)
    c_max = torch.zeros(graphs, dtype=torch.float64).scatter_reduce_(0, batch, c, "amax", include_self=False)
    eig = laplacian_top_eigenvalues(ei, batch, graphs)
    x_mean, x_std = _scatter_mean_std(x.double(), batch, graphs)
    return torch.cat([nodes.log1p()[:, None], edges.log1p()[:, None], d_mean, d_std, d_max.log1p()[:, None], hist,
                      c_mean, c_std, c_max[:, None], eig, x_mean, x_std], dim=1).float()


def sgc_features(examples: Sequence[Any], processor: Any) -> Tensor:
    """``[N, 3F]``: each node example's ``[x, Â x, Â² x]`` (SGC, Wu et al. 2019), each graph propagated once."""
    if isinstance(examples, NodeExamples):               # the data sources' node sets: indices at hand
        groups = [(examples.graph, examples.nodes, torch.arange(len(examples)))]
    else:
        keys = torch.tensor([ex.graph.key for ex in examples])
        index = torch.tensor([int(ex.index) for ex in examples])
        first = {ex.graph.key: ex.graph for ex in examples}
        groups = [(first[int(k)], index[keys == k], (keys == k).nonzero().squeeze(1)) for k in keys.unique()]
    out: Tensor | None = None
    for graph, nodes, rows in groups:                    # one propagation per graph
        item = processor(graph.data, name=graph.name)
        feats = _propagate(item["x"], item["edge_index"])[nodes]
        if out is None:
            out = torch.zeros(len(examples), feats.shape[1])
        out[rows] = feats
    return out


def _propagate(x: Tensor, edge_index: Tensor) -> Tensor:
    n = x.shape[0]
    ei = _simple(edge_index, n)
    loops = torch.arange(n).expand(2, n)
    ei = torch.cat([ei, loops], dim=1)
    deg = torch.bincount(ei[1], minlength=n).float()
    w = deg[ei[0]].rsqrt() * deg[ei[1]].rsqrt()
    h1 = torch.zeros_like(x).index_add_(0, ei[1], x[ei[0]] * w[:, None])
    h2 = torch.zeros_like(x).index_add_(0, ei[1], h1[ei[0]] * w[:, None])
    return torch.cat([x, h1, h2], dim=1)
