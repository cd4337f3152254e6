"""Full-graph GraphMAE embeddings in layers (docs/architecture.md, "Layers": the graph modality's own
inference path): layer ``l`` for every node, a chunk of target nodes at a time from their in-edges, before
layer ``l + 1``. Exact — every neighbour counts, unlike inference on sampled neighbourhoods (Hamilton et al.
2017) — and memory-bounded: the graph, two layers' node vectors (plus a GAT layer's projection) and one
chunk's edges, never one layer's messages over all edges at once. For graphs pretrained in mini-batches
(:mod:`modalities.graph.sampling`), whose one full-batch forward would not fit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATConv

from .model import attention
from .sampling import InEdges

__all__ = ["layerwise_node_embeddings"]


def _gat_chunk(conv: GATConv, proj: Tensor, a_src: Tensor, a_dst: Tensor, rows: Tensor, tgt: Tensor,
               src: Tensor) -> Tensor:
    """A GAT layer's output (eval mode) at ``rows`` from their in-edges ``src → rows[tgt]`` (self-loops already
    dropped if the layer adds its own), given every node's projection ``proj [N, H, C]`` and attention terms
    ``a_src``, ``a_dst [N, H]`` (Velickovic et al. 2018)."""
    d_rows = a_dst[rows]
    logits = F.leaky_relu(a_src[src] + d_rows[tgt], conv.negative_slope)
    self_logits = F.leaky_relu(a_src[rows] + d_rows, conv.negative_slope) if conv.add_self_loops else None
    alpha, alpha_self = attention(logits, tgt, rows.numel(), self_logits)
    h = (proj.new_zeros(rows.numel(), conv.heads, conv.out_channels) if alpha_self is None
         else alpha_self[:, :, None] * proj[rows])
    h.index_add_(0, tgt, alpha[:, :, None] * proj[src])
    h = h.reshape(rows.numel(), -1) if conv.concat else h.mean(dim=1)
    return h + conv.bias if conv.bias is not None else h


@torch.no_grad()
def layerwise_node_embeddings(encoder, x: Tensor, edge_index: Tensor, chunk_nodes: int = 16384) -> Tensor:
    """``encoder.node_embeddings`` of a whole (processed) graph in eval mode, layer by layer in chunks of
    ``chunk_nodes`` target nodes; equal to the full-batch forward up to float rounding (the sums run in
    another order)."""
    if encoder.training:
        raise RuntimeError("layerwise_node_embeddings gives eval-mode embeddings: call encoder.eval() first")
    if chunk_nodes < 1:
        raise ValueError(f"chunk_nodes must be >= 1, got {chunk_nodes}")
    gnn, n = encoder.gnn, x.shape[0]
    gat = isinstance(gnn.convs[0], GATConv)
    loops = gat and gnn.convs[0].add_self_loops              # as GATConv does: the input's self-loops dropped
    csr = InEdges(edge_index, n)                             # chunk by chunk (no loop-normalised copy of E)
    for i, conv in enumerate(gnn.convs):
        out = torch.empty(n, encoder.config.hidden, dtype=x.dtype, device=x.device)
        if gat:
            proj = conv.lin(x).view(n, conv.heads, conv.out_channels)
            a_src, a_dst = (proj * conv.att_src).sum(-1), (proj * conv.att_dst).sum(-1)
        for start in range(0, n, chunk_nodes):                 # a loop over chunks, vectorised within
            rows = torch.arange(start, min(n, start + chunk_nodes), device=x.device)
            tgt, src = csr.of(rows)
            if loops:                                          # (one per node is added by _gat_chunk)
                keep = src != rows[tgt]
                tgt, src = tgt[keep], src[keep]
            if gat:
                h = _gat_chunk(conv, proj, a_src, a_dst, rows, tgt, src)
            else:                                              # GIN (Xu et al. 2019): MLP((1 + eps) x + sum)
                agg = torch.zeros(rows.numel(), x.shape[1], dtype=x.dtype, device=x.device)
                h = conv.nn((1 + conv.eps) * x[rows] + agg.index_add_(0, tgt, x[src]))
            if gnn.res is not None:
                h = h + gnn.res[i](x[rows])
            out[rows] = gnn.acts[i](gnn.norms[i](h))
        x = out
    return x
