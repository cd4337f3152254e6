"""A zoo VideoMAE back to transformers (docs/command-line.md, "Export"; docs/architecture.md, "Export"): an encoder
as ``VideoMAEModel``, a classifier fine-tuned with ``head_norm`` as ``VideoMAEForVideoClassification``, with a
``preprocessor_config.json`` for ``VideoMAEImageProcessor`` that resizes, crops and normalises as our processor does.

The layouts, exactly: transformers' ``VideoMAEModel`` ends with a LayerNorm unless ``use_mean_pooling`` (ours: the
config's ``final_norm``), so an encoder maps onto it either way. Its classifier reads
``classifier(fc_norm(mean of the tokens))`` with ``use_mean_pooling`` (no final norm) and ``classifier(token 0)``
without: only a classifier whose encoder gave up its final norm and whose head normalises the pooled mean
(``zoo finetune --head-norm``) is that program; any other is refused, naming the option.

The weight names and layouts are found, not written out: every element of a same-shaped transformers model is
tagged with its index, the tags are run through the importer's :func:`~modalities.video.convert.map_state_dict`
(which cuts the Conv3d tubelet embedding into our channel-last linear layer and fuses q, k, v), and each of our
elements is put back where its tag came from. The one element with no place there is the key's bias, which
transformers' VideoMAE does not have and attention cannot see (a constant added to every score of a query); it is
dropped, which changes no output (up to rounding)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from zoo import AutoProcessor
from zoo.export import source_name
from zoo.hub import FormatError, load_config, load_weights, read_json, resolve_file

from .convert import map_state_dict
from .model import VideoMAEConfig
from .processor import VideoProcessorConfig

__all__ = ["export_transformers", "transformers_config"]

_KEY_BIAS = re.compile(r"transformer\.layers\.\d+\.attn\.qkv\.bias")


def transformers_config(enc: VideoMAEConfig, intermediate: int) -> dict[str, Any]:
    """The transformers ``VideoMAEConfig`` of our encoder settings (the inverse of ``convert.config_from_transformers``;
    ``intermediate``: the MLP width, read from the weights)."""
    return {"model_type": "videomae", "image_size": enc.image_size, "patch_size": enc.patch_size,
            "num_channels": enc.channels, "num_frames": enc.num_frames, "tubelet_size": enc.tubelet_size,
            "hidden_size": enc.dim, "num_hidden_layers": enc.depth, "num_attention_heads": enc.heads,
            "intermediate_size": intermediate, "hidden_act": "gelu", "hidden_dropout_prob": enc.dropout,
            "attention_probs_dropout_prob": enc.attn_dropout, "layer_norm_eps": enc.eps, "qv_bias": True,
            "use_mean_pooling": not enc.final_norm}


def _their_state(body: torch.nn.Module, enc: VideoMAEConfig, ours: dict[str, torch.Tensor],
                 where: str) -> dict[str, torch.Tensor]:
    """Our encoder weights laid out as ``body``'s (a transformers ``VideoMAEModel``) state dict."""
    shapes = dict(body.state_dict())
    tags: dict[str, torch.Tensor] = {}
    start = 1                                           # 0 tags the importer's zero filler (the key's bias)
    for key, value in shapes.items():
        tags[key] = torch.arange(start, start + value.numel(), dtype=torch.float64).view(value.shape)
        start += value.numel()
    mapped = map_state_dict(tags, enc)
    flat = torch.zeros(start, dtype=torch.float64)
    filled = torch.zeros(start, dtype=torch.bool)
    for name, value in ours.items():
        if name not in mapped:
            raise FormatError(f"{where}: weight {name!r} has no place in transformers' VideoMAEModel")
        tag = mapped[name].reshape(-1).long()
        vals = value.detach().reshape(-1).double()
        lost = tag == 0
        if bool(lost.any()) and not _KEY_BIAS.fullmatch(name):
            raise FormatError(f"{where}: part of weight {name!r} has no place in transformers' VideoMAEModel")
        flat[tag[~lost]] = vals[~lost]
        filled[tag[~lost]] = True
    for key, t in tags.items():
        if not bool(filled[t.reshape(-1).long()].all()):
            raise FormatError(f"{where}: transformers' weight {key!r} gets no value from ours")
    return {key: flat[t.reshape(-1).long()].view(t.shape).to(shapes[key].dtype).contiguous()
            for key, t in tags.items()}


def image_processor_config(proc: VideoProcessorConfig) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``VideoMAEImageProcessor``: the short side resized to ``resize`` (default
    ``image_size``), the centre ``image_size`` square, ``[0, 1]`` pixels normalised by our mean and std. The frames
    are the caller's: the image processor takes the ones it is given (see the card for ours)."""
    size = proc.image_size
    return {"image_processor_type": "VideoMAEImageProcessor", "do_resize": size is not None,
            "size": {"shortest_edge": int(proc.resize or size or 224)}, "resample": 2,      # bilinear
            "do_center_crop": size is not None, "crop_size": {"height": int(size or 224), "width": int(size or 224)},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [float(v) for v in proc.mean], "image_std": [float(v) for v in proc.std]}


def _classifier_refusal(model: str | Path, meta: dict[str, Any], enc: VideoMAEConfig, clf_path: Path) -> str | None:
    """Why a classifier cannot be ``VideoMAEForVideoClassification`` exactly (``None``: it can)."""
    if meta.get("task", "classification") != "classification":
        return f"{clf_path}: a regressor has no transformers video-classification class"
    redo = ("fine-tune the encoder again with `zoo finetune ENCODER --data ... --head-norm` (finetune.head_norm: "
            "true), which gives it that head")
    if not meta.get("head_norm", False):
        return (f"{model}: its head is a linear layer on the mean of the tokens, and transformers' "
                "VideoMAEForVideoClassification puts a LayerNorm between that mean and its classifier, so its "
                f"predictions would differ: {redo}")
    if enc.final_norm:
        return (f"{model}: its tokens pass the encoder's final norm before the head's norm, a layout "
                f"VideoMAEForVideoClassification does not have: {redo}")
    return None


