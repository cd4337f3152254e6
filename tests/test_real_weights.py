"""Public checkpoints by Hub id (issue #24): transformers checkpoints of the families we implement load with one
``zoo.AutoEncoder.from_pretrained`` — a folder or a Hub id (served here from a local Hub cache, offline) — converted
once into the zoo format. Parity against transformers on randomly initialised tiny and base-shaped configs, every
layer's hidden states, with a padded batch of two lengths (each utterance as transformers gives it alone)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from tests.conftest import zoo_main

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
            conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embedding_groups=4)
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)   # the papers'


def audio_model(kind: str, shape: dict, **extra):
    torch.manual_seed(0)
    if kind == "hubert":
        cfg = transformers.HubertConfig(**({"num_conv_pos_embeddings": 16} if shape is TINY else {}), **shape,
                                        **extra)
        return transformers.HubertModel(cfg).eval()
    if kind == "data2vec-audio":
        cfg = transformers.Data2VecAudioConfig(**({"num_conv_pos_embeddings": 3, "conv_pos_kernel_size": 5}
                                                  if shape is TINY else {}), **shape, **extra)
        return transformers.Data2VecAudioModel(cfg).eval()
    if kind == "wavlm":
        cfg = transformers.WavLMConfig(**({"num_conv_pos_embeddings": 16} if shape is TINY else {}), **shape, **extra)
        return transformers.WavLMModel(cfg).eval()
    cfg = transformers.Wav2Vec2Config(**({"num_conv_pos_embeddings": 16} if shape is TINY else {}), **shape, **extra)
    return transformers.Wav2Vec2Model(cfg).eval()


def worst_difference(hf, enc, samples: int = 6000, short: int = 4000) -> float:
    """Max |ours − transformers| over every layer's hidden states and the output: our padded batch of two lengths
    against transformers on each utterance alone."""
    x = torch.randn(2, samples)
    x[1, short:] = 0
    pad = torch.zeros(2, samples, dtype=torch.bool)
    pad[1, short:] = True
    worst = 0.0
    with torch.no_grad():
        ours = enc({"input_values": x, "padding_mask": pad}, return_hidden=True)
        for i, n in enumerate((samples, short)):
            ref = hf(x[i:i + 1, :n], output_hidden_states=True)
            frames = ref.last_hidden_state.shape[1]
            assert len(ours.hidden) == len(ref.hidden_states)
            for a, b in [*zip(ours.hidden, ref.hidden_states), (ours.tokens, ref.last_hidden_state)]:
                worst = max(worst, float((a[i:i + 1, :frames] - b).abs().max()))
            assert not ours.padding_mask[i, :frames].any() and ours.padding_mask[i, frames:].all()
    return worst


@pytest.mark.parametrize("kind,extra", [("wav2vec2", {}), ("hubert", {}),
                                        ("hubert", {"feat_extract_norm": "layer", "do_stable_layer_norm": True,
                                                    "conv_bias": True, "feat_proj_layer_norm": False}),
                                        ("data2vec-audio", {}), ("wavlm", {}),
                                        ("wavlm", {"num_buckets": 16, "max_bucket_distance": 24,
                                                   "do_stable_layer_norm": True, "feat_extract_norm": "layer",
                                                   "conv_bias": True})])
def test_tiny_audio_checkpoints_load_from_a_folder_with_parity(kind, extra, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    hf = audio_model(kind, TINY, **extra)
    hf.save_pretrained(tmp_path / "hf")
    enc = zoo.AutoEncoder.from_pretrained(tmp_path / "hf")              # no `zoo convert` first
    assert worst_difference(hf, enc) < 1e-4
    with torch.no_grad():                                              # the comparison can fail
        enc.transformer.layers[-1].fc2.weight[0, 0] += 0.5
    assert worst_difference(hf, enc) > 1e-4
    converted = list((tmp_path / "cache" / "converted").iterdir())
    assert len(converted) == 1                                         # converted once, reused
    zoo.AutoEncoder.from_pretrained(tmp_path / "hf")
    assert list((tmp_path / "cache" / "converted").iterdir()) == converted
    proc = zoo.AutoProcessor.from_pretrained(tmp_path / "hf")
    assert proc.config.sample_rate == 16000
    assert str(tmp_path) not in (converted[0] / "config.json").read_text()


@pytest.mark.parametrize("kind", ["hubert", "data2vec-audio", "wavlm"])
def test_base_shaped_audio_checkpoints_have_parity(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    hf = audio_model(kind, BASE)
    hf.save_pretrained(tmp_path / "hf")
    enc = zoo.AutoEncoder.from_pretrained(tmp_path / "hf")
    assert enc.config.dim == 768 and enc.config.depth == 12
    assert worst_difference(hf, enc, samples=16000, short=11000) < 1e-4


def local_hub(tmp_path: Path, repo: str, folder: Path, monkeypatch) -> None:
    """A Hugging Face cache holding ``repo`` at one revision, read offline (as huggingface_hub lays it out)."""
    cache = tmp_path / "hf-cache"
    base = cache / ("models--" + repo.replace("/", "--"))
    snapshot = base / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, snapshot)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_a_hub_id_loads_through_the_cache_and_a_ctc_head_is_dropped(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    ctc = transformers.HubertForCTC(transformers.HubertConfig(num_conv_pos_embeddings=16, vocab_size=12, **TINY))
    ctc.eval().save_pretrained(tmp_path / "hf")
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(tmp_path / "hf")
    local_hub(tmp_path, "someone/hubert-ctc-tiny", tmp_path / "hf", monkeypatch)
    with caplog.at_level("WARNING"):
        enc = zoo.AutoEncoder.from_pretrained("someone/hubert-ctc-tiny")
    assert "lm_head" in caplog.text and "CTC head" in caplog.text
    assert worst_difference(ctc.hubert, enc) < 1e-4
    config = json.loads(next((tmp_path / "cache" / "converted").iterdir()).joinpath("config.json").read_text())
    assert config["pretraining"]["converted_from"] == "someone/hubert-ctc-tiny"
    out = zoo_main("convert", "someone/hubert-ctc-tiny", str(tmp_path / "zoo"))
    assert out.returncode == 0, out.stderr
    assert zoo.AutoEncoder.from_pretrained(tmp_path / "zoo").config == enc.config


def test_pickle_only_and_unknown_checkpoints_are_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    hf = audio_model("hubert", TINY)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"\['pytorch_model.bin'\] are pickle checkpoints and are never loaded"):
        zoo.AutoEncoder.from_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(zoo.FormatError, match=r"'bert' checkpoint; the families ssl-zoo reads are .*'hubert'"):
        zoo.AutoEncoder.from_pretrained(tmp_path / "hf")


def test_videomae_classification_checkpoints_import_their_encoder_and_warn_of_the_licence(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                      num_labels=3, use_mean_pooling=True)
    hf = transformers.VideoMAEForVideoClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    local_hub(tmp_path, "someone/videomae-cls-tiny", tmp_path / "hf", monkeypatch)
    with pytest.warns(UserWarning, match="CC BY-NC"):
        enc = zoo.AutoEncoder.from_pretrained("someone/videomae-cls-tiny")
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = hf.videomae(x, output_hidden_states=True)
        ours = enc({"pixel_values": x}, return_hidden=True)
        assert float((ours.tokens - ref.last_hidden_state).abs().max()) < 1e-4


def _fsdd_class_folders(root: Path) -> Path:
    """Spoken digits in FSDD's naming (``{digit}_{speaker}_{index}.wav``, 8 kHz) sorted into class folders
    ``root/<digit>/``: espeak-ng speaks each digit in three voices (the embedded set's synthesiser)."""
    import shutil as sh
    import subprocess

    import librosa
    import soundfile as sf

    from modalities.audio.data import DIGITS
    exe = sh.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (make install adds it)")
    for digit, word in enumerate(DIGITS):
        (root / str(digit)).mkdir(parents=True)
        for i, voice in enumerate(("en-us+m3", "en-gb+f2", "en-029+m7")):
            raw = root / f"raw-{digit}-{i}.wav"
            subprocess.run([exe, "-v", voice, "-w", str(raw), word], check=True, capture_output=True)
            wave, _ = librosa.load(raw, sr=8000)
            sf.write(root / str(digit) / f"{digit}_speaker{i}_{i}.wav", wave, 8000, subtype="PCM_16")
            raw.unlink()
    return root


def test_fine_tuning_a_converted_checkpoint_runs_end_to_end(tmp_path, monkeypatch):
    """zoo finetune on FSDD-style class folders (8 kHz spoken digits, resampled by the processor) from a converted
    HuBERT-shaped random checkpoint (a pipeline test: no accuracy is claimed for random weights), then zoo predict
    and zoo embed on it."""
    import soundfile as sf
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    audio_model("hubert", TINY).save_pretrained(tmp_path / "hf")
    data = _fsdd_class_folders(tmp_path / "fsdd")
    res = zoo_main("finetune", str(tmp_path / "hf"), "--data", str(data), "--steps", "4", "--batch-size", "4",
                   "--output", str(tmp_path / "ft"))
    assert res.returncode == 0, res.stderr
    clf = zoo.AutoClassifier.from_pretrained(tmp_path / "ft" / "model")
    assert clf.label_names == [str(d) for d in range(10)]
    res = zoo_main("predict", str(tmp_path / "ft" / "model"), str(data / "7" / "7_speaker0_0.wav"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[0])["predictions"][0]["label"] in clf.label_names
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    res = zoo_main("embed", str(tmp_path / "hf"), str(wav), "--output", str(tmp_path / "e.safetensors"))
    assert res.returncode == 0, res.stderr
