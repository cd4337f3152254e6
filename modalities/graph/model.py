"""GraphMAE (Hou et al. 2022): masked node-feature reconstruction with a GNN encoder and decoder.

Node features of a random share of nodes are replaced by a learnable [MASK] token (a small share of them by
other nodes' features instead); the encoder embeds the graph; its code is re-masked (the masked nodes'
codes are zeroed) before a one-layer decoder reconstructs the input features; the loss is the scaled cosine
error on the masked nodes only. GAT for node-level tasks, GIN for graph-level ones, both PyG's layers (a GAT
layer's forward is :func:`gat_conv`, equal to GATConv's). In eval mode the encoder is a tensor program whose
shapes follow from its inputs (the padded layout from ``num_graphs`` and the node counts), so it exports to ONNX
with dynamic node, edge and graph counts (tests/test_graph_export.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GINConv

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, embedding_signals
from zoo.masking import node_mask
from zoo.objectives import scaled_cosine_error

from .sampling import seed_node_mask

POOLS = ("mean", "sum", "max")


@dataclass
class GraphMAEConfig(Config):
    in_dim: int = 0                 # set from the fitted processor
    hidden: int = 512
    layers: int = 2
    heads: int = 4                  # GAT heads (hidden is split across them and concatenated)
    gnn: str = "gat"                # "gat" (node level) or "gin" (graph level)
    in_drop: float = 0.2
    attn_drop: float = 0.1
    negative_slope: float = 0.2
    residual: bool = False
    norm: str = "none"              # "none", "batchnorm" or "layernorm"
    pooling: str = "mean"
    init: str = "xavier-relu"       # GAT weights: "xavier-relu" (GraphMAE's GAT) or "pyg" (GATConv's glorot)

    def validate(self) -> None:
        self.check(self.in_dim >= 0, "in_dim", "must be >= 0 (0 = from the processor)")
        self.check(self.gnn in ("gat", "gin"), "gnn", "must be 'gat' or 'gin'")
        self.check(self.gnn != "gat" or self.hidden % self.heads == 0, "hidden", "must be divisible by heads")
        self.check(self.norm in NORMS, "norm", f"must be one of {sorted(NORMS)}")
        self.check(self.pooling in POOLS, "pooling", f"must be one of {sorted(POOLS)}")
        self.check(self.layers >= 1, "layers", "must be >= 1")
        self.check(self.init in ("xavier-relu", "pyg"), "init", "must be 'xavier-relu' or 'pyg'")


@dataclass
class GraphMAEPretrainingConfig(Config):
    mask_rate: float = 0.5
    replace_rate: float = 0.05
    gamma: float = 3.0              # exponent of the scaled cosine error
    decoder: str = "gat"            # "gat" or "gin"
    decoder_heads: int = 1

    def validate(self) -> None:
        self.check(0 < self.mask_rate < 1, "mask_rate", "must lie in (0, 1)")
        self.check(0 <= self.replace_rate < 1, "replace_rate", "must lie in [0, 1)")
        self.check(self.gamma >= 1, "gamma", "must be >= 1")
        self.check(self.decoder in ("gat", "gin"), "decoder", "must be 'gat' or 'gin'")


NORMS = {"none": nn.Identity, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}


def _gin_mlp(d_in: int, d_hidden: int, d_out: int, norm: str) -> nn.Module:
    """GIN's update MLP (Xu et al. 2019): Linear → norm → PReLU → Linear."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), NORMS[norm](d_hidden), nn.PReLU(), nn.Linear(d_hidden, d_out))


def gnn_layer(cfg: GraphMAEConfig, d_in: int, d_out: int) -> nn.Module:
    if cfg.gnn == "gat":
        return GATConv(d_in, d_out // cfg.heads, heads=cfg.heads, concat=True, dropout=cfg.attn_drop,
                       negative_slope=cfg.negative_slope)
    return GINConv(_gin_mlp(d_in, d_out, d_out, cfg.norm), train_eps=False)


