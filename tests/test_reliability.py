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
from zoo.publish import check_publishable

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
    with pytest.raises(zoo.BadExample, match="'source': edge 1: node id 1.7 is not an integer"):
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


def _random_configs(rng: np.random.Generator) -> list[tuple[str, str, dict]]:
    """Small random configurations of every architecture (widths, depths, heads, feature counts vary)."""
    def width(heads: int) -> int:
        return heads * int(rng.integers(1, 9))
    out = []
    for _ in range(6):
        h = int(rng.integers(1, 4))
        out.append(("audio", "wav2vec2", {
            "conv_layers": [[int(rng.integers(3, 20)), int(rng.integers(2, 6)), int(rng.integers(1, 3))]
                            for _ in range(int(rng.integers(1, 3)))],
            "dim": 4 * width(h), "heads": h, "depth": int(rng.integers(1, 3)),
            "pos_conv_kernel": int(rng.integers(2, 9)), "pos_conv_groups": 4,
            "conv_norm": str(rng.choice(["group", "layer"])), "conv_bias": bool(rng.integers(0, 2))}))
        cards = [int(rng.integers(2, 12)) for _ in range(int(rng.integers(0, 4)))]
        out.append(("tabular", "t-jepa", {"num_numerical": int(rng.integers(2 - min(len(cards), 2), 7)),
                                          "cardinalities": cards, "dim": width(h), "heads": h,
                                          "depth": int(rng.integers(1, 3)), "reg_tokens": int(rng.integers(0, 4))}))
        out.append(("graph", "graphmae", {"in_dim": int(rng.integers(1, 40)), "hidden": width(h), "heads": h,
                                          "layers": int(rng.integers(1, 4)), "gnn": str(rng.choice(["gat", "gin"])),
                                          "norm": str(rng.choice(["none", "batchnorm", "layernorm"]))}))
        p = int(rng.choice([4, 8]))
        out.append(("video", "videomae", {"image_size": p * int(rng.integers(1, 4)), "patch_size": p,
                                          "num_frames": 2 * int(rng.integers(1, 3)), "tubelet_size": 2,
                                          "dim": 6 * width(h), "heads": h, "depth": int(rng.integers(1, 3)),
                                          "positions": str(rng.choice(["1d", "3d"]))}))
        points = int(rng.integers(16, 80))
        out.append(("pointcloud", "point-mae", {
            "num_points": points, "num_patches": int(rng.integers(1, 9)), "patch_size": int(rng.integers(2, 16)),
            "dim": width(h), "heads": h, "depth": int(rng.integers(1, 3)), "in_channels": int(rng.integers(3, 7)),
            "pointnet_dims": [int(rng.integers(2, 20)) for _ in range(3)]}))
    return out


def test_every_saved_model_loads_back(tmp_path):
    # class 1, as a property: random configurations of every architecture save and load back bit for bit
    # (the safetensors header length, and so its first byte, varies with the configuration)
    first_bytes = set()
    for i, (modality, arch, settings) in enumerate(_random_configs(np.random.default_rng(0))):
        cls = zoo.get_modality(modality).architecture(arch).encoder
        torch.manual_seed(i)
        enc = cls(cls.config_class.from_dict(settings, where=f"{arch} #{i}"))
        enc.save_pretrained(tmp_path / str(i))
        first_bytes.add((tmp_path / str(i) / "model.safetensors").read_bytes()[0])
        back = zoo.AutoEncoder.from_pretrained(tmp_path / str(i))
        assert type(back) is cls and back.config == enc.config
        saved, loaded = enc.state_dict(), back.state_dict()
        assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved), (arch, i)
    assert len(first_bytes) > 10                      # many header lengths, 0x80 among the possible ones


HOSTILE = [None, 0, 1.5, "", "no/such/file.bin", b"\x00\x01", [], [[]], {}, {"x": 1}, np.zeros(0),
           np.full((8, 3), np.nan), np.full((8, 3), np.inf), np.array(["a", "b"]), np.zeros((2, 2, 2, 2, 2)),
           np.zeros(5, np.complex64), [[1.0, 2.0], [3.0]], np.zeros((10**9, 0)), object()]


def _processors(tmp_path):
    from modalities.tabular.processor import TabularProcessor
    from modalities.video.processor import VideoProcessor
    tab = TabularProcessor().fit({"a": np.arange(10.0), "b": np.array(["u", "v"] * 5, dtype=object)})
    return {"audio": AudioProcessor(), "tabular": tab, "graph": GraphProcessor(GraphProcessorConfig(num_features=3)),
            "video": VideoProcessor(), "pointcloud": PointCloudProcessor()}


def test_processors_answer_hostile_inputs_with_bad_example(tmp_path):
    # the fuzz list: empty, NaN/inf, wrong dtype, wrong rank, huge declared sizes, objects of no kind at all
    hostile = HOSTILE + [{"x": np.zeros((3, 3)), "edge_index": [[0], [1]], "num_nodes": 10**12},
                         {"points": np.zeros((10**6, 3)) + np.nan}, {"array": np.zeros(10), "sampling_rate": -5},
                         {"a": float("inf"), "b": "u"}, {"a": "abc", "b": "u"}]
    failures = []
    for modality, proc in _processors(tmp_path).items():
        for i, bad in enumerate(hostile):
            try:
                proc(bad, name=f"hostile-{i}")
            except zoo.BadExample as err:          # named by the caller's name, or by the path it was given
                if f"hostile-{i}" not in str(err) and not (isinstance(bad, str) and f"example {bad}:" in str(err)):
                    failures.append(f"{modality} #{i}: names neither: {err}")
            except Exception as err:               # noqa: BLE001 - the point: nothing but BadExample
                failures.append(f"{modality} #{i} {bad!r:.60}: {type(err).__name__}: {str(err)[:120]}")
            else:
                failures.append(f"{modality} accepted #{i}: {bad!r:.60}")
    assert not failures, "\n".join(failures)


