"""Import a Hugging Face transformers checkpoint folder (safetensors only) of the wav2vec 2.0 encoder family into
the zoo format: ``Wav2Vec2Model``/``Wav2Vec2ForPreTraining``/``Wav2Vec2ForCTC`` (Baevski et al. 2020), ``HubertModel``/
``HubertForCTC`` (Hsu et al. 2021: the same encoder, trained by masked prediction of cluster targets) and
``Data2VecAudioModel`` (Baevski et al. 2022: a stack of positional convolutions) and ``WavLMModel``/``WavLMForCTC``
(Chen et al. 2022: gated relative position bias). Heads — the quantizer and
projections of pretraining, a CTC ``lm_head`` — are dropped, and the log says so."""

from __future__ import annotations

import logging
import re
from pathlib import Path

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

from .model import Wav2Vec2Config, Wav2Vec2Encoder, Wav2Vec2PretrainingConfig
from .processor import AudioProcessor, AudioProcessorConfig

_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_encoder.layers.\1.conv."),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_encoder.layers.\1.norm."),
    (r"feature_projection\.layer_norm\.", "feature_norm."),
    (r"feature_projection\.projection\.", "feature_proj."),
    (r"^masked_spec_embed$", "mask_embedding"),
    (r"encoder\.pos_conv_embed\.conv\.(weight_g|parametrizations\.weight\.original0)$",
     "pos_conv.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv_embed\.conv\.(weight_v|parametrizations\.weight\.original1)$",
     "pos_conv.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv_embed\.conv\.bias$", "pos_conv.conv.bias"),
    (r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.", r"pos_conv.layers.\1."),
    (r"encoder\.layers\.0\.attention\.rel_attn_embed\.", "rel_pos.embed."),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$", r"transformer.layers.\1.attn.gate_const"),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.", r"transformer.layers.\1.attn.gate."),
    (r"^encoder\.layer_norm\.", "transformer.norm."),
    (r"encoder\.layers\.(\d+)\.attention\.out_proj\.", r"transformer.layers.\1.attn.proj."),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"transformer.layers.\1.norm1."),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.layers.\1.norm2."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"transformer.layers.\1.fc1."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"transformer.layers.\1.fc2."),
]
_PRETRAINING_ONLY = ("quantizer.", "project_q.", "project_hid.", "dropout_features", "lm_head.")
MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")
_PREFIXES = ("wav2vec2.", "hubert.", "data2vec_audio.", "wavlm.")
NAMES = {"wav2vec2": ("wav2vec 2.0", "Baevski et al. 2020"), "hubert": ("HuBERT", "Hsu et al. 2021"),
         "data2vec-audio": ("data2vec-audio", "Baevski et al. 2022"), "wavlm": ("WavLM", "Chen et al. 2022")}
logger = logging.getLogger(__name__)


def config_from_transformers(hf: dict) -> tuple[Wav2Vec2Config, Wav2Vec2PretrainingConfig]:
    kind = hf.get("model_type", "wav2vec2")
    if kind not in MODEL_TYPES:
        raise FormatError(f"model_type {kind!r} is not of the wav2vec 2.0 family ({', '.join(MODEL_TYPES)})")
    for key in ("hidden_act", "feat_extract_activation"):
        if hf.get(key, "gelu") != "gelu":
            raise FormatError(f"{key}={hf[key]!r} is not supported (only 'gelu')")
    if hf.get("num_adapter_layers") and hf.get("add_adapter"):
        raise FormatError("adapter layers are not supported")
    if hf.get("conv_pos_batch_norm"):
        raise FormatError("conv_pos_batch_norm (a HuBERT variant's positional batch norm) is not supported")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    stack = kind == "data2vec-audio"           # data2vec: num_conv_pos_embeddings counts layers, not kernel taps
    enc = Wav2Vec2Config(
        conv_layers=[tuple(x) for x in zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])],
        conv_norm="layer" if stack else hf.get("feat_extract_norm", "group"), conv_bias=hf.get("conv_bias", False),
        dim=hidden,
        depth=hf["num_hidden_layers"], heads=heads, mlp_ratio=hf["intermediate_size"] / hidden,
        dropout=hf.get("hidden_dropout", 0.1), attn_dropout=hf.get("attention_dropout", 0.1),
        activation_dropout=hf.get("activation_dropout", 0.1), layerdrop=hf.get("layerdrop", 0.1),
        feat_dropout=hf.get("feat_proj_dropout", 0.0),
        pos_conv_kernel=hf["conv_pos_kernel_size"] if stack else hf["num_conv_pos_embeddings"],
        pos_conv_groups=hf["num_conv_pos_embedding_groups"], norm_first=hf.get("do_stable_layer_norm", False),
        eps=hf.get("layer_norm_eps", 1e-5), feature_norm=bool(hf.get("feat_proj_layer_norm", True)),
        pos_conv_type="stack" if stack else "weight_norm",
        pos_conv_layers=hf["num_conv_pos_embeddings"] if stack else 1,
        rel_pos_buckets=hf.get("num_buckets", 320) if kind == "wavlm" else 0,
        rel_pos_max_distance=hf.get("max_bucket_distance", 800))
    enc.validate()
    pre = Wav2Vec2PretrainingConfig(
        mask_prob=hf.get("mask_time_prob", 0.65), mask_length=hf.get("mask_time_length", 10),
        min_masks=hf.get("mask_time_min_masks", 2), num_negatives=hf.get("num_negatives", 100),
        codevector_groups=hf.get("num_codevector_groups", 2),
        codevectors_per_group=hf.get("num_codevectors_per_group", 320),
        codevector_dim=hf.get("codevector_dim", 256), proj_dim=hf.get("proj_codevector_dim", 256),
        temperature=hf.get("contrastive_logits_temperature", 0.1),
        diversity_weight=hf.get("diversity_loss_weight", 0.1))
    return enc, pre


