"""Any length at inference (issue #27): windows that cover an input (by hand), ``zoo.embedding.embed_long`` equal
to the windows embedded one by one, ``zoo embed --pooling mean|none`` on a WAV and an mp4, and events saying how
many older events ``max_events`` left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from modalities.audio import AudioProcessor, AudioProcessorConfig, Wav2Vec2Config, Wav2Vec2Encoder
from modalities.events import CoLESConfig, CoLESEncoder, EventProcessor, EventProcessorConfig, make_cardholders
from modalities.events.data import group_events
from modalities.video import VideoMAEConfig, VideoMAEEncoder, VideoProcessor, VideoProcessorConfig
from modalities.video.data import write_mp4
from zoo.embedding import embed_long
from zoo.plugin import window_spans

from .conftest import zoo_main

RATE = 16000
AUDIO = dict(conv_layers=[(16, 10, 5), (16, 3, 2), (16, 3, 2)], dim=32, depth=2, heads=2, pos_conv_kernel=8,
             pos_conv_groups=4, dropout=0.0, attn_dropout=0.0, layerdrop=0.0)
VIDEO = dict(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, dim=32, depth=2, heads=4)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A tiny random wav2vec 2.0 whose window is 0.25 s (max_seconds), saved, and a 0.61 s WAV (float samples)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("audio")
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**AUDIO)).eval()
    proc = AudioProcessor(AudioProcessorConfig(max_seconds=0.25))
    enc.save_pretrained(root / "model", processor=proc)
    t = np.arange(9834) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size))
    sf.write(root / "a.wav", wave.astype(np.float32), RATE, subtype="FLOAT")
    return enc, proc, root / "model", root / "a.wav", wave.astype(np.float32)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A tiny random VideoMAE (4 frames at stride 2: a 7-frame window), saved, and a 23-frame mp4 at 8 fps."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("video")
    enc = VideoMAEEncoder(VideoMAEConfig(**VIDEO)).eval()
    proc = VideoProcessor(VideoProcessorConfig(num_frames=4, frame_stride=2, image_size=32))
    enc.save_pretrained(root / "model", processor=proc)
    frames = (np.random.default_rng(1).random((23, 32, 32, 3)) * 255).astype(np.uint8)
    write_mp4(frames, root / "v.mp4", fps=8)
    from torchcodec.decoders import VideoDecoder
    decoded = VideoDecoder(str(root / "v.mp4")).get_frames_in_range(0, 23).data.permute(0, 2, 3, 1).numpy()
    return enc, proc, root / "model", root / "v.mp4", decoded


def one_by_one(enc, proc, windows) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([enc(proc.collate([proc(w)])).pooled for w in windows])


def test_window_spans_cover_the_input_by_hand():
    assert window_spans(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_spans(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (9, 11)]            # a short last window
    assert window_spans(11, 4, 4) == [(0, 4), (4, 8), (8, 11)]                      # no overlap
    assert window_spans(3, 4, 2) == [(0, 3)] and window_spans(4, 4, 2) == [(0, 4)]  # within one window
    assert window_spans(5, 4, 2) == [(0, 4), (2, 5)]
    for bad in [(10, 4, 5), (10, 4, 0), (0, 4, 2)]:
        with pytest.raises(ValueError, match="1 <= hop <= window"):
            window_spans(*bad)


def test_audio_windows_by_hand_and_an_input_within_one_window(audio):
    enc, proc, _, _, _ = audio
    x = np.random.default_rng(2).standard_normal(17600).astype(np.float32)            # 1.1 s
    assert len(list(proc.windows((x, RATE), name="x"))) == 8                         # 0.25 s every 0.125 s
    wins = list(proc.windows((x, RATE), name="x", window=0.5, hop=0.25))
    assert [(round(w.start * RATE), round(w.end * RATE)) for w in wins] == \
        [(0, 8000), (4000, 12000), (8000, 16000), (12000, 17600)]
    assert [w.name for w in wins][-1] == "x[0.750-1.100s]" and {w.unit for w in wins} == {"s"}
    whole = AudioProcessor()                                   # a window longer than max_seconds is not cut
    for w in wins:
        assert torch.equal(w.item["input_values"], whole((x[round(w.start * RATE):round(w.end * RATE)], RATE))
                           ["input_values"])
    wins = list(proc.windows((x, RATE), name="x", window=1.0, hop=0.6))
    assert [(round(w.start * RATE), round(w.end * RATE)) for w in wins] == [(0, 16000), (9600, 17600)]
    short = x[:3200]                                                                   # 0.2 s: one window
    (only,) = proc.windows((short, RATE), name="short")
    assert only.name == "short" and (only.start, only.end) == (0.0, 0.2)
    res = embed_long(enc, proc, (short, RATE), name="short")
    with torch.no_grad():
        assert torch.equal(res.embeddings, enc(proc.collate([proc((short, RATE))])).pooled)
    with pytest.raises(ValueError, match="hop <= window"):
        next(proc.windows((x, RATE), window=0.2, hop=0.3))


def test_video_windows_by_hand_with_the_short_last_window(video):
    _, proc, _, _, frames = video
    clip = frames[:20]
    wins = list(proc.windows(clip, name="c"))                                          # 7 frames every 3
    assert [(w.start, w.end) for w in wins] == [(0, 7), (3, 10), (6, 13), (9, 16), (12, 19), (15, 20)]
    assert wins[-1].unit == "frames" and wins[-1].name == "c[15.000-20.000frames]"
    for w in wins:
        assert torch.equal(w.item["pixel_values"], proc(clip[int(w.start):int(w.end)])["pixel_values"])
    (only,) = proc.windows(frames[:6], name="s")                                       # shorter than a window
    assert torch.equal(only.item["pixel_values"], proc(frames[:6])["pixel_values"])


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_embed_long_equals_the_windows_one_by_one(kind, audio, video):
    enc, proc, _, path, data = audio if kind == "audio" else video
    rows = embed_long(enc, proc, str(path), pooling="none", batch_size=3)
    if kind == "audio":
        spans = [(round(a * RATE), round(b * RATE)) for a, b in rows.spans]
        windows = [(data[a:b], RATE) for a, b in spans]
        assert spans == [(0, 4000), (2000, 6000), (4000, 8000), (6000, 9834)]
    else:
        spans = [(round(a * 8), round(b * 8)) for a, b in rows.spans]                   # seconds at 8 fps
        windows = [data[a:b] for a, b in spans]
        assert spans == [(3 * k, min(3 * k + 7, 23)) for k in range(7)]
    ref = one_by_one(enc, proc, windows)
    assert rows.embeddings.shape == ref.shape and torch.allclose(rows.embeddings, ref, atol=1e-5, rtol=0)
    assert rows.names[0] == f"{path}[0.000-{rows.spans[0][1]:.3f}s]"
    mean = embed_long(enc, proc, str(path), pooling="mean", batch_size=3)
    w = torch.tensor([b - a for a, b in spans], dtype=torch.float64)
    expected = ((ref.double() * w[:, None]).sum(0) / w.sum()).float()
    assert mean.names == [str(path)] and torch.allclose(mean.embeddings[0], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(expected, ref.mean(0), atol=1e-7)        # the shorter last window weighs less


def test_windows_in_flight_are_bounded(audio):
    """embed_long pulls ``batch_size`` windows at a time from a lazy window iterator."""
    enc, proc, _, path, _ = audio
    made, seen = [0], []

    class Counting(AudioProcessor):
        def windows(self, *a, **kw):
            for w in super().windows(*a, **kw):
                made[0] += 1
                yield w

    counting = Counting(proc.config)
    forward = enc.forward

    def spy(batch, **kw):
        seen.append((made[0], batch["input_values"].shape[0]))
        return forward(batch, **kw)
    enc.forward = spy
    try:
        embed_long(enc, counting, str(path), batch_size=2)
    finally:
        del enc.forward
    assert seen == [(2, 2), (4, 2)]                         # (windows made so far, windows in the batch)


def _embedded(out_path):
    with safe_open(str(out_path), "pt") as fh:
        return fh.get_tensor("embeddings"), json.loads(fh.metadata()["names"])


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_cli_embed_both_poolings(kind, audio, video, tmp_path):
    enc, proc, model, path, _ = audio if kind == "audio" else video
    res = zoo_main("embed", str(model), str(path), "--pooling", "none", "--batch-size", "4",
                   "--output", str(tmp_path / "none.safetensors"))
    assert res.returncode == 0, res.stderr
    emb, names = _embedded(tmp_path / "none.safetensors")
    rows = embed_long(enc, proc, str(path), pooling="none", batch_size=1)
    assert names == rows.names and len(names) > 1 and torch.allclose(emb, rows.embeddings, atol=1e-5, rtol=0)
    res = zoo_main("embed", str(model), str(path), str(path), "--output", str(tmp_path / "mean.safetensors"))
    assert res.returncode == 0, res.stderr
    assert f"mean of {len(names)} windows" in res.stdout
    mean, names = _embedded(tmp_path / "mean.safetensors")
    assert names == [str(path)] * 2 and mean.shape == (2, enc.dim)
    w = torch.tensor([b - a for a, b in rows.spans], dtype=torch.float64)
    expected = ((rows.embeddings.double() * w[:, None]).sum(0) / w.sum()).float()
    assert torch.allclose(mean, expected.expand(2, -1), atol=1e-5, rtol=0)
    res = zoo_main("embed", str(model), str(path), "--window", "0.4", "--hop", "0.2", "--pooling", "none",
                   "--output", str(tmp_path / "w.safetensors"))
    assert res.returncode == 0, res.stderr
    _, names = _embedded(tmp_path / "w.safetensors")
    first = ["0.000-0.400s", "0.200-0.600s"] if kind == "audio" else ["0.000-0.375s", "0.250-0.625s"]   # 8 fps
    assert names[:2] == [f"{path}[{span}]" for span in first]
    res = zoo_main("embed", str(model), str(path), "--window", "0.2", "--hop", "0.4")
    assert res.returncode == 2 and "hop <= window" in res.stderr


def test_cli_events_say_how_many_older_events_were_left_out(tmp_path):
    table, _ = make_cardholders(4, seed=0, min_events=8, max_events=30)
    histories = group_events(table, "entity")
    proc = EventProcessor(EventProcessorConfig(max_events=12)).fit(histories)
    torch.manual_seed(0)
    CoLESEncoder(CoLESConfig(hidden=8, embed_dim=2, **proc.encoder_config())).save_pretrained(
        tmp_path / "model", processor=proc)
    import pandas as pd
    pd.DataFrame(table).to_csv(tmp_path / "log.csv", index=False)
    counts = {e: int(histories.ends[i] - histories.starts[i]) for i, e in enumerate(histories.entities)}
    res = zoo_main("embed", str(tmp_path / "model"), str(tmp_path / "log.csv"))
    assert res.returncode == 0, res.stderr
    cut = {e: n for e, n in counts.items() if n > 12}
    assert cut and len(cut) < len(counts)
    for entity, n in cut.items():
        assert f"note: {entity}: {n - 12} older events left out (the most recent 12 of {n} kept" in res.stdout
    assert f"note: {len(cut)} input(s) embedded with part of them left out" in res.stdout
    assert not any(f"note: {e}:" in res.stdout for e in counts if e not in cut)
    res = zoo_main("embed", str(tmp_path / "model"), str(tmp_path / "log.csv"), "--pooling", "none")
    assert res.returncode == 2 and "embedded whole" in res.stderr


# --- issue #32: fine-tuning, prediction and evaluation see the whole clip, not its first max_seconds -------------
def _clicks_then(kind: str, rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """2 s of clicks (the same kind of start for every class), then ``seconds - 2`` s of ``kind``: rising sweeps
    (0.5 s chirps) or white noise, at a random level."""
    t = np.arange(int(2 * RATE))
    clicks = np.zeros(t.size)
    clicks[rng.integers(0, t.size, int(rng.integers(10, 30)))] = rng.uniform(0.3, 1.0)
    clicks += rng.normal(0, 0.003, t.size)
    n = int((seconds - 2) * RATE)
    if kind == "sweeps":
        tt = (np.arange(n) % (RATE // 2)) / RATE
        f0, f1 = rng.uniform(200, 600), rng.uniform(2000, 4000)
        rest = np.sin(2 * np.pi * (f0 * tt + (f1 - f0) * tt ** 2))          # f0 → f1 over each 0.5 s chirp
    else:
        rest = rng.normal(0, 1.0, n)
    return np.concatenate([clicks, rng.uniform(0.1, 0.5) * rest / np.abs(rest).max()]).astype(np.float32)


@pytest.fixture(scope="module")
def clicks_data(tmp_path_factory):
    """``train/`` and ``test/`` folders of 6 s WAVs in two classes that differ only after 2 s (max_seconds)."""
    root = tmp_path_factory.mktemp("clicks") / "data"
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 10)):
        for kind in ("sweeps", "noise"):
            (root / split / kind).mkdir(parents=True)
            for i in range(count):
                sf.write(root / split / kind / f"{kind}_{i}.wav", _clicks_then(kind, rng), RATE)
    return root


def test_fine_tuning_and_predict_decide_by_the_whole_clip(clicks_data, tmp_path):
    """A tiny pretrain, then frozen fine-tuning with the recipe's max_seconds of 2 s: the class is told only after
    2 s, so a model that sees the first 2 s is at chance (0.5); training on random 2 s crops and predicting from
    the windows' mean, it is right on the held-out files, and ``zoo predict`` names the right class."""
    pre = zoo_main("pretrain", "audio-wav2vec2-tiny", "--data", str(clicks_data / "train"), "--output",
                   str(tmp_path / "pre"), "--set", "train.steps=2", "--set", "train.batch_size=4", "--set",
                   "train.warmup_steps=1", "--set", "encoder.depth=1", "--set", "pretraining.num_negatives=10")
    assert pre.returncode == 0, pre.stderr
    ft = zoo_main("finetune", str(tmp_path / "pre" / "model"), "--data", str(clicks_data), "--mode", "frozen",
                  "--steps", "40", "--lr", "0.01", "--batch-size", "8", "--output", str(tmp_path / "ft"))
    assert ft.returncode == 0, ft.stderr
    result = json.loads(ft.stdout[ft.stdout.index("{"):])
    assert result["test_accuracy"] >= 0.9, result
    assert "long inputs: training takes a random 2 s crop" in ft.stderr
    card = (tmp_path / "ft" / "model" / "README.md").read_text()
    assert "Long inputs: training takes a random 2 s crop" in card and "windows of 2 s every 1 s" in card
    files = [clicks_data / "test" / "sweeps" / "sweeps_0.wav", clicks_data / "test" / "noise" / "noise_0.wav"]
    res = zoo_main("predict", str(tmp_path / "ft" / "model"), *map(str, files), "--json")
    assert res.returncode == 0, res.stderr
    predicted = [json.loads(line)["predictions"][0]["label"] for line in res.stdout.splitlines()]
    assert predicted == ["sweeps", "noise"], res.stdout


