"""VideoMAE (Tong et al. 2022, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video
Pre-Training"): tubelet embedding, fixed sinusoidal positions, 90% tube masking, a ViT encoder on the visible
tokens only, a narrow decoder that reconstructs the hidden tubelets, MSE on per-channel normalised pixels.

Tubelets are cut by :func:`patchify` into vectors laid out ``(t, p, p, C)`` (channel last): the same layout
embeds them (one matmul instead of a strided Conv3d) and serves as the reconstruction target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, mse_vs_mean, prediction_spread
from zoo.layers import TransformerEncoder, init_linears, sinusoidal_positions
from zoo.masking import tube_mask
from zoo.objectives import channel_norm_targets, masked_mse

POSITIONS = ("1d", "3d")


@dataclass
class VideoMAEConfig(Config):
    """Encoder configuration; the defaults are the paper's ViT-B (16 frames of 224², tubelets 2×16×16).

    ``positions``: ``1d`` is VideoMAE's fixed sinusoid table over the flattened token index (what the reference and
    transformers checkpoints use); ``3d`` gives a third of the channels each to sinusoids of time, row and column.
    ``final_norm``: a LayerNorm after the last block (the pretraining encoder has one; transformers models saved
    with ``use_mean_pooling`` do not)."""

    image_size: int = 224
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    channels: int = 3
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    eps: float = 1e-6
    positions: str = "1d"
    final_norm: bool = True

    def validate(self) -> None:
        self.check(self.patch_size >= 1 and self.image_size % self.patch_size == 0, "image_size",
                   f"must be a multiple of patch_size {self.patch_size}")
        self.check(self.tubelet_size >= 1 and self.num_frames % self.tubelet_size == 0, "num_frames",
                   f"must be a multiple of tubelet_size {self.tubelet_size}")
        self.check(self.dim % self.heads == 0, "dim", "must be divisible by heads")
        self.check(self.positions in POSITIONS, "positions", f"must be one of {POSITIONS}")
        self.check(self.positions == "1d" or (self.dim % 2 == 0 and self.dim >= 6), "dim",
                   "must be even and at least 6 for 3d positions (a pair of channels per axis)")
        self.check(self.channels >= 1 and self.depth >= 1, "depth", "depth and channels must be >= 1")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along time, rows and columns."""
        side = self.image_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def tubelet_dim(self) -> int:
        return self.tubelet_size * self.patch_size ** 2 * self.channels


@dataclass
class VideoMAEPretrainingConfig(Config):
    """The paper's objective: 90% tube masking, a 4-layer decoder, per-channel normalised pixel targets.
    ``norm_targets: false`` regresses the pixels in ``[0, 1]`` instead, as the reference does: the processor's
    normalisation (``pixel_mean``/``pixel_std``, filled in from the processor when a run is built) is undone."""

    mask_ratio: float = 0.9
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    decoder_mlp_ratio: float = 4.0
    norm_targets: bool = True
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None

    def validate(self) -> None:
        self.check(0.0 <= self.mask_ratio < 1.0, "mask_ratio", "must lie in [0, 1)")
        self.check(self.decoder_dim % self.decoder_heads == 0, "decoder_dim", "must be divisible by decoder_heads")
        self.check(self.decoder_depth >= 1, "decoder_depth", "must be >= 1")


