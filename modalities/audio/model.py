"""wav2vec 2.0 (Baevski et al. 2020): conv feature encoder, span masking, convolutional relative positions,
the core Transformer, a Gumbel-softmax product quantizer and the contrastive + diversity objective.

Padding-aware throughout: the group norm of the first conv layer uses only each utterance's valid frames,
padded frames are zeroed before the positional convolution and never attended to, and masks, positives
and distractors are drawn from valid frames only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import Config, Encoder, EncoderOutput, Pretrainer, PretrainOutput
from zoo.collapse import CollapseRule, code_perplexity
from zoo.layers import Attention, TransformerEncoder, init_linears, masked_mean, traced
from zoo.masking import span_mask
from zoo.objectives import codebook_perplexity, diversity_loss, sample_negatives, wav2vec_contrastive

BASE_CONV = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


POS_CONV_TYPES = ("weight_norm", "stack")


@dataclass
class Wav2Vec2Config(Config):
    """Encoder configuration; the defaults are the paper's BASE model."""

    conv_layers: list[tuple[int, int, int]] = field(default_factory=lambda: list(BASE_CONV))
    conv_norm: str = "group"          # "group": group norm on the first layer only; "layer": every layer
    conv_bias: bool = False
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    attn_dropout: float = 0.1
    activation_dropout: float = 0.0   # after the MLP's GELU (fairseq activation_dropout; BASE 0.0)
    feat_dropout: float = 0.0
    drop_path: float = 0.0
    layerdrop: float = 0.05           # skip a whole layer with this probability while training (BASE 0.05)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    norm_first: bool = False          # BASE is post-norm; large "stable" models are pre-norm
    eps: float = 1e-5
    sample_rate: int = 16000
    feature_norm: bool = True         # LayerNorm on the conv features before the projection (HuBERT may omit it)
    pos_conv_type: str = "weight_norm"   # "weight_norm": one grouped weight-normalised conv (wav2vec 2.0, HuBERT);
    pos_conv_layers: int = 1             # "stack": pos_conv_layers convs, each + LayerNorm + GELU (data2vec)
    rel_pos_buckets: int = 0          # > 0: WavLM's gated relative position bias over this many buckets (320)
    rel_pos_max_distance: int = 800   # offsets beyond this share the outermost bucket (WavLM: 800 frames)

    def validate(self) -> None:
        self.check(len(self.conv_layers) >= 1, "conv_layers", "needs at least one (channels, kernel, stride)")
        self.check(all(c >= 1 and k >= 1 and s >= 1 for c, k, s in self.conv_layers), "conv_layers",
                   "channels, kernel and stride must be >= 1")
        self.check(self.conv_norm in ("group", "layer"), "conv_norm", "must be 'group' or 'layer'")
        self.check(self.dim % self.heads == 0, "dim", "must be divisible by heads")
        self.check(self.dim % self.pos_conv_groups == 0, "pos_conv_groups", "must divide dim")
        self.check(self.sample_rate > 0, "sample_rate", "must be > 0")
        self.check(self.pos_conv_type in POS_CONV_TYPES, "pos_conv_type", f"must be one of {POS_CONV_TYPES}")
        self.check(self.pos_conv_layers >= 1 and (self.pos_conv_type == "stack" or self.pos_conv_layers == 1),
                   "pos_conv_layers", "must be >= 1 (and 1 unless pos_conv_type is 'stack')")
        self.check(self.rel_pos_buckets == 0 or (self.rel_pos_buckets >= 8 and self.rel_pos_buckets % 4 == 0),
                   "rel_pos_buckets", "must be 0 (none) or a multiple of 4, at least 8")
        self.check(self.rel_pos_buckets == 0 or self.rel_pos_max_distance > self.rel_pos_buckets // 4,
                   "rel_pos_max_distance", "must exceed a quarter of rel_pos_buckets")
        for name in ("dropout", "attn_dropout", "activation_dropout", "feat_dropout", "layerdrop"):
            self.check(0.0 <= getattr(self, name) < 1.0, name, "must lie in [0, 1)")


