"""Hostile and faulty inputs (issue #15), one test per class of failure: each input gets a clear error naming the
example and field (``BadExample``, ``ConfigError``, ``FormatError``), never a crash elsewhere or a silent change."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from modalities.audio import AudioProcessor, AudioProcessorConfig
from modalities.graph.model import GraphMAEConfig, GraphMAEEncoder
from modalities.graph.processor import GraphProcessor, GraphProcessorConfig
from modalities.pointcloud.processor import PointCloudProcessor
from pipelines.recipe import parse_recipe
from zoo.hub import FormatError

BASE = {"name": "r", "modality": "audio", "architecture": "wav2vec2"}


def test_small_inputs_never_ask_for_huge_allocations(tmp_path):
    # class 5: a WAV whose header claims 1 Hz; a graph declaring 10**9 nodes; a config asking in_dim 10**9
    sf.write(tmp_path / "one_hz.wav", np.zeros(4000, np.float32), 1)
    with pytest.raises(zoo.BadExample, match="one_hz.wav.*'sampling_rate': 1 Hz is outside"):
        AudioProcessor()(str(tmp_path / "one_hz.wav"))
    # at a plausible rate, max_seconds cuts before resampling: the work follows what is kept
    long = np.random.default_rng(0).standard_normal(8000 * 600).astype(np.float32)       # 10 minutes at 8 kHz
    x = AudioProcessor(AudioProcessorConfig(max_seconds=1.0))((long, 8000))["input_values"]
    assert x.shape == (16000,)
    graphs = GraphProcessor(GraphProcessorConfig(degree_features=4))
    with pytest.raises(zoo.BadExample, match="'num_nodes': 1000000000 nodes exceeds max_nodes"):
        graphs({"edge_index": [[0, 1], [1, 0]], "num_nodes": 10**9}, name="g")
    with pytest.raises(zoo.BadExample, match="'x': 3 feature rows for 1000000000 nodes"):
        graphs({"x": np.zeros((3, 2)), "edge_index": [[0, 1], [1, 0]], "num_nodes": 10**9}, name="g")
    enc = GraphMAEEncoder(GraphMAEConfig(in_dim=5, hidden=8, layers=1, heads=2))
    enc.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["encoder"]["in_dim"] = 10**9
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="config.json does not match model.safetensors.*1000000000"):
        zoo.AutoEncoder.from_pretrained(tmp_path / "m")


def test_inputs_a_processor_did_not_anticipate_are_bad_examples(tmp_path):
    # class 7 and class 10: odd rates, ragged / text / complex arrays, 1-D node features, float edge indices
    clip = np.zeros(8000, np.float32)
    proc = AudioProcessor()
    cases = [((clip, "abc"), "'sampling_rate': expected an integer rate"),
             ((clip, 0), "'sampling_rate': 0 Hz is outside"),
             ((clip, 16000.5), "'sampling_rate': expected an integer rate"),
             ([[0.0, 1.0], [2.0]], "'audio': not a rectangular array"),
             (np.array(["a", "b"]), "'audio': not an array of numbers"),
             (clip.astype(np.complex64), "'audio': complex values")]
    for bad, msg in cases:
        with pytest.raises(zoo.BadExample, match=msg):
            proc(bad, name="clip")
    items, skipped = proc.process([clip, (clip, "abc"), [[0.0], [1.0, 2.0]]], skip_bad=True)
    assert len(items) == 1 and len(skipped) == 2
    graphs = GraphProcessor(GraphProcessorConfig(num_features=2))
    with pytest.raises(zoo.BadExample, match="'x': expected node features \\[N, F\\]"):
        graphs({"x": np.zeros(3), "edge_index": [[0, 1], [1, 2]]}, name="g")
    with pytest.raises(zoo.BadExample, match="'edge_index': non-integer values"):
        graphs({"x": np.zeros((3, 2)), "edge_index": [[0.0, 1.7], [1.0, 2.0]]}, name="g")
    ok = graphs({"x": np.zeros((3, 2)), "edge_index": [[0.0, 1.0], [1.0, 2.0]]}, name="g")   # integral floats: fine
    assert ok["edge_index"].dtype == torch.long
    with pytest.raises(zoo.BadExample, match="'points': complex values"):
        PointCloudProcessor()(np.zeros((64, 3), np.complex64), name="cloud")


def test_header_only_wav_is_a_zero_length_clip(tmp_path):
    # class 9: used to be reported as "1 NaN/inf samples"
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(zoo.BadExample, match="empty.wav.*'audio': zero-length clip"):
        AudioProcessor()(str(tmp_path / "empty.wav"))


def test_bad_settings_name_the_field(tmp_path):
    # class 9: zero divisors, a section that is not a mapping, a binary config.json
    for modality, arch, key in [("audio", "wav2vec2", "heads"), ("audio", "wav2vec2", "pos_conv_groups"),
                                ("tabular", "t-jepa", "heads"), ("video", "videomae", "heads"),
                                ("pointcloud", "point-mae", "heads"), ("graph", "graphmae", "heads")]:
        raw = {"name": "r", "modality": modality, "architecture": arch, "encoder": {key: 0}}
        with pytest.raises(zoo.ConfigError, match=f"encoder: {key} must not be 0"):
            parse_recipe(raw, "r.yaml")
    with pytest.raises(zoo.ConfigError, match="r.yaml:train: expected a mapping of settings, got int 5"):
        parse_recipe({**BASE, "train": 5}, "r.yaml")
    enc = GraphMAEEncoder(GraphMAEConfig(in_dim=5, hidden=8, layers=1, heads=2))
    enc.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    with pytest.raises(FormatError, match="config.json: not a text file"):
        zoo.AutoEncoder.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="config.json: expected a JSON object, got list"):
        zoo.AutoEncoder.from_pretrained(tmp_path / "m")


def test_a_data_key_no_source_reads_is_an_error():
    # class 10: `splt: test` used to be ignored (the whole training split was used)
    with pytest.raises(ValueError, match="source 'sklearn' does not take the key\\(s\\) \\['splt'\\]"):
        zoo.get_modality("tabular").load_data({"source": "sklearn", "name": "breast_cancer", "splt": "test"})
    with pytest.raises(ValueError, match="does not take the key\\(s\\) \\['sed'\\]"):
        zoo.get_modality("graph").load_data({"source": "sbm", "sed": 3})
