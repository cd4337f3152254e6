"""A new user's own data, the ways it went silently wrong (issue #22): each test failed on the code before the fix.
The conformance suite (test_conformance.py) runs every installed modality through the whole path; these pin the
individual failures down."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from tests.conftest import zoo_main


def _pretrain(tmp: Path, recipe: str, data: Path, *extra: str) -> Path:
    res = zoo_main("pretrain", recipe, "--data", str(data), "--output", str(tmp / "pre"), *extra)
    assert res.returncode == 0, res.stderr
    return tmp / "pre" / "model"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    """Point clouds of three shapes and a Point-MAE pretrained on them for a few steps."""
    tmp = tmp_path_factory.mktemp("shapes")
    sample = zoo.get_modality("pointcloud").sample_data(tmp / "data")
    return sample.data, _pretrain(tmp, sample.recipe, sample.data, *[a for o in sample.pretrain_overrides
                                                                     for a in ("--set", o)])


def test_a_fine_tuned_point_cloud_classifier_normalises_with_its_final_weights(shapes, tmp_path):
    """Bug 1: BatchNorm running statistics collected while the weights moved (lr 2e-3, full mode) are not those
    of the final weights; the saved classifier's eval mode then differs from what was trained. Every BatchNorm of
    the saved classifier holds the exact statistics of its inputs over training batches under the final weights."""
    from pipelines.batchnorm import batchnorm_layers, recompute_batchnorm
    from pipelines.data import iter_batches
    data, model = shapes
    res = zoo_main("finetune", str(model), "--data", str(data), "--mode", "full", "--steps", "12", "--lr", "0.002",
                   "--batch-size", "8", "--output", str(tmp_path / "ft"))
    assert res.returncode == 0, res.stderr
    clf = zoo.AutoClassifier.from_pretrained(tmp_path / "ft" / "model")
    layers = batchnorm_layers(clf)
    assert layers, "Point-MAE's mini-PointNet has BatchNorm layers"
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    # the training set is the run's: the held-out fifth of each class is left out with the run's seed
    from pipelines.labelled import held_out_split
    train, _ = held_out_split(zoo.get_modality("pointcloud").load_data({"source": "folder", "path": str(data)}),
                              0.2, 0)

    def forward(batch):
        clf.encoder({k: v for k, v in batch.items() if torch.is_tensor(v) and k != "labels"})
    recompute_batchnorm(clf, forward, iter_batches(train, clf.processor, batch_size=8))
    for (mean, var), m in zip(saved, layers):
        assert torch.allclose(mean, m.running_mean, rtol=1e-4, atol=1e-5)
        assert torch.allclose(var, m.running_var, rtol=1e-4, atol=1e-5)


def test_recompute_batchnorm_gives_exact_averages_and_leaves_frozen_layers_alone():
    from pipelines.batchnorm import recompute_batchnorm
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    batches = [torch.randn(5, 3) * (i + 1) for i in range(3)]
    assert recompute_batchnorm(net, net, batches) == 3
    feats = [net[0](b).detach() for b in batches]
    assert torch.allclose(net[1].running_mean, torch.stack([f.mean(0) for f in feats]).mean(0), atol=1e-6)
    assert torch.allclose(net[1].running_var, torch.stack([f.var(0) for f in feats]).mean(0), atol=1e-5)
    assert not net.training and net[1].momentum == 0.1
    frozen = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    frozen.train = lambda mode=True: torch.nn.Module.train(frozen, False)       # a part that stays in eval mode
    before = frozen[1].running_mean.clone()
    assert recompute_batchnorm(frozen, frozen, batches) == 0 and torch.equal(before, frozen[1].running_mean)


def test_a_rerun_with_other_settings_is_refused_naming_them(shapes, tmp_path):
    """Bug 2: the same --output with --mode full --lr 0.003 re-saved an untrained head under the new settings."""
    data, model = shapes
    out = tmp_path / "R"
    first = zoo_main("finetune", str(model), "--data", str(data), "--mode", "partial", "--eval-every", "5",
                     "--steps", "10", "--batch-size", "8", "--output", str(out))
    assert first.returncode == 0, first.stderr
    metrics, card = (out / "metrics.jsonl").read_text(), (out / "model" / "README.md").read_text()
    again = zoo_main("finetune", str(model), "--data", str(data), "--mode", "full", "--lr", "0.003",
                     "--eval-every", "5", "--steps", "10", "--batch-size", "8", "--output", str(out))
    assert again.returncode == 2
    assert "finetune.mode" in again.stderr and "train.lr" in again.stderr and "--no-resume" in again.stderr
    assert (out / "metrics.jsonl").read_text() == metrics and (out / "model" / "README.md").read_text() == card
    same = zoo_main("finetune", str(model), "--data", str(data), "--mode", "partial", "--eval-every", "5",
                    "--steps", "10", "--batch-size", "8", "--output", str(out))
    assert same.returncode == 0, same.stderr                 # the same settings: resumed (nothing left to train)
    assert (out / "metrics.jsonl").read_text() == metrics
    longer = zoo_main("finetune", str(model), "--data", str(data), "--mode", "partial", "--eval-every", "5",
                      "--steps", "15", "--batch-size", "8", "--output", str(out))
    assert longer.returncode == 0, longer.stderr             # more steps: a change a resume allows
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 16))
    assert json.loads((out / "model" / "classifier.json").read_text())["finetuning"]["steps"] == 15


def test_one_run_takes_the_lock_once_builds_the_optimiser_once_and_starts_the_workers_once(shapes, tmp_path,
                                                                                              monkeypatch):
    """Validation every N steps happens inside the one loop: one lock, one optimiser, one loader, one bar."""
    import pipelines.data as data_mod
    import pipelines.engine as engine
    counts = {"lock": 0, "optimizer": 0, "loader": 0, "bar": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(engine.RunLock, "__enter__", counting("lock", engine.RunLock.__enter__))
    monkeypatch.setattr(engine, "build_optimizer", counting("optimizer", engine.build_optimizer))
    monkeypatch.setattr(data_mod.TrainData, "batches", counting("loader", data_mod.TrainData.batches))
    monkeypatch.setattr(engine, "tqdm", counting("bar", engine.tqdm))
    data, model = shapes
    res = zoo_main("finetune", str(model), "--data", str(data), "--eval-every", "3", "--steps", "12",
                   "--batch-size", "8", "--output", str(tmp_path / "ft"))
    assert res.returncode == 0, res.stderr
    assert counts == {"lock": 1, "optimizer": 1, "loader": 1, "bar": 1}
    assert len((tmp_path / "ft" / "validation.jsonl").read_text().splitlines()) == 4
    elapsed = [json.loads(line)["elapsed_s"] for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert elapsed == sorted(elapsed)                        # one clock for the whole run


def _events(tmp: Path) -> Path:
    sample = zoo.get_modality("events").sample_data(tmp / "data")
    return sample.data


def test_a_label_column_is_never_an_input(tmp_path):
    """Bug 3: pretraining on a table holding the label made it an event field, and fine-tuning learned from it."""
    data = _events(tmp_path)
    sets = ["--set", "train.steps=2", "--set", "train.batch_size=16", "--set", "processor.entity_column=client"]
    model = _pretrain(tmp_path, "events-coles-tiny", data, *sets)            # no --label-column: segment an input
    assert "segment" in zoo.AutoProcessor.from_pretrained(model).input_columns()
    res = zoo_main("finetune", str(model), "--data", str(data), "--label-column", "segment", "--steps", "2",
                   "--output", str(tmp_path / "ft"))
    assert res.returncode == 2
    assert "'segment' is an input field" in res.stderr and "--label-column segment" in res.stderr
    model = _pretrain(tmp_path / "again", "events-coles-tiny", data, *sets, "--label-column", "segment")
    assert "segment" not in zoo.AutoProcessor.from_pretrained(model).input_columns()


def test_a_small_events_set_fits_the_batch_and_the_defaults_learn(tmp_path):
    """60 entities with the recipe's batch of 64 stopped ("cannot fill one global batch"); now the batch is fitted
    to the data, and the recipe's fine-tuning defaults learn the segments."""
    data = _events(tmp_path)
    model = _pretrain(tmp_path, "events-coles-tiny", data, "--label-column", "segment", "--set", "train.steps=2",
                      "--set", "processor.entity_column=client")
    res = zoo_main("finetune", str(model), "--data", str(data), "--label-column", "segment",
                   "--output", str(tmp_path / "ft"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["test_accuracy"] >= 0.75, out


def test_unlabelled_tables_pretrain_and_old_key_names_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=60), "b": rng.choice(["x", "y"], 60)}).to_csv(tmp_path / "t.csv", index=False)
    model = _pretrain(tmp_path, "tabular-tjepa-mlc-churn", tmp_path / "t.csv", "--set", "train.steps=2",
                      "--set", "train.batch_size=16", "--set", "processor.exclude=[]")
    assert sorted(zoo.AutoProcessor.from_pretrained(model).input_columns()) == ["a", "b"]
    load = zoo.get_modality("audio").load_data
    with pytest.raises(ValueError, match=r"'audiofolder' is now 'folder'"):
        load({"source": "audiofolder", "path": str(tmp_path)})
    with pytest.raises(ValueError, match=r"\['data_dir'\] are now called \['path'\]"):
        load({"source": "folder", "data_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"\['label'\] are now called \['label_column'\]"):
        zoo.get_modality("tabular").load_data({"source": "table", "path": str(tmp_path / "t.csv"), "label": "b"})
    with pytest.raises(FileNotFoundError, match=r"no audio files .* it holds .*\.csv.* files: data of another kind"):
        load({"source": "folder", "path": str(tmp_path)})


def test_wrong_kinds_of_input_and_folders_get_clear_errors(shapes, tmp_path):
    """Item 6: a wav given to a video processor, an mp4 to an audio one, predict on an encoder folder, train/test
    class folders that differ (in case, or a class missing from test/)."""
    import soundfile as sf

    from modalities.audio import AudioProcessor
    from modalities.video.processor import VideoProcessor
    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(zoo.BadExample, match=r"a \.wav file is not a video format.*data of another kind"):
        VideoProcessor()(str(tmp_path / "a.wav"))
    (tmp_path / "v.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    with pytest.raises(zoo.BadExample, match="cannot decode audio") as err:
        AudioProcessor()(str(tmp_path / "v.mp4"))
    assert "should never happen" not in str(err.value)
    data, model = shapes
    res = zoo_main("predict", str(model), str(data / "sphere" / "sphere_0.ply"))
    assert res.returncode == 2 and "is an encoder, not a fine-tuned classifier" in res.stderr
    for train_names, test_names, only in ((["Go", "stop"], ["go", "stop"], "only in train: ['Go']"),
                                          (["go", "stop", "wait"], ["go", "stop"], "only in train: ['wait']")):
        root = tmp_path / "-".join(train_names + test_names)
        for split, names in (("train", train_names), ("test", test_names)):
            for name in names:
                (root / split / name).mkdir(parents=True)
                for i in range(3):
                    (root / split / name / f"{i}.ply").write_bytes((data / "sphere" / "sphere_0.ply").read_bytes())
        res = zoo_main("finetune", str(model), "--data", str(root), "--steps", "1", "--output", str(root / "ft"))
        assert res.returncode == 2 and "train and test label sets differ" in res.stderr and only in res.stderr


def test_embed_writes_where_asked_names_inputs_and_leaves_nothing_behind(shapes, tmp_path, monkeypatch):
    """Item 7: --output in a folder that does not exist yet, a folder as input, names under one metadata key,
    no temporary folders left; Classifier.forward without labels returns no loss."""
    import tempfile

    from safetensors import safe_open
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    data, model = shapes
    out = tmp_path / "new_dir" / "a.safetensors"
    res = zoo_main("embed", str(model), str(data / "box"), "--output", str(out))
    assert res.returncode == 0, res.stderr
    with safe_open(str(out), "pt") as fh:
        names = json.loads(fh.metadata()["names"])
        assert fh.get_tensor("embeddings").shape[0] == len(names) == len(list((data / "box").iterdir()))
    assert sorted(names) == sorted(str(p) for p in (data / "box").iterdir())
    assert not list((tmp_path / "tmp").iterdir())
    res = zoo_main("finetune", str(model), "--data", str(data), "--steps", "2", "--batch-size", "8",
                   "--output", str(tmp_path / "ft"))
    assert res.returncode == 0, res.stderr
    clf = zoo.AutoClassifier.from_pretrained(tmp_path / "ft" / "model")
    batch = clf.processor.collate([clf.processor(str(data / "box" / "box_0.ply"))])
    out = clf(batch)
    assert out.loss is None and out.metrics["logits"].shape == (1, 3)


def test_publish_renders_the_card_for_the_repo_it_uploads_to(shapes, tmp_path, monkeypatch):
    """Item 5: the card's "How to use" named the run folder, not the --repo-id given to publish."""
    import shutil

    import zoo.hub
    data, model = shapes
    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    sent = {}
    monkeypatch.setattr(zoo.hub, "push_to_hub", lambda f, repo, **kw: sent.update(
        repo=repo, card=(Path(f) / "README.md").read_text()) or "ok")
    res = zoo_main("publish", str(folder), "--repo-id", "me/my-scans")
    assert res.returncode == 0, res.stderr
    assert sent["repo"] == "me/my-scans" and "from_pretrained('me/my-scans')" in sent["card"]
    assert "shapes" in sent["card"] and str(tmp_path) not in sent["card"]


def test_a_recipes_evaluation_label_is_never_an_input(tmp_path):
    """Found trying one's own recipe on a generated event log (2026-12-07): the recipe pretrained on the log, label
    column included, and its evaluate section read that column as the label, so the online k-NN, the probes and the
    baselines all scored 1.0 at random init. Pretraining, evaluation and fine-tuning on that section now refuse."""
    data = _events(tmp_path)
    labelled = dict(source="table", path=str(data), entity_column="client", label_column="segment")
    recipe = dict(name="my-events", modality="events", architecture="coles",
                  encoder=dict(embed_dim=8, hidden=16), processor=dict(entity_column="client"),
                  data=dict(train=dict(source="table", path=str(data), entity_column="client")),
                  train=dict(steps=2, batch_size=16, warmup_steps=1, quality_examples=32),
                  evaluate=dict(protocol="boosting", task="sequence-classification",
                                train={**labelled, "split": "train"}, test={**labelled, "split": "test"}))
    path = tmp_path / "my-events.yaml"
    path.write_text(json.dumps(recipe))                                       # JSON is YAML
    res = zoo_main("pretrain", str(path), "--output", str(tmp_path / "leaky"))
    assert res.returncode == 2, res.stderr
    assert "evaluate.train label column 'segment' is an input field" in res.stderr
    assert "processor.exclude=[segment]" in res.stderr
    assert not (tmp_path / "leaky" / "model").exists() and not (tmp_path / "leaky" / "checkpoints").exists()
    # a model whose processor reads the label (pretrained on the log without --label-column): refused by the
    # recipe's evaluation and by fine-tuning on it, before any work
    model = _pretrain(tmp_path, "events-coles-tiny", data, "--set", "train.steps=2", "--set", "train.batch_size=16",
                      "--set", "processor.entity_column=client")
    res = zoo_main("evaluate", str(model), "--recipe", str(path), "--output", str(tmp_path / "eval"))
    assert res.returncode == 2 and "would read the label itself" in res.stderr, res.stderr
    res = zoo_main("finetune", str(model), str(path), "--steps", "2", "--output", str(tmp_path / "ft"))
    assert res.returncode == 2 and "fine-tuning would learn from the label itself" in res.stderr, res.stderr
    # left out of the inputs, the same recipe trains and its online k-NN is measured
    res = zoo_main("pretrain", str(path), "--output", str(tmp_path / "clean"), "--set", "processor.exclude=[segment]")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "clean" / "train_summary.json").read_text())
    assert "knn" in summary["quality"]["history"][-1]


def test_a_folders_files_of_another_kind_are_counted_not_dropped_in_silence(tmp_path, caplog):
    """``source: folder`` (``--data``, ``zoo embed FOLDER``) reads the files of its kind and says how many others it
    left out, by suffix; hidden files and a training folder's test/ are not counted."""
    import logging

    import soundfile as sf
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            sf.write(tmp_path / cls / f"{i}.wav", np.zeros(800, np.float32), 8000)
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "b" / "x.npy").write_bytes(b"x")
    (tmp_path / "b" / "y.npy").write_bytes(b"x")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="zoo"):
        data = zoo.get_modality("audio").load_data({"source": "folder", "path": str(tmp_path)})
    assert len(data) == 4
    said = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert said == [f"{tmp_path}: 3 file(s) not read, not audio files (2 .npy, 1 .txt)"], said