@dataclass
class Wav2Vec2PretrainingConfig(Config):
    """Self-supervised objective; defaults from the paper (BASE)."""

    mask_prob: float = 0.65
    mask_length: int = 10
    min_masks: int = 2
    num_negatives: int = 100
    codevector_groups: int = 2
    codevectors_per_group: int = 320
    codevector_dim: int = 256
    proj_dim: int = 256
    temperature: float = 0.1
    gumbel_max: float = 2.0
    gumbel_min: float = 0.5
    gumbel_decay: float = 0.999995    # per update, as the paper: tau_n = max(gumbel_max * decay**n, gumbel_min)
    gumbel_schedule: str = "update"   # "update" (the paper) or "run": reach gumbel_min at the run's last step
    require_same_masks: bool = True   # every row of a batch hides as many frames as its least-masked row
    diversity_weight: float = 0.1
    feature_penalty: float = 10.0
    feature_grad_mult: float = 0.1
    crop_seconds: float | None = None

    def validate(self) -> None:
        self.check(0 < self.mask_prob <= 1, "mask_prob", "must lie in (0, 1]")
        self.check(self.mask_length >= 1, "mask_length", "must be >= 1")
        self.check(self.num_negatives >= 1, "num_negatives", "must be >= 1")
        self.check(self.codevector_dim % self.codevector_groups == 0, "codevector_dim",
                   "must be divisible by codevector_groups")
        self.check(0 < self.gumbel_min <= self.gumbel_max, "gumbel_min", "need 0 < gumbel_min <= gumbel_max")
        self.check(0 < self.gumbel_decay <= 1, "gumbel_decay", "must lie in (0, 1]")
        self.check(self.gumbel_schedule in ("update", "run"), "gumbel_schedule", "must be 'update' or 'run'")
        self.check(self.temperature > 0, "temperature", "must be > 0")
        self.check(self.crop_seconds is None or self.crop_seconds > 0, "crop_seconds", "must be > 0")


def conv_output_lengths(lengths: Tensor | int, conv_layers: list[tuple[int, int, int]]) -> Tensor:
    """Frames the conv feature encoder gives for ``lengths`` samples: ``floor((L - k) / s) + 1`` per layer
    (0 when the input is shorter than the receptive field)."""
    out = torch.as_tensor(lengths).long()
    for _, k, s in conv_layers:
        out = torch.where(out >= k, torch.div(out - k, s, rounding_mode="floor") + 1, torch.zeros_like(out))
    return out


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def grad_multiply(x: Tensor, scale: float) -> Tensor:
    """Identity forward, gradient × ``scale`` backward (wav2vec 2.0's feature-encoder gradient scaling)."""
    return x if scale == 1.0 else _GradMultiply.apply(x, scale)


