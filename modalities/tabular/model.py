"""T-JEPA (Thimonier et al. 2025): a joint-embedding predictive architecture for tables.

Each feature becomes a token (numerical: a per-feature linear embedding, categorical: a per-feature
embedding table, plus a feature-position embedding and an explicit missing-value embedding). A context
encoder sees a feature subset; a predictor, given the context and the positions of a target subset,
regresses the target subset's representations produced by an EMA copy of the encoder that sees every
feature. Learned regularisation tokens ride along with the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, embedding_signals
from zoo.layers import EMATeacher, TransformerEncoder
from zoo.masking import feature_subsets, subset_sizes
from zoo.objectives import latent_regression


@dataclass
class TJepaConfig(Config):
    num_numerical: int = 0
    cardinalities: list[int] = field(default_factory=list)   # per categorical feature, incl. missing/unknown
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    reg_tokens: int = 2

    def validate(self) -> None:
        # 0 features = not yet known: the fitted processor supplies them (Processor.encoder_config)
        self.check(self.num_numerical + len(self.cardinalities) != 1, "num_numerical",
                   "a table needs at least 2 features in all")
        self.check(all(c >= 2 for c in self.cardinalities), "cardinalities", "each must be >= 2")
        self.check(self.dim % self.heads == 0, "dim", "must be divisible by heads")
        self.check(self.reg_tokens >= 0, "reg_tokens", "must be >= 0")


@dataclass
class TJepaPretrainingConfig(Config):
    """Defaults are the reference's (``jose-melo/t-jepa``, ``src/configs.py`` and ``src/mask.py``)."""

    context_share: list[float] = field(default_factory=lambda: [0.2, 0.4])  # [min, max] share the context sees
    target_share: list[float] = field(default_factory=lambda: [0.2, 0.4])   # [min, max] share of each target set
    num_targets: int = 4
    overlapping_targets: bool = True  # target sets drawn anew from the non-context pool (may overlap each other)
    target_norm: str = "none"         # "none": the teacher's outputs as they are; "layer": a non-affine layer norm
    predictor_depth: int = 2
    ema_start: float = 0.996
    ema_end: float = 1.0
    loss: str = "mse"

    def validate(self) -> None:
        for name in ("context_share", "target_share"):
            lo_hi = getattr(self, name)
            self.check(isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2, name, "must be [min, max]")
            self.check(0 < lo_hi[0] <= lo_hi[1] < 1, name, "need 0 < min <= max < 1")
        self.check(self.num_targets >= 1, "num_targets", "must be >= 1")
        self.check(self.target_norm in ("none", "layer"), "target_norm", "must be 'none' or 'layer'")
        self.check(0 <= self.ema_start <= self.ema_end <= 1, "ema_start", "need 0 <= ema_start <= ema_end <= 1")


class FeatureTokenizer(nn.Module):
    """Row → one token per feature: numerical ``x·w_j + b_j``, categorical ``E_j[id]``, plus position and,
    where a numerical value is missing, a learned missing embedding instead of the value."""

    def __init__(self, num_numerical: int, cardinalities: list[int], dim: int) -> None:
        super().__init__()
        self.num_numerical = num_numerical
        self.num_weight = nn.Parameter(torch.randn(num_numerical, dim) * 0.02)
        self.num_bias = nn.Parameter(torch.zeros(num_numerical, dim))
        self.num_missing = nn.Parameter(torch.randn(num_numerical, dim) * 0.02)
        offsets = torch.tensor([0] + list(cardinalities[:-1])).cumsum(0) if cardinalities else torch.zeros(0)
        self.register_buffer("cat_offsets", offsets.long(), persistent=False)
        self.cat_embed = nn.Embedding(max(sum(cardinalities), 1), dim)
        nn.init.normal_(self.cat_embed.weight, std=0.02)
        self.position = nn.Parameter(torch.randn(num_numerical + len(cardinalities), dim) * 0.02)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = []
        if self.num_numerical:
            x = batch["num"][..., None] * self.num_weight + self.num_bias
            parts.append(torch.where(batch["num_missing"][..., None], self.num_missing.to(x.dtype), x))
        if self.cat_offsets.numel():
            parts.append(self.cat_embed(batch["cat"] + self.cat_offsets))
        return torch.cat(parts, dim=1) + self.position


