"""GraphMAE (Hou et al. 2022): masked node-feature reconstruction with a GNN encoder and decoder.

Node features of a random share of nodes are replaced by a learnable [MASK] token (a small share of them by
other nodes' features instead); the encoder embeds the graph; its code is re-masked (the masked nodes'
codes are zeroed) before a one-layer decoder reconstructs the input features; the loss is the scaled cosine
error on the masked nodes only. GAT for node-level tasks, GIN for graph-level ones, both from PyG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GINConv, global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import to_dense_batch

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.masking import node_mask
from zoo.objectives import scaled_cosine_error

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

    def validate(self) -> None:
        self.check(self.in_dim >= 0, "in_dim", "must be >= 0 (0 = from the processor)")
        self.check(self.gnn in ("gat", "gin"), "gnn", "must be 'gat' or 'gin'")
        self.check(self.gnn != "gat" or self.hidden % self.heads == 0, "hidden", "must be divisible by heads")
        self.check(self.norm in ("none", "batchnorm", "layernorm"), "norm", "must be none, batchnorm or layernorm")
        self.check(self.pooling in POOLS, "pooling", f"must be one of {sorted(POOLS)}")
        self.check(self.layers >= 1, "layers", "must be >= 1")


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


def _gin_mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.PReLU(), nn.Linear(d_out, d_out))


def gnn_layer(kind: str, d_in: int, d_out: int, heads: int, attn_drop: float, negative_slope: float) -> nn.Module:
    if kind == "gat":
        return GATConv(d_in, d_out // heads, heads=heads, concat=True, dropout=attn_drop,
                       negative_slope=negative_slope)
    return GINConv(_gin_mlp(d_in, d_out), train_eps=False)


class GNN(nn.Module):
    """``layers`` GNN layers, each followed by an optional norm and PReLU (the encoder's last one too)."""

    def __init__(self, cfg: GraphMAEConfig) -> None:
        super().__init__()
        dims = [cfg.in_dim] + [cfg.hidden] * cfg.layers
        self.convs = nn.ModuleList(gnn_layer(cfg.gnn, a, b, cfg.heads, cfg.attn_drop, cfg.negative_slope)
                                   for a, b in zip(dims[:-1], dims[1:]))
        norm = {"none": nn.Identity, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}[cfg.norm]
        self.norms = nn.ModuleList(norm(cfg.hidden) if cfg.norm != "none" else nn.Identity()
                                   for _ in range(cfg.layers))
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(cfg.layers))
        self.res = nn.ModuleList(nn.Linear(a, b, bias=False) if cfg.residual and a != b else nn.Identity()
                                 for a, b in zip(dims[:-1], dims[1:])) if cfg.residual else None
        self.drop = nn.Dropout(cfg.in_drop)

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
    pooled graph vector; ``node_embeddings`` gives the flat ``[N, D]`` view PyG users expect."""

    modality = "graph"
    architecture = "graphmae"
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
        index = batch.get("batch")
        if index is None:
            index = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        tokens, valid = to_dense_batch(h, index)
        pooled = POOLS[self.config.pooling](h, index)
        hidden = [to_dense_batch(x, index)[0] for x in layers] if return_hidden else None
        return EncoderOutput(tokens, ~valid, pooled, hidden)


class GraphMAEPretrainer(Pretrainer):
    def __init__(self, encoder: GraphMAEEncoder, config: GraphMAEPretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)
        cfg = encoder.config
        self.mask_token = nn.Parameter(torch.zeros(cfg.in_dim))
        self.to_decoder = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        if config.decoder == "gat":
            self.decoder = GATConv(cfg.hidden, cfg.in_dim, heads=config.decoder_heads, concat=False,
                                   dropout=cfg.attn_drop, negative_slope=cfg.negative_slope)
        else:
            self.decoder = GINConv(_gin_mlp(cfg.hidden, cfg.in_dim))

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        x, edges = batch["x"], batch["edge_index"]
        nm = node_mask(x.shape[0], self.config.mask_rate, self.config.replace_rate, generator=generator,
                       device=x.device)
        h = self.encoder.node_embeddings(batch, nm.apply(x, self.mask_token))
        code = self.to_decoder(h).masked_fill(nm.mask[:, None], 0.0)          # re-mask
        recon = self.decoder(code, edges)
        loss = scaled_cosine_error(recon[nm.mask], x[nm.mask], self.config.gamma)
        return PretrainOutput(loss, {"masked_nodes": float(nm.mask.sum())})
