"""Layers shared by every encoder: one pre-norm Transformer, positions, pooling, an EMA teacher."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "traced",
    "init_linears",
    "DropPath",
    "Attention",
    "EncoderLayer",
    "TransformerEncoder",
    "sinusoidal_positions",
    "LearnedPositions",
    "masked_mean",
    "EMATeacher",
]


def traced() -> bool:
    """Whether the code runs under a tracer (``torch.export``, ``torch.compile``, the TorchScript ONNX exporter)
    rather than eagerly: checks that read tensor values on the host (a bad example's clear error) run eagerly only,
    so that an encoder's ``forward`` stays one tensor program (docs/architecture.md, "Export")."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a sample's residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


def init_linears(module: nn.Module, weight_init: Callable[[Tensor], Any]) -> None:
    """Every linear layer inside ``module``: ``weight_init`` on its weight, zero bias (how each reference states its
    initialisation: BERT's N(0, 0.02), ViT's truncated normal, MAE's Xavier-uniform)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            weight_init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Attention(nn.Module):
    """Multi-head self-attention on ``scaled_dot_product_attention`` with a key-padding mask and, optionally,
    an additive bias on the logits ``[B or 1, H, N, N]`` (relative positions)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True,
                 qkv_bias: bool | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias if qkv_bias is None else qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if bias is not None:
            bias = bias.to(q.dtype)
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    """Transformer block (Vaswani et al. 2017). Pre-norm (Xiong et al. 2020): x + Attn(LN x), x + MLP(LN x);
    with ``norm_first=False`` the original post-norm: LN(x + Attn x), LN(x + MLP x) (BERT, wav2vec 2.0 base)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, eps: float = 1e-5,
                 norm_first: bool = True, activation_dropout: float | None = None, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm_first = norm_first
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, attn_dropout, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        # dropout after the MLP's activation (fairseq's activation_dropout); None = the same as dropout
        self.act_drop = nn.Dropout(dropout if activation_dropout is None else activation_dropout)
        self.drop_path = DropPath(drop_path)

    def _mlp(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        # without autograd GELU works in place: one fewer [B, N, 4D] buffer per layer to allocate and touch
        h = torch.ops.aten.gelu_(h) if not torch.is_grad_enabled() else F.gelu(h)
        return self.drop(self.fc2(self.act_drop(h)))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        if self.norm_first:
            x = x + self.drop_path(self.drop(self.attn(self.norm1(x), attn_mask, bias)))
            return x + self.drop_path(self._mlp(self.norm2(x)))
        x = self.norm1(x + self.drop_path(self.drop(self.attn(x, attn_mask, bias))))
        return self.norm2(x + self.drop_path(self._mlp(x)))


class TransformerEncoder(nn.Module):
    """A stack of blocks; ``padding_mask [B, N]`` is ``True`` at padding. Pre-norm stacks end with a
    LayerNorm; post-norm stacks (``norm_first=False``) apply that LayerNorm to the input instead.

    Drop-path rates rise linearly from 0 to ``drop_path`` over the depth. ``layerdrop`` (Fan et al. 2020,
    as wav2vec 2.0) skips each whole layer with that probability per training batch. Padded positions never
    serve as keys; their outputs are returned as computed and should be ignored by the caller.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, eps: float = 1e-5,
                 norm_first: bool = True, activation_dropout: float | None = None,
                 layerdrop: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.norm_first, self.layerdrop = norm_first, layerdrop
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, mlp_ratio, dropout, attn_dropout, r, eps, norm_first, activation_dropout,
                         qkv_bias)
            for r in rates)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.input_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None, *, bias: Tensor | None = None,
                return_hidden: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        attn_mask = None
        if padding_mask is not None:
            if not traced() and bool(padding_mask.all(dim=1).any()):
                row = int(padding_mask.all(dim=1).nonzero()[0, 0])
                raise ValueError(f"example {row} of the batch is all padding: nothing to attend to")
            attn_mask = ~padding_mask[:, None, None, :]          # SDPA: True = may attend
        x = self.input_drop(x if self.norm_first else self.norm(x))
        hidden = [x]
        skip = (torch.rand(len(self.layers)) < self.layerdrop).tolist() if self.training and self.layerdrop else None
        for i, layer in enumerate(self.layers):
            if not (skip and skip[i]):
                x = layer(x, attn_mask, bias)
            hidden.append(x)
        if self.norm_first:
            x = self.norm(x)
        return (x, hidden) if return_hidden else x


def sinusoidal_positions(length: int, dim: int, *, base: float = 10000.0,
                         device: torch.device | str | None = None) -> Tensor:
    """Fixed sine/cosine positions of Vaswani et al. 2017, ``[length, dim]`` float32 (sines on even channels).

    Computed in float64 and rounded once: in float32 the angle of position 1500 is off by about 1e-4."""
    pos = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64, device=device) * (-math.log(base) / dim))
    out = torch.zeros(length, dim, dtype=torch.float64, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out.float()


class LearnedPositions(nn.Module):
    """Learned absolute position embeddings for up to ``max_len`` tokens."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, length: int) -> Tensor:
        if length > self.weight.shape[0]:
            raise ValueError(f"sequence of {length} tokens exceeds max_len {self.weight.shape[0]}")
        return self.weight[:length]


def masked_mean(tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """Mean over the non-padding tokens: ``[B, N, D] → [B, D]``."""
    if padding_mask is None:
        return tokens.mean(dim=1)
    keep = (~padding_mask).to(tokens.dtype)[..., None]
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


class EMATeacher(nn.Module):
    """An exponential-moving-average copy of a student (BYOL, Grill et al. 2020; I-JEPA).

    The momentum rises linearly from ``start`` to ``end`` over ``total_steps``; the teacher never
    receives gradients and is updated with one fused ``lerp`` over all parameters.
    """

    def __init__(self, student: nn.Module, start: float = 0.996, end: float = 1.0,
                 total_steps: int = 1) -> None:
        super().__init__()
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got {start}, {end}")
        self.module = copy.deepcopy(student).requires_grad_(False)
        self.start, self.end, self.total_steps = start, end, max(total_steps, 1)

    def momentum(self, step: int) -> float:
        frac = min(max(step, 0), self.total_steps) / self.total_steps
        return self.start + (self.end - self.start) * frac

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """``teacher ← m·teacher + (1−m)·student``; returns the momentum ``m`` used."""
        m = self.momentum(step)
        t = [p for p in self.module.parameters()]
        s = [p.detach() for p in student.parameters()]
        if len(t) != len(s):
            raise ValueError("student and teacher have different parameter lists")
        torch._foreach_lerp_(t, s, 1.0 - m)
        for tb, sb in zip(self.module.buffers(), student.buffers()):
            tb.copy_(sb)
        return m

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
