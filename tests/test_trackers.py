"""``--report-to`` (pipelines/trackers.py; docs/command-line.md, "Experiment trackers"): a short pretraining sends
its metrics rows, settings and figures to TensorBoard, wandb (offline), MLflow (a file store) and trackio (a local
store), each read back here with the tracker's own reader; a resume continues the same tracker runs without
sending a step twice; fine-tuning and evaluation report too; a tracker whose library is missing stops the command
before any work, naming the extra to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import zoo_main

RECIPE = "tabular-tjepa-breast-cancer"        # the quickest recipe: a 30-column table, a 3-block T-JEPA
STEPS = 5


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One pretraining reporting to all four trackers, interrupted and resumed: a first session stops after 4 of
    its 5 steps (checkpoints at 2 and 4), the step-4 checkpoint is removed (as if the run had been killed after
    sending steps 3 and 4 to the trackers but before saving them; trackio's store also loses them), and the rerun
    resumes from step 2."""
    root = tmp_path_factory.mktemp("tracked")
    run = root / "run"
    env = {"WANDB_MODE": "offline", "TRACKIO_DIR": str(root / "trackio"), "WANDB_CONFIG_DIR": str(root / "wandb-cfg"),
           "WANDB_CACHE_DIR": str(root / "wandb-cache"), "WANDB_DATA_DIR": str(root / "wandb-data"),
           "TQDM_DISABLE": "1"}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", "TRACKIO_PROJECT", "WANDB_SILENT"):
        env[var] = ""
    env = {**{k: v for k, v in os.environ.items() if k not in env}, **{k: v for k, v in env.items() if v}}
    args = ["pretrain", RECIPE, "--output", str(run), "--report-to", "tensorboard,wandb,mlflow,trackio",
            "--set", f"train.steps={STEPS}", "--set", "train.checkpoint_every=2"]
    exe = Path(sys.executable).parent / "zoo"
    first = subprocess.run([str(exe), *args, "--set", "train.stop_after=4"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(run / "checkpoints" / "step-0000004")
    # and as if trackio's background sender had not stored steps 3 and 4 when the process died (its buffer lost):
    # the rerun asks trackio's store what it holds and sends them again
    import sqlite3
    dbs = list((root / "trackio").rglob("*.db"))
    assert dbs
    for db in dbs:
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM metrics WHERE step > 2")
    second = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    history = json.loads((run / "train_summary.json").read_text())["quality"]["history"]
    return {"run": run, "root": root, "outputs": (first, second), "rows": {r["step"]: r for r in rows},
            "state": json.loads((run / "trackers.json").read_text()), "init": history[0]}


def _same_rows(tracked: dict, got: dict[int, dict[str, float]]) -> None:
    """Steps 1..STEPS, each once, with metrics.jsonl's loss and lr (the resumed steps are the same values)."""
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, values in got.items():
        want = tracked["rows"][step]
        assert values["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert values["lr"] == pytest.approx(want["lr"], rel=1e-6)


def test_the_command_stays_quiet(tracked):
    for out in tracked["outputs"]:
        assert json.loads(out.stdout)["steps"] > 0                       # stdout: the JSON summary alone
        noisy = [ln for ln in out.stderr.splitlines() if ln.lower().startswith(("wandb", "* ", "mlflow", "warn"))
                 or "Trackio" in ln or "Traceback" in ln]
        assert not noisy, out.stderr
        for tracker in ("tensorboard", "wandb", "mlflow", "trackio"):     # a line says where each writes
            assert out.stderr.count(f"reporting to {tracker}: ") == 1


def test_tensorboard(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    run = tracked["run"]
    folder = run / tracked["state"]["tensorboard"]["log_dir"]
    assert folder.parent == run / "runs" and [p.name for p in (run / "runs").iterdir()] == [folder.name]
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    # purge_step drops what the first session sent after the checkpoint it resumes from: each step once
    loss = {e.step: e.value for e in acc.Scalars("loss")}
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, STEPS + 1))
    _same_rows(tracked, {s: {"loss": v, "lr": lr.value} for (s, v), lr in zip(loss.items(), acc.Scalars("lr"))})
    for key in ("grad_norm", "examples_per_s", "data_wait_s", "embedding_std", "summary/final_loss"):
        assert key in acc.Tags()["scalars"]
    # the online quality hook's figures (pipelines/quality.py) go wherever the row goes
    # and the random init's (step 0, measured before the first step; metrics.jsonl keeps steps 1..N)
    assert tracked["init"]["step"] == 0 and 0 not in tracked["rows"]
    assert [e.step for e in acc.Scalars("rankme")] == [e.step for e in acc.Scalars("knn")] == [0, STEPS]
    assert acc.Scalars("knn")[1].value == pytest.approx(tracked["rows"][STEPS]["knn"])
    assert acc.Scalars("knn")[0].value == pytest.approx(tracked["init"]["knn"])
    assert acc.Scalars("rankme")[0].value == pytest.approx(tracked["init"]["rankme"])
    assert {"figures/loss_curve", "figures/quality_curve"} <= set(acc.Tags()["images"])   # the card's PNGs
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["name"].string_value == RECIPE and hp["train.lr"].number_value == pytest.approx(1e-3)
    assert hp["encoder.dim"].number_value == 64


def _wandb_records(path: Path) -> list[dict]:
    """A ``.wandb`` transaction log read by wandb's own inspector (``wandb leet inspect --json``)."""
    exe = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(exe), "leet", "inspect", "--json", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(ln) for ln in out.stdout.splitlines() if ln.strip()]


def test_wandb_offline(tracked):
    run, run_id = tracked["run"], tracked["state"]["wandb"]["id"]
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(s.name.endswith(run_id) for s in sessions)   # the resume: the same run id
    got: dict[int, dict] = {}
    config = None
    for session in sessions:
        (log,) = session.glob("run-*.wandb")
        for rec in _wandb_records(log):
            if rec["type"] == "run":
                assert rec["run"]["run_id"] == run_id and rec["run"]["display_name"] == RECIPE
                assert rec["run"]["project"] == "ssl-zoo"
                config = rec["run"]["config"]["update"]
            elif rec["type"] == "history":
                step, item = int(rec["history"]["step"]["num"]), rec["history"]["item"]
                assert step not in got or "loss" not in item, f"step {step} sent twice"
                got.setdefault(step, {}).update(item)
    init = got.pop(0)
    assert (init["rankme"], init["knn"]) == pytest.approx((tracked["init"]["rankme"], tracked["init"]["knn"]))
    _same_rows(tracked, got)
    assert {"grad_norm", "examples_per_s", "data_wait_s", "embedding_std"} <= set(got[1])
    assert got[STEPS]["rankme"] == pytest.approx(tracked["rows"][STEPS]["rankme"])
    assert got[STEPS]["figures/loss_curve._type"] == got[STEPS]["figures/quality_curve._type"] == "image-file"
    assert config["train"]["lr"] == pytest.approx(1e-3) and config["encoder"]["dim"] == 64


def test_mlflow_file_store(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tracked["run"]
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("ssl-zoo")
    (only,) = client.search_runs([exp.experiment_id])
    assert only.info.run_id == tracked["state"]["mlflow"]["run_id"] and only.info.status == "FINISHED"
    assert only.info.run_name == RECIPE
    history = {k: client.get_metric_history(only.info.run_id, k) for k in ("loss", "lr")}
    _same_rows(tracked, {m.step: {"loss": m.value, "lr": lr.value} for m, lr in zip(history["loss"], history["lr"])})
    assert [m.step for m in history["loss"]] == list(range(1, STEPS + 1))     # not 3 and 4 twice
    params = only.data.params
    assert params["name"] == RECIPE and float(params["train.lr"]) == pytest.approx(1e-3)
    assert params["train.stop_after"] == "4" and json.loads(only.data.tags["ssl-zoo.changed_on_resume"]) == \
        {"train.stop_after": "null"}                  # a logged parameter cannot change: the resume's in a tag
    assert {"grad_norm", "rankme", "knn", "summary/final_loss"} <= set(only.data.metrics)
    knn = client.get_metric_history(only.info.run_id, "knn")
    assert [m.step for m in knn] == [0, STEPS] and knn[0].value == pytest.approx(tracked["init"]["knn"])
    assert {a.path for a in client.list_artifacts(only.info.run_id, "figures")} == \
        {"figures/loss_curve.png", "figures/quality_curve.png"}


def test_trackio_local_store(tracked, monkeypatch):
    import trackio.sqlite_storage as storage
    import trackio.utils
    store = tracked["root"] / "trackio"
    monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", store)          # read at import: this process's may differ
    monkeypatch.setattr(storage, "TRACKIO_DIR", store)
    name = tracked["state"]["trackio"]["name"]
    assert name.startswith(RECIPE) and storage.SQLiteStorage.get_runs("ssl-zoo") == [name]
    logs = storage.SQLiteStorage.get_logs("ssl-zoo", name)
    got = {int(r["step"]): r for r in logs if "loss" in r}
    assert len(got) == len([r for r in logs if "loss" in r])                   # each step once
    _same_rows(tracked, got)
    assert "grad_norm" in got[1] and "knn" in got[STEPS] and any("figures/quality_curve" in r for r in logs)
    assert [r["knn"] for r in logs if int(r["step"]) == 0] == [pytest.approx(tracked["init"]["knn"])]
    config = storage.SQLiteStorage.get_run_config("ssl-zoo", name)
    assert config["name"] == RECIPE and config["train"]["lr"] == pytest.approx(1e-3)


def test_finetune_and_evaluate_report(tracked, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    model = tracked["run"] / "model"
    out = zoo_main("finetune", str(model), "--steps", "3", "--no-baseline", "--output", str(tmp_path / "ft"),
                   "--report-to", "tensorboard")
    assert out.returncode == 0, out.stderr
    (folder,) = (tmp_path / "ft" / "runs").iterdir()
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3] and len(acc.Scalars("lr")) == 3
    assert "summary/test_accuracy" in acc.Tags()["scalars"]
    assert {"figures/loss_curve", "figures/confusion_matrix"} <= set(acc.Tags()["images"])
    hp = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert hp["train.steps"].number_value == 3 and hp["finetune.mode"].string_value == "full"

    # zoo evaluate: the metrics to every tracker, the test embeddings with their labels to the projector
    from google.protobuf import text_format
    from mlflow.tracking import MlflowClient
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    ev = tmp_path / "ev"
    out = zoo_main("evaluate", str(model), "--no-baseline", "--output", str(ev), "--report-to", "tensorboard,mlflow")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (folder,) = (ev / "runs").iterdir()
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    assert acc.Scalars("pretrained/linear_probe")[0].value == pytest.approx(report["pretrained"]["linear_probe"])
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (emb,) = config.embeddings
    rows = (folder / emb.metadata_path).read_text().splitlines()
    vectors = (folder / emb.tensor_path).read_text().splitlines()
    assert rows[0] == "label\texample" and len(rows) - 1 == len(vectors) == report["test_examples"]
    labels = {r.split("\t")[0] for r in rows[1:]}
    from pipelines.evaluate import load_shards
    _, y, names = load_shards(ev / "eval" / "embeddings" / "test" / "index.json")
    assert len(labels) == len(set(y.tolist())) and rows[1].split("\t")[1] == names[0]
    client = MlflowClient(tracking_uri=(ev / "mlruns").resolve().as_uri())
    (only,) = client.search_runs([client.get_experiment_by_name("ssl-zoo").experiment_id])
    assert only.info.run_name == f"{RECIPE}-evaluate"
    assert only.data.metrics["pretrained/knn"] == pytest.approx(report["pretrained"]["knn"])


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_a_missing_library_names_its_extra_before_any_work(tracker, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, tracker, None)           # as if not installed: its import fails
    out = zoo_main("pretrain", RECIPE, "--output", str(tmp_path / "run"), "--report-to", f"tensorboard,{tracker}")
    assert out.returncode == 2 and f"pip install 'ssl-zoo[{tracker}]'" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()                    # nothing was read, built or written
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe
    with pytest.raises(ValueError, match=rf"ssl-zoo\[{tracker}\]"):
        pretrain(load_recipe(RECIPE), tmp_path / "run", report_to=[tracker])
    assert not (tmp_path / "run").exists()


def test_report_to_values(monkeypatch):
    from pipelines.trackers import TRACKERS, tracker_names
    assert tracker_names("none") == tracker_names(None) == tracker_names("") == ()
    assert tracker_names("mlflow, tensorboard") == ("mlflow", "tensorboard")
    assert tracker_names("all") == TRACKERS                   # every one installed (the dev extras install all four)
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert tracker_names("all") == tuple(t for t in TRACKERS if t != "wandb")
    with pytest.raises(ValueError, match="known: tensorboard, wandb, mlflow, trackio"):
        tracker_names("tensorbord")
    out = zoo_main("finetune", "some-model", "--report-to", "comet")
    assert out.returncode == 2 and "unknown tracker 'comet'" in out.stderr


def test_a_run_that_raises_closes_its_trackers_as_failed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import pipelines.engine as engine
    real = engine.train_step

    def third_step_fails(ctx, model, raw, opt, batch, step):
        if step == 2:
            raise RuntimeError("the disk is full")
        return real(ctx, model, raw, opt, batch, step)
    monkeypatch.setattr(engine, "train_step", third_step_fails)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    out = zoo_main("pretrain", RECIPE, "--output", str(run), "--set", "train.steps=4", "--report-to",
                   "tensorboard,mlflow")
    assert out.returncode == 2 and "the disk is full" in out.stderr
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (only,) = client.search_runs([client.get_experiment_by_name("ssl-zoo").experiment_id])
    assert only.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(only.info.run_id, "loss")] == [1, 2]
    (folder,) = (run / "runs").iterdir()
    acc = EventAccumulator(str(folder))
    acc.Reload()                                            # written out: the writer was closed
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]


def test_a_tracker_that_cannot_start_leaves_no_empty_run_beside_it(tmp_path, monkeypatch):
    from pipelines import trackers

    def refuse(self, info):
        raise RuntimeError("no account")
    monkeypatch.setattr(trackers._Wandb, "open", refuse)
    out = zoo_main("pretrain", RECIPE, "--output", str(tmp_path / "run"), "--report-to", "tensorboard,wandb",
                   "--set", "train.steps=2")
    assert out.returncode != 0 and "--report-to wandb: the tracker could not start: no account" in out.stderr
    runs = tmp_path / "run" / "runs"
    assert not runs.exists() or not any(runs.iterdir())          # TensorBoard's run of it was removed