def export_transformers(model: str | Path, out: str | Path) -> Path:
    """Write ``model`` (a zoo VideoMAE encoder or classifier folder) to ``out`` as a transformers folder."""
    try:
        import transformers
    except ImportError:
        raise ImportError("zoo export --format transformers needs transformers: pip install transformers") from None
    from safetensors.torch import load_file
    out = Path(out)
    config = load_config(model)
    enc = VideoMAEConfig.from_dict(config["encoder"], where=f"{model}:config.json:encoder")
    if enc.positions != "1d":
        raise FormatError(f"{model}: encoder.positions is {enc.positions!r}; transformers' VideoMAE has the 1d "
                          "sinusoid table only (pretrain with encoder.positions: 1d)")
    state = load_weights(resolve_file(model, "model.safetensors"))
    fc1 = state.get("transformer.layers.0.fc1.weight")
    if fc1 is None:
        raise FormatError(f"{model}: model.safetensors holds no VideoMAE layer 0 (transformer.layers.0.fc1.weight)")
    hf_cfg = transformers_config(enc, int(fc1.shape[0]))
    clf_path = resolve_file(model, "classifier.json", required=False)
    if clf_path is not None:
        meta = read_json(clf_path)
        refusal = _classifier_refusal(model, meta, enc, Path(clf_path))
        if refusal:
            raise ValueError(refusal)
        names = [str(n) for n in meta["label_names"]]
        hf_cfg.update(num_labels=len(names), id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)})
    hf_config = transformers.VideoMAEConfig(**hf_cfg)
    if clf_path is not None:
        hf_model = transformers.VideoMAEForVideoClassification(hf_config).eval()
        body, prefix = hf_model.videomae, "videomae."
    else:
        hf_model = body = transformers.VideoMAEModel(hf_config).eval()
        prefix = ""
    theirs = {prefix + k: v for k, v in _their_state(body, enc, state, str(model)).items()}
    if clf_path is not None:
        head = load_file(str(resolve_file(model, "head.safetensors")))
        theirs.update({"fc_norm.weight": head["norm.weight"], "fc_norm.bias": head["norm.bias"],
                       "classifier.weight": head["weight"], "classifier.bias": head["bias"]})
    missing, unexpected = hf_model.load_state_dict(theirs, strict=False)
    if missing or unexpected:
        raise FormatError(f"{model}: does not map onto transformers' {type(hf_model).__name__}: missing "
                          f"{missing[:5]}, unexpected {unexpected[:5]}")
    hf_model.save_pretrained(out, safe_serialization=True)
    proc = AutoProcessor.from_pretrained(model).config
    (out / "preprocessor_config.json").write_text(json.dumps(image_processor_config(proc), indent=2) + "\n")
    _card(out, model, type(hf_model).__name__, clf_path is not None, proc, enc)
    return out


def _frames_text(proc: VideoProcessorConfig) -> str:
    """How the zoo's processor picks a clip's frames, in words (the image processor takes frames as given)."""
    n = proc.num_frames
    dense = f"one in every {proc.frame_stride} of the centre {proc.clip_span} frames"
    segment = f"the middle frame of each of {n} equal segments"
    how = {"dense": dense, "segment": segment,
           "auto": f"{dense} of a clip that long, else {segment}"}[proc.sampling]
    return f"{n} frames: {how} (a clip of fewer frames: `short_clip: {proc.short_clip}`)"


def _card(out: Path, model: str | Path, cls: str, classifier: bool, proc: VideoProcessorConfig,
          enc: VideoMAEConfig) -> None:
    """A short model card: what the folder is, how transformers loads it and which frames to give it (no local
    path)."""
    name = source_name(model)
    if classifier:
        what = ("the same weights, the head's LayerNorm as `fc_norm` and its linear layer as `classifier` "
                "(`use_mean_pooling`)")
        use = ("logits = model(**inputs).logits\nprint(model.config.id2label[int(logits.argmax(-1))])")
    else:
        what = ("the same weights" + (", ending with the encoder's final LayerNorm (`use_mean_pooling: false`)"
                                      if enc.final_norm else ", without a final LayerNorm (`use_mean_pooling`)"))
        use = "tokens = model(**inputs).last_hidden_state"
    tag = "\npipeline_tag: video-classification" if classifier else ""
    (out / "README.md").write_text(f"""---
library_name: transformers
tags: [ssl-zoo, video, videomae]{tag}
---

# {name} ({cls})

`{name}`, a zoo video {'classifier' if classifier else 'encoder'} (VideoMAE), written back to transformers' `{cls}` by
`zoo export --format transformers`: {what}, and a `VideoMAEImageProcessor` that resizes, crops and normalises as the
zoo's processor does.

The image processor takes the frames it is given. The zoo's processor gives the model {_frames_text(proc)}; give the
same frames (`frames`: a list of {proc.num_frames} RGB frames, `[H, W, 3]` uint8) to get what `zoo predict` gives.
`pipeline("video-classification")` (which needs PyAV) takes its own frames: the first
`num_frames × frame_sampling_rate` frames, evenly.

```python
from transformers import VideoMAEImageProcessor, {cls}
processor = VideoMAEImageProcessor.from_pretrained("path/to/this/folder")
model = {cls}.from_pretrained("path/to/this/folder").eval()
inputs = processor(frames, return_tensors="pt")
{use}
```
""")