class TJepaEncoder(Encoder):
    """Feature tokens (+ regularisation tokens) → the core Transformer. ``pooled`` is the mean of the
    feature tokens; ``tokens`` are the feature tokens only."""

    config_class = TJepaConfig

    def __init__(self, config: TJepaConfig) -> None:
        super().__init__(config)
        if config.num_numerical + len(config.cardinalities) < 2:
            raise ValueError("TJepaConfig has no features: build it from a fitted processor's encoder_config()")
        self.tokenizer = FeatureTokenizer(config.num_numerical, list(config.cardinalities), config.dim)
        self.reg = nn.Parameter(torch.randn(config.reg_tokens, config.dim) * 0.02)
        self.body = TransformerEncoder(config.dim, config.depth, config.heads, config.mlp_ratio, config.dropout)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def num_features(self) -> int:
        return self.config.num_numerical + len(self.config.cardinalities)

    def encode_tokens(self, tokens: Tensor, hidden: Tensor | None = None, *,
                      return_hidden: bool = False) -> tuple[Tensor, list[Tensor] | None]:
        """Run the Transformer on feature tokens; ``hidden [B, F]`` (``True`` = hidden) drops features by
        key padding (the context encoder's view). Returns feature tokens without the reg tokens."""
        b = tokens.shape[0]
        x = torch.cat([tokens, self.reg.expand(b, -1, -1).to(tokens.dtype)], dim=1)
        pad = None
        if hidden is not None:
            pad = torch.cat([hidden, hidden.new_zeros(b, self.config.reg_tokens)], dim=1)
            if self.config.reg_tokens == 0 and bool(hidden.all(dim=1).any()):
                raise ValueError("a row with every feature hidden and no regularisation token")
        out, layers = self.body(x, pad, return_hidden=True)
        f = tokens.shape[1]
        return out[:, :f], ([h[:, :f] for h in layers] if return_hidden else None)

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        tokens, layers = self.encode_tokens(self.tokenizer(batch), return_hidden=return_hidden)
        pad = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens, pad, tokens.mean(dim=1), layers)


class Predictor(nn.Module):
    """Context tokens + a mask token at every target position (with its position embedding) → predictions."""

    def __init__(self, dim: int, depth: int, heads: int, num_features: int) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.position = nn.Parameter(torch.randn(num_features, dim) * 0.02)
        self.body = TransformerEncoder(dim, depth, heads, 2.0)

    def forward(self, context: Tensor, context_hidden: Tensor, target: Tensor) -> Tensor:
        """``context [B, F, D]`` (valid where ``~context_hidden``), ``target [B, F]`` → ``[B, F, D]``."""
        queries = self.mask_token + self.position                     # [F, D]
        x = torch.where(target[..., None], queries.expand_as(context), context)
        pad = context_hidden & ~target                                # attend to context and queries only
        return self.body(x, pad)


class TJepaPretrainer(Pretrainer):
    collapse_rules = (CollapseRule(
        "embedding_std", 0.05, below=True,
        remedy="lower train.lr (keep train.grad_clip on), raise pretraining.ema_start (a slower teacher), check that "
               "the rows differ (constant columns carry nothing)"),)

    def __init__(self, encoder: TJepaEncoder, config: TJepaPretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)
        self.teacher = EMATeacher(encoder, config.ema_start, config.ema_end, total_steps)
        self.predictor = Predictor(encoder.dim, config.predictor_depth, encoder.config.heads, encoder.num_features)
        f = encoder.num_features
        # fail at construction, not at the first step, when the shares cannot fit this table
        subset_sizes(f, tuple(config.context_share), tuple(config.target_share),
                     overlapping_targets=config.overlapping_targets, num_targets=config.num_targets,
                     generator=torch.Generator().manual_seed(0))

    def on_step(self, step: int) -> dict[str, float]:
        return {"ema_momentum": self.teacher.update(self.encoder, step)}

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        enc: TJepaEncoder = self.encoder  # type: ignore[assignment]
        cfg = self.config
        b, f = batch["cat"].shape[0], enc.num_features
        c_size, t_size = subset_sizes(f, tuple(cfg.context_share), tuple(cfg.target_share),
                                      overlapping_targets=cfg.overlapping_targets, num_targets=cfg.num_targets,
                                      generator=generator)
        sets = feature_subsets(b, f, cfg.num_targets, t_size, c_size, overlapping_targets=cfg.overlapping_targets,
                               generator=generator, device=batch["cat"].device)
        with torch.no_grad():
            teacher = self.teacher.module
            full, _ = teacher.encode_tokens(teacher.tokenizer(batch))
            if cfg.target_norm == "layer":
                full = nn.functional.layer_norm(full, full.shape[-1:])
        context, _ = enc.encode_tokens(enc.tokenizer(batch), sets.context_hidden)
        losses = []
        for m in range(cfg.num_targets):
            target = sets.targets[:, m]
            pred = self.predictor(context, sets.context_hidden, target)
            losses.append(latent_regression(pred, full, target, kind=cfg.loss))
        loss = torch.stack(losses).mean()
        with torch.no_grad():
            spread = full.float().std(dim=0).mean()
        return PretrainOutput(loss, {"target_std": float(spread), "context_size": float(c_size),
                                     "target_size": float(t_size), **embedding_signals(full.mean(dim=1))})
