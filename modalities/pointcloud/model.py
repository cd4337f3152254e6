"""Point-MAE (Pang et al. 2022, "Masked Autoencoders for Point Cloud Self-supervised Learning") in pure PyTorch:
FPS + kNN patches from the core, a mini-PointNet patch embedding, a learned positional embedding of the patch
centres added before every block, random (or block) masking of 60% of the patches, a Transformer encoder on the
visible patches, a decoder that predicts the hidden patches' points, and Chamfer L2 on those patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, loss_vs_mean_patch, prediction_spread
from zoo.layers import TransformerEncoder, init_linears
from zoo.masking import random_mask
from zoo.objectives import chamfer_l2
from zoo.points import gather_points, group_patches, square_distances

MASKS = ("random", "block")


@dataclass
class PointMAEConfig(Config):
    """Encoder configuration; the defaults are the paper's (1024 points, 64 patches of 32, 12 layers of 384, 6 heads).
    ``in_channels``: 3 for x, y, z, more with colours or normals (the processor's ``3 + extra_channels``)."""

    num_points: int = 1024
    num_patches: int = 64
    patch_size: int = 32
    in_channels: int = 3
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    eps: float = 1e-5
    pointnet_dims: tuple[int, int, int] = (128, 256, 512)
    qkv_bias: bool = False            # as the reference: attention without q/k/v bias (true: a departure)
    cls_token: bool = False           # the reference's fine-tuned models: a [CLS] token with its own position;
                                      # pooled is then [CLS, max over the patch tokens]

    def validate(self) -> None:
        self.check(len(self.pointnet_dims) == 3 and min(self.pointnet_dims) >= 1, "pointnet_dims",
                   "needs three widths >= 1 (the paper: 128, 256, 512)")
        self.check(self.in_channels >= 3, "in_channels", "must be >= 3 (x, y, z first)")
        self.check(1 <= self.num_patches <= self.num_points, "num_patches", "must lie in [1, num_points]")
        self.check(1 <= self.patch_size <= self.num_points, "patch_size", "must lie in [1, num_points]")
        self.check(self.dim % self.heads == 0, "dim", "must be divisible by heads")
        self.check(self.depth >= 1, "depth", "must be >= 1")


@dataclass
class PointMAEPretrainingConfig(Config):
    """The paper's objective: 60% of the patches hidden (``random``; ``block`` hides the patches nearest a random
    centre), a 4-layer decoder as wide as the encoder, Chamfer L2 on the hidden patches."""

    mask_ratio: float = 0.6
    mask_type: str = "random"
    decoder_depth: int = 4
    decoder_heads: int = 6

    def validate(self) -> None:
        self.check(0.0 < self.mask_ratio < 1.0, "mask_ratio", "must lie in (0, 1)")
        self.check(self.mask_type in MASKS, "mask_type", f"must be one of {MASKS}")
        self.check(self.decoder_depth >= 1, "decoder_depth", "must be >= 1")


class MiniPointNet(nn.Module):
    """The patch embedding of Point-BERT/Point-MAE: shared MLP 3→128→256, max-pool, concatenate the pooled feature
    to every point, shared MLP 512→512→D, max-pool (point-wise convolutions written as linear layers; ``widths``
    are the paper's 128, 256, 512 by default)."""

    def __init__(self, in_channels: int, dim: int, widths: tuple[int, int, int] = (128, 256, 512)) -> None:
        super().__init__()
        a, b, c = widths
        self.first = nn.Sequential(nn.Linear(in_channels, a), nn.BatchNorm1d(a), nn.ReLU(inplace=True),
                                   nn.Linear(a, b))
        self.second = nn.Sequential(nn.Linear(2 * b, c), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
                                    nn.Linear(c, dim))

    @staticmethod
    def _pointwise(seq: nn.Sequential, x: Tensor) -> Tensor:
        n, k, _ = x.shape
        for layer in seq:
            x = layer(x.reshape(n * k, -1)).view(n, k, -1) if isinstance(layer, nn.BatchNorm1d) else layer(x)
        return x

    def forward(self, patches: Tensor) -> Tensor:               # [N, K, C] → [N, D]
        f = self._pointwise(self.first, patches)
        g = f.max(dim=1, keepdim=True).values.expand_as(f)
        return self._pointwise(self.second, torch.cat([g, f], dim=-1)).max(dim=1).values


def _positional(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


def _run(blocks: TransformerEncoder, x: Tensor, pos: Tensor, hidden: list[Tensor] | None = None) -> Tensor:
    """Point-MAE adds the positions before every block; the stack's LayerNorm ends it. ``hidden`` collects every
    block's input and the final output."""
    for layer in blocks.layers:
        if hidden is not None:
            hidden.append(x)
        x = layer(x + pos)
    x = blocks.norm(x)
    if hidden is not None:
        hidden.append(x)
    return x


class PointMAEEncoder(Encoder):
    """Patches of a batch ``{"points": [B, N, C]}`` → tokens ``[B, G, D]`` (visible patches only when ``mask [B, G]``
    is given); ``pooled`` is ``[max, mean]`` over the tokens, ``[B, 2D]`` (the paper pools max and mean for the
    SVM protocol)."""

    config_class = PointMAEConfig

    def __init__(self, config: PointMAEConfig) -> None:
        config.validate()
        super().__init__(config)
        c = config
        self.patch_embed = MiniPointNet(c.in_channels, c.dim, tuple(c.pointnet_dims))
        self.pos_embed = _positional(c.dim)
        self.transformer = TransformerEncoder(c.dim, c.depth, c.heads, c.mlp_ratio, drop_path=c.drop_path, eps=c.eps,
                                              norm_first=True, qkv_bias=c.qkv_bias)
        # as the reference: every linear (its 1×1 convs too) ~ TN(0, 0.02), zero bias
        init_linears(self, lambda w: nn.init.trunc_normal_(w, std=0.02))
        if c.cls_token:
            self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, c.dim), std=0.02))
            self.cls_pos = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, c.dim), std=0.02))

    @property
    def dim(self) -> int:
        return 2 * self.config.dim

    def no_weight_decay(self) -> set[str]:
        """Kept out of weight decay, as the reference keeps every tensor named ``*token*``."""
        return {"cls_token"} if self.config.cls_token else set()

    def patches(self, points: Tensor) -> tuple[Tensor, Tensor]:
        c = self.config
        if points.dim() != 3 or points.shape[-1] != c.in_channels:
            raise ValueError(f"points must be [B, N, {c.in_channels}], got {tuple(points.shape)}")
        if points.shape[1] < max(c.num_patches, c.patch_size):
            raise ValueError(f"{points.shape[1]} points cannot make {c.num_patches} patches of {c.patch_size}")
        return group_patches(points, c.num_patches, c.patch_size)

    def encode(self, centres: Tensor, patches: Tensor, mask: Tensor | None = None,
               return_hidden: bool = False) -> tuple[Tensor, list[Tensor] | None]:
        """Visible tokens and (with ``return_hidden``) every block's input and the output. Every patch is embedded
        before the hidden ones are dropped, so the mini-PointNet's BatchNorm statistics come from all patches, as
        in the reference."""
        b, g, k, ch = patches.shape
        x = self.patch_embed(patches.reshape(b * g, k, ch)).view(b, g, -1)
        if mask is not None:
            keep = ~mask
            centres, x = centres[keep].view(b, -1, 3), x[keep].view(b, -1, x.shape[-1])
        pos = self.pos_embed(centres)
        if self.config.cls_token:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            pos = torch.cat([self.cls_pos.expand(b, -1, -1), pos], dim=1)
        hidden = [] if return_hidden else None
        return _run(self.transformer, x, pos, hidden), hidden

    def forward(self, batch: dict[str, Tensor], *, mask: Tensor | None = None,
                return_hidden: bool = False) -> EncoderOutput:
        centres, patches = self.patches(batch["points"])
        tokens, hidden = self.encode(centres, patches, mask, return_hidden)
        if self.config.cls_token:                 # as the reference's fine-tuned models: [CLS, max of the patches]
            cls, tokens = tokens[:, 0], tokens[:, 1:]
            pooled = torch.cat([cls, tokens.max(dim=1).values], dim=-1)
        else:
            pooled = torch.cat([tokens.max(dim=1).values, tokens.mean(dim=1)], dim=-1)
        pad = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, padding_mask=pad, pooled=pooled, hidden=hidden)