def map_state_dict(state: dict[str, torch.Tensor], config: Wav2Vec2Config) -> dict[str, torch.Tensor]:
    """transformers names → ours; q/k/v projections are fused into one ``qkv``; heads are dropped (logged)."""
    for prefix in _PREFIXES:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    dropped = sorted({k.split(".")[0] for k in state if k.startswith(_PRETRAINING_ONLY)})
    if "lm_head" in dropped:
        logger.warning("converting the encoder only: dropped the CTC head (lm_head)")
    for key, value in state.items():
        if key.startswith(_PRETRAINING_ONLY):
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)", key)
        if m:
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = value
            continue
        for pattern, repl in _RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise FormatError(f"unexpected transformers weight {key!r}: not a parameter of the wav2vec 2.0 family")
    for (layer, kind), parts in qkv.items():
        out[f"transformer.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def map_pretraining_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``Wav2Vec2ForPreTraining``'s heads under our pretrainer's names (``{}`` when the checkpoint has none):
    the Gumbel quantizer's ``weight_proj`` (our ``logits``) and ``codevectors`` ``[1, G·V, d/G]`` (ours
    ``[G·V, d/G]``), ``project_q`` and ``project_hid``."""
    renames = {"quantizer.weight_proj.weight": "quantizer.logits.weight",
               "quantizer.weight_proj.bias": "quantizer.logits.bias", "quantizer.codevectors": "quantizer.codevectors",
               "project_q.weight": "project_q.weight", "project_q.bias": "project_q.bias",
               "project_hid.weight": "project_hid.weight", "project_hid.bias": "project_hid.bias"}
    found = {ours: state[theirs] for theirs, ours in renames.items() if theirs in state}
    if not found:
        return {}
    if len(found) != len(renames):
        raise FormatError(f"a partial set of pretraining heads: {sorted(found)}; expected "
                          f"{sorted(renames.values())}")
    codes = found["quantizer.codevectors"]
    found["quantizer.codevectors"] = codes.reshape(-1, codes.shape[-1])
    return {k: v.contiguous() for k, v in found.items()}


def convert_transformers(source: str | Path, output: str | Path) -> Path:
    """Convert a transformers folder of the wav2vec 2.0 family (config.json + model.safetensors) into a zoo
    folder."""
    source, output = Path(source), Path(output)
    kind = read_json(source / "config.json").get("model_type") if (source / "config.json").is_file() else "wav2vec2"
    hf, weights = foreign_checkpoint(source, kind if kind in MODEL_TYPES else "wav2vec2")
    stack = hf.get("model_type") == "data2vec-audio"
    foreign_numbers(hf, str(source / "config.json"),
                    ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "conv_dim",
                     "conv_kernel", "conv_stride", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups")
                    + (("conv_pos_kernel_size",) if stack else ()))
    enc_cfg, pre_cfg = config_from_transformers(hf)
    encoder = Wav2Vec2Encoder(enc_cfg)
    state = load_weights(weights)
    require_floating(state, str(weights))
    load_state_strict(encoder, map_state_dict(state, enc_cfg), str(source))
    proc_cfg = AudioProcessorConfig(sample_rate=16000)
    pp = source / "preprocessor_config.json"
    if pp.is_file():
        p = read_json(pp)
        rate = p.get("sampling_rate", 16000)
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1000 <= rate <= 384000:
            raise FormatError(f"{pp}: 'sampling_rate' is {rate!r}: expected a whole number of Hz in [1000, "
                              "384000] (16000 for most speech models)")
        proc_cfg = AudioProcessorConfig(sample_rate=rate, normalize=bool(p.get("do_normalize", True)))
    encoder.save_pretrained(output, processor=AudioProcessor(proc_cfg),
                            pretraining={"converted_from": str(source), "objective": pre_cfg.to_dict(),
                                         "transformers_model_type": hf["model_type"]})
    heads = map_pretraining_heads(state)
    if heads:      # kept for continued pretraining (zoo pretrain --init); the encoder folder is unchanged
        from safetensors.torch import save_file
        save_file(heads, str(Path(output) / "pretraining_heads.safetensors"))
        logger.info("kept the pretraining heads (quantizer, project_q, project_hid) for zoo pretrain --init")
    from zoo.cards import write_card
    name, paper = NAMES[hf["model_type"]]
    write_card(output, summary=f"{name} encoder converted from the transformers checkpoint `{source.name}`.",
               method=f"{name} ({paper})")
    return output
