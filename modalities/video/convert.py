"""Import a Hugging Face transformers ``VideoMAEModel`` / ``VideoMAEForPreTraining`` folder (safetensors only) into
the zoo format, so MCG-NJU/videomae-* style checkpoints become zoo encoders with identical hidden states."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from zoo.hub import (
    FormatError,
    foreign_checkpoint,
    foreign_numbers,
    load_state_strict,
    load_weights,
    read_json,
    require_floating,
)

from .model import VideoMAEConfig, VideoMAEEncoder, VideoMAEPretrainingConfig
from .processor import VideoProcessor, VideoProcessorConfig

_LAYER = [
    (r"attention\.output\.dense\.", "attn.proj."),
    (r"layernorm_before\.", "norm1."),
    (r"layernorm_after\.", "norm2."),
    (r"intermediate\.dense\.", "fc1."),
    (r"output\.dense\.", "fc2."),
]


def config_from_transformers(hf: dict[str, Any]) -> tuple[VideoMAEConfig, VideoMAEPretrainingConfig]:
    if hf.get("hidden_act", "gelu") != "gelu":
        raise FormatError(f"hidden_act={hf['hidden_act']!r} is not supported (only 'gelu')")
    size, patch = hf.get("image_size", 224), hf.get("patch_size", 16)
    if not isinstance(size, int) or not isinstance(patch, int):
        raise FormatError(f"only square frames and patches are supported, got image_size={size}, patch_size={patch}")
    hidden, dec = hf.get("hidden_size", 768), hf.get("decoder_hidden_size", 384)
    enc = VideoMAEConfig(
        image_size=size, patch_size=patch, num_frames=hf.get("num_frames", 16), tubelet_size=hf.get("tubelet_size", 2),
        channels=hf.get("num_channels", 3), dim=hidden, depth=hf.get("num_hidden_layers", 12),
        heads=hf.get("num_attention_heads", 12), mlp_ratio=hf.get("intermediate_size", 3072) / hidden,
        dropout=hf.get("hidden_dropout_prob", 0.0), attn_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        eps=hf.get("layer_norm_eps", 1e-12), positions="1d", final_norm=not hf.get("use_mean_pooling", True))
    enc.validate()
    pre = VideoMAEPretrainingConfig(decoder_dim=dec, decoder_depth=hf.get("decoder_num_hidden_layers", 4),
                                    decoder_heads=hf.get("decoder_num_attention_heads", 6),
                                    decoder_mlp_ratio=hf.get("decoder_intermediate_size", 1536) / dec,
                                    norm_targets=hf.get("norm_pix_loss", True))
    pre.validate()
    return enc, pre


def _blocks(state: dict[str, torch.Tensor], prefix: str, ours: str) -> dict[str, torch.Tensor]:
    """One stack of transformers VideoMAE layers (``prefix.<i>.``) → ours (``ours.<i>.``); q/k/v fused into ``qkv``
    (the key has no bias in VideoMAE: a zero bias, which attention cannot see)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.(.+)", key)
        if not m:
            continue
        i, rest = int(m.group(1)), m.group(2)
        q = re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", rest)
        if q:
            qkv.setdefault(i, {})[f"{q.group(1)}.{q.group(2)}"] = value
            continue
        q = re.fullmatch(r"attention\.attention\.(q|v)_bias", rest)       # the Hub checkpoints' names
        if q:
            qkv.setdefault(i, {})[{"q": "query", "v": "value"}[q.group(1)] + ".bias"] = value
            continue
        for pattern, repl in _LAYER:
            new, n = re.subn("^" + pattern, repl, rest)
            if n:
                out[f"{ours}.{i}.{new}"] = value
                break
        else:
            raise FormatError(f"unexpected transformers weight {key!r}")
    for i, parts in qkv.items():
        w = parts["query.weight"]
        out[f"{ours}.{i}.attn.qkv.weight"] = torch.cat([parts["query.weight"], parts["key.weight"],
                                                        parts["value.weight"]])
        zeros = torch.zeros(w.shape[0], dtype=w.dtype)
        out[f"{ours}.{i}.attn.qkv.bias"] = torch.cat([parts.get("query.bias", zeros), parts.get("key.bias", zeros),
                                                      parts.get("value.bias", zeros)])
    return out


