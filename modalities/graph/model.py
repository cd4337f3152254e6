"""GraphMAE (Hou et al. 2022): masked node-feature reconstruction with a GNN encoder and decoder.

Node features of a random share of nodes are replaced by a learnable [MASK] token (a small share of them by
other nodes' features instead); the encoder embeds the graph; its code is re-masked (the masked nodes'
codes are zeroed) before a one-layer decoder reconstructs the input features; the loss is the scaled cosine
error on the masked nodes only. GAT for node-level tasks, GIN for graph-level ones, both from PyG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GINConv, global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import add_self_loops, remove_self_loops, softmax, to_dense_batch

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, embedding_signals
from zoo.masking import node_mask
from zoo.objectives import scaled_cosine_error

from .sampling import seed_node_mask

POOLS = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}


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


def gat_rows(conv: GATConv, x: Tensor, edge_index: Tensor, rows: Tensor) -> Tensor:
    """``conv(x, edge_index)[rows]``, computed by aggregating the inputs before projecting them.

    A GAT output is linear in the projected inputs: ``sum_j a_ij W x_j = W sum_j a_ij x_j``, and each attention
    logit ``att · W x`` equals ``(W^T att) · x``. So only the edges into ``rows`` carry messages, those messages
    have the input's width instead of the output's, and only ``rows`` are projected. GraphMAE's decoder (512 →
    1433 features on Cora, loss on the masked half of the nodes) gets several times cheaper; the values are the
    same as PyG's (dropout on the attention draws differently).
    """
    heads, out = conv.heads, conv.out_channels
    weight = conv.lin.weight.view(heads, out, -1)                            # [H, C, in]
    att_src = torch.einsum("hc,hci->ih", conv.att_src[0], weight)            # [in, H]
    att_dst = torch.einsum("hc,hci->ih", conv.att_dst[0], weight)
    n = x.shape[0]
    edges = add_self_loops(remove_self_loops(edge_index)[0], num_nodes=n)[0] if conv.add_self_loops else edge_index
    slot = torch.full((n,), -1, dtype=torch.long, device=x.device)
    slot[rows] = torch.arange(rows.numel(), device=x.device)
    src, dst = edges[0], slot[edges[1]]
    keep = dst >= 0
    src, dst = src[keep], dst[keep]
    logits = F.leaky_relu((x @ att_src)[src] + (x[rows] @ att_dst)[dst], conv.negative_slope)   # [E, H]
    alpha = F.dropout(softmax(logits, dst, num_nodes=rows.numel()), conv.dropout, conv.training)
    messages = alpha[:, :, None] * x[src][:, None, :]                          # [E, H, in]
    agg = torch.zeros(rows.numel(), heads, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, dst, messages)
    h = torch.einsum("rhi,hci->rhc", agg, weight)
    h = h.reshape(rows.numel(), heads * out) if conv.concat else h.mean(dim=1)
    return h + conv.bias if conv.bias is not None else h


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
            h = conv(self.drop(x), edge_index)
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
        index = batch.get("batch")
        if index is None:
            index = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        tokens, valid = to_dense_batch(h, index)
        pooled = POOLS[self.config.pooling](h, index)
        hidden = [to_dense_batch(x, index)[0] for x in layers] if return_hidden else None
        return EncoderOutput(tokens, ~valid, pooled, hidden)


class GraphMAEPretrainer(Pretrainer):
    collapse_rules = (CollapseRule(
        "embedding_std", 0.02, below=True,
        remedy="lower train.lr (keep train.grad_clip on), check that the node features differ (constant features give "
               "every node the same code), raise pretraining.mask_rate"),)

    def __init__(self, encoder: GraphMAEEncoder, config: GraphMAEPretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)
        cfg = encoder.config
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
