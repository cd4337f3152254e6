"""The ``zoo`` CLI end to end with the out-of-tree plugin: a third party adds a modality without touching
the repo, and every command works on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo

from .conftest import zoo_cli
from .hub_server import RecordingHub

COMMANDS = ["list", "pretrain", "evaluate", "finetune", "predict", "embed", "card", "publish"]


def test_imports_and_help():
    import modalities  # noqa: F401
    import pipelines  # noqa: F401
    out = zoo_cli("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd in out.stdout
        sub = zoo_cli(cmd, "--help")
        assert sub.returncode == 0 and "usage: zoo " + cmd in sub.stdout


def test_list_shows_the_installed_plugin(toy_plugin):
    out = zoo_cli("list")
    assert out.returncode == 0, out.stderr
    assert "toyseq" in out.stdout and "from zoo-toyseq" in out.stdout and "toyseq-tiny" in out.stdout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bare = subprocess.run([sys.executable, "-m", "pipelines.cli", "list"], capture_output=True, text=True,
                          env=env)
    assert bare.returncode == 0 and "toyseq" not in bare.stdout


def test_pretrain_save_load_same_embeddings_through_the_cli(toy_plugin, tmp_path):
    run = tmp_path / "run"
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(run), "--set", "train.steps=3")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["steps"] == 3 and summary["skipped"] == 0
    model = run / "model"
    assert sorted(p.name for p in model.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                      "preprocessor.json", "quality_curve.png"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    # the online quality probe: measured at the last step (and at random init, for the card), not in between
    assert "rankme" in rows[-1] and "rankme" not in rows[0]
    assert [h["step"] for h in summary["quality"]["history"]] == [0, 3]
    # embed through the CLI and through AutoEncoder: identical
    x = np.random.default_rng(0).standard_normal((25, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = zoo_cli("embed", str(model), str(tmp_path / "x.npy"), "--output", str(tmp_path / "e.safetensors"))
    assert out.returncode == 0, out.stderr
    cli_emb = load_file(str(tmp_path / "e.safetensors"))["embeddings"]
    enc, proc = zoo.AutoEncoder.from_pretrained(model), zoo.AutoProcessor.from_pretrained(model)
    with torch.no_grad():
        ours = enc(proc.collate([proc(x)])).pooled
    assert torch.equal(cli_emb, ours)
    # #15 class 8: an output inside the model folder (e.g. its own model.safetensors) is refused, the model intact
    before = (model / "model.safetensors").read_bytes()
    for target in (model / "model.safetensors", model / "emb"):
        out = zoo_cli("embed", str(model), str(tmp_path / "x.npy"), "--output", str(target))
        assert out.returncode == 2 and "inside the model folder" in out.stderr
    assert (model / "model.safetensors").read_bytes() == before and not (model / "emb").exists()
    # the trained weights are the pretrainer's encoder: reload them and compare with the checkpoint
    ckpt = load_file(str(run / "checkpoints" / "step-0000003" / "model.safetensors"))
    for k, v in enc.state_dict().items():
        assert torch.equal(ckpt["encoder." + k], v)


def test_bad_input_names_the_example_and_field(toy_model, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((5, 3), dtype=np.float32))
    out = zoo_cli("embed", str(toy_model), str(tmp_path / "bad.npy"))
    assert out.returncode == 2
    assert "bad.npy" in out.stderr and "'values'" in out.stderr and "[length, 4]" in out.stderr
    proc = zoo.AutoProcessor.from_pretrained(toy_model)
    with pytest.raises(zoo.BadExample, match="example row7: field 'values': contains NaN"):
        proc(np.full((4, 4), np.nan), name="row7")
    items, skipped = proc.process([np.ones((3, 4)), np.zeros((0, 4)), np.ones((2, 4))], skip_bad=True)
    assert len(items) == 2 and skipped == ["example 1: field 'values': zero-length sequence"]


def test_evaluate_finetune_card_publish(toy_model, tmp_path):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(toy_model, model)
    out = zoo_cli("evaluate", str(model))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in ("pretrained", "random_init"):
        assert 0.0 <= report[key]["linear_probe"] <= 1.0 and 0.0 <= report[key]["knn"] <= 1.0
    assert (model / "embedding_map.png").stat().st_size > 1000
    card = (model / "README.md").read_text()
    assert "model-index" in card and f"value: {round(report['pretrained']['linear_probe'], 4)}" in card
    out = zoo_cli("card", str(model))                        # re-rendering keeps the recorded results
    assert out.returncode == 0 and "model-index" in (model / "README.md").read_text()
    out = zoo_cli("finetune", str(model), "toyseq-tiny", "--output", str(tmp_path / "ft"))
    assert out.returncode == 0, out.stderr
    ft = json.loads(out.stdout)
    assert 0.0 <= ft["test_accuracy"] <= 1.0 and ft["num_classes"] == 3
    assert zoo.AutoEncoder.from_pretrained(tmp_path / "ft" / "model") is not None
    out = zoo_cli("publish", str(model), "--repo-id", "acme/toy", "--dry-run")
    assert out.returncode == 0 and "config.json, model.safetensors, preprocessor.json, README.md" in out.stdout
    with RecordingHub() as hub:
        out = zoo_cli("publish", str(model), "--repo-id", "acme/toy",
                      env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test"})
    assert out.returncode == 0, out.stderr
    # the card's online-quality curve goes with it (the card links it)
    assert sorted(hub.commits[0]["files"]) == ["README.md", "config.json", "model.safetensors",
                                               "preprocessor.json", "quality_curve.png"]


def test_card_usage_snippet_runs(toy_model, tmp_path):
    card = (toy_model / "README.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    name = code.split("from_pretrained(", 1)[1].split(")", 1)[0]
    code = code.replace(name, repr(str(toy_model)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 32])" in out.stdout
    assert "| seed | 0 |" in card and "| hardware |" in card and "| wall time (s) |" in card


def test_unknown_recipe_and_bad_override(toy_plugin):
    out = zoo_cli("pretrain", "no-such-recipe")
    assert out.returncode == 2 and "no recipe 'no-such-recipe'" in out.stderr and "toyseq-tiny" in out.stderr
    out = zoo_cli("pretrain", "toyseq-tiny", "--set", "train.steps=-1")
    assert out.returncode == 2 and "TrainConfig.steps: must be >= 1" in out.stderr