def _patch_weight(conv: torch.Tensor) -> torch.Tensor:
    """Conv3d weight ``[D, C, t, p, p]`` → our tubelet embedding ``[D, t·p·p·C]`` (channel-last tubelets)."""
    return conv.permute(0, 2, 3, 4, 1).reshape(conv.shape[0], -1)


def map_state_dict(state: dict[str, torch.Tensor], config: VideoMAEConfig) -> dict[str, torch.Tensor]:
    """transformers ``VideoMAEModel`` names (with or without the ``videomae.`` prefix) → our encoder's."""
    state = {k.removeprefix("videomae."): v for k, v in state.items()}
    known = ("embeddings.", "encoder.layer.", "layernorm.")
    pretraining = ("encoder_to_decoder.", "mask_token", "decoder.", "fc_norm.", "classifier.")
    for key in state:
        if not key.startswith(known) and not key.startswith(pretraining):
            raise FormatError(f"unexpected transformers weight {key!r}: not a VideoMAEModel parameter")
    out = _blocks(state, "encoder.layer", "transformer.layers")
    out["patch_embed.weight"] = _patch_weight(state["embeddings.patch_embeddings.projection.weight"])
    out["patch_embed.bias"] = state["embeddings.patch_embeddings.projection.bias"]
    if config.final_norm:
        out["transformer.norm.weight"] = state["layernorm.weight"]
        out["transformer.norm.bias"] = state["layernorm.bias"]
    return out


def map_pretraining_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder side of a ``VideoMAEForPreTraining`` state dict → our pretrainer's (encoder keys excluded)."""
    out = _blocks(state, "decoder.decoder_layers", "decoder.layers")
    out["decoder.norm.weight"], out["decoder.norm.bias"] = state["decoder.norm.weight"], state["decoder.norm.bias"]
    out["head.weight"], out["head.bias"] = state["decoder.head.weight"], state["decoder.head.bias"]
    out["encoder_to_decoder.weight"] = state["encoder_to_decoder.weight"]
    out["mask_token"] = state["mask_token"]
    return out


def processor_from_transformers(source: Path, enc: VideoMAEConfig) -> VideoProcessor:
    cfg = VideoProcessorConfig(num_frames=enc.num_frames, image_size=enc.image_size, channels=enc.channels)
    if enc.channels != 3:
        cfg.mean, cfg.std = [0.5] * enc.channels, [0.5] * enc.channels
    pp = source / "preprocessor_config.json"
    if pp.is_file():
        p = read_json(pp)
        try:
            if p.get("image_mean") is not None:
                cfg.mean, cfg.std = [float(v) for v in p["image_mean"]], [float(v) for v in p["image_std"]]
            short = (p.get("size") or {}).get("shortest_edge")
            if short and int(short) >= enc.image_size:
                cfg.resize = int(short)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FormatError(f"{pp}: image_mean/image_std/size do not read as numbers ({type(err).__name__}: "
                              f"{err})") from None
    cfg.validate()
    return VideoProcessor(cfg)


def convert_transformers(source: str | Path, output: str | Path) -> Path:
    """Convert a transformers VideoMAE folder (config.json + model.safetensors) into a zoo folder."""
    source, output = Path(source), Path(output)
    hf, weights = foreign_checkpoint(source, "videomae")
    foreign_numbers(hf, str(source / "config.json"), ("hidden_size",),
                    ("image_size", "patch_size", "num_frames", "tubelet_size", "num_channels", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "decoder_hidden_size", "decoder_num_hidden_layers",
                     "decoder_num_attention_heads", "decoder_intermediate_size"))
    enc_cfg, pre_cfg = config_from_transformers(hf)
    encoder = VideoMAEEncoder(enc_cfg)
    state = load_weights(weights)
    require_floating(state, str(weights))
    load_state_strict(encoder, map_state_dict(state, enc_cfg), str(source))
    encoder.save_pretrained(output, processor=processor_from_transformers(source, enc_cfg),
                            pretraining={"converted_from": str(source), "objective": pre_cfg.to_dict()})
    from zoo.cards import write_card
    write_card(output, summary=f"VideoMAE encoder converted from the transformers checkpoint `{source.name}`.",
               method="VideoMAE (Tong et al. 2022)")
    return output