def test_classifier_on_a_long_clip_is_the_head_on_its_windows_mean(audio):
    """``Classifier.predict_proba``, the fine-tuning report's ``predict_set`` and the probes' embeddings of a 1.1 s
    clip under a 0.25 s max_seconds: the head on the mean of its windows' pooled embeddings (0.25 s every 0.125 s,
    the last one shorter) weighted by their length, computed here window by window from the encoder; a clip
    within one window is its own row."""
    from pipelines.evaluate import embed
    from pipelines.report import predict_set
    from zoo import Classifier, ExampleSet
    enc, proc, _, _, _ = audio
    torch.manual_seed(1)
    clf = Classifier(enc, ["a", "b", "c"], processor=proc).eval()
    rng = np.random.default_rng(3)
    x = (np.sin(np.arange(17600) * np.linspace(0.05, 0.4, 17600)) + 0.1 * rng.standard_normal(17600)).astype(np.float32)
    short = x[:3000]
    spans = window_spans(x.size, 4000, 2000)
    assert spans[-1] == (14000, 17600)
    with torch.no_grad():
        rows = torch.cat([enc(proc.collate([proc((x[a:b], RATE))])).pooled for a, b in spans]).double()
        w = torch.tensor([b - a for a, b in spans], dtype=torch.float64)
        mean = ((rows * w[:, None]).sum(0) / w.sum()).float()
        own = enc(proc.collate([proc((short, RATE))])).pooled[0]
        expected = clf.head(torch.stack([mean, own])).softmax(dim=1)
        first = clf.head(enc(proc.collate([proc((x, RATE))])).pooled).softmax(dim=1)[0]
    assert not torch.allclose(expected[0], first, atol=1e-4)          # the first 0.25 s alone says otherwise
    got = clf.predict_proba([(x, RATE), (short, RATE)], batch_size=3)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    data = ExampleSet([(x, RATE), (short, RATE)], [0, 2], ["long", "short"])
    y, out, names = predict_set(clf, proc, data)
    assert names == ["long", "short"] and y.tolist() == [0, 2]
    assert np.allclose(out, expected.numpy(), atol=1e-5)
    assert torch.allclose(embed(enc, proc, data, batch_size=1), torch.stack([mean, own]), atol=1e-5, rtol=0)
    layers = embed(enc, proc, data, layers=True)
    assert len(layers) == 3 and torch.allclose(layers[-1], torch.stack([mean, own]), atol=1e-5, rtol=0)


