"""Hardening, round 2 (issue #28): one test per class of failure the probe found, each failing on the code before
its fix. The inputs that every installed modality must answer live in the conformance fuzz
(tests/test_conformance.py: hostile objects and files, under a memory limit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from pipelines.recipe import parse_recipe
from tests.conftest import zoo_main
from zoo.config import ConfigError
from zoo.hub import FormatError


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tables")
    sample = zoo.get_modality("tabular").sample_data(tmp / "data")
    res = zoo_main("pretrain", sample.recipe, "--data", str(sample.data), "--label-column", "tier",
                   "--set", "train.steps=4", "--set", "train.batch_size=32", "--set", "encoder.depth=1",
                   "--set", "encoder.dim=16", "--set", "encoder.heads=2", "--output", str(tmp / "pre"))
    assert res.returncode == 0, res.stderr
    return sample.data, tmp / "pre"


# --- 1. wrong weights or wrong facts published ----------------------------------------------------------------
def test_a_finished_run_is_not_republished_under_fewer_steps(table_model, tmp_path):
    data, run = table_model
    res = zoo_main("pretrain", "tabular-tjepa-mlc-churn", "--data", str(data), "--label-column", "tier",
                   "--set", "train.steps=2", "--set", "train.batch_size=32", "--set", "encoder.depth=1",
                   "--set", "encoder.dim=16", "--set", "encoder.heads=2", "--output", str(run))
    assert res.returncode == 2 and "holds 4 steps of training, more than train.steps=2" in res.stderr
    assert json.loads((run / "model" / "config.json").read_text())["pretraining"]["training"]["steps"] == 4


def test_a_rerun_of_a_finished_run_republishes_the_same_model_and_card(table_model, tmp_path):
    """The same command again on a finished run resumes at its last step and publishes it again: the same weights
    file, and a card that keeps its facts (the collapse signals of the last logged step, which the rerun's own
    zero steps never logged) and says nothing of other weights."""
    import shutil
    data, run = table_model
    shutil.copytree(run, tmp_path / "pre")
    before = {f: (run / "model" / f).read_bytes() for f in ("model.safetensors", "README.md")}
    res = zoo_main("pretrain", "tabular-tjepa-mlc-churn", "--data", str(data), "--label-column", "tier",
                   "--set", "train.steps=4", "--set", "train.batch_size=32", "--set", "encoder.depth=1",
                   "--set", "encoder.dim=16", "--set", "encoder.heads=2", "--output", str(tmp_path / "pre"))
    assert res.returncode == 0 and "written for other weights" not in res.stderr, res.stderr
    assert json.loads(res.stdout[res.stdout.index("{"):])["resumed_from"] == 4
    assert (tmp_path / "pre" / "model" / "model.safetensors").read_bytes() == before["model.safetensors"]
    card = (tmp_path / "pre" / "model" / "README.md").read_text()
    assert "collapse signals (last log)" in before["README.md"].decode() and "collapse signals (last log)" in card


# --- 2. silently wrong data -------------------------------------------------------------------------------------
def test_dates_beyond_the_nanosecond_range_keep_their_order():
    from modalities.events.processor import parse_times
    t = parse_times(np.array(["2026-01-01", "2399-01-01", "1500-06-01"], dtype=object), "s", "e", "time")
    assert t[1] > t[0] > t[2]
    # 373 years with 90 leap days (2100, 2200 and 2300 are not leap years)
    assert t[1] - t[0] == pytest.approx((373 * 365 + 90) * 86400, rel=1e-9)


def test_table_cells_and_statistics_that_would_turn_non_finite(table_model):
    from zoo.schema import ColumnSchema
    _, run = table_model
    proc = zoo.AutoProcessor.from_pretrained(run / "model")
    row = {"income": 50.0, "age": 30, "plan": "basic", "customer_id": "c1"}
    for value, message in ((1e300, "standard deviations from the mean"), ("1+2j", "expected a number"),
                           (1 + 2j, "expected a number"), ([1.0, 2.0], "a list where one value is expected")):
        with pytest.raises(zoo.BadExample, match=message):
            proc({**row, "income": value}, name="row 7")
    state = proc.schema.state()
    state["std"][0] = 1e-40
    with pytest.raises(ValueError, match="std 1e-40.*>= 1e-30"):
        ColumnSchema.from_state(state)
    for bad in ([], {"numerical": [], "categorical": []}):
        with pytest.raises(ValueError, match="schema state needs lists"):
            ColumnSchema.from_state(bad)


def test_tables_that_do_not_parse_name_the_file(tmp_path):
    from zoo.schema import to_columns
    cases = {"dup.csv": ("a,a,b\n1,2,u\n", "names column\\(s\\) \\['a'\\] more than once"),
             "ragged.csv": ("a,b\n1,u\n3,v,7\n", "does not parse: .*Expected 2 fields in line 3"),
             "header.csv": ("a,b\n", "holds no rows"), "empty.csv": ("", "an empty file")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            to_columns(tmp_path / name)
    with pytest.raises(ValueError, match="columns of different lengths"):
        to_columns({"a": [1, 2], "b": [1]})


def test_a_list_cell_is_skipped_with_skip_bad_not_a_crash(table_model):
    from pipelines.data import process_records
    _, run = table_model
    proc = zoo.AutoProcessor.from_pretrained(run / "model")
    rows = [{"income": 50.0, "age": 30, "plan": "basic", "customer_id": "c1"},
            {"income": [1, 2], "age": 30, "plan": "basic", "customer_id": "c2"}]
    batch = process_records(proc, rows, [0, 1], ["r0", "r1"], skip_bad=True)
    assert batch["_meta"]["names"] == ["r0"] and "a list where one value" in batch["_meta"]["skipped"][0]


def test_labels_are_the_values_present(tmp_path):
    """{1, 5} are two classes and {0, 1, 7} three: never range(max + 1); one class only is named as such."""
    load = zoo.get_modality("tabular").load_data
    for values, names in (([1, 5], ["1", "5"]), ([0, 1, 7], ["0", "1", "7"])):
        pd.DataFrame({"x": range(12), "y": values * (12 // len(values))}).to_csv(tmp_path / "t.csv", index=False)
        data = load({"source": "hf", "path": "csv", "data_files": str(tmp_path / "t.csv"), "label_column": "y"})
        assert list(data.label_names) == names and sorted(set(data.labels)) == list(range(len(names)))
    from pipelines.labelled import check_label_spaces
    one = zoo.ExampleSet(["a", "b"], [0, 0], ["a", "b"], ["only"])
    with pytest.raises(ValueError, match="hold 1 class"):
        check_label_spaces(one, one)


def test_an_empty_class_folder_is_an_error_not_a_class_dropped(tmp_path):
    import soundfile as sf
    for name in ("yes", "no", "maybe"):
        (tmp_path / name).mkdir()
    for name in ("yes", "no"):
        sf.write(tmp_path / name / "a.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(FileNotFoundError, match=r"class folder\(s\) \['maybe'\] hold no audio files"):
        zoo.get_modality("audio").load_data({"source": "folder", "path": str(tmp_path)})


# --- 4. errors that name the input -----------------------------------------------------------------------------
def test_broken_model_folders_are_named(table_model, tmp_path):
    _, run = table_model
    cases = [("encoder", None, "encoder must be a mapping"), ("zoo_format", "1", "zoo_format must be the number 1"),
             ("modality", ["tabular"], "modality must be a name"), ("encoder.dim", -32, "do not build|must be")]
    for key, value, message in cases:
        folder = tmp_path / key
        shutil.copytree(run / "model", folder)
        config = json.loads((folder / "config.json").read_text())
        if "." in key:
            section, field = key.split(".")
            config[section][field] = value
        else:
            config[key] = value
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises((FormatError, ConfigError), match=message):
            zoo.AutoEncoder.from_pretrained(folder)
    folder = tmp_path / "state"
    shutil.copytree(run / "model", folder)
    pre = json.loads((folder / "preprocessor.json").read_text())
    pre["state"] = [1, 2]
    (folder / "preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(FormatError, match="preprocessor.json does not load"):
        zoo.AutoProcessor.from_pretrained(folder)
    folder = tmp_path / "cut"
    shutil.copytree(run / "model", folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(FormatError, match="model.safetensors"):
        zoo.AutoEncoder.from_pretrained(folder)


def test_recipe_mistakes_stop_before_pretraining():
    base = {"name": "r", "modality": "graph", "architecture": "graphmae", "data": {"train": {"source": "motifs"}}}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['protocl'\]"):
        parse_recipe({**base, "evaluate": {"protocl": "node"}})
    with pytest.raises(ConfigError, match="'nodes' is not a protocol of 'graph'"):
        parse_recipe({**base, "evaluate": {"protocol": "nodes"}})
    with pytest.raises(ConfigError, match="data.train: a data spec is a mapping"):
        parse_recipe({**base, "data": {"train": 5}})


def test_embed_never_writes_into_the_hub_cache(table_model, tmp_path, monkeypatch):
    from huggingface_hub import constants
    _, run = table_model
    cache = tmp_path / "hub"
    snapshot = cache / "models--me--t" / "snapshots" / "abc"
    shutil.copytree(run / "model", snapshot)
    (cache / "models--me--t" / "refs").mkdir()
    (cache / "models--me--t" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"income": [1.0], "age": [3], "plan": ["basic"], "customer_id": ["c1"]}).to_csv(rows, index=False)
    before = (snapshot / "model.safetensors").read_bytes()
    res = zoo_main("embed", str(run / "model"), str(rows), "--output", str(run / "model" / "e.safetensors"))
    assert res.returncode == 2 and "lies inside" in res.stderr
    res = zoo_main("embed", str(snapshot), str(rows), "--output", str(snapshot / "model.safetensors"))
    assert res.returncode == 2 and "lies inside" in res.stderr
    assert (snapshot / "model.safetensors").read_bytes() == before
    res = zoo_main("embed", str(run / "model"), str(rows), "--output", str(tmp_path / "ok" / "e.safetensors"))
    assert res.returncode == 0, res.stderr
    from safetensors.torch import load_file
    assert torch.isfinite(load_file(str(tmp_path / "ok" / "e.safetensors"))["embeddings"]).all()


def test_a_model_of_one_kind_on_files_of_another_names_what_it_expected(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "clouds" / name).mkdir(parents=True)
        (tmp_path / "clouds" / name / "x.ply").write_text("ply\n")
    with pytest.raises(FileNotFoundError, match=r"no audio files .* it holds \.ply files: data of another kind"):
        zoo.get_modality("audio").load_data({"source": "folder", "path": str(tmp_path / "clouds")})