def init_gat(conv: GATConv) -> None:
    """Initialise a GATConv as GraphMAE's GAT layers are: Xavier-normal projection and attention vectors with
    the ReLU gain (fan-in/out of the attention vectors ``[1, H, C]`` taken as ``H*C`` and ``C``), zero bias.
    Row-normalised inputs (Cora's features sum to 1) make the result sensitive to this scale: PyG's
    glorot-uniform default gives 78.5% instead of 84.4% on Cora (seed 0, 1500 epochs)."""
    gain = nn.init.calculate_gain("relu")
    nn.init.xavier_normal_(conv.lin.weight, gain=gain)
    for att in (conv.att_src, conv.att_dst):
        nn.init.xavier_normal_(att, gain=gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def attention(logits: Tensor, dst: Tensor, rows: int, self_logits: Tensor | None = None,
              dead: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """GAT's softmax over each destination row's in-edges (``logits [E, H]``, edge ``e`` into row ``dst[e]`` of
    ``rows``) and, given ``self_logits [rows, H]``, its own self-loop, held apart from the edges: that self-loop
    is every row's, whatever the edge list holds, so the edge list keeps its length. Edges marked ``dead [E]``
    get no weight (an input's own self-loops, which GATConv replaces by that one). Returns the edges' weights
    and the self-loops' ``[rows, H]`` (None without ``self_logits``); as PyG's ``softmax`` (max subtracted per
    row, 1e-16 added to each sum), but every shape follows from the inputs' shapes: no boolean indexing."""
    if dead is not None:
        logits = logits.masked_fill(dead[:, None], float("-inf"))
    start = (torch.full((rows, logits.shape[1]), float("-inf"), dtype=logits.dtype, device=logits.device)
             if self_logits is None else self_logits.detach())
    top = start.scatter_reduce(0, dst[:, None].expand_as(logits), logits.detach(), "amax", include_self=True)
    weight = (logits - top.index_select(0, dst)).exp()
    if self_logits is None:
        total = torch.zeros_like(top).index_add_(0, dst, weight) + 1e-16
        return weight / total.index_select(0, dst), None
    self_weight = (self_logits - top).exp()
    total = self_weight.clone().index_add_(0, dst, weight) + 1e-16
    return weight / total.index_select(0, dst), self_weight / total


def gat_conv(conv: GATConv, x: Tensor, edge_index: Tensor) -> Tensor:
    """``conv(x, edge_index)`` of a PyG ``GATConv`` (Velickovic et al. 2018), in train mode too (dropout on the
    attention), as a tensor program whose shapes follow from the inputs' shapes, so that it exports (ONNX, dynamic
    node and edge counts). GATConv removes the input's self-loops (boolean indexing: a data-dependent shape) and
    adds one per node; here the input's self-loops stay but weigh nothing and each node's own self-loop is a
    dense term (:func:`attention`). Same parameters, same values; the dropout draws differently."""
    if conv.lin is None or conv.lin_edge is not None:
        raise ValueError("gat_conv takes a GATConv of one node type without edge features")
    heads, out, n = conv.heads, conv.out_channels, x.shape[0]
    proj = conv.lin(x).view(n, heads, out)                                   # [N, H, C]
    a_src, a_dst = (proj * conv.att_src).sum(-1), (proj * conv.att_dst).sum(-1)
    src, dst = edge_index[0], edge_index[1]
    logits = F.leaky_relu(a_src.index_select(0, src) + a_dst.index_select(0, dst), conv.negative_slope)
    if conv.add_self_loops:
        alpha, alpha_self = attention(logits, dst, n, F.leaky_relu(a_src + a_dst, conv.negative_slope), src == dst)
    else:
        alpha, alpha_self = attention(logits, dst, n)
    alpha = F.dropout(alpha, conv.dropout, conv.training)
    h = (torch.zeros_like(proj) if alpha_self is None
         else F.dropout(alpha_self, conv.dropout, conv.training)[:, :, None] * proj)
    h = h.index_add_(0, dst, alpha[:, :, None] * proj.index_select(0, src))
    h = h.reshape(n, heads * out) if conv.concat else h.mean(dim=1)
    if conv.res is not None:
        h = h + conv.res(x)
    return h + conv.bias if conv.bias is not None else h


def gat_rows(conv: GATConv, x: Tensor, edge_index: Tensor, rows: Tensor) -> Tensor:
    """``conv(x, edge_index)[rows]``, computed by aggregating the inputs before projecting them.

    A GAT output is linear in the projected inputs: ``sum_j a_ij W x_j = W sum_j a_ij x_j``, and each attention
    logit ``att · W x`` equals ``(W^T att) · x``. So only the edges into ``rows`` carry messages, those messages
    have the input's width instead of the output's, and only ``rows`` are projected. GraphMAE's decoder (512 →
    1433 features on Cora, loss on the masked half of the nodes) gets several times cheaper; the values are the
    same as PyG's (dropout on the attention draws differently). Training only: the edges into ``rows`` are
    picked by boolean indexing (:func:`gat_conv` is the exportable layer).
    """
    heads, out = conv.heads, conv.out_channels
    weight = conv.lin.weight.view(heads, out, -1)                            # [H, C, in]
    att_src = torch.einsum("hc,hci->ih", conv.att_src[0], weight)            # [in, H]
    att_dst = torch.einsum("hc,hci->ih", conv.att_dst[0], weight)
    n, r = x.shape[0], rows.numel()
    slot = torch.full((n,), -1, dtype=torch.long, device=x.device)
    slot[rows] = torch.arange(r, device=x.device)
    src, dst = edge_index[0], slot[edge_index[1]]
    keep = dst >= 0
    if conv.add_self_loops:                                  # the input's self-loops give way to one per row
        keep &= src != edge_index[1]
    src, dst = src[keep], dst[keep]
    x_rows, d_rows = x[rows], x[rows] @ att_dst
    logits = F.leaky_relu((x @ att_src).index_select(0, src) + d_rows.index_select(0, dst), conv.negative_slope)
    self_logits = F.leaky_relu(x_rows @ att_src + d_rows, conv.negative_slope) if conv.add_self_loops else None
    alpha, alpha_self = attention(logits, dst, r, self_logits)                 # [E, H], [R, H]
    alpha = F.dropout(alpha, conv.dropout, conv.training)
    messages = alpha[:, :, None] * x.index_select(0, src)[:, None, :]          # [E, H, in]
    agg = (x.new_zeros(r, heads, x.shape[1]) if alpha_self is None
           else F.dropout(alpha_self, conv.dropout, conv.training)[:, :, None] * x_rows[:, None, :])
    agg = agg.index_add_(0, dst, messages)
    h = torch.einsum("rhi,hci->rhc", agg, weight)
    h = h.reshape(r, heads * out) if conv.concat else h.mean(dim=1)
    return h + conv.bias if conv.bias is not None else h


def dense_batch(index: Tensor, num_graphs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where each graph's nodes go in a padded ``[B, N_max]`` layout (``to_dense_batch``'s, nodes sorted by
    graph): ``rows [B, N_max]`` (the node at each slot, 0 at padding), ``valid [B, N_max]`` and ``counts [B]``.
    ``B`` is ``num_graphs``' value and ``N_max`` the largest count: sizes read off tensors (two host reads, as any
    padded output needs), so an exported graph keeps them dynamic."""
    counts = torch.zeros(num_graphs.item(), dtype=torch.long, device=index.device)
    counts = counts.index_add_(0, index, torch.ones_like(index))
    slot = torch.arange(counts.max().item(), device=index.device)
    valid = slot < counts[:, None]
    rows = torch.where(valid, (counts.cumsum(0) - counts)[:, None] + slot, 0)
    return rows, valid, counts


def pool(tokens: Tensor, valid: Tensor, counts: Tensor, how: str) -> Tensor:
    """Each graph's node vectors pooled (``mean``, ``sum`` or ``max``; 0 for a graph without nodes), from the
    padded ``tokens [B, N_max, D]`` (zero at padding)."""
    if how == "max":
        top = tokens.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        return torch.where(counts[:, None] > 0, top, 0.0)
    total = tokens.sum(dim=1)
    return total / counts.clamp(min=1)[:, None].to(total.dtype) if how == "mean" else total


class GNN(nn.Module):
    """``layers`` GNN layers, each followed by an optional norm and PReLU (the encoder's last one too)."""

    def __init__(self, cfg: GraphMAEConfig) -> None:
        super().__init__()
        dims = [cfg.in_dim] + [cfg.hidden] * cfg.layers
        self.convs = nn.ModuleList(gnn_layer(cfg, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(NORMS[cfg.norm](cfg.hidden) for _ in range(cfg.layers))
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(cfg.layers))
        self.res = nn.ModuleList(nn.Linear(a, b, bias=False) if cfg.residual and a != b else nn.Identity()
                                 for a, b in zip(dims[:-1], dims[1:])) if cfg.residual else None
        self.drop = nn.Dropout(cfg.in_drop)
        if cfg.gnn == "gat" and cfg.init == "xavier-relu":
            for conv in self.convs:
                init_gat(conv)

    def forward(self, x: Tensor, edge_index: Tensor, *, return_hidden: bool = False
                ) -> tuple[Tensor, list[Tensor]]:
        hidden = []
        for i, conv in enumerate(self.convs):
            x_in = self.drop(x)
            h = gat_conv(conv, x_in, edge_index) if isinstance(conv, GATConv) else conv(x_in, edge_index)
            if self.res is not None:
                h = h + self.res[i](x)
            x = self.acts[i](self.norms[i](h))
            hidden.append(x)
        return x, hidden


class GraphMAEEncoder(Encoder):
    """Node embeddings as ``tokens [B, N_max, D]`` (graphs padded, ``padding_mask`` True at padding) and a
    pooled graph vector; ``node_embeddings`` gives the flat ``[N, D]`` view PyG users expect. A batch of node
    examples (``centre [B]``, :mod:`modalities.graph.nodes`): ``pooled`` is each centre node's embedding and
    ``tokens [B, 1, D]`` the same, one token per example."""

    config_class = GraphMAEConfig

    def __init__(self, config: GraphMAEConfig) -> None:
        super().__init__(config)
        if config.in_dim < 1:
            raise ValueError("GraphMAEConfig.in_dim is 0: build it from a fitted processor's encoder_config()")
        self.gnn = GNN(config)

    @property
    def dim(self) -> int:
        return self.config.hidden

    def node_embeddings(self, batch: dict[str, Tensor], x: Tensor | None = None) -> Tensor:
        return self.gnn(batch["x"] if x is None else x, batch["edge_index"])[0]

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        h, layers = self.gnn(batch["x"], batch["edge_index"])
        if "centre" in batch:                # node examples: each one's centre node (modalities.graph.nodes)
            centre = batch["centre"]
            pooled = h[centre]
            hidden = [x[centre][:, None] for x in layers] if return_hidden else None
            return EncoderOutput(pooled[:, None], torch.zeros(pooled.shape[0], 1, dtype=torch.bool,
                                                              device=h.device), pooled, hidden)
        if "node_slots" in batch:            # the collated layout: sizes from tensor shapes, no host read
            rows, valid = batch["node_slots"], batch["node_valid"]
            counts = valid.sum(dim=1)
        else:                                 # a batch made elsewhere (a PyG Batch's tensors): laid out here
            index = batch.get("batch")
            if index is None:
                index = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
            num_graphs = batch.get("num_graphs")
            if num_graphs is None:
                num_graphs = index.max() + 1 if index.numel() else index.new_zeros(())
            rows, valid, counts = dense_batch(index, num_graphs)

        def dense(x: Tensor) -> Tensor:
            return x[rows].masked_fill(~valid[..., None], 0.0)
        tokens = dense(h)
        pooled = pool(tokens, valid, counts, self.config.pooling)
        hidden = [dense(x) for x in layers] if return_hidden else None
        return EncoderOutput(tokens, ~valid, pooled, hidden)


class GraphMAEPretrainer(Pretrainer):
    collapse_rules = (CollapseRule(
        "embedding_std", 0.02, below=True,
        remedy="lower train.lr (keep train.grad_clip on), check that the node features differ (constant features give "
               "every node the same code), raise pretraining.mask_rate"),)

    def __init__(self, encoder: GraphMAEEncoder, config: GraphMAEPretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)
        cfg = encoder.config
        if cfg.in_dim == 1:
            raise ValueError("the graphs have one node feature: GraphMAE's loss compares a node's reconstructed "
                             "features with its own by cosine (Hou et al. 2022, eq. 2), and the cosine of two "
                             "numbers is only their signs, so pretraining would learn nothing. Add the nodes' "
                             "one-hot degrees after the feature (--set processor.degree_features=8 --set "
                             "processor.append_degrees=true), or give more node features")
        self.mask_token = nn.Parameter(torch.zeros(cfg.in_dim))
        self.to_decoder = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.decoder_drop = nn.Dropout(cfg.in_drop)       # the decoder drops its input like every encoder layer
        if config.decoder == "gat":
            self.decoder = GATConv(cfg.hidden, cfg.in_dim, heads=config.decoder_heads, concat=False,
                                   dropout=cfg.attn_drop, negative_slope=cfg.negative_slope)
            if cfg.init == "xavier-relu":
                init_gat(self.decoder)
        else:
            self.decoder = GINConv(_gin_mlp(cfg.hidden, cfg.hidden, cfg.in_dim, cfg.norm))

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        x, edges, seeds = batch["x"], batch["edge_index"], batch.get("seed_mask")
        if seeds is None:
            nm = node_mask(x.shape[0], self.config.mask_rate, self.config.replace_rate, generator=generator,
                           device=x.device)
            scored = nm.mask
        else:                     # a sampled subgraph: the loss on its masked seed nodes (modalities.graph.sampling)
            nm = seed_node_mask(seeds, self.config.mask_rate, self.config.replace_rate, generator)
            scored = nm.mask & seeds
        h = self.encoder.node_embeddings(batch, nm.apply(x, self.mask_token))
        code = self.to_decoder(h).masked_fill(nm.mask[:, None], 0.0)          # re-mask
        code = self.decoder_drop(code)
        if isinstance(self.decoder, GATConv):                                    # only scored nodes are decoded
            recon = gat_rows(self.decoder, code, edges, scored.nonzero().squeeze(1))
        else:
            recon = self.decoder(code, edges)[scored]
        loss = scaled_cosine_error(recon, x[scored], self.config.gamma)
        return PretrainOutput(loss, {"masked_nodes": float(nm.mask.sum()), **embedding_signals(h)})