def time_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` over time on time-major ``[B, T, C]`` → ``[B, T', C']``: the arithmetic of
    ``conv(x.transpose(1, 2)).transpose(1, 2)`` as a 2-d conv on the channels-last view, so that no layer copies
    its activations between the conv's layout and the LayerNorm's (1.5–2× faster per layer on CPU). Without
    autograd, an unpadded ungrouped conv is one matrix product over a strided view of the frames (k frames × C
    channels lie side by side in memory): another 10–25% on the large early layers. Not while exporting: ONNX has no
    strided view, and its copy of one (a ``Gather`` of every window) costs more than the conv it stands for."""
    if (not torch.is_grad_enabled() and conv.groups == 1 and conv.padding[0] == 0 and x.is_contiguous()
            and not torch.compiler.is_exporting()):
        b, t, c = x.shape
        k, s = conv.kernel_size[0], conv.stride[0]
        cols = x.as_strided((b, max((t - k) // s + 1, 0), k * c), (t * c, s * c, 1))   # [B, T', k·C]
        y = cols @ conv.weight.permute(2, 1, 0).reshape(k * c, -1)
        return y if conv.bias is None else y + conv.bias
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                 stride=(1, conv.stride[0]), padding=(0, conv.padding[0]), groups=conv.groups)
    return y.squeeze(2).transpose(1, 2)


class MaskedGroupNorm(nn.GroupNorm):
    """Group norm with one group per channel whose statistics use each utterance's valid frames only,
    so a padded batch matches the utterances run one by one. Time-major: ``x [B, T, C]``."""

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:  # x [B, T, C], valid [B, T]
        if valid is None:       # the channels-last view: torch's own kernel, no copy
            return F.group_norm(x.transpose(1, 2).unsqueeze(2), self.num_groups, self.weight, self.bias,
                                self.eps).squeeze(2).transpose(1, 2)
        share = valid.to(x.dtype)[:, None, :]
        share = share / share.sum(dim=2, keepdim=True).clamp(min=1.0)         # [B, 1, T]: 1/n on valid frames
        mean = torch.bmm(share, x)
        centred = x - mean
        scale = torch.rsqrt(torch.bmm(share, centred * centred) + self.eps) * self.weight      # [B, 1, C]
        return torch.addcmul(self.bias, centred, scale)


class ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str | None, bias: bool,
                 eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)   # as fairseq's ConvFeatureExtractionModel
        self.kind = norm
        if norm == "group":
            self.norm = MaskedGroupNorm(c_out, c_out, eps=eps, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(c_out, eps=eps)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:  # [B, T, C] → [B, T', C']
        x = time_conv(self.conv, x)
        if self.kind == "group":
            x = self.norm(x, valid)
        elif self.kind == "layer":
            x = self.norm(x)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    """The conv feature encoder: raw samples ``[B, S]`` → features ``[B, T, C]``."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.layers_spec = [tuple(x) for x in config.conv_layers]
        layers, c_in = [], 1
        for i, (c, k, s) in enumerate(self.layers_spec):
            norm = "layer" if config.conv_norm == "layer" else ("group" if i == 0 else None)
            layers.append(ConvLayer(c_in, c, k, s, norm, config.conv_bias, config.eps))
            c_in = c
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = x[:, :, None]
        for i, layer in enumerate(self.layers):
            valid = None
            if lengths is not None and i == 0:
                n = conv_output_lengths(lengths, self.layers_spec[:1])
                t = (x.shape[1] - self.layers_spec[0][1]) // self.layers_spec[0][2] + 1
                valid = torch.arange(t, device=x.device)[None, :] < n[:, None]
            x = layer(x, valid)
        return x


class PositionalConv(nn.Module):
    """Convolutional relative positions: a grouped, weight-normalised conv over time + GELU."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(4.0 / (kernel * dim)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:  # [B, T, D]; padded frames are zero
        y = time_conv(self.conv, x)
        if self.trim:
            y = y[:, :-self.trim]
        return F.gelu(y)


class StackedPositionalConv(nn.Module):
    """data2vec's convolutional relative positions (Baevski et al. 2022, "data2vec", §3; data2vec-audio): a stack of
    grouped convs over time, each followed by a LayerNorm without parameters and GELU."""

    def __init__(self, dim: int, kernel: int, groups: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
                                     for _ in range(layers)])
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:  # [B, T, D], pad [B, T]
        """Padded frames are zeroed before every conv, so that a padded batch gives each utterance what it gets
        alone (where the sequence simply ends)."""
        keep = None if pad is None else (~pad)[:, :, None].to(x.dtype)
        y = x
        for conv in self.layers:
            y = time_conv(conv, y if keep is None else y * keep)
            if self.trim:
                y = y[:, :-self.trim]
            y = F.gelu(F.layer_norm(y, (y.shape[-1],)))
        return y


def relative_position_buckets(offsets: Tensor, buckets: int, max_distance: int) -> Tensor:
    """Bucket key−query offsets as T5 does (Raffel et al. 2020, §2.1; WavLM §2.2): half the buckets for positive
    offsets; in each half, offsets below a quarter of ``buckets`` get a bucket each and larger ones log-spaced
    buckets up to ``max_distance``, beyond which they share the last."""
    half = buckets // 2
    exact = half // 2
    side = (offsets > 0).long() * half
    dist = offsets.abs()
    far = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    return side + torch.where(dist < exact, dist, far.clamp(max=half - 1))


class RelativePositionBias(nn.Module):
    """A learned scalar per head and offset bucket, added to the attention logits of every layer (WavLM,
    Chen et al. 2022, §2.2; computed once, as the released model computes it in its first layer)."""

    def __init__(self, buckets: int, max_distance: int, heads: int) -> None:
        super().__init__()
        self.buckets, self.max_distance = buckets, max_distance
        self.embed = nn.Embedding(buckets, heads)

    def forward(self, frames: int) -> Tensor:  # → [1, H, T, T]
        pos = torch.arange(frames, device=self.embed.weight.device)
        bucket = relative_position_buckets(pos[None, :] - pos[:, None], self.buckets, self.max_distance)
        return self.embed(bucket).permute(2, 0, 1)[None]


class GatedRelPosAttention(Attention):
    """Self-attention whose relative position bias is gated by the content of each query (WavLM, Chen et al.
    2022, eq. 5–6): per head, two sigmoid gates ``a, b`` from the head's slice of the layer input scale the bias
    by ``a·(b·c − 1) + 2`` with a learned constant ``c`` per head — eq. 6 written as the released weights
    expect it (each gate is the sum of four outputs of one linear map)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__(dim, heads, dropout)
        self.gate = nn.Linear(dim // heads, 8)
        self.gate_const = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        if bias is not None:
            b, n, d = x.shape
            g = self.gate(x.view(b, n, self.heads, d // self.heads).transpose(1, 2))    # [B, H, T, 8]
            a, r = torch.sigmoid(g.view(b, self.heads, n, 2, 4).sum(-1)).unbind(-1)
            bias = (a * (r * self.gate_const[..., 0] - 1.0) + 2.0)[..., None] * bias
        return super().forward(x, attn_mask, bias)


class Wav2Vec2Encoder(Encoder):
    """What users load: samples ``input_values [B, S]`` (+ ``padding_mask [B, S]``) → frame tokens."""

    config_class = Wav2Vec2Config

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        c_last = config.conv_layers[-1][0]
        self.feature_encoder = FeatureEncoder(config)
        self.feature_norm = nn.LayerNorm(c_last, eps=config.eps) if config.feature_norm else nn.Identity()
        self.feature_proj = nn.Linear(c_last, config.dim)
        self.feat_dropout = nn.Dropout(config.feat_dropout)
        self.mask_embedding = nn.Parameter(torch.empty(config.dim).uniform_())
        self.pos_conv = PositionalConv(config.dim, config.pos_conv_kernel, config.pos_conv_groups) \
            if config.pos_conv_type == "weight_norm" else \
            StackedPositionalConv(config.dim, config.pos_conv_kernel, config.pos_conv_groups, config.pos_conv_layers)
        self.transformer = TransformerEncoder(config.dim, config.depth, config.heads, config.mlp_ratio,
                                              config.dropout, config.attn_dropout, config.drop_path,
                                              config.eps, norm_first=config.norm_first,
                                              activation_dropout=config.activation_dropout,
                                              layerdrop=config.layerdrop)
        self.rel_pos = None
        if config.rel_pos_buckets:
            self.rel_pos = RelativePositionBias(config.rel_pos_buckets, config.rel_pos_max_distance, config.heads)
            for layer in self.transformer.layers:
                layer.attn = GatedRelPosAttention(config.dim, config.heads, config.attn_dropout)
        # fairseq's init_bert_params on the Transformer: N(0, 0.02)
        init_linears(self.transformer, lambda w: nn.init.normal_(w, 0.0, 0.02))

    @property
    def dim(self) -> int:
        return self.config.dim

    def frame_padding(self, batch: dict[str, Tensor], frames: int) -> tuple[Tensor, Tensor]:
        """Per-utterance frame counts and the frame padding mask ``[B, T]``."""
        x = batch["input_values"]
        if "padding_mask" in batch:
            lengths = (~batch["padding_mask"]).sum(dim=1)
        else:
            lengths = torch.full((x.shape[0],), x.shape[1], device=x.device)
        n = conv_output_lengths(lengths, self.config.conv_layers)
        if not traced() and bool((n == 0).any()):
            row = int((n == 0).nonzero()[0, 0])
            need = self.receptive_field()
            raise ValueError(f"utterance {row} has {int(lengths[row])} samples: shorter than the feature "
                             f"encoder's receptive field ({need} samples)")
        return n, torch.arange(frames, device=x.device)[None, :] >= n[:, None]

    def receptive_field(self) -> int:
        r = 1
        for _, k, s in reversed(self.config.conv_layers):
            r = (r - 1) * s + k
        return r

    def features(self, batch: dict[str, Tensor], grad_mult: float = 1.0
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(conv features [B,T,C], normalised features, projected [B,T,D], frame padding [B,T])``."""
        x = batch["input_values"]
        lengths = (~batch["padding_mask"]).sum(dim=1) if "padding_mask" in batch else None
        feats = grad_multiply(self.feature_encoder(x, lengths), grad_mult)
        _, pad = self.frame_padding(batch, feats.shape[1])
        normed = self.feature_norm(feats)
        return feats, normed, self.feat_dropout(self.feature_proj(normed)), pad

    def contextualise(self, hidden: Tensor, pad: Tensor, time_mask: Tensor | None = None, *,
                      return_hidden: bool = False) -> EncoderOutput:
        if time_mask is not None:
            hidden = torch.where(time_mask[..., None], self.mask_embedding.to(hidden.dtype), hidden)
        hidden = hidden.masked_fill(pad[..., None], 0.0)
        hidden = hidden + self.pos_conv(hidden, pad)
        bias = None if self.rel_pos is None else self.rel_pos(hidden.shape[1])
        tokens, layers = self.transformer(hidden, pad, bias=bias, return_hidden=True)
        return EncoderOutput(tokens, pad, masked_mean(tokens, pad), layers if return_hidden else None)

    def forward(self, batch: dict[str, Tensor], *, time_mask: Tensor | None = None,
                return_hidden: bool = False) -> EncoderOutput:
        _, _, hidden, pad = self.features(batch)
        return self.contextualise(hidden, pad, time_mask, return_hidden=return_hidden)


class GumbelQuantizer(nn.Module):
    """Product quantizer with Gumbel-softmax selection (Jang et al. 2017; wav2vec 2.0 §2):
    ``G`` codebooks of ``V`` entries, straight-through hard choice while training, argmax in eval."""

    def __init__(self, in_dim: int, groups: int, entries: int, dim: int) -> None:
        super().__init__()
        self.groups, self.entries = groups, entries
        self.logits = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.logits.weight, 0.0, 1.0)
        nn.init.zeros_(self.logits.bias)
        self.codevectors = nn.Parameter(torch.empty(groups * entries, dim // groups).uniform_())

    def forward(self, x: Tensor, mask: Tensor, tau: float, generator: torch.Generator | None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``x [B, T, C]`` → ``(quantized [B, T, dim], averaged soft distribution [G, V] over mask, code
        perplexity)``: the last is the collapse signal, the perplexity of the argmax codes of the masked frames
        summed over groups (fairseq's ``code_perplexity``)."""
        b, t, _ = x.shape
        logits = self.logits(x).float().view(b * t, self.groups, self.entries)
        soft = logits.softmax(dim=-1)
        m = mask.reshape(-1).to(soft.dtype)
        avg = (soft * m[:, None, None]).sum(dim=0) / m.sum().clamp(min=1.0)
        if self.training:
            u = torch.rand(logits.shape, generator=generator, device=logits.device)
            gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-10)))
            y = ((logits + gumbel) / tau).softmax(dim=-1)
            hard = F.one_hot(y.argmax(dim=-1), self.entries).to(y.dtype)
            onehot = hard - y.detach() + y
        else:
            onehot = F.one_hot(logits.argmax(dim=-1), self.entries).to(logits.dtype)
        books = self.codevectors.view(self.groups, self.entries, -1).to(onehot.dtype)
        q = torch.einsum("ngv,gvd->ngd", onehot, books).reshape(b, t, -1)
        with torch.no_grad():
            codes = logits.argmax(dim=-1)[mask.reshape(-1)]
            used = sum(code_perplexity(codes[:, g], self.entries) for g in range(self.groups))
        return q.to(x.dtype), avg, used


class Wav2Vec2Pretrainer(Pretrainer):
    """Masked contrastive pretraining of wav2vec 2.0 (eq. 2-4): L = L_m + α·L_d + λ·||features||².

    The batch may carry ``time_mask [B, T]`` and ``negatives [B, T, K]`` to use given masks and
    distractors instead of drawing them."""

    collapse_rules = (CollapseRule(
        "code_share", 0.02, below=True,
        remedy="raise pretraining.diversity_weight, lower train.lr (keep train.grad_clip on) or lengthen "
               "train.warmup_steps, keep pretraining.feature_penalty on; silent or constant audio gives the quantizer "
               "nothing to tell apart"),)

    def __init__(self, encoder: Wav2Vec2Encoder, config: Wav2Vec2PretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)
        c_last = encoder.config.conv_layers[-1][0]
        self.quantizer = GumbelQuantizer(c_last, config.codevector_groups, config.codevectors_per_group,
                                         config.codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_dim)
        self.project_hid = nn.Linear(encoder.dim, config.proj_dim)
        self.register_buffer("tau", torch.tensor(config.gumbel_max), persistent=True)
        if config.gumbel_schedule == "run":
            self.decay = (config.gumbel_min / config.gumbel_max) ** (1.0 / max(total_steps, 1))
        else:
            self.decay = config.gumbel_decay

    def gumbel_temperature(self, step: int) -> float:
        """Temperature after ``step`` updates: ``max(gumbel_max * decay**step, gumbel_min)``, with the paper's
        per-update ``gumbel_decay`` (2 → 0.5 by 0.999995, the floor reached after 277k updates) or, with
        ``gumbel_schedule: run``, the decay that reaches ``gumbel_min`` at the run's last step."""
        return max(self.config.gumbel_max * self.decay ** step, self.config.gumbel_min)

    def on_step(self, step: int) -> dict[str, float]:
        self.tau.fill_(self.gumbel_temperature(step))
        return {"gumbel_tau": float(self.tau)}

    def crop(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """Random crops of at most ``crop_seconds`` per utterance (vectorised gather)."""
        x, pad = batch["input_values"], batch["padding_mask"]
        size = int(self.config.crop_seconds * self.encoder.config.sample_rate)
        if x.shape[1] <= size:
            return batch
        lengths = (~pad).sum(dim=1)
        room = (lengths - size).clamp(min=0)
        start = (torch.rand(x.shape[0], generator=generator, device=x.device) * (room + 1)).long()
        idx = (start[:, None] + torch.arange(size, device=x.device)).clamp(max=x.shape[1] - 1)
        new_len = lengths.clamp(max=size)
        new_pad = torch.arange(size, device=x.device)[None, :] >= new_len[:, None]
        return {**batch, "input_values": x.gather(1, idx).masked_fill(new_pad, 0.0), "padding_mask": new_pad}

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        cfg = self.config
        if cfg.crop_seconds is not None:
            batch = self.crop(batch, generator)
        enc: Wav2Vec2Encoder = self.encoder  # type: ignore[assignment]
        feats, normed, hidden, pad = enc.features(batch, grad_mult=cfg.feature_grad_mult)
        valid = ~pad
        penalty = (feats.float().pow(2).mean(dim=-1) * valid).sum() / valid.sum()
        b, t = pad.shape
        if "time_mask" in batch:                      # given masks (e.g. to compare implementations)
            mask = batch["time_mask"] & valid
        else:
            mask = span_mask(b, t, cfg.mask_prob, cfg.mask_length, generator=generator,
                             valid_lengths=valid.sum(dim=1), min_spans=cfg.min_masks,
                             same_count=cfg.require_same_masks, device=pad.device)
        out = enc.contextualise(hidden, pad, mask)
        context = self.project_hid(out.tokens)
        q, avg_probs, used = self.quantizer(enc.feat_dropout(normed), mask, float(self.tau), generator)
        targets = self.project_q(q)
        negatives = batch["negatives"] if "negatives" in batch else sample_negatives(
            mask, cfg.num_negatives, generator=generator)
        contrastive, logits = wav2vec_contrastive(context, targets, mask, negatives, cfg.temperature)
        diversity = diversity_loss(avg_probs)
        loss = contrastive + cfg.diversity_weight * diversity + cfg.feature_penalty * penalty
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == 0).float().mean() if logits.numel() else torch.tensor(0.0)
            metrics = {"contrastive": contrastive, "diversity": diversity, "feature_penalty": penalty,
                       "accuracy": acc, "perplexity": codebook_perplexity(avg_probs),
                       "masked_frac": mask.sum() / valid.sum(), "code_perplexity": used,
                       "code_share": used / (cfg.codevector_groups * cfg.codevectors_per_group)}
        return PretrainOutput(loss, {k: float(v.detach()) for k, v in metrics.items()})
