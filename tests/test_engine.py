"""Engine: schedule, sharding, exact resume after a stop, and 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.data import batch_indices
from pipelines.recipe import TrainConfig, apply_overrides, load_recipe
from pipelines.schedule import lr_at
from zoo.config import ConfigError


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.5) and lr_at(1, cfg) == pytest.approx(1.0)
    assert lr_at(2, cfg) == pytest.approx(1.0)
    assert lr_at(6, cfg) == pytest.approx(0.1 + 0.9 * 0.5)   # half way through the cosine
    assert lr_at(10, cfg) == pytest.approx(0.1)
    lin = TrainConfig(steps=10, lr=1.0, warmup_steps=2, schedule="linear")       # wav2vec 2.0's decay
    assert [lr_at(s, lin) for s in (0, 1, 2, 4, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.0])


def test_batch_indices_shard_without_overlap_and_cover_an_epoch():
    n, b, world = 40, 5, 2
    steps_per_epoch = n // (b * world)
    seen = [batch_indices(n, s, b, 0, r, world) for s in range(steps_per_epoch) for r in range(world)]
    flat = torch.cat(seen)
    assert len(flat) == n and len(set(flat.tolist())) == n     # every example once per epoch
    assert not torch.equal(batch_indices(n, 0, b, 0), batch_indices(n, steps_per_epoch, b, 0))  # reshuffled
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        batch_indices(3, 0, 2, 0, 0, 2)


def test_train_config_validation():
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig.from_dict({"steps": 5, "warmup_steps": -1})
    short = TrainConfig.from_dict({"steps": 4, "warmup_steps": 10, "lr": 1.0})   # warmup cut to the run
    assert [lr_at(s, short) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({"stepz": 5})
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "sgd"})
    r = apply_overrides({"train": {"steps": 3}}, ["train.steps=7", "train.betas=[0.9, 0.95]"])
    assert r["train"] == {"steps": 7, "betas": [0.9, 0.95]}
    with pytest.raises(ConfigError, match="unknown recipe section"):
        apply_overrides({}, ["trian.steps=7"])
    # #15 class 9: learning rates as users write them (YAML 1.1 would read 1e-3 as a string)
    assert apply_overrides({"train": {}}, ["train.lr=1e-3", "train.weight_decay=5E-2"])["train"] == \
        {"lr": 0.001, "weight_decay": 0.05}


def test_recipe_validation(toy_plugin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodality: toyseq\narchitecture: toyseq-mae\nencoder: {dim: 30, heads: 4}\n")
    with pytest.raises(ConfigError, match="dim: must be divisible by heads"):
        load_recipe(bad)
    bad.write_text("name: x\nmodality: toyseq\narchitecture: nope\n")
    with pytest.raises(KeyError, match="no architecture 'nope'"):
        load_recipe(bad)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_resume_after_stop_gives_identical_weights(toy_recipe, tmp_path, optimizer):
    from pipelines.pretrain import pretrain
    recipe = apply_overrides(toy_recipe, ["train.steps=10", "train.checkpoint_every=3", f"train.optimizer={optimizer}"])
    pretrain(recipe, tmp_path / "full")
    stopped = apply_overrides(recipe, ["train.stop_after=4"])
    summary = pretrain(stopped, tmp_path / "split")
    assert summary["stopped_early"] and summary["steps"] == 4
    assert not (tmp_path / "split" / "model").exists()
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["step-0000003",
                                                                                      "step-0000004"]
    summary = pretrain(recipe, tmp_path / "split")
    assert summary["resumed_from"] == 4 and summary["steps"] == 10
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = load_file(str(tmp_path / "full" / "checkpoints" / "step-0000010" / "optimizer.safetensors"))
    cb = load_file(str(tmp_path / "split" / "checkpoints" / "step-0000010" / "optimizer.safetensors"))
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    rows = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["loss"] for r in rows] == [r["loss"] for r in full]
    assert (tmp_path / "split" / "loss_curve.png").stat().st_size > 1000


def test_interrupted_checkpoint_write_is_ignored(toy_recipe, tmp_path):
    from pipelines.pretrain import pretrain
    recipe = apply_overrides(toy_recipe, ["train.steps=6", "train.checkpoint_every=2", "train.stop_after=2"])
    pretrain(recipe, tmp_path)
    junk = tmp_path / "checkpoints" / "step-0000004.tmp"   # what a kill during a save leaves behind
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"partial")
    summary = pretrain(apply_overrides(recipe, ["train.stop_after=null"]), tmp_path)
    assert summary["resumed_from"] == 2 and summary["steps"] == 6


DDP_WORKER = Path(__file__).with_name("ddp_worker.py")


def test_ddp_two_processes_identical_replicas_and_disjoint_shards(toy_plugin, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(DDP_WORKER),
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    for s0, s1 in zip(r0["seen"], r1["seen"]):
        assert not set(s0) & set(s1)
    # the all-gather InfoNCE equals the single-process loss on the concatenated batch, gradients included
    assert r0["gathered_loss"] == pytest.approx(r0["reference_loss"], abs=1e-6)
    assert r1["gathered_loss"] == pytest.approx(r1["reference_loss"], abs=1e-6)
    assert r0["grad_matches"] and r1["grad_matches"]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_sigkill_mid_run_then_resume_matches_uninterrupted(toy_plugin, tmp_path):
    """A real kill (SIGKILL, no chance to clean up) while training; rerunning the same command resumes from
    the last complete checkpoint and ends with the same weights as a run that was never interrupted."""
    from .conftest import kill_after_checkpoint, zoo_cli
    args = ["--set", "train.steps=60", "--set", "train.checkpoint_every=5", "--set", "train.keep_checkpoints=50"]
    ckpts = tmp_path / "killed" / "checkpoints"
    kill_after_checkpoint(["pretrain", "toyseq-tiny", "--output", str(tmp_path / "killed"), *args], ckpts, 10, 120)
    done = sorted(p.name for p in ckpts.iterdir() if not p.name.endswith(".tmp"))
    assert done and done[-1] < "step-0000060" and not (tmp_path / "killed" / "model").exists()
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(tmp_path / "killed"), *args)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["resumed_from"] >= 10
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(tmp_path / "straight"), *args)
    assert out.returncode == 0, out.stderr
    a = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_runs_are_bit_identical(toy_recipe, tmp_path):
    from pipelines.pretrain import pretrain
    recipe = apply_overrides(toy_recipe, ["train.steps=6", "train.checkpoint_every=6"])
    pretrain(recipe, tmp_path / "a")
    pretrain(recipe, tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metrics_log_survives_a_torn_last_line(tmp_path):
    """A kill or a full disk mid-write leaves half a row: resume drops it (with a warning); damage elsewhere is an
    error naming the file and the line (#15, class 4)."""
    import json as _json

    import pytest as _pytest

    from pipelines.metrics_log import MetricsLog
    log = MetricsLog(tmp_path, main=True)
    rows = "".join(_json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, 5))
    log.path.write_text(rows + '{"step":')
    with _pytest.warns(UserWarning, match="torn last line"):
        log.start(3)
    assert [_json.loads(x)["step"] for x in log.path.read_text().splitlines()] == [1, 2, 3]
    log.path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with _pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a metrics row"):
        log.start(3)