def video_positions(grid: tuple[int, int, int], dim: int, kind: str = "1d") -> Tensor:
    """Fixed positions ``[T'·H'·W', dim]`` in time-major token order (see :class:`VideoMAEConfig`)."""
    t, h, w = grid
    if kind == "1d":
        return sinusoidal_positions(t * h * w, dim)
    dt = 2 * (dim // 6)
    dw = dim - 2 * dt
    parts = [sinusoidal_positions(t, dt)[:, None, None, :].expand(t, h, w, dt),
             sinusoidal_positions(h, dt)[None, :, None, :].expand(t, h, w, dt),
             sinusoidal_positions(w, dw)[None, None, :, :].expand(t, h, w, dw)]
    return torch.cat(parts, dim=-1).reshape(t * h * w, dim)


def patchify(pixels: Tensor, tubelet: int, patch: int) -> Tensor:
    """``[B, T, C, H, W]`` → ``[B, N, tubelet·patch·patch·C]``: tokens time-major (time, row, column), each
    tubelet laid out ``(t, p, p, C)``."""
    b, t, c, h, w = pixels.shape
    x = pixels.reshape(b, t // tubelet, tubelet, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)


def unpatchify(tokens: Tensor, grid: tuple[int, int, int], tubelet: int, patch: int, channels: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, N, P]`` → ``[B, T, C, H, W]``."""
    b = tokens.shape[0]
    gt, gh, gw = grid
    x = tokens.view(b, gt, gh, gw, tubelet, patch, patch, channels).permute(0, 1, 4, 7, 2, 5, 3, 6)
    return x.reshape(b, gt * tubelet, channels, gh * patch, gw * patch)


def _xavier(module: nn.Module) -> None:
    """The reference's initialisation of its Transformer blocks and heads: Xavier-uniform linear weights, zero
    biases, unit LayerNorms (its tubelet convolution and ``encoder_to_decoder`` keep PyTorch's defaults)."""
    init_linears(module, nn.init.xavier_uniform_)
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VideoMAEEncoder(Encoder):
    """ViT on tubelets. ``forward(batch, mask=...)`` runs on the visible tokens only (``mask [B, N]``, ``True`` =
    hidden, the same count in every row); ``pooled`` is the mean of the output tokens."""

    config_class = VideoMAEConfig

    def __init__(self, config: VideoMAEConfig) -> None:
        config.validate()
        super().__init__(config)
        c = config
        self.patch_embed = nn.Linear(c.tubelet_dim, c.dim)
        self.register_buffer("positions", video_positions(c.grid, c.dim, c.positions), persistent=False)
        self.transformer = TransformerEncoder(c.dim, c.depth, c.heads, c.mlp_ratio, c.dropout, c.attn_dropout,
                                              c.drop_path, c.eps, norm_first=True)
        if not c.final_norm:
            self.transformer.norm = nn.Identity()
        _xavier(self)
        self.patch_embed.reset_parameters()   # the reference's tubelet conv keeps PyTorch's default init

    @property
    def dim(self) -> int:
        return self.config.dim

    def take_final_norm(self) -> nn.Module | None:
        """The final LayerNorm, removed (``final_norm`` becomes false): the layout of transformers' VideoMAE with
        ``use_mean_pooling``, whose classifier normalises the mean of the tokens instead (``finetune.head_norm``)."""
        if not self.config.final_norm:
            return None
        norm = self.transformer.norm
        self.transformer.norm = nn.Identity()
        self.config.final_norm = False
        return norm

    def _check(self, pixels: Tensor) -> None:
        c = self.config
        want = (c.num_frames, c.channels, c.image_size, c.image_size)
        if pixels.dim() != 5 or tuple(pixels.shape[1:]) != want:
            raise ValueError(f"pixel_values must be [B, {', '.join(map(str, want))}] (frames, channels, height, "
                             f"width), got {tuple(pixels.shape)}: set the processor's num_frames/image_size")

    def tubelets(self, pixels: Tensor) -> Tensor:
        """``pixel_values`` of the configured shape → tubelets ``[B, N, P]`` (:func:`patchify`)."""
        self._check(pixels)
        return patchify(pixels, self.config.tubelet_size, self.config.patch_size)

    def embed(self, pixels: Tensor, mask: Tensor | None = None) -> Tensor:
        """Tubelet embeddings plus positions, keeping the visible tokens only when ``mask`` is given."""
        return self._embed_tubelets(self.tubelets(pixels), mask)

    def _embed_tubelets(self, tubelets: Tensor, mask: Tensor | None) -> Tensor:
        x = self.patch_embed(tubelets.to(self.patch_embed.weight.dtype)) + self.positions.to(tubelets.dtype)
        if mask is not None:
            b, _, d = x.shape
            x = x[~mask].view(b, -1, d)
        return x

    def forward(self, batch: dict[str, Tensor], *, mask: Tensor | None = None,
                return_hidden: bool = False) -> EncoderOutput:
        return self.encode(self.tubelets(batch["pixel_values"]), mask, return_hidden=return_hidden)

    def encode(self, tubelets: Tensor, mask: Tensor | None = None, *, return_hidden: bool = False) -> EncoderOutput:
        """The encoder on already cut tubelets ``[B, N, P]`` (the pretrainer cuts them once for input and target)."""
        x = self._embed_tubelets(tubelets, mask)
        if return_hidden:
            tokens, hidden = self.transformer(x, return_hidden=True)
        else:
            tokens, hidden = self.transformer(x), None
        pad = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, padding_mask=pad, pooled=tokens.mean(dim=1), hidden=hidden)


class VideoMAEPretrainer(Pretrainer):
    """Tube masking → encoder on visible tokens → linear map to the decoder width, [MASK] tokens with their
    positions appended → decoder → the hidden tubelets' pixels; MSE on those only (Tong et al. 2022, §3.3-3.4)."""

    collapse_rules = (CollapseRule(
        "prediction_spread", 0.01, below=True,
        remedy="lower train.lr (keep train.grad_clip on) or lengthen train.warmup_steps, check that the clips move (a "
               "static or constant clip is predicted by its mean), train longer before judging a tiny model"),)

    def __init__(self, encoder: VideoMAEEncoder, config: VideoMAEPretrainingConfig, total_steps: int = 1) -> None:
        config.validate()
        super().__init__(encoder, config, total_steps)
        ec, c = encoder.config, config
        self.encoder_to_decoder = nn.Linear(ec.dim, c.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.register_buffer("decoder_positions", video_positions(ec.grid, c.decoder_dim, ec.positions),
                             persistent=False)
        self.decoder = TransformerEncoder(c.decoder_dim, c.decoder_depth, c.decoder_heads, c.decoder_mlp_ratio,
                                          eps=ec.eps, norm_first=True)
        self.head = nn.Linear(c.decoder_dim, ec.tubelet_dim)
        _xavier(self.decoder)              # encoder_to_decoder keeps PyTorch's default, as in the reference
        _xavier(self.head)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)     # the reference's ±1σ truncation

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def mask(self, batch_size: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        gt, gh, gw = self.encoder.config.grid
        return tube_mask(batch_size, gt, gh * gw, self.config.mask_ratio, generator=generator, device=device)

    def reconstruct(self, pixels: Tensor, mask: Tensor) -> Tensor:
        """Predicted pixels of the hidden tubelets ``[B, M, P]``, in token order."""
        return self._reconstruct(self.encoder.tubelets(pixels), mask)

    def _reconstruct(self, tubelets: Tensor, mask: Tensor) -> Tensor:
        b = tubelets.shape[0]
        x = self.encoder_to_decoder(self.encoder.encode(tubelets, mask).tokens)
        pos = self.decoder_positions.to(x.dtype).expand(b, -1, -1)
        d = x.shape[-1]
        hidden_pos = pos[mask].view(b, -1, d)
        x = torch.cat([x + pos[~mask].view(b, -1, d), self.mask_token.to(x.dtype) + hidden_pos], dim=1)
        for layer in self.decoder.layers:
            x = layer(x)
        return self.head(self.decoder.norm(x[:, -hidden_pos.shape[1]:]))

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        pixels = batch["pixel_values"]
        mask = self.mask(pixels.shape[0], generator, pixels.device)
        return self.loss(pixels, mask)

    def loss(self, pixels: Tensor, mask: Tensor) -> PretrainOutput:
        """The objective on given masks (the benchmark feeds the reference the same ones). The tubelets are cut
        once: the encoder's input and the targets."""
        tubelets = self.encoder.tubelets(pixels)
        pred = self._reconstruct(tubelets, mask)
        b, p = pred.shape[0], pred.shape[-1]
        with torch.no_grad():
            target = tubelets[mask].view(b, -1, p).float()
            c = self.config
            if not c.norm_targets and c.pixel_mean is not None and c.pixel_std is not None:
                ch = self.encoder.config.channels       # tubelets are channel-last: undo (x − mean) / std
                mean, std = (torch.tensor(v, device=target.device) for v in (c.pixel_mean, c.pixel_std))
                target = (target.view(b, -1, p // ch, ch) * std + mean).view(b, -1, p)
        hidden = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
        loss = masked_mse(pred.float(), target, hidden, norm_targets=self.config.norm_targets,
                          channels=self.encoder.config.channels)
        seen = channel_norm_targets(target, self.encoder.config.channels) if self.config.norm_targets else target
        return PretrainOutput(loss=loss, metrics={"visible_tokens": float((~mask[0]).sum()),
                                                  "recon_vs_mean": mse_vs_mean(pred, seen),
                                                  "prediction_spread": prediction_spread(pred.flatten(0, 1),
                                                                                         seen.flatten(0, 1))})