def block_mask(centres: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Point-MAE's block masking: per cloud, the ``count`` patches whose centres lie nearest a random centre."""
    b, g, _ = centres.shape
    seed = torch.randint(0, g, (b,), generator=generator, device=generator.device if generator else centres.device)
    anchor = gather_points(centres, seed.to(centres.device)[:, None])                  # [B, 1, 3]
    d = square_distances(anchor, centres)[:, 0]                                        # [B, G]
    idx = d.topk(count, dim=1, largest=False).indices
    return torch.zeros(b, g, dtype=torch.bool, device=centres.device).scatter_(1, idx, True)


class PointMAEPretrainer(Pretrainer):
    """Mask patches → encoder on the visible ones → decoder over visible tokens and [MASK] tokens (positions added
    before every block) → each hidden patch's ``patch_size`` points → Chamfer L2 against the true patch."""

    collapse_rules = (CollapseRule(
        "recon_vs_mean", 0.95, below=False,
        remedy="lower train.lr (keep train.grad_clip on) or lengthen train.warmup_steps, check that the clouds differ "
               "in shape (the processor's normalisation turns a constant or degenerate cloud into the same patch "
               "everywhere)",
        # at random initialisation the ratio starts near 13 and falls below 0.95 by step 6-7 of a healthy run with
        # warmup 0 or 1 (docs/reliability.md, "Collapse alarms"): crossings count from step 20 on
        settle_steps=20),)

    def __init__(self, encoder: PointMAEEncoder, config: PointMAEPretrainingConfig, total_steps: int = 1) -> None:
        config.validate()
        super().__init__(encoder, config, total_steps)
        if encoder.config.cls_token:
            raise ValueError("a Point-MAE encoder with a [CLS] token (the reference's fine-tuned layout) does not "
                             "pretrain: the decoder reads the patch tokens only")
        ec = encoder.config
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ec.dim))
        self.decoder_pos_embed = _positional(ec.dim)
        self.decoder = TransformerEncoder(ec.dim, config.decoder_depth, config.decoder_heads, ec.mlp_ratio,
                                          drop_path=ec.drop_path, eps=ec.eps, norm_first=True, qkv_bias=ec.qkv_bias)
        self.head = nn.Linear(ec.dim, 3 * ec.patch_size)
        init_linears(self.decoder, nn.init.xavier_uniform_)      # the reference's decoder: Xavier-uniform
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def mask(self, centres: Tensor, generator: torch.Generator | None) -> Tensor:
        b, g, _ = centres.shape
        count = int(self.config.mask_ratio * g)                         # as the reference rounds it
        if self.config.mask_type == "block":
            return block_mask(centres, count, generator)
        return random_mask(b, g, count=count, generator=generator, device=centres.device)

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        centres, patches = self.encoder.patches(batch["points"])
        return self.loss(centres, patches, self.mask(centres, generator))

    def loss(self, centres: Tensor, patches: Tensor, mask: Tensor) -> PretrainOutput:
        b, g, k, _ = patches.shape
        visible, _ = self.encoder.encode(centres, patches, mask)
        hidden_centres = centres[mask].view(b, -1, 3)
        m = hidden_centres.shape[1]
        pos = torch.cat([self.decoder_pos_embed(centres[~mask].view(b, -1, 3)),
                         self.decoder_pos_embed(hidden_centres)], dim=1)
        x = torch.cat([visible, self.mask_token.expand(b, m, -1).to(visible.dtype)], dim=1)
        x = _run(self.decoder, x, pos)[:, -m:]
        pred = self.head(x).view(b * m, k, 3)
        target = patches[..., :3][mask].view(b * m, k, 3)
        loss = chamfer_l2(pred.float(), target.float())
        return PretrainOutput(loss=loss, metrics={"hidden_patches": float(m),
                                                  "recon_vs_mean": loss_vs_mean_patch(chamfer_l2, loss, target),
                                                  "prediction_spread": prediction_spread(pred, target)})
