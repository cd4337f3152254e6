"""Hardening, round 3 (issue #36): no command writes into its own input, a model folder it did not make, or a
cache it reads from; every size, count and shard argument is refused before any work starts, naming the argument;
no wrong fact is published (a card is its own folder's, a setting that cannot apply is refused, the card records
what ran); collapse alarms do not mislead; and three cases no promise covered are decided (mixed time units, a
killed conversion's leftover, integer tensors where floats belong). Each test failed on the code before its fix."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from tests.conftest import zoo_main

transformers = pytest.importorskip("transformers")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A tiny transformers wav2vec 2.0 checkpoint folder (random weights, safetensors)."""
    import torch
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16, 16), conv_kernel=(10, 3),
                                      conv_stride=(5, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    folder = tmp_path_factory.mktemp("hf") / "w2v-tiny"
    transformers.Wav2Vec2Model(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def test_convert_into_its_own_source_is_refused_and_the_checkpoint_kept(hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    before = _digest(hf_dir)
    for out in (hf_dir, hf_dir / "zoo"):
        res = zoo_main("convert", str(hf_dir), str(out))
        assert res.returncode == 2, res.stdout
        assert "OUT" in res.stderr and "overwrite the input" in res.stderr, res.stderr
    assert _digest(hf_dir) == before
    assert not (tmp_path / "cache").exists()                  # refused before any work: nothing converted


def test_convert_into_an_existing_file_or_a_model_folder_or_the_cache_is_refused(hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "file.bin").write_bytes(b"mine")
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text('{"zoo_format": 1}')
    (tmp_path / "cache").mkdir()
    for out, said in ((tmp_path / "file.bin", "is an existing file"), (other, "already holds files"),
                      (tmp_path / "cache", "inside the ssl-zoo cache"),
                      (tmp_path / "cache" / "converted" / "x", "inside the ssl-zoo cache")):
        res = zoo_main("convert", str(hf_dir), str(out))
        assert res.returncode == 2 and "OUT" in res.stderr and said in res.stderr, (out, res.stderr)
    assert (tmp_path / "file.bin").read_bytes() == b"mine"
    assert (other / "config.json").read_text() == '{"zoo_format": 1}'
    ok = zoo_main("convert", str(hf_dir), str(tmp_path / "new"))
    assert ok.returncode == 0, ok.stderr


def test_a_converted_card_names_its_source_not_a_temporary_folder(hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    zoo.AutoEncoder.from_pretrained(hf_dir)
    folder = next((tmp_path / "cache" / "converted").iterdir())
    card = (folder / "README.md").read_text()
    assert ".tmp" not in card and "w2v-tiny" in card


def test_embed_never_writes_into_the_conversion_cache(hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    wav = tmp_path / "x.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(8000).astype("float32") * 0.1, 16000)
    zoo.AutoEncoder.from_pretrained(hf_dir)
    folder = next((tmp_path / "cache" / "converted").iterdir())
    before = _digest(folder)
    for out in (folder / "model.safetensors", folder / "emb", tmp_path / "cache" / "other.safetensors"):
        res = zoo_main("embed", str(hf_dir), str(wav), "--output", str(out))
        assert res.returncode == 2 and "--output" in res.stderr and "cache" in res.stderr, res.stderr
    assert _digest(folder) == before
    res = zoo_main("embed", str(folder), str(wav), "--output", str(wav))          # over its own input
    assert res.returncode == 2 and "the input" in res.stderr
    assert zoo.AutoEncoder.from_pretrained(hf_dir) is not None


@pytest.mark.parametrize("value", ["0", "-1"])
def test_shard_size_below_one_is_refused_before_any_work(hf_dir, tmp_path, value):
    res = zoo_main("embed", "no-such-model", "x.wav", "--output", str(tmp_path / "out"), "--shard-size", value)
    assert res.returncode == 2 and "--shard-size" in res.stderr and "must be >= 1" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [("predict", "m", "x", "--top-k", "0"), ("embed", "m", "x", "--num-workers", "-1"),
                                  ("finetune", "m", "--steps", "0"), ("finetune", "m", "--batch-size", "-2"),
                                  ("finetune", "m", "--patience", "-1")])
def test_counts_are_checked_before_any_work(args):
    res = zoo_main(*args)
    flag = next(a for a in args if a.startswith("--"))
    assert res.returncode == 2 and flag in res.stderr and "must be >=" in res.stderr, res.stderr


def test_write_shards_refuses_a_shard_size_below_one(tmp_path):
    import torch

    from pipelines.evaluate import write_shards
    rows = iter([(torch.zeros(3, 2), ["a", "b", "c"], None)])
    for size in (0, -1):
        with pytest.raises(ValueError, match="shard_size"):
            write_shards(rows, tmp_path / "s", shard_size=size)
    assert json.loads(write_shards(rows, tmp_path / "s", shard_size=2).read_text())["rows"] == 3


# --- 3. wrong facts published (issue #36) -----------------------------------------------------------------------
TABLE = ["--set", "train.steps=2", "--set", "train.batch_size=32", "--set", "encoder.depth=1",
         "--set", "encoder.dim=16", "--set", "encoder.heads=2"]


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny tabular encoder pretrained on the modality's sample table: (data, model folder)."""
    tmp = tmp_path_factory.mktemp("facts")
    sample = zoo.get_modality("tabular").sample_data(tmp / "data")
    res = zoo_main("pretrain", sample.recipe, "--data", str(sample.data), "--label-column", "tier", *TABLE,
                   "--output", str(tmp / "pre"))
    assert res.returncode == 0, res.stderr
    return sample.data, tmp / "pre" / "model"


def test_a_card_is_rendered_from_its_own_folder_never_inherited(table_model, tmp_path, caplog):
    import shutil

    from safetensors.torch import load_file, save_file

    from zoo.cards import FINGERPRINT_KEY, load_card, render_card
    _, model = table_model
    folder, other = tmp_path / "mine", tmp_path / "other"
    shutil.copytree(model, folder)
    shutil.copytree(model, other)
    state = load_file(str(other / "model.safetensors"))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(other / "model.safetensors"))
    result = {"task": "audio-classification", "dataset": "tones", "metric": "accuracy", "value": 0.97,
              "metric_name": "probe accuracy"}
    render_card(other, repo_id="audio-wav2vec2-demo", results=[result],
                comparison="### Compared with baselines\n\nprobe 0.97").save(str(folder / "README.md"))
    name = json.loads((model / "config.json").read_text())["pretraining"]["recipe"]["name"]     # its own config's
    for stale in ("another model's card", "a card without a fingerprint"):
        if stale.startswith("a card without"):
            text = (folder / "README.md").read_text()
            (folder / "README.md").write_text("\n".join(line for line in text.splitlines()
                                                        if not line.startswith(FINGERPRINT_KEY)) + "\n")
        caplog.clear()
        res = zoo_main("card", str(folder))
        assert res.returncode == 0, res.stderr
        card = load_card(folder / "README.md")
        text = (folder / "README.md").read_text()
        assert card.data.model_name == name != "audio-wav2vec2-demo", stale
        assert not card.data.eval_results and "0.97" not in text and "audio-wav2vec2-demo" not in text, stale
        assert "are not kept" in res.stderr, res.stderr
        render_card(other, repo_id="audio-wav2vec2-demo", results=[result]).save(str(folder / "README.md"))
    # the folder's own card keeps its results and name when re-rendered (an evaluation, then `zoo publish`)
    render_card(folder, repo_id="me/mine", results=[result]).save(str(folder / "README.md"))
    assert zoo_main("card", str(folder)).returncode == 0
    card = load_card(folder / "README.md")
    assert card.data.model_name == "me/mine" and card.data.eval_results[0].metric_value == 0.97


def test_an_encoder_override_that_cannot_apply_with_init_is_refused(table_model, tmp_path):
    data, model = table_model
    res = zoo_main("pretrain", "tabular-tjepa-mlc-churn", "--data", str(data), "--label-column", "tier",
                   "--init", str(model), "--set", "train.steps=1", "--set", "encoder.depth=3",
                   "--output", str(tmp_path / "run"))
    assert res.returncode == 2, res.stdout
    assert "--set encoder.depth=3 cannot apply with --init" in res.stderr and "has depth=1" in res.stderr
    assert "drop the --set encoder.depth, or pretrain from scratch without --init" in res.stderr
    assert not (tmp_path / "run" / "model").exists()
    from pipelines.init import with_init
    from pipelines.recipe import load_recipe
    same = with_init(load_recipe("tabular-tjepa-mlc-churn", ["encoder.depth=1", "processor.max_categories=7"]),
                     str(model), ["encoder.depth=1", "processor.max_categories=7"])    # the model's value: runs
    assert same.encoder["depth"] == 1 and same.processor["max_categories"] == 7


def test_own_graph_data_is_read_with_the_recipes_minibatch(tmp_path):
    if "graph" not in zoo.installed():
        pytest.skip("graph is not installed")
    from pipelines.pretrain import pretrain, with_own_data
    from pipelines.recipe import load_recipe
    from tests.test_graph_own_data import _sbm_folder
    data = _sbm_folder(tmp_path, n=300)
    recipe = with_own_data(load_recipe("graph-graphmae-sbm-large", ["train.steps=2", "encoder.hidden=16",
                                                                     "data.train.minibatch.batch_nodes=100",
                                                                     "data.train.minibatch.passes=2"]), str(data))
    assert recipe.data["train"]["minibatch"] == {"batch_nodes": 100, "fanout": [5, 5], "passes": 2, "seed": 0}
    summary = pretrain(recipe, tmp_path / "run")
    assert summary["examples"] == 6                      # 3 blocks of 100 seed nodes x 2 passes: subgraphs, ran
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["pretraining"]["recipe"]["data"]["train"]["minibatch"]["batch_nodes"] == 100
    assert "data.train.minibatch" in (tmp_path / "run" / "model" / "README.md").read_text()
    # full-batch when asked for: what the card records is what ran
    full = with_own_data(load_recipe("graph-graphmae-sbm-large", ["train.steps=1", "encoder.hidden=16",
                                                                  "data.train.minibatch=null"]), str(data))
    assert "minibatch" not in full.data["train"]


# --- 4. alarms that mislead -------------------------------------------------------------------------------------
def test_a_healthy_point_mae_run_without_warmup_does_not_alarm(tmp_path):
    """The demo recipe at warmup 0: recon_vs_mean starts near 13 at random initialisation and falls below 0.95
    by step 6-7; it alarmed at step 5 (docs/reliability.md, "Collapse alarms")."""
    if "pointcloud" not in zoo.installed():
        pytest.skip("pointcloud is not installed")
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe
    recipe = load_recipe("pointcloud-pointmae-demo", ["train.warmup_steps=0", "train.steps=26", "train.log_every=1",
                                                       "train.stop_on_collapse=true", "train.num_workers=0",
                                                       "train.checkpoint_every=1000"])
    summary = pretrain(recipe, tmp_path / "run")
    assert summary["collapse_alarm"] is None and summary["steps"] == 26
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    values = [r["recon_vs_mean"] for r in rows if "step" in r]
    assert values[0] > 0.95 and max(values[20:]) < 0.95       # crossed early, healthy after the settling steps


def test_a_collapse_stopped_run_goes_on_when_its_alarm_settings_change(tmp_path):
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe
    made = ["train.lr=1.0", "train.grad_clip=0", "train.steps=40", "train.log_every=1", "train.collapse_patience=3",
            "train.checkpoint_every=1000", "train.num_workers=0"]
    with pytest.raises(RuntimeError, match="stopped by the collapse alarm"):
        pretrain(load_recipe("tabular-tjepa-demo", [*made, "train.stop_on_collapse=true"]), tmp_path / "run")
    stopped = json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"]
    # the same settings: still stopped, and the refusal says how to go on
    with pytest.raises(RuntimeError, match="rerun with train.stop_on_collapse=false .*--no-resume starts over"):
        pretrain(load_recipe("tabular-tjepa-demo", [*made, "train.stop_on_collapse=true"]), tmp_path / "run")
    # the alarm's settings changed: it goes on from the checkpoint to the end and publishes, the alarm recorded
    summary = pretrain(load_recipe("tabular-tjepa-demo", [*made, "train.stop_on_collapse=false"]), tmp_path / "run")
    assert summary["resumed_from"] == stopped < summary["steps"] == 40
    assert summary["collapse_alarm"]["step"] == stopped and (tmp_path / "run" / "model" / "model.safetensors").is_file()


# --- 5. cases no promise covered, decided -----------------------------------------------------------------------
def test_epoch_seconds_and_milliseconds_in_one_time_column_are_refused():
    from modalities.events.processor import parse_times
    s = np.array([1.7e9, 1.7e9 + 60, 1.7e12 + 120_000])            # the last row in milliseconds
    with pytest.raises(zoo.BadExample, match=r"client c1.*'time'.*event 2: .* processor.time_unit='s'"):
        parse_times(s, "s", "client c1", "time")
    ms = np.array([1.7e12, 1.7e12 + 60_000, 1.7e9 + 120])          # the last row in seconds
    with pytest.raises(zoo.BadExample, match=r"event 2: .*0.001x the history's median.*time_unit='ms'"):
        parse_times(ms, "ms", "client c1", "time")
    assert parse_times(s[:2], "s", "c", "time").tolist() == [1.7e9, 1.7e9 + 60]
    assert parse_times(np.array([0.0, 5.0, 3000.0]), "s", "c", "time").tolist() == [0.0, 5.0, 3000.0]   # relative


def test_a_killed_conversions_leftover_is_removed_by_the_next(hf_dir, tmp_path, monkeypatch, caplog):
    import logging
    import subprocess
    import sys
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    converted = tmp_path / "cache" / "converted"
    dead, alive = converted / f"x-1.tmp{int(gone.stdout)}", converted / f"y-2.tmp{os.getppid()}"
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"0" * 1000)
    with caplog.at_level(logging.INFO, logger="zoo.auto"):
        zoo.AutoEncoder.from_pretrained(hf_dir)
    assert not dead.exists() and alive.exists()
    assert f"removed {dead}" in caplog.text and "whose process" in caplog.text


def test_integer_tensors_where_floats_belong_are_refused(table_model, hf_dir, tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    from zoo.hub import FormatError
    _, model = table_model
    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    save_file({**state, key: state[key].round().to(torch.int32)}, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match=rf"{folder}.*{key} is int32 where float32 belongs"):
        zoo.AutoEncoder.from_pretrained(folder)
    # a converted checkpoint the same; float16 weights are a cast, not refused
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    hf = tmp_path / "hf"
    shutil.copytree(hf_dir, hf)
    state = load_file(str(hf / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    save_file({**state, key: state[key].round().to(torch.int32)}, str(hf / "model.safetensors"))
    with pytest.raises(FormatError, match=rf"{hf}.*{key} is int32 where a floating-point weight belongs"):
        zoo.AutoEncoder.from_pretrained(hf)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(hf / "model.safetensors"))
    assert zoo.AutoEncoder.from_pretrained(hf) is not None
