"""The generated audio-visual digits set (issue #34): layout, decodable tracks of the written lengths, onsets where the
CSV says, determinism, held-out voices and handwriting, atomic regeneration, and the error for a missing tool."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines import av_digits
from pipelines.av_digits import COLUMNS, audio_onset, make_av_digits, read_pairs, video_onset

TOOLS = [t for t in ("espeak-ng", "ffmpeg") if shutil.which(t) is None]
needs_tools = pytest.mark.skipif(bool(TOOLS), reason=f"{' and '.join(TOOLS)} not installed (Debian packages "
                                                      f"{' '.join(TOOLS)}): the set cannot be generated")
SMALL = {"clips": 10, "test_fraction": 0.3, "seed": 3, "size": 32}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    if TOOLS:
        pytest.skip(f"{' and '.join(TOOLS)} not installed")
    return make_av_digits(tmp_path_factory.mktemp("av") / "set", **SMALL)


def _digest(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_tools
def test_files_and_csv(small):
    with open(small / "pairs.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [r["split"] for r in rows] == ["train"] * 7 + ["test"] * 3
    assert sorted(p.relative_to(small).as_posix() for p in small.rglob("*.mp4")) == sorted(r["file"] for r in rows)
    for r in rows:
        assert r["file"] == f"clips/{r['split']}/{Path(r['file']).name}"
        assert 0 <= int(r["digit"]) <= 9
        onset, audio, jitter = float(r["onset_s"]), float(r["audio_onset_s"]), float(r["jitter_s"])
        assert abs(audio - onset - jitter) < 2e-4 and abs(jitter) <= 0.08
        assert av_digits.ONSET_MIN_S - 1e-4 <= min(onset, audio)
        assert audio + float(r["word_s"]) <= 2.0 - av_digits.END_MARGIN_S + 1e-3     # the word ends in the video
        assert onset + 0.25 <= 15 / 8 + 1e-4                                          # last frame shows it whole
    assert [int(r["digit"]) for r in rows] == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]           # balanced per split
    meta = json.loads((small / "metadata.json").read_text())
    assert meta["kind"] == "av-digits" and meta["clips"] == 10 and meta["size"] == 32
    assert not list(small.parent.glob("*.partial")) and not (small / ".work").exists()


@needs_tools
def test_both_tracks_decode_with_written_lengths_and_onsets(small):
    pytest.importorskip("torchcodec", reason="torchcodec (the audio/video extras) decodes the mp4 files")
    from torchcodec.decoders import AudioDecoder, VideoDecoder
    for r in read_pairs(small):
        samples = AudioDecoder(r["file"]).get_all_samples()
        assert samples.sample_rate == 16000 and tuple(samples.data.shape) == (1, int(r["samples"])) == (1, 32768)
        frames = VideoDecoder(r["file"], dimension_order="NHWC")[:].numpy()
        assert frames.shape == (16, 32, 32, 3)
        assert abs(video_onset(frames, 8, 0.25) - float(r["onset_s"])) < 0.04
        # the energy estimate rises within the word's first 150 ms (its bias is a few tens of ms)
        assert -0.03 < audio_onset(samples.data.numpy()[0], 16000) - float(r["audio_onset_s"]) < 0.15


@needs_tools
def test_modality_processors_read_both_tracks_of_one_file(small):
    pytest.importorskip("torchcodec", reason="torchcodec (the audio/video extras) decodes the mp4 files")
    import zoo
    path = read_pairs(small, "test")[0]["file"]
    audio = zoo.get_modality("audio").processor()(path)
    video_modality = zoo.get_modality("video")
    video = video_modality.processor(video_modality.processor.config_class(image_size=32))(path)
    assert audio["input_values"].shape == (32768,) and bool(audio["input_values"].isfinite().all())
    assert video["pixel_values"].shape == (16, 3, 32, 32)


@needs_tools
def test_deterministic_and_regenerated_only_when_asked_otherwise(small, tmp_path):
    again = make_av_digits(tmp_path / "again", **SMALL, workers=1)
    assert _digest(again) == _digest(small)
    before = (again / "pairs.csv").stat().st_mtime_ns
    assert make_av_digits(again, **SMALL) == again and (again / "pairs.csv").stat().st_mtime_ns == before
    make_av_digits(again, **{**SMALL, "clips": 4})
    assert len(read_pairs(again)) == 4 and len(list(again.rglob("*.mp4"))) == 4


@needs_tools
def test_test_split_holds_out_voices_and_handwriting(small):
    assert not set(av_digits.TRAIN_ACCENTS) & set(av_digits.TEST_ACCENTS)
    assert not set(av_digits.TRAIN_VARIANTS) & set(av_digits.TEST_VARIANTS)
    rows = read_pairs(small)
    train, test = ([r for r in rows if r["split"] == s] for s in ("train", "test"))
    assert {r["voice"] for r in train} <= set(av_digits.TRAIN_VOICES)
    assert {r["voice"] for r in test} <= set(av_digits.TEST_VOICES)
    assert max(int(r["image"]) for r in train) < av_digits.TRAIN_IMAGES <= min(int(r["image"]) for r in test)


@needs_tools
def test_interrupted_regeneration_keeps_the_old_set(small, tmp_path, monkeypatch):
    root = tmp_path / "set"
    shutil.copytree(small, root)
    calls = []

    def failing(exe, clip):
        calls.append(clip.id)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return np.ones(4000, np.float32)

    monkeypatch.setattr(av_digits, "_speak", failing)
    with pytest.raises(KeyboardInterrupt):
        make_av_digits(root, **{**SMALL, "seed": 4}, workers=1)
    assert _digest(root) == _digest(small)


def test_refuses_to_replace_a_folder_that_is_not_a_set(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an audio-visual digits set"):
        make_av_digits(tmp_path, clips=4)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_missing_tool_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(RuntimeError, match="Debian package espeak-ng"):
        make_av_digits(tmp_path / "a", clips=4)
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "espeak-ng"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="Debian package ffmpeg"):
        make_av_digits(tmp_path / "b", clips=4)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@needs_tools
def test_a_paired_spec_sets_the_generators_noise_and_jitter(tmp_path, monkeypatch):
    from pipelines.pairs import load_pairs
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    spec = {"source": "av-digits", "clips": 4, "seed": 1, "size": 32, "snr_db": [30, 40], "jitter_s": 0.0}
    pairs = load_pairs(spec, ["video", "audio"])
    root = tmp_path / "av-digits-4-1-32-snr_db30-40-jitter_s0.0"
    meta = json.loads((root / "metadata.json").read_text())
    assert len(pairs) == 4 and meta["snr_db"] == [30.0, 40.0] and meta["jitter_s"] == 0.0
    assert {float(r["jitter_s"]) for r in read_pairs(root)} == {0.0}
    assert all(30 <= float(r["snr_db"]) <= 40 for r in read_pairs(root))