def test_resume_only_a_matching_run_and_start_over_cleanly(toy_recipe, tmp_path):
    """#15 class 3: a rerun with a changed seed or lr is refused with the keys that differ (steps may change); a
    --no-resume run into a folder holding an older, longer run publishes the new run's weights; the card's wall
    time is the whole run's after a resume and final_loss is valid JSON (class 3)."""
    from pipelines.pretrain import pretrain
    recipe = apply_overrides(toy_recipe, ["train.steps=8", "train.checkpoint_every=2"])
    pretrain(apply_overrides(recipe, ["train.stop_after=4"]), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-0000004" / "state.json").read_text())
    changed = r"other settings \(train\.lr: 0\.003 → 0\.01, train\.seed: 0 → 1\).*--no-resume"
    with pytest.raises(RuntimeError, match=changed):
        pretrain(apply_overrides(recipe, ["train.seed=1", "train.lr=0.01"]), tmp_path / "run")
    longer = pretrain(apply_overrides(recipe, ["train.steps=10"]), tmp_path / "run")   # steps may change
    assert longer["resumed_from"] == 4 and longer["steps"] == 10
    assert saved["wall_seconds"] > 0 and longer["wall_seconds"] > saved["wall_seconds"]   # the first part counts
    again = pretrain(apply_overrides(recipe, ["train.steps=10"]), tmp_path / "run")    # nothing left to run
    text = (tmp_path / "run" / "train_summary.json").read_text()
    assert "NaN" not in text and again["final_loss"] == pytest.approx(longer["final_loss"])
    # --no-resume with another seed: the old step-10 checkpoints are gone, the model is the new run's
    fresh = pretrain(apply_overrides(recipe, ["train.seed=1"]), tmp_path / "run", resume=False)
    pretrain(apply_overrides(recipe, ["train.seed=1"]), tmp_path / "alone")
    assert fresh["resumed_from"] is None
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000006", "step-0000008"]
    a = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "alone" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
    card = (tmp_path / "run" / "model" / "config.json").read_text()
    assert json.loads(card)["pretraining"]["recipe"]["train"]["seed"] == 1


def test_a_second_run_into_a_busy_folder_stops_at_once(toy_recipe, tmp_path):
    """#15 class 3: the run folder is locked for the whole run; a second run names the holder."""
    import fcntl

    from pipelines.pretrain import pretrain
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("process 4242 on elsewhere\n")
        fh.flush()
        with pytest.raises(RuntimeError, match="is in use by process 4242 on elsewhere"):
            pretrain(apply_overrides(toy_recipe, ["train.steps=2"]), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    summary = pretrain(apply_overrides(toy_recipe, ["train.steps=2"]), tmp_path / "run")    # released: runs
    assert summary["steps"] == 2


def test_a_diverged_run_is_not_published(toy_recipe, tmp_path, monkeypatch):
    """#15 class 6: a run whose last update left NaN weights (its last loss, computed before that update, was
    finite) is not written as the model folder; checkpoints and metrics stay for inspection. (A NaN loss already
    stops training at its step.)"""
    import pipelines.pretrain as pre
    real = pre.train

    def last_update_diverges(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.encoder.parameters()).view(-1)[0] = float("nan")
        return result
    monkeypatch.setattr(pre, "train", last_update_diverges)
    with pytest.raises(RuntimeError, match="training diverged.*not published"):
        pre.pretrain(apply_overrides(toy_recipe, ["train.steps=2"]), tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists() and (tmp_path / "run" / "checkpoints").is_dir()


def test_nan_weights_are_refused_on_load(toy_model, tmp_path):
    import shutil

    from safetensors.torch import save_file

    import zoo
    from zoo import FormatError
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match=rf"NaN/inf values in \['{name}'\]"):
        zoo.AutoEncoder.from_pretrained(folder)


def test_a_checkpoints_data_record_is_compared_and_one_from_before_still_resumes():
    """:func:`fingerprint_mismatch` on the examples record: a checkpoint written before runs recorded their data
    resumes; a changed count or digest is named, and said as other data with both counts."""
    from pipelines.checkpoint import _data_changed, fingerprint_mismatch
    from zoo.config import flatten
    now = {"train": {"lr": 0.1}, "examples": {"count": 76, "sha1": "b"}}
    assert fingerprint_mismatch({"train": {"lr": 0.1}}, now) == []
    was = {"train": {"lr": 0.1}, "examples": {"count": 96, "sha1": "a"}}
    differ = fingerprint_mismatch(was, now)
    assert differ == ["examples.count", "examples.sha1"]
    assert _data_changed(differ, flatten(was), flatten(now)) == "training: 96 examples then, 76 now"
    tuned = {"examples": {"train": {"count": 5, "sha1": "a"}, "test": {"count": 2, "sha1": "c"}}}
    edited = {"examples": {"train": {"count": 5, "sha1": "z"}, "test": {"count": 2, "sha1": "c"}}}
    differ = fingerprint_mismatch(tuned, edited)
    assert _data_changed(differ, flatten(tuned), flatten(edited)) == \
        "train: the same 5 examples by count, but files, values or labels changed"
