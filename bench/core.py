"""Core benchmarks: span masks + distractor sampling vs Hugging Face transformers' wav2vec 2.0 helpers,
and our pre-norm encoder layer vs ``torch.nn.TransformerEncoderLayer`` (forward + backward)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.layers import EncoderLayer
from zoo.masking import span_mask
from zoo.objectives import sample_negatives

from .harness import Row, measure_pair, print_table


def masks_row(batch: int = 8, frames: int = 1000, mask_prob: float = 0.65, span: int = 10,
              negatives: int = 100) -> Row:
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([frames - 37 * i for i in range(batch)])
    attn = (torch.arange(frames)[None, :] < lengths[:, None]).long()
    np.random.seed(0)

    def ours() -> None:
        m = span_mask(batch, frames, mask_prob, span, generator=g, valid_lengths=lengths, min_spans=2)
        sample_negatives(m, negatives, generator=g)

    def reference() -> None:
        m = _compute_mask_indices((batch, frames), mask_prob, span, attention_mask=attn, min_masks=2)
        _sample_negative_indices((batch, frames), negatives, m)

    return Row("span masks + distractors", f"B={batch}, T={frames}, p={mask_prob}, span={span}, K={negatives}",
               *measure_pair(ours, reference, repeat=200),
               "transformers _compute_mask_indices + _sample_negative_indices")


def layer_row(batch: int = 8, tokens: int = 256, dim: int = 384, heads: int = 6) -> Row:
    torch.manual_seed(0)
    ours_layer = EncoderLayer(dim, heads, 4.0)
    ref_layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
    x = torch.randn(batch, tokens, dim)
    pad = torch.zeros(batch, tokens, dtype=torch.bool)
    pad[1, tokens // 2:] = True
    attn_mask = ~pad[:, None, None, :]

    def ours() -> None:
        ours_layer(x, attn_mask).sum().backward()

    def reference() -> None:
        ref_layer(x, src_key_padding_mask=pad).sum().backward()

    return Row("encoder layer fwd+bwd", f"B={batch}, N={tokens}, D={dim}, H={heads}, key padding",
               *measure_pair(ours, reference, repeat=20), "torch.nn.TransformerEncoderLayer")


def main() -> str:
    return print_table("Core (zoo/)", [masks_row(), layer_row()])


if __name__ == "__main__":
    main()