def test_publish_checks_the_repo_id_and_the_card_even_on_a_dry_run(tmp_path):
    # class 10: `publish --dry-run` accepted --repo-id "", ../../x and a card whose YAML does not parse
    from pipelines.cli import main
    from zoo.cards import write_card
    enc = GraphMAEEncoder(GraphMAEConfig(in_dim=5, hidden=8, layers=1, heads=2))
    enc.save_pretrained(tmp_path / "m")
    write_card(tmp_path / "m", repo_id="org/m")
    assert main(["publish", str(tmp_path / "m"), "--repo-id", "org/m", "--dry-run"]) == 0
    for bad in ("", "../../x", "a/b/c"):
        with pytest.raises(ValueError, match="invalid repo id"):
            check_publishable(tmp_path / "m", bad)
        assert main(["publish", str(tmp_path / "m"), "--repo-id", bad, "--dry-run"]) == 2
    card = tmp_path / "m" / "README.md"
    card.write_text("---\nlicense: [unclosed\n---\n# card\n")
    with pytest.raises(FormatError, match="README.md: the card's YAML metadata does not parse"):
        check_publishable(tmp_path / "m", "org/m")
    assert main(["publish", str(tmp_path / "m"), "--repo-id", "org/m", "--dry-run"]) == 2


def test_an_empty_table_is_a_clear_error():
    # class 9: used to fit silently (mean 0, std 1, no categories) and fail later in torch.cat
    import pandas as pd

    from modalities.tabular.model import TJepaConfig, TJepaEncoder
    from modalities.tabular.processor import TabularProcessor
    from pipelines.evaluate import embed
    df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    with pytest.raises(ValueError, match="empty table \\(2 columns, 0 rows\\)"):
        TabularProcessor().fit(df.iloc[:0])
    proc = TabularProcessor().fit(df)
    enc = TJepaEncoder(TJepaConfig(**proc.encoder_config(), dim=8, depth=1, heads=2))
    with pytest.raises(ValueError, match="nothing to embed: the data holds no examples"):
        embed(enc, proc, df.iloc[:0])


def test_a_processor_that_does_not_fit_its_encoder_is_refused(tmp_path):
    # class 9: a preprocessor.json from another table (5 numbers instead of 1) used to fail at the first batch
    # with a raw matmul shape error
    import pandas as pd

    from modalities.tabular.model import TJepaConfig, TJepaEncoder
    from modalities.tabular.processor import TabularProcessor
    proc = TabularProcessor().fit(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}))
    enc = TJepaEncoder(TJepaConfig(**proc.encoder_config(), dim=8, depth=1, heads=2))
    enc.save_pretrained(tmp_path / "m", processor=proc)
    assert zoo.AutoProcessor.from_pretrained(tmp_path / "m").numerical == ["a"]
    other = TabularProcessor().fit(pd.DataFrame({c: [1.0, 2.0] for c in "pqrst"} | {"b": ["x", "y"]}))
    other.save_pretrained(tmp_path / "m")
    with pytest.raises(FormatError, match="preprocessor.json does not fit config.json: num_numerical is 5 in the "
                                          "processor, 1 in the encoder"):
        zoo.AutoProcessor.from_pretrained(tmp_path / "m")


def test_recorded_paths_are_portable(tmp_path, monkeypatch):
    # class 11: config.json recorded absolute local paths (/home/…/my_data.csv) and publish would upload them
    from zoo.paths import expand, portable
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / ".")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    recipe = {"data": {"train": {"path": str(tmp_path / "data" / "adult" / "adult.data"), "limit": 5,
                                 "files": [str(tmp_path / "cache" / "x.csv"), str(tmp_path / "work" / "t.csv")]},
                       "test": {"data_dir": str(tmp_path / "home" / "mine" / "set"), "root": "/srv/secret/d.csv",
                                "name": "relative/stays"}}}
    out = portable(recipe)
    assert out == {"data": {"train": {"path": "$ZOO_DATA/adult/adult.data", "limit": 5,
                                      "files": ["$ZOO_CACHE/x.csv", "t.csv"]},
                            "test": {"data_dir": "~/mine/set", "root": "<local>/d.csv", "name": "relative/stays"}}}
    back = expand(out)
    assert back["data"]["train"]["path"] == recipe["data"]["train"]["path"]
    assert back["data"]["test"]["data_dir"] == recipe["data"]["test"]["data_dir"]


def test_video_statistics_must_be_finite_and_positive():
    # class 6 for the video processor's per-channel statistics (the tabular ones: tests/test_tabular.py)
    from modalities.video.processor import VideoProcessorConfig
    for mean, std, msg in (([0.5, float("nan"), 0.5], [0.2] * 3, "must be finite"),
                           ([0.5] * 3, [0.2, float("inf"), 0.2], "must be finite"),
                           ([0.5] * 3, [0.2, 0.0, 0.2], "std: must be > 0"),
                           ([0.5] * 3, [0.2, -1.0, 0.2], "std: must be > 0")):
        with pytest.raises(zoo.ConfigError, match=msg):
            VideoProcessorConfig.from_dict({"mean": mean, "std": std})
