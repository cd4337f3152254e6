"""Import the official Point-MAE checkpoints (Pang et al. 2022; github.com/Pang-Yatian/Point-MAE) into the zoo
format. Written against the key layout of its ``models/Point_MAE.py`` and the files it releases: ``pretrain.pth``
(``base_model`` → ``MAE_encoder.*`` with the decoder beside it) and the fine-tuned ``modelnet_*.pth`` /
``scan_*.pth`` (``base_model`` → ``encoder.*``, ``blocks.blocks.N.*``, ``cls_token``, ``cls_pos``,
``cls_head_finetune``).
Read with ``torch.load(weights_only=True)``: tensors and plain containers only, never code.

The reference's options that differ from our defaults are set on import: no q/k/v bias in attention, and for the
fine-tuned models a [CLS] token with its own position (pooled = [CLS, max over patches], as its classifier reads).
Its shared point-wise convolutions (kernel 1) become our linear layers; heads are dropped and the log says so.
The number of heads is not in a state dict: 6 in every released model (``--heads`` for another)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from zoo.cards import write_card
from zoo.hub import FormatError, check_finite, load_state_strict

from .model import PointMAEConfig, PointMAEEncoder
from .processor import PointCloudProcessor, PointCloudProcessorConfig

__all__ = ["read_reference", "map_reference", "to_reference", "convert_reference"]

logger = logging.getLogger(__name__)
HEADS = ("MAE_decoder.", "decoder_pos_embed.", "mask_token", "increase_dim.", "cls_head_finetune.")
_CONV = {"first_conv.0": "first.0", "first_conv.1": "first.1", "first_conv.3": "first.3",
         "second_conv.0": "second.0", "second_conv.1": "second.1", "second_conv.3": "second.3"}
_BLOCK = {"norm1": "norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "norm2", "mlp.fc1": "fc1",
          "mlp.fc2": "fc2"}


def read_reference(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state of a Point-MAE checkpoint file (``base_model``), prefixes ``module.``/``MAE_encoder.``/
    ``base_model.`` removed."""
    import pickle
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise FormatError(f"{path}: an empty file (0 bytes), not a Point-MAE checkpoint")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:       # code in the pickle: refused, never executed
        raise FormatError(f"{path}: not a tensors-only checkpoint (torch.load with weights_only=True refuses it: "
                          f"{(str(err).splitlines() or [type(err).__name__])[0][:160]})") from None
    except Exception as err:                    # a cut or damaged file, or not a checkpoint at all
        said = (str(err).splitlines() or ["the file ends early"])[0][:160]
        raise FormatError(f"{path}: does not load as a PyTorch checkpoint ({type(err).__name__}: {said}): a cut "
                          "or damaged file?") from None
    state = ckpt.get("base_model", ckpt.get("model", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise FormatError(f"{path}: no state dict of tensors under 'base_model'")
    check_finite(state, str(path))
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for prefix in ("MAE_encoder.", "base_model."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def map_reference(state: dict[str, torch.Tensor], *, heads: int = 6, num_points: int = 1024, num_patches: int = 64,
                  patch_size: int = 32) -> tuple[PointMAEConfig, dict[str, torch.Tensor]]:
    """Reference names → ours, and the encoder config its shapes imply."""
    dropped = sorted({k.split(".")[0] for k in state if k.startswith(HEADS)})
    if dropped:
        logger.warning("importing the encoder only: dropped %s", ", ".join(dropped))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(HEADS):
            continue
        m = re.fullmatch(r"encoder\.((?:first|second)_conv\.\d)\.(.+)", key)
        b = re.fullmatch(r"blocks\.blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(.+)", key)
        if m and m.group(1) in _CONV:
            out[f"patch_embed.{_CONV[m.group(1)]}.{m.group(2)}"] = value[..., 0] if value.dim() == 3 else value
        elif b:
            out[f"transformer.layers.{b.group(1)}.{_BLOCK[b.group(2)]}.{b.group(3)}"] = value
        elif re.fullmatch(r"pos_embed\.[02]\.(weight|bias)", key) or key in ("cls_token", "cls_pos"):
            out[key] = value
        elif key in ("norm.weight", "norm.bias"):
            out["transformer." + key] = value
        else:
            raise FormatError(f"unexpected Point-MAE weight {key!r}: not part of its encoder")
    for need in ("pos_embed.2.weight", "patch_embed.first.0.weight", "patch_embed.second.0.weight"):
        if need not in out:
            raise FormatError(f"not a Point-MAE encoder state: {need} (reference name) is missing")
    depth = 1 + max(int(k.split(".")[2]) for k in out if k.startswith("transformer.layers."))
    config = PointMAEConfig(num_points=num_points, num_patches=num_patches, patch_size=patch_size,
                            dim=out["pos_embed.2.weight"].shape[0], depth=depth, heads=heads,
                            pointnet_dims=(out["patch_embed.first.0.weight"].shape[0],
                                           out["patch_embed.first.3.weight"].shape[0],
                                           out["patch_embed.second.0.weight"].shape[0]),
                            in_channels=out["patch_embed.first.0.weight"].shape[1],
                            qkv_bias="transformer.layers.0.attn.qkv.bias" in out, cls_token="cls_token" in out)
    try:
        config.validate()
    except ValueError as err:
        raise ValueError(f"Point-MAE checkpoint of width {config.dim}: {err}"
                         + (" (the heads are not recorded in the checkpoint: give --option heads=N, N dividing "
                            f"{config.dim})" if config.dim % max(heads, 1) else "")) from None
    return config, out


def to_reference(encoder: PointMAEEncoder, *, pretraining: bool = True) -> dict[str, torch.Tensor]:
    """Our encoder's weights in the reference's layout (the inverse of :func:`map_reference`): ``MAE_encoder.*`` for
    a pretraining checkpoint, bare names for a fine-tuned one."""
    conv = {v: k for k, v in _CONV.items()}
    block = {v: k for k, v in _BLOCK.items()}
    prefix = "MAE_encoder." if pretraining else ""
    out = {}
    for key, value in encoder.state_dict().items():
        m = re.fullmatch(r"patch_embed\.((?:first|second)\.\d)\.(.+)", key)
        b = re.fullmatch(r"transformer\.layers\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|fc1|fc2)\.(.+)", key)
        if m:
            name = f"encoder.{conv[m.group(1)]}.{m.group(2)}"
            out[name] = value[..., None] if m.group(2) == "weight" and value.dim() == 2 else value
        elif b:
            out[f"blocks.blocks.{b.group(1)}.{block[b.group(2)]}.{b.group(3)}"] = value
        elif key.startswith("transformer.norm."):
            out[key.removeprefix("transformer.")] = value
        else:
            out[key] = value
    return {prefix + k: v.clone() for k, v in out.items()}


OPTIONS = ("heads", "num_points", "num_patches", "patch_size")


def _options(options: dict[str, Any]) -> dict[str, int]:
    """``zoo convert --option`` settings for a Point-MAE checkpoint: known names, whole numbers >= 1
    (docs/reliability.md); ``heads`` is not recorded in the weights, so the reference's 6 is assumed, said."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"--option {unknown[0]}: not a Point-MAE converter setting (known: {', '.join(OPTIONS)})")
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--option {key}={value!r}: must be a whole number >= 1")
    if "heads" not in options:
        logger.warning("--option heads not given: 6 attention heads assumed (Point-MAE's; the checkpoint does not "
                       "record them): give --option heads=N for a model trained with another number")
    return dict(options)


def convert_reference(source: str | Path, output: str | Path, **options: Any) -> Path:
    """A Point-MAE ``.pth`` → a zoo folder (``options``: heads, num_points, num_patches, patch_size)."""
    config, state = map_reference(read_reference(source), **_options(options))
    encoder = PointMAEEncoder(config)
    load_state_strict(encoder, state, str(source))
    processor = PointCloudProcessor(PointCloudProcessorConfig(num_points=config.num_points,
                                                              min_points=min(32, config.num_points)))
    encoder.save_pretrained(output, processor=processor,
                            pretraining={"converted_from": Path(str(source)).name, "reference": "Point-MAE"})
    write_card(output, summary=f"Point-MAE encoder imported from the reference checkpoint `{Path(source).name}`.",
               method="Point-MAE (Pang et al. 2022)")
    return Path(output)
