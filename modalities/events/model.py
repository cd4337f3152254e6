"""CoLES (Babaev et al. 2022, "CoLES: Contrastive Learning for Event Sequences with Self-Supervision").

An event encoder embeds each event (one embedding per categorical field, the normalised numerical fields with
their missing flags, the time since the previous event); a GRU (the paper's choice) or the core Transformer (a
setting) reads the sequence; the pooled embedding (the GRU's last state, or the Transformer's mean) is
L2-normalised. Pretraining draws ``split_count`` random contiguous subsequences of every history (the core's
:func:`zoo.masking.subsequence_slices`); slices of one entity are positives, the other entities' slices
negatives, under the margin contrastive loss with hard negative mining (:func:`zoo.objectives.margin_contrastive`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, embedding_signals
from zoo.layers import TransformerEncoder, masked_mean, sinusoidal_positions
from zoo.masking import subsequence_slices
from zoo.objectives import margin_contrastive


@dataclass
class CoLESConfig(Config):
    num_numerical: int = 0
    cardinalities: list[int] = field(default_factory=list)   # per categorical field, incl. missing/unknown
    embed_dim: int = 16                     # per categorical field
    hidden: int = 256                       # GRU hidden size / Transformer width
    backbone: str = "gru"                   # "gru" (the paper's) or "transformer" (the core's)
    depth: int = 1                          # GRU layers / Transformer blocks
    heads: int = 4
    dropout: float = 0.0
    use_time: bool = True                   # the log time gap as an event feature (ours: ptls has none)
    use_missing_flags: bool = True          # a 0/1 missing flag per numerical field (ours: ptls has none)
    time_mean: float = 0.0                  # its statistics (from the fitted processor): standardised inside
    time_std: float = 1.0
    normalize: bool = True                  # L2-normalise the pooled embedding (the paper's)

    def validate(self) -> None:
        self.check(all(c >= 2 for c in self.cardinalities), "cardinalities", "each must be >= 2")
        self.check(self.embed_dim >= 1, "embed_dim", "must be >= 1")
        self.check(self.hidden >= 1, "hidden", "must be >= 1")
        self.check(self.depth >= 1, "depth", "must be >= 1")
        self.check(self.backbone in ("gru", "transformer"), "backbone", "must be 'gru' or 'transformer'")
        self.check(self.backbone != "transformer" or self.hidden % self.heads == 0, "hidden",
                   "must be divisible by heads for the Transformer")
        self.check(0 <= self.dropout < 1, "dropout", "must lie in [0, 1)")
        self.check(self.time_std > 0, "time_std", "must be > 0")


@dataclass
class CoLESPretrainingConfig(Config):
    """Defaults are the paper's (Babaev et al. 2022, section 4 and ptls' ``SampleSlices``)."""

    split_count: int = 5                    # subsequences per entity and batch
    cnt_min: int = 25                       # subsequence length range (events)
    cnt_max: int = 200
    margin: float = 0.5
    hard_negatives: int = 5                 # hardest negatives per anchor; 0 = every negative pair

    def validate(self) -> None:
        self.check(self.split_count >= 2, "split_count", "must be >= 2 (a positive pair needs two views)")
        self.check(1 <= self.cnt_min <= self.cnt_max, "cnt_min", "need 1 <= cnt_min <= cnt_max")
        self.check(self.margin > 0, "margin", "must be > 0")
        self.check(self.hard_negatives >= 0, "hard_negatives", "must be >= 0")


class EventEmbedding(nn.Module):
    """An event → ``[E_1(c_1) … E_k(c_k), x_num, missing flags, standardised log Δt]`` (the ptls ``TrxEncoder``
    layout: the GRU reads the concatenation)."""

    def __init__(self, num_numerical: int, cardinalities: list[int], embed_dim: int, use_time: bool,
                 time_mean: float = 0.0, time_std: float = 1.0, use_missing_flags: bool = True) -> None:
        super().__init__()
        self.time_mean, self.time_std = time_mean, time_std
        offsets = torch.tensor([0] + list(cardinalities[:-1])).cumsum(0) if cardinalities else torch.zeros(0)
        self.register_buffer("offsets", offsets.long(), persistent=False)
        self.embed = nn.Embedding(max(sum(cardinalities), 1), embed_dim)
        self.num_numerical, self.use_time, self.use_missing_flags = num_numerical, use_time, use_missing_flags
        self.width = len(cardinalities) * embed_dim + (1 + int(use_missing_flags)) * num_numerical + int(use_time)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        b, t = batch["padding_mask"].shape
        parts = []
        if self.offsets.numel():
            parts.append(self.embed(batch["cat"] + self.offsets).reshape(b, t, -1))
        if self.num_numerical:
            parts.append(batch["num"])
            if self.use_missing_flags:
                parts.append(batch["num_missing"].to(batch["num"].dtype))
        if self.use_time:
            parts.append(((batch["dt"] - self.time_mean) / self.time_std)[..., None])
        return torch.cat(parts, dim=-1)


class CoLESEncoder(Encoder):
    """Event histories → ``tokens [B, T, H]`` (the GRU's states / the Transformer's outputs), ``padding_mask``,
    ``pooled [B, H]`` (the state after each history's last event / the mean; unit norm with ``normalize``)."""

    config_class = CoLESConfig

    def __init__(self, config: CoLESConfig) -> None:
        super().__init__(config)
        if config.num_numerical + len(config.cardinalities) < 1:
            raise ValueError("CoLESConfig has no event fields: build it from a fitted processor's encoder_config()")
        self.events = EventEmbedding(config.num_numerical, list(config.cardinalities), config.embed_dim,
                                     config.use_time, config.time_mean, config.time_std, config.use_missing_flags)
        if config.backbone == "gru":
            self.rnn = nn.GRU(self.events.width, config.hidden, num_layers=config.depth, batch_first=True,
                              dropout=config.dropout if config.depth > 1 else 0.0)
        else:
            self.project = nn.Linear(self.events.width, config.hidden)
            self.body = TransformerEncoder(config.hidden, config.depth, config.heads, dropout=config.dropout)

    @property
    def dim(self) -> int:
        return self.config.hidden

    @property
    def onnx_exporter(self) -> str:
        """``zoo export``'s tracer: the GRU goes through the TorchScript exporter, whose ONNX ``GRU`` op keeps the
        history's length dynamic (torch.export unrolls the recurrence over the traced length)."""
        return "torchscript" if self.config.backbone == "gru" else "dynamo"

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        pad = batch["padding_mask"]
        x = self.events(batch)
        hidden = None
        if self.config.backbone == "gru":
            tokens, _ = self.rnn(x)                  # causal: a state never depends on later (padded) steps
            last = (~pad).sum(1).clamp(min=1) - 1          # each history's last event, gathered (exports)
            pooled = tokens.gather(1, last[:, None, None].expand(-1, 1, tokens.shape[2]))[:, 0]
            hidden = [x, tokens] if return_hidden else None
        else:
            x = self.project(x) + sinusoidal_positions(x.shape[1], self.config.hidden, device=x.device).to(x.dtype)
            out = self.body(x, pad, return_hidden=return_hidden)
            tokens, hidden = out if return_hidden else (out, None)
            pooled = masked_mean(tokens, pad)
        if self.config.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return EncoderOutput(tokens=tokens, padding_mask=pad, pooled=pooled, hidden=hidden)


def slice_batch(batch: dict[str, Tensor], starts: Tensor, lengths: Tensor) -> dict[str, Tensor]:
    """Subsequences of a padded batch, vectorised: view ``(i, k)`` holds events ``starts[i, k] …
    starts[i, k] + lengths[i, k] − 1`` of history ``i``; returns a padded batch of ``B·K`` views (row
    ``i·K + k``) whose first event has Δt 0, as a history's first event does."""
    b, k = starts.shape
    longest = int(lengths.max())
    steps = torch.arange(longest, device=starts.device)
    pad = steps[None, None, :] >= lengths[..., None]                                  # [B, K, L]
    idx = (starts[..., None] + steps).masked_fill(pad, 0).reshape(b, k * longest)      # [B, K·L]

    def gather(x: Tensor) -> Tensor:
        index = idx.reshape(b, k * longest, *([1] * (x.dim() - 2))).expand(b, k * longest, *x.shape[2:])
        return torch.gather(x, 1, index).reshape(b * k, longest, *x.shape[2:])

    out = {key: gather(batch[key]) for key in ("cat", "num", "num_missing", "dt")}
    pad = pad.reshape(b * k, longest)
    out["dt"] = out["dt"].masked_fill(pad, 0.0)
    out["dt"][:, 0] = 0.0
    out["cat"] = out["cat"].masked_fill(pad[..., None], 0)
    out["num"] = out["num"].masked_fill(pad[..., None], 0.0)
    out["num_missing"] = out["num_missing"] & ~pad[..., None]
    out["padding_mask"] = pad
    out["lengths"] = lengths.reshape(-1)
    return out


class CoLESPretrainer(Pretrainer):
    """``split_count`` random slices per history → the encoder → margin contrastive loss on the unit-norm
    embeddings, positives = slices of one entity."""

    collapse_rules = (CollapseRule(
        "embedding_std", 0.05, below=True,
        remedy="lower train.lr (keep train.grad_clip on), check that the entities' histories differ (identical or "
               "empty histories embed alike), raise pretraining.margin or pretraining.hard_negatives"),)

    def __init__(self, encoder: CoLESEncoder, config: CoLESPretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        cfg = self.config
        lengths = batch["lengths"].to(generator.device)
        starts, view_len = subsequence_slices(lengths, cfg.split_count, cfg.cnt_min, cfg.cnt_max,
                                              generator=generator)
        device = batch["dt"].device
        views = slice_batch(batch, starts.to(device), view_len.to(device))
        z = self.encoder(views).pooled
        if not self.encoder.config.normalize:
            z = F.normalize(z, dim=-1)
        entity = torch.arange(len(lengths), device=device).repeat_interleave(cfg.split_count)
        loss = margin_contrastive(z.float(), entity, cfg.margin, cfg.hard_negatives or None)
        with torch.no_grad():
            d = torch.cdist(z.float(), z.float())
            same = entity[:, None] == entity[None, :]
            eye = torch.eye(len(entity), dtype=torch.bool, device=device)
            pos, neg = d[same & ~eye].mean(), d[~same].mean()
        return PretrainOutput(loss=loss, metrics={"pos_distance": float(pos), "neg_distance": float(neg),
                                                  "view_events": float(view_len.float().mean()),
                                                  **embedding_signals(z)})
