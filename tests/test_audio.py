"""Audio modality (wav2vec 2.0): conv lengths, masks, distractors, quantizer, padding invariance,
processor errors, transformers conversion parity, and pretrain → save → reload end to end."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from modalities.audio import (
    AudioProcessor,
    AudioProcessorConfig,
    Wav2Vec2Config,
    Wav2Vec2Encoder,
    Wav2Vec2Pretrainer,
    Wav2Vec2PretrainingConfig,
)
from modalities.audio.model import (
    GatedRelPosAttention,
    GumbelQuantizer,
    conv_output_lengths,
    relative_position_buckets,
)

from .conftest import check_saved_model, zoo_main

TINY = dict(conv_layers=[(16, 10, 5), (16, 3, 2), (16, 3, 2)], dim=32, depth=2, heads=2, pos_conv_kernel=8,
            pos_conv_groups=4, dropout=0.0, attn_dropout=0.0, layerdrop=0.0)


def test_registered_through_the_entry_point():
    assert zoo.installed()["audio"] == "ssl-zoo"
    assert zoo.get_modality("audio").architecture("wav2vec2").encoder is Wav2Vec2Encoder


@pytest.mark.parametrize("n", [0, 1, 399, 400, 401, 1234, 16000, 16001, 48000])
def test_conv_output_lengths_match_the_real_encoder(n):
    cfg = Wav2Vec2Config(dim=32, depth=1, heads=2, pos_conv_kernel=8, pos_conv_groups=4,
                         conv_layers=[(8, 10, 5)] + [(8, 3, 2)] * 4 + [(8, 2, 2)] * 2)
    expected = n
    for _, k, s in cfg.conv_layers:            # floor((L - k) / s) + 1 per layer, 0 when too short
        expected = (expected - k) // s + 1 if expected >= k else 0
    assert int(conv_output_lengths(n, cfg.conv_layers)) == expected
    if expected > 0:
        enc = Wav2Vec2Encoder(cfg).eval()
        with torch.no_grad():
            out = enc.feature_encoder(torch.randn(1, n))
        assert out.shape[1] == expected
    if n == 16000:
        assert expected == 49                  # the paper's 20 ms frames (stride 320, field 400)


def test_too_short_utterance_is_a_clear_error():
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY)).eval()
    x = torch.zeros(2, 300)
    pad = torch.zeros(2, 300, dtype=torch.bool)
    pad[1, 20:] = True
    with pytest.raises(ValueError, match="utterance 1 has 20 samples"):
        enc({"input_values": x, "padding_mask": pad})


def test_relative_position_buckets_by_hand():
    """16 buckets, max distance 24: 8 per sign; offsets 0–3 exact; 4–23 log-spaced over buckets 4–7
    (4 + floor(ln(d/4) / ln(6) · 4)); 24 and beyond share bucket 7; positive offsets add 8."""
    offsets = torch.tensor([0, 1, -3, 4, -10, 100, -24, 23])
    expected = [0, 9, 3, 12, 6, 15, 7, 15]
    assert relative_position_buckets(offsets, 16, 24).tolist() == expected


def test_wavlm_gate_scales_the_bias_by_hand():
    """One head, head size 2: gate logits g = W x + b summed in fours, a = σ(g₀), r = σ(g₁), bias · (a(r·c − 1) + 2)."""
    torch.manual_seed(0)
    attn = GatedRelPosAttention(2, 1)
    with torch.no_grad():
        attn.gate.weight.zero_()
        attn.gate.bias.copy_(torch.tensor([1.0, 0, 0, 0, -2.0, 0, 0, 0]))
        attn.gate_const.fill_(3.0)
    x = torch.randn(1, 3, 2)
    bias = torch.randn(1, 1, 3, 3)
    a, r = torch.sigmoid(torch.tensor(1.0)), torch.sigmoid(torch.tensor(-2.0))
    scale = float(a * (r * 3.0 - 1.0) + 2.0)
    q, k, v = attn.qkv(x).view(1, 3, 3, 1, 2).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(2) + scale * bias
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(1, 3, 2))
    assert torch.allclose(attn(x, None, bias), expected, atol=1e-6)
    assert not torch.allclose(attn(x, None, bias), attn(x, None, bias / scale), atol=1e-3)


def _batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    proc = AudioProcessor()
    return proc.collate([proc(torch.randn(n, generator=g).numpy()) for n in lengths])


@pytest.mark.parametrize("norm,norm_first,buckets", [("group", False, 0), ("layer", True, 0), ("group", False, 16)])
def test_padded_batch_equals_utterances_one_by_one(norm, norm_first, buckets):
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY, conv_norm=norm, norm_first=norm_first, rel_pos_buckets=buckets,
                                         rel_pos_max_distance=24)).eval()
    lengths = [3000, 1700, 2411]
    batch = _batch(lengths)
    with torch.no_grad():
        out = enc(batch)
        for i, n in enumerate(lengths):
            single = enc({"input_values": batch["input_values"][i:i + 1, :n]})
            t = single.tokens.shape[1]
            assert not out.padding_mask[i, :t].any() and out.padding_mask[i, t:].all()
            assert torch.allclose(out.tokens[i, :t], single.tokens[0], atol=1e-5)
            assert torch.allclose(out.pooled[i], single.pooled[0], atol=1e-5)


def test_pretrainer_masks_and_distractors_stay_inside_valid_frames():
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY))
    cfg = Wav2Vec2PretrainingConfig(mask_length=3, num_negatives=5, codevectors_per_group=8, codevector_dim=16,
                                    proj_dim=16)
    pre = Wav2Vec2Pretrainer(enc, cfg, total_steps=10)
    batch = _batch([4000, 1500])
    seen = {}
    import zoo.objectives as O
    orig = O.sample_negatives

    def spy(mask, k, generator=None):
        neg = orig(mask, k, generator=generator)
        seen["mask"], seen["neg"] = mask, neg
        return neg
    import modalities.audio.model as M
    M.sample_negatives = spy
    try:
        out = pre(batch, torch.Generator().manual_seed(1))
    finally:
        M.sample_negatives = orig
    mask, neg = seen["mask"], seen["neg"]
    frames = conv_output_lengths(torch.tensor([4000, 1500]), enc.config.conv_layers)
    for b in range(2):
        assert not mask[b, frames[b]:].any() and mask[b].any()
        t = torch.arange(mask.shape[1])
        hidden = neg[b][mask[b]]
        assert (hidden >= 0).all() and (hidden < frames[b]).all()
        assert mask[b][hidden].all()                              # distractors are hidden frames
        assert (hidden != t[mask[b]][:, None]).all()              # never the positive
    assert torch.isfinite(out.loss) and 0 <= out.metrics["accuracy"] <= 1
    out.loss.backward()
    assert enc.feature_encoder.layers[0].conv.weight.grad is not None


def test_quantizer_perplexity_and_diversity_on_hand_made_logits():
    q = GumbelQuantizer(2, groups=1, entries=2, dim=4)
    with torch.no_grad():
        q.logits.weight.copy_(torch.tensor([[100.0, 0.0], [0.0, 100.0]]))
        q.logits.bias.zero_()
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
    q.eval()
    out, avg, used = q(x, torch.ones(1, 4, dtype=torch.bool), 1.0, None)
    assert torch.allclose(avg, torch.tensor([[0.5, 0.5]]), atol=1e-6)
    assert used.item() == pytest.approx(2.0, abs=1e-5)            # the hard codes: 0, 1, 0, 1 → perplexity 2
    assert zoo.objectives.codebook_perplexity(avg).item() == pytest.approx(2.0, abs=1e-4)
    assert zoo.objectives.diversity_loss(avg).item() == pytest.approx(0.0, abs=1e-5)
    assert torch.equal(out[0, 0], q.codevectors[0]) and torch.equal(out[0, 1], q.codevectors[1])
    # all frames choose entry 0 → perplexity 1, diversity (2 - 1) / 2
    out, avg, used = q(x[:, [0, 2]], torch.ones(1, 2, dtype=torch.bool), 1.0, None)
    assert zoo.objectives.diversity_loss(avg).item() == pytest.approx(0.5, abs=1e-4)
    assert used.item() == pytest.approx(1.0, abs=1e-5)
    q.train()                                                     # straight-through: one-hot forward, grads flow
    out, _, _ = q(x, torch.ones(1, 4, dtype=torch.bool), 2.0, torch.Generator().manual_seed(0))
    out.sum().backward()
    assert q.logits.weight.grad is not None and q.codevectors.grad is not None


def test_gumbel_temperature_schedule():
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY))
    pre = Wav2Vec2Pretrainer(enc, Wav2Vec2PretrainingConfig(), total_steps=100)
    # the paper: 2 * 0.999995**n per update, floor 0.5, whatever the run's length
    assert pre.gumbel_temperature(0) == pytest.approx(2.0)
    assert pre.gumbel_temperature(100) == pytest.approx(2 * 0.999995 ** 100)                # 1.999000
    assert pre.gumbel_temperature(200_000) == pytest.approx(2 * math.exp(200_000 * math.log(0.999995)))  # 0.7358
    assert pre.gumbel_temperature(200_000) == pytest.approx(0.73576, abs=1e-5)
    assert pre.gumbel_temperature(277_258) == pytest.approx(0.5, abs=1e-5)                  # ln 4 / -ln 0.999995
    assert pre.gumbel_temperature(400_000) == pytest.approx(0.5)
    assert pre.on_step(100)["gumbel_tau"] == pytest.approx(1.999000, abs=1e-6)
    # the run-length schedule, kept as a setting: 0.5 at the run's end
    run = Wav2Vec2Pretrainer(enc, Wav2Vec2PretrainingConfig(gumbel_schedule="run"), total_steps=100)
    assert run.gumbel_temperature(50) == pytest.approx(1.0)
    assert run.gumbel_temperature(100) == pytest.approx(0.5) and run.gumbel_temperature(500) == pytest.approx(0.5)
    with pytest.raises(zoo.ConfigError, match="gumbel_schedule"):
        Wav2Vec2PretrainingConfig(gumbel_schedule="epoch").validate()


def test_base_defaults_layerdrop_activation_dropout_and_reference_init():
    cfg = Wav2Vec2Config()
    assert (cfg.layerdrop, cfg.activation_dropout, cfg.dropout, cfg.attn_dropout) == (0.05, 0.0, 0.1, 0.1)
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**{**TINY, "conv_layers": [(256, 10, 5), (256, 3, 2)]}))
    assert enc.transformer.layerdrop == 0.0 and enc.transformer.layers[0].act_drop.p == 0.0
    for layer, fan_in in zip(enc.feature_encoder.layers, (10, 256 * 3)):
        w = layer.conv.weight.detach()                       # Kaiming normal: N(0, 2 / fan_in)
        assert float(w.std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
        assert abs(float(w.mean())) < 0.05 * math.sqrt(2 / fan_in) * 10
    for m in enc.transformer.modules():                      # BERT init of the Transformer's linear layers
        if isinstance(m, torch.nn.Linear) and m.weight.numel() >= 1000:
            assert float(m.weight.std()) == pytest.approx(0.02, rel=0.1) and not m.bias.any()
    pre = Wav2Vec2PretrainingConfig()
    assert pre.require_same_masks and pre.gumbel_schedule == "update" and pre.gumbel_decay == 0.999995


def test_pretraining_masks_hide_as_many_frames_in_every_row():
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY))
    pre = Wav2Vec2Pretrainer(enc, Wav2Vec2PretrainingConfig(mask_length=2, num_negatives=4, codevectors_per_group=8,
                                                            codevector_dim=16, proj_dim=16), total_steps=10)
    x = torch.randn(3, 4000)
    pad = torch.zeros(3, 4000, dtype=torch.bool)
    pad[1, 2500:] = True
    pad[2, 1500:] = True
    seen = {}

    def spy(b, t, p, span, **kw):
        seen["mask"] = zoo.masking.span_mask(b, t, p, span, **kw)
        return seen["mask"]

    import modalities.audio.model as audio_model
    original = audio_model.span_mask
    audio_model.span_mask = spy
    try:
        out = pre({"input_values": x, "padding_mask": pad}, torch.Generator().manual_seed(0))
    finally:
        audio_model.span_mask = original
    counts = seen["mask"].sum(dim=1)
    assert torch.isfinite(out.loss) and len(set(counts.tolist())) == 1 and int(counts[0]) > 0


def test_processor_inputs_resampling_and_bad_input(tmp_path):
    proc = AudioProcessor(AudioProcessorConfig(sample_rate=16000))
    t = np.arange(8000) / 8000
    tone = np.sin(2 * math.pi * 440 * t).astype(np.float32)
    sf.write(tmp_path / "a.wav", np.stack([tone, tone], 1), 8000)
    sf.write(tmp_path / "a.flac", tone, 8000)
    x = proc(str(tmp_path / "a.wav"))["input_values"]
    assert x.shape == (16000,) and abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(proc(str(tmp_path / "a.flac"))["input_values"], x, atol=1e-4)
    assert torch.allclose(proc((tone, 8000))["input_values"], x, atol=1e-4)
    assert torch.allclose(proc({"array": tone, "sampling_rate": 8000})["input_values"], x, atol=1e-4)
    assert torch.allclose(proc({"path": str(tmp_path / "a.wav")})["input_values"], x, atol=1e-4)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF1234junkjunkjunk")
    sf.write(tmp_path / "six.wav", np.zeros((8000, 6), np.float32), 8000)
    cases = [(str(tmp_path / "empty.wav"), "empty.wav.*'path': empty file"),
             (str(tmp_path / "junk.wav"), "junk.wav.*'path': cannot decode audio"),
             (str(tmp_path / "missing.wav"), "missing.wav.*no such file"),
             (str(tmp_path / "six.wav"), "six.wav.*'channels': 6 channels"),
             (np.zeros(0, np.float32), "'audio': zero-length clip"),
             (np.array([0.0, np.nan] * 500, np.float32), "'audio': 500 NaN/inf samples"),
             (np.zeros(100, np.float32), "100 samples at 16000 Hz")]
    for bad, msg in cases:
        with pytest.raises(zoo.BadExample, match=msg):
            proc(bad)
    strict = AudioProcessor(AudioProcessorConfig(resample=False))
    with pytest.raises(zoo.BadExample, match="'sampling_rate': 8000 Hz, the model expects 16000"):
        strict((tone, 8000), name="clip7")
    with pytest.raises(zoo.BadExample) as said:      # each decoder's reason, without its build path or ours again
        proc(str(tmp_path / "junk.wav"))
    text = str(said.value)
    assert "soundfile: " in text and "FFmpeg through torchcodec: " in text and ".cpp" not in text
    assert text.count(str(tmp_path / "junk.wav")) == 1, text
    items, skipped = proc.process([str(tmp_path / "a.wav"), str(tmp_path / "junk.wav")], skip_bad=True)
    assert len(items) == 1 and len(skipped) == 1 and "junk.wav" in skipped[0]


def test_a_folder_of_audio_class_folders(tmp_path):
    for label in ("0", "1"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(3):
            sf.write(tmp_path / "train" / label / f"{i}.wav", np.random.randn(4000).astype(np.float32) * 0.1, 8000)
    data = zoo.get_modality("audio").load_data({"source": "folder", "path": str(tmp_path)})
    assert len(data) == 6 and sorted(set(data.labels)) == [0, 1] and list(data.label_names) == ["0", "1"]
    proc = AudioProcessor()
    assert proc(data.examples[0])["input_values"].shape == (8000,)


def _hf_model(norm: str, stable: bool):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), conv_bias=stable, feat_extract_norm=norm,
        do_stable_layer_norm=stable, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8, num_codevector_groups=2)
    return transformers.Wav2Vec2ForPreTraining(cfg).eval()


@pytest.mark.parametrize("norm,stable", [("group", False), ("layer", True)])
def test_transformers_conversion_parity(norm, stable, tmp_path):
    hf = _hf_model(norm, stable)
    hf.save_pretrained(tmp_path / "hf")
    out = zoo_main("convert", str(tmp_path / "hf"), str(tmp_path / "zoo"))
    assert out.returncode == 0, out.stderr
    enc = zoo.AutoEncoder.from_pretrained(tmp_path / "zoo")
    assert enc.config.norm_first == stable and enc.config.conv_norm == norm
    x = torch.randn(3, 5000)
    with torch.no_grad():
        ref = hf.wav2vec2(x).last_hidden_state
        ours = enc({"input_values": x}).tokens
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() < 1e-4
        enc.transformer.layers[0].fc2.weight[0, 0] += 0.5           # the comparison can fail
        assert (enc({"input_values": x}).tokens - ref).abs().max().item() > 1e-4
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    out = zoo_main("convert", str(tmp_path / "hf"), str(tmp_path / "zoo2"))
    assert out.returncode == 2 and "pytorch_model.bin" in out.stderr and "never loaded" in out.stderr


@pytest.mark.slow   # the conformance suite runs this path (zoo pretrain --data, reload, identical outputs)
def test_end_to_end_pretrain_cli_save_reload_identical_embeddings(tmp_path):
    root = tmp_path / "clips"
    rng = np.random.default_rng(0)
    for label in range(2):
        (root / "train" / str(label)).mkdir(parents=True)
        for i in range(8):
            t = np.arange(rng.integers(6000, 12000)) / 16000
            wave = np.sin(2 * math.pi * (200 + 300 * label) * t) + 0.1 * rng.standard_normal(len(t))
            sf.write(root / "train" / str(label) / f"{i}.wav", wave.astype(np.float32), 16000)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "audio-e2e", "modality": "audio", "architecture": "wav2vec2",
        "encoder": {**TINY, "conv_layers": [[16, 10, 5], [16, 3, 2], [16, 3, 2]]},
        "pretraining": {"mask_length": 3, "num_negatives": 5, "codevectors_per_group": 8, "codevector_dim": 16,
                        "proj_dim": 16, "crop_seconds": 0.5},
        "data": {"train": {"source": "folder", "path": str(root)}},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3},
        "evaluate": {"train": {"source": "folder", "path": str(root)},
                     "test": {"source": "folder", "path": str(root)}, "knn_k": 3}}))
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model"
    check_saved_model(tmp_path / "run", str(root / "train" / "1" / "3.wav"), tmp_path, step=3)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) and "gumbel_tau" in r for r in rows)
    out = zoo_main("evaluate", str(model))
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian) is not installed")
def test_espeak_synthesis_is_deterministic(tmp_path):
    from modalities.audio.data import synthesize_digits
    a = synthesize_digits(tmp_path / "a", accents=["en-us", "en-029"], variants=["m3"], speeds=[160], pitches=[50])
    b = synthesize_digits(tmp_path / "b", accents=["en-us", "en-029"], variants=["m3"], speeds=[160], pitches=[50])
    files = sorted(p.relative_to(a) for p in a.rglob("*.wav"))
    assert len(files) == 20
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    meta = (a / "metadata.csv").read_text().splitlines()
    assert meta[0].startswith("file_name,label") and sum(",test" in m for m in meta) == 10


def test_card_usage_snippet_for_audio(tmp_path):
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY))
    enc.save_pretrained(tmp_path / "m", processor=AudioProcessor())
    from zoo.cards import write_card
    card = write_card(tmp_path / "m", repo_id="acme/audio").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0].replace("'acme/audio'", repr(str(tmp_path / "m")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 32])" in out.stdout


def test_mfcc_baseline_reads_the_whole_clip_with_deltas(tmp_path):
    """The MFCC baseline (issue #32): what comes after ``max_seconds`` changes the features; MFCC, delta and
    delta-delta statistics, ``[N, 6 * n_mfcc]``, the deltas those of librosa on the whole clip."""
    import librosa

    from modalities.audio.baselines import mfcc_features
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    head = 0.3 * np.sin(2 * np.pi * 300 * t[:32000])
    a = np.concatenate([head, 0.3 * np.sin(2 * np.pi * 2500 * t[32000:])]).astype(np.float32)
    b = np.concatenate([head, 0.1 * rng.standard_normal(16000)]).astype(np.float32)
    sf.write(tmp_path / "a.wav", a, 16000, subtype="FLOAT")
    proc = AudioProcessor(AudioProcessorConfig(max_seconds=2.0))
    feats = mfcc_features([str(tmp_path / "a.wav"), (b, 16000)], proc, n_mfcc=13)
    assert not torch.allclose(feats[0], feats[1], atol=1e-3)          # the first 2 s are the same
    assert feats.shape == (2, 78)
    x = proc.whole((a, 16000))["input_values"].numpy()
    assert x.size == 48000
    m = librosa.feature.mfcc(y=x, sr=16000, n_mfcc=13, n_fft=512, hop_length=160)
    d2 = librosa.feature.delta(m, order=2)
    assert np.allclose(feats[0, 26:39].numpy(), d2.mean(axis=1), atol=1e-4)
    assert np.allclose(feats[0, 39 + 26:].numpy(), d2.std(axis=1), atol=1e-4)
    tiny = mfcc_features([(a[:400], 16000), (a[:1200], 16000)], proc, n_mfcc=13)      # 3 and 8 frames
    assert torch.isfinite(tiny).all()