def test_training_crops_a_long_clip_at_a_seeded_random_place(audio, tmp_path):
    """``AudioProcessor.cropped``: ``max_seconds`` from a start drawn from the generator (the same seed, the same
    crop; over draws, starts across the clip, not only 0), read from the file; a clip within max_seconds whole."""
    from pipelines.data import example_generator
    _, proc, _, path, wave = audio                                    # 0.61 s, max_seconds 0.25 s
    every = torch.from_numpy(wave).unfold(0, 4000, 1)                 # every 0.25 s slice, normalised as a clip
    every = (every - every.mean(1, keepdim=True)) / torch.sqrt(every.var(1, unbiased=False, keepdim=True) + 1e-7)
    starts = set()
    for key in range(12):
        item = proc.cropped(str(path), generator=example_generator(0, 0, key))["input_values"]
        again = proc.cropped(str(path), generator=example_generator(0, 0, key))["input_values"]
        assert torch.equal(item, again) and item.numel() == 4000
        (match,) = ((every - item).abs().amax(1) < 1e-4).nonzero()[:, 0].tolist()
        starts.add(match)
    assert len(starts) > 6 and max(starts) > 4000
    short = proc.cropped((wave[:3000], RATE), generator=example_generator(0, 0, 0))["input_values"]
    assert torch.equal(short, proc((wave[:3000], RATE))["input_values"])
