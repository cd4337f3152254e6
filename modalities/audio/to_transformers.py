"""A zoo audio model back to transformers (docs/command-line.md, "Export"): the encoder as its family's base model
(``Wav2Vec2Model``, ``HubertModel``, ``Data2VecAudioModel``, ``WavLMModel``) and a fine-tuned classifier as its
``*ForSequenceClassification``, with a ``Wav2Vec2FeatureExtractor`` that processes as our processor does, so that
``transformers.pipeline("audio-classification")`` serves it.

The weight names are found, not written out: a transformers model of the same shape is built, its names are run
through the importer's :func:`~modalities.audio.convert.map_state_dict` and the mapping is inverted (q/k/v split from
our fused ``qkv``). The head: transformers' classifier mean-pools ``projector(tokens)`` and applies ``classifier``;
ours applies one linear layer to the mean of the tokens, which is the same with ``projector`` the identity."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from zoo.export import source_name
from zoo.hub import FormatError, load_config, load_weights, read_json, resolve_file

from .convert import MODEL_TYPES, map_state_dict
from .model import Wav2Vec2Config

__all__ = ["export_transformers", "model_type", "transformers_config"]

_CLASSES = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", "Wav2Vec2ForSequenceClassification"),
            "hubert": ("HubertConfig", "HubertModel", "HubertForSequenceClassification"),
            "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel", "Data2VecAudioForSequenceClassification"),
            "wavlm": ("WavLMConfig", "WavLMModel", "WavLMForSequenceClassification")}


def model_type(config: dict[str, Any], enc: Wav2Vec2Config) -> str:
    """The transformers family: recorded at conversion (``pretraining.transformers_model_type``), else read from the
    architecture (WavLM's relative position buckets, data2vec's stacked positional convolutions), else the source's
    name (HuBERT and wav2vec 2.0 share one encoder), else wav2vec 2.0 (a model pretrained here)."""
    pre = config.get("pretraining") or {}
    kind = pre.get("transformers_model_type")
    if kind in MODEL_TYPES:
        return kind
    if enc.rel_pos_buckets:
        return "wavlm"
    if enc.pos_conv_type == "stack":
        return "data2vec-audio"
    return "hubert" if "hubert" in str(pre.get("converted_from", "")).lower() else "wav2vec2"


def transformers_config(enc: Wav2Vec2Config, kind: str) -> dict[str, Any]:
    """The transformers config of our encoder settings (the inverse of ``convert.config_from_transformers``)."""
    stack = kind == "data2vec-audio"
    hf: dict[str, Any] = {
        "model_type": kind, "hidden_size": enc.dim, "num_hidden_layers": enc.depth, "num_attention_heads": enc.heads,
        "intermediate_size": int(round(enc.mlp_ratio * enc.dim)), "hidden_act": "gelu",
        "feat_extract_activation": "gelu", "conv_dim": [c for c, _, _ in enc.conv_layers],
        "conv_kernel": [k for _, k, _ in enc.conv_layers], "conv_stride": [s for _, _, s in enc.conv_layers],
        "conv_bias": enc.conv_bias, "num_conv_pos_embedding_groups": enc.pos_conv_groups,
        "do_stable_layer_norm": enc.norm_first, "layer_norm_eps": enc.eps, "feat_proj_layer_norm": enc.feature_norm,
        "hidden_dropout": enc.dropout, "attention_dropout": enc.attn_dropout,
        "activation_dropout": enc.activation_dropout, "layerdrop": enc.layerdrop, "feat_proj_dropout": enc.feat_dropout}
    if stack:
        hf.update(conv_pos_kernel_size=enc.pos_conv_kernel, num_conv_pos_embeddings=enc.pos_conv_layers)
    else:
        hf.update(num_conv_pos_embeddings=enc.pos_conv_kernel,
                  feat_extract_norm="layer" if enc.conv_norm == "layer" else "group")
    if kind == "wavlm":
        hf.update(num_buckets=enc.rel_pos_buckets, max_bucket_distance=enc.rel_pos_max_distance)
    return hf


_QKV = re.compile(r"encoder\.layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)")


def _their_names(model: torch.nn.Module, enc: Wav2Vec2Config) -> dict[str, list[str]]:
    """Our weight name → transformers' names (three for a fused ``qkv``: q, k, v in that order)."""
    fused: dict[str, dict[str, str]] = {}
    out: dict[str, list[str]] = {}
    for key in model.state_dict():
        m = _QKV.fullmatch(key)
        if m:
            fused.setdefault(f"transformer.layers.{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = key
            continue
        for name in map_state_dict({key: torch.zeros(1)}, enc):
            out[name] = [key]
    return {**out, **{k: [v["q"], v["k"], v["v"]] for k, v in fused.items()}}


def export_transformers(model: str | Path, out: str | Path) -> Path:
    """Write ``model`` (a zoo audio encoder or classifier folder) to ``out`` as a transformers folder."""
    try:
        import transformers
    except ImportError:
        raise ImportError("zoo export --format transformers needs transformers: pip install transformers") from None
    from safetensors.torch import load_file
    out = Path(out)
    config = load_config(model)
    enc = Wav2Vec2Config.from_dict(config["encoder"], where=f"{model}:config.json:encoder")
    kind = model_type(config, enc)
    cfg_name, base_name, clf_name = _CLASSES[kind]
    clf_path = resolve_file(model, "classifier.json", required=False)
    hf_cfg = transformers_config(enc, kind)
    if clf_path is not None:
        meta = read_json(clf_path)
        if meta.get("task", "classification") != "classification":
            raise FormatError(f"{clf_path}: a regressor has no transformers audio-classification class")
        if meta.get("head_norm", False):
            raise ValueError(f"{clf_path}: a head with a LayerNorm (head_norm) has no place in transformers' "
                             f"{clf_name}, whose head is projector and classifier")
        names = [str(n) for n in meta["label_names"]]
        hf_cfg.update(num_labels=len(names), id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)}, classifier_proj_size=enc.dim,
                      use_weighted_layer_sum=False)
    hf_config = getattr(transformers, cfg_name)(**hf_cfg)
    hf_model = getattr(transformers, clf_name if clf_path is not None else base_name)(hf_config).eval()
    prefix = {"wav2vec2": "wav2vec2.", "hubert": "hubert.", "data2vec-audio": "data2vec_audio.",
              "wavlm": "wavlm."}[kind] if clf_path is not None else ""
    body = getattr(hf_model, prefix.rstrip(".")) if prefix else hf_model
    mapping = _their_names(body, enc)
    state = load_weights(resolve_file(model, "model.safetensors"))
    theirs: dict[str, torch.Tensor] = {}
    for ours_name, value in state.items():
        if ours_name not in mapping:
            raise FormatError(f"{model}: weight {ours_name!r} has no place in transformers' {base_name}")
        names = mapping[ours_name]
        for name, part in zip(names, value.chunk(len(names))):
            theirs[prefix + name] = part.contiguous()
    if clf_path is not None:
        head = load_file(str(resolve_file(model, "head.safetensors")))
        theirs.update({"projector.weight": torch.eye(enc.dim), "projector.bias": torch.zeros(enc.dim),
                       "classifier.weight": head["weight"], "classifier.bias": head["bias"]})
    missing, unexpected = hf_model.load_state_dict(theirs, strict=False)
    missing = [k for k in missing if "masked_spec_embed" not in k]     # pretraining only
    if missing or unexpected:
        raise FormatError(f"{model}: does not map onto transformers' {type(hf_model).__name__}: missing "
                          f"{missing[:5]}, unexpected {unexpected[:5]}")
    hf_model.save_pretrained(out, safe_serialization=True)
    proc = json.loads(Path(resolve_file(model, "preprocessor.json")).read_text())
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=int(proc.get("sample_rate", 16000)), padding_value=0.0,
        do_normalize=bool(proc.get("normalize", True)), return_attention_mask=bool(enc.conv_norm == "layer")
    ).save_pretrained(out)
    _card(out, model, type(hf_model).__name__, clf_path is not None)
    return out


def _card(out: Path, model: str | Path, cls: str, classifier: bool) -> None:
    """A short model card: what the folder is and how transformers loads it (no local path)."""
    name = source_name(model)
    use = ('pipe = pipeline("audio-classification", model="path/to/this/folder")\nprint(pipe("clip.wav", top_k=3))'
           if classifier else f'model = {cls}.from_pretrained("path/to/this/folder")')
    head = "from transformers import pipeline" if classifier else f"from transformers import {cls}"
    tag = "\npipeline_tag: audio-classification" if classifier else ""
    (out / "README.md").write_text(f"""---
library_name: transformers
tags: [ssl-zoo, audio]{tag}
---

# {name} ({cls})

`{name}`, a zoo audio {'classifier' if classifier else 'encoder'}, written back to transformers' `{cls}` by
`zoo export --format transformers`: the same weights, a `Wav2Vec2FeatureExtractor` that processes as the zoo's
processor does{', and the head as `projector` (the identity) and `classifier`' if classifier else ''}.

```python
{head}
{use}
```
""")
