"""Fine-tuning on one's own data (issue #16): ``zoo finetune MODEL --data ...`` per modality → AutoClassifier →
``zoo predict``; label spaces, held-out split, unread overrides, the modes and layer-wise decay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from pipelines.build import build_processor
from pipelines.finetune import FinetuneModel, FinetuneSettings, layer_groups
from pipelines.labelled import check_label_spaces, held_out_split
from pipelines.recipe import load_recipe
from pipelines.report import classification_metrics
from tests.conftest import zoo_cli, zoo_main
from zoo import ExampleSet, get_modality


def model_folder(tmp: Path, recipe_name: str, fit_on, encoder: dict | None = None, processor: dict | None = None,
                 sets: list[str] | None = None) -> Path:
    """A zoo folder as pretraining leaves one (random weights, a fitted processor, the recipe recorded)."""
    recipe = load_recipe(recipe_name, sets)
    mod = get_modality(recipe.modality)
    arch = mod.architecture(recipe.architecture)
    proc = build_processor(mod, {**recipe.processor, **(processor or {})})
    if fit_on is not None:
        proc.fit(fit_on)
    torch.manual_seed(0)
    enc = arch.encoder(arch.config.from_dict({**recipe.encoder, **(encoder or {}), **proc.encoder_config()}))
    folder = tmp / "model"
    enc.save_pretrained(folder, processor=proc, pretraining={"recipe": recipe.to_dict()})
    return folder


def run_finetune(model: Path, data: Path, out: Path, *extra: str, cli=zoo_main) -> dict:
    res = cli("finetune", str(model), "--data", str(data), "--output", str(out), "--steps", "6",
                  "--batch-size", "8", "--eval-every", "3", *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout[res.stdout.index("{"):])


def check_classifier(out: Path, result: dict, inputs: list[str], labels: list[str], cli=zoo_main) -> None:
    """The folder loads as a classifier; the reported test accuracy is the saved predictions' accuracy; `zoo
    predict` prints label names."""
    folder = out / "model"
    clf = zoo.AutoClassifier.from_pretrained(folder)
    assert clf.label_names == labels == result["label_names"]
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert result["test_accuracy"] == pytest.approx(np.mean([r["label"] == r["predicted"] for r in rows]))
    assert (folder / "confusion_matrix.png").is_file() and (folder / "README.md").is_file()
    from zoo.cards import load_card
    card = load_card(folder / "README.md")
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "macro_f1"}
    assert "AutoClassifier" in (folder / "README.md").read_text()
    res = cli("predict", str(folder), *inputs, "--json")
    assert res.returncode == 0, res.stderr
    preds = [json.loads(line) for line in res.stdout.splitlines()]
    assert preds and all(p["predictions"][0]["label"] in labels for p in preds)
    assert cli("publish", str(folder), "--repo-id", "me/clf", "--dry-run").returncode == 0


def test_tabular_csv_with_a_label_column(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "city": rng.choice(["a", "b", "c"], n)})
    df["label"] = np.where(df.x + 0.3 * rng.normal(size=n) > 0, "high", "low")
    df.to_csv(tmp_path / "own.csv", index=False)
    model = model_folder(tmp_path, "tabular-tjepa-mlc-churn", df.drop(columns="label"),
                         encoder={"dim": 16, "depth": 1, "heads": 2})
    result = run_finetune(model, tmp_path / "own.csv", tmp_path / "ft", "--label-column", "label",
                          "--mode", "partial", "--top-layers", "1", cli=zoo_cli)       # the installed `zoo`
    df.drop(columns="label").head(4).to_csv(tmp_path / "rows.csv", index=False)
    check_classifier(tmp_path / "ft", result, [str(tmp_path / "rows.csv")], ["high", "low"], cli=zoo_cli)
    assert result["steps"] == 6 and (tmp_path / "ft" / "validation.jsonl").is_file()


def test_tabular_regression_target_reports_mae_and_rmse(tmp_path):
    rng = np.random.default_rng(4)
    n = 150
    df = pd.DataFrame({"x": rng.normal(size=n), "city": rng.choice(["a", "b"], n)})
    df["price"] = 100 + 20 * df.x + rng.normal(size=n)
    df.to_csv(tmp_path / "homes.csv", index=False)
    model = model_folder(tmp_path, "tabular-tjepa-mlc-churn", df.drop(columns="price"),
                         encoder={"dim": 16, "depth": 1, "heads": 2})
    result = run_finetune(model, tmp_path / "homes.csv", tmp_path / "ft", "--label-column", "price",
                          "--lr", "0.01")
    assert result["task"] == "regression" and result["label_names"] == ["price"]
    folder = tmp_path / "ft" / "model"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    err = np.array([r["predicted"] - r["label"] for r in rows])
    assert len(rows) == 30                                   # the held-out fifth
    assert result["test_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-5)
    assert result["test_rmse"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-5)
    assert result["test_rmse"] < df.price.std()             # better than predicting the mean
    reg = zoo.AutoClassifier.from_pretrained(folder)
    assert reg.task == "regression" and reg.target_std > 0
    from zoo.cards import load_card
    assert {r.metric_type for r in load_card(folder / "README.md").data.eval_results} == {"mae", "rmse"}
    df.drop(columns="price").head(3).to_csv(tmp_path / "new.csv", index=False)
    res = zoo_main("predict", str(folder), str(tmp_path / "new.csv"), "--json")
    assert res.returncode == 0, res.stderr
    values = [json.loads(line)["predictions"][0]["value"] for line in res.stdout.splitlines()]
    assert len(values) == 3 and all(np.isfinite(values))
    assert (folder / "predicted_vs_true.png").is_file()


def test_a_streamed_training_set_fine_tunes(tmp_path):
    """A labelled set read as a stream (larger than memory): the engine reads it through the streaming pipeline."""
    from pipelines.finetune import finetune
    rng = np.random.default_rng(5)
    n = 96
    df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n)})
    df["label"] = np.where(df.x > 0, "high", "low")
    df.to_parquet(tmp_path / "train.parquet")
    df.head(32).to_parquet(tmp_path / "test.parquet")
    model = model_folder(tmp_path, "tabular-tjepa-mlc-churn", df.drop(columns="label"),
                         encoder={"dim": 16, "depth": 1, "heads": 2})
    mod = get_modality("tabular")
    spec = {"source": "hf", "path": "parquet", "label_column": "label", "label_names": ["high", "low"]}
    train = mod.load_data({**spec, "data_files": str(tmp_path / "train.parquet"), "streaming": True})
    test = mod.load_data({**spec, "data_files": str(tmp_path / "test.parquet")})
    assert isinstance(train, zoo.StreamSet)
    result = finetune(model, load_recipe("tabular-tjepa-mlc-churn"), tmp_path / "ft", train_set=train, test_set=test,
                      settings={"steps": 4, "batch_size": 8, "validation_fraction": 0.0})
    assert result["steps"] == 4 and result["label_names"] == ["high", "low"] and 0 <= result["test_accuracy"] <= 1


def test_audio_class_folders(tmp_path):
    import soundfile as sf
    root = tmp_path / "own"
    for label, hz in (("no", 300.0), ("yes", 900.0)):
        (root / label).mkdir(parents=True)
        for i in range(8):
            t = np.arange(4000) / 16000
            sf.write(root / label / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (hz + 20 * i) * t)).astype("float32"),
                     16000)
    model = model_folder(tmp_path, "audio-wav2vec2-tiny", None)
    result = run_finetune(model, root, tmp_path / "ft", "--mode", "frozen")
    check_classifier(tmp_path / "ft", result, [str(root / "yes" / "0.wav"), str(root / "no" / "1.wav")],
                     ["no", "yes"])


def test_events_table_with_a_label_column(tmp_path):
    from modalities.events import group_events, make_cardholders
    table, seg = make_cardholders(60, seed=5, min_events=8, max_events=40)
    df = pd.DataFrame(table)
    df["segment"] = [["commuter", "family", "traveller", "student"][seg[int(e[6:])]] for e in df["entity"]]
    df.to_csv(tmp_path / "log.csv", index=False)
    model = model_folder(tmp_path, "events-coles-tiny", group_events(df.drop(columns="segment"), "entity"),
                         encoder={"hidden": 16, "embed_dim": 4})
    result = run_finetune(model, tmp_path / "log.csv", tmp_path / "ft", "--label-column", "segment",
                          "--layer-decay", "0.8", "--class-weights", "balanced")
    df[df.entity.isin(["holder00001", "holder00002"])].to_csv(tmp_path / "two.csv", index=False)
    check_classifier(tmp_path / "ft", result, [str(tmp_path / "two.csv")],
                     ["commuter", "family", "student", "traveller"])


def test_point_cloud_class_folders(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "own"
    for label in ("ball", "stick"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            p = rng.normal(size=(300, 3))
            p = p / np.linalg.norm(p, axis=1, keepdims=True) if label == "ball" else p * [3.0, 0.2, 0.2]
            np.savetxt(root / label / f"{i}.xyz", p)
    model = model_folder(tmp_path, "pointcloud-pointmae-tiny", None, processor={"num_points": 128},
                         encoder={"num_points": 128, "num_patches": 8, "patch_size": 16, "dim": 32, "depth": 1,
                                  "heads": 2, "pointnet_dims": [16, 32, 32]})
    result = run_finetune(model, root, tmp_path / "ft")
    check_classifier(tmp_path / "ft", result, [str(root / "ball" / "0.xyz")], ["ball", "stick"])


def test_video_class_folders(tmp_path):
    from modalities.video.data import _digit_images, render_clip, write_mp4
    images, _ = _digit_images()
    rng = np.random.RandomState(2)
    root = tmp_path / "own"
    for label in ("left", "up"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            write_mp4(render_clip(images[i], label, rng, frames=8, size=32), root / label / f"{i}.mp4")
    model = model_folder(tmp_path, "video-videomae-tiny", None,
                         processor={"num_frames": 4, "image_size": 32, "fit_statistics": False},
                         encoder={"image_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2, "dim": 32,
                                  "depth": 2, "heads": 4})
    result = run_finetune(model, root, tmp_path / "ft", "--mode", "partial", "--top-layers", "1")
    check_classifier(tmp_path / "ft", result, [str(root / "up" / "0.mp4")], ["left", "up"])


def test_graph_folder_of_node_and_edge_tables(tmp_path):
    rng = np.random.default_rng(3)
    nodes, edges = [], []
    for g in range(24):
        shape, n = ("ring", "star")[g % 2], int(rng.integers(5, 9))
        pairs = [(i, (i + 1) % n) for i in range(n)] if shape == "ring" else [(0, i) for i in range(1, n)]
        nodes += [{"graph": f"g{g}", "id": i, "f0": 1.0, "f1": float(rng.random()), "label": shape} for i in range(n)]
        edges += [{"graph": f"g{g}", "source": a, "target": b} for a, b in pairs + [(b, a) for a, b in pairs]]
    root = tmp_path / "graphs"
    root.mkdir()
    pd.DataFrame(nodes).to_csv(root / "nodes.csv", index=False)
    pd.DataFrame(edges).to_csv(root / "edges.csv", index=False)
    graphs = [{"x": torch.ones(3, 2), "edge_index": torch.tensor([[0, 1], [1, 2]])}]
    model = model_folder(tmp_path, "graph-graphmae-motifs", graphs, encoder={"hidden": 16})
    result = run_finetune(model, root, tmp_path / "ft", "--test-fraction", "0.25")
    check_classifier(tmp_path / "ft", result, [str(root)], ["ring", "star"])
    assert result["num_classes"] == 2


def test_mismatched_labels_stop_naming_both_lists_and_few_examples_are_named():
    train = ExampleSet(list(range(6)), [0, 0, 1, 1, 2, 2], None, ["cat", "dog", "eel"])
    test = ExampleSet(list(range(3)), [0, 1, 1], None, ["cat", "dog", "fox"])
    with pytest.raises(ValueError) as err:
        check_label_spaces(train, test)
    msg = str(err.value)
    assert "['cat', 'dog', 'eel']" in msg and "['cat', 'dog', 'fox']" in msg
    assert "only in train: ['eel']" in msg and "only in test: ['fox']" in msg
    few = ExampleSet(list(range(5)), [0, 0, 0, 1, 0], None, ["cat", "dog"])
    with pytest.raises(ValueError, match=r"fewer than 2 training examples: \{'dog': 1\}"):
        check_label_spaces(few, few)


def test_held_out_split_is_stratified_and_seeded():
    labels = [0] * 50 + [1] * 20 + [2] * 10
    data = ExampleSet(list(range(80)), labels, [f"e{i}" for i in range(80)], ["a", "b", "c"])
    train, test = held_out_split(data, 0.2, seed=3)
    assert np.bincount(test.labels).tolist() == [10, 4, 2] and np.bincount(train.labels).tolist() == [40, 16, 8]
    assert not set(train.names) & set(test.names) and len(train) + len(test) == 80
    again, _ = held_out_split(data, 0.2, seed=3)
    other, _ = held_out_split(data, 0.2, seed=4)
    assert list(again.names) == list(train.names) and list(other.names) != list(train.names)


def test_an_override_the_run_does_not_read_is_refused(tmp_path):
    res = zoo_main("finetune", str(tmp_path / "m"), "--data", str(tmp_path), "--set", "train.steps=20")
    assert res.returncode == 2
    assert "does not read ['train.steps']" in res.stderr and "finetune.steps" in res.stderr
    res = zoo_main("finetune", str(tmp_path / "m"), "--data", str(tmp_path), "--set", "finetune.stepz=20")
    assert res.returncode == 2 and "stepz" in res.stderr


def test_modes_and_layer_wise_decay():
    from modalities.tabular import TJepaConfig, TJepaEncoder
    enc = TJepaEncoder(TJepaConfig(num_numerical=3, cardinalities=[4], dim=16, depth=3, heads=2))
    groups = layer_groups(enc)
    assert len(groups) == 4 and all("body.layers.0." in n for n, _ in groups[1])
    assert any(n.startswith("tokenizer.") for n, _ in groups[0]) and any(n == "body.norm.weight" for n, _ in groups[-1])
    m = FinetuneModel(enc, ["a", "b"], FinetuneSettings(mode="partial", top_layers=2, layer_decay=0.5))
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {n for g in groups[-2:] for n, _ in g}
    scales = sorted({g["lr_scale"] for g in m.optimizer_groups(0.05)})
    assert scales == [0.25, 0.5, 1.0]                     # top layer 0.5, the one below 0.25, the head 1.0
    frozen = FinetuneModel(TJepaEncoder(enc.config), ["a", "b"], FinetuneSettings(mode="frozen"))
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    frozen.train()
    assert frozen.head.training and not frozen.encoder.training


def test_regression_metrics_and_split_by_hand():
    from pipelines.report import regression_metrics
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 3.0, 2.0]))
    assert m["mae"] == pytest.approx(3 / 4) and m["rmse"] == pytest.approx(np.sqrt(5 / 4))
    assert m["r2"] == pytest.approx(1 - 5 / 5)                # SSE 5, the target's sum of squares 5
    y = np.arange(100, dtype=float)
    data = ExampleSet(list(range(100)), list(y), [f"r{i}" for i in range(100)], None, regression=True)
    _, test = held_out_split(data, 0.2, seed=0)
    assert np.bincount(np.digitize(test.labels, [20, 40, 60, 80])).tolist() == [4, 4, 4, 4, 4]   # per quintile


def test_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: a = 2·(.5·.5)/(1) = .5, b = 2·(2/3·1)/(5/3) = .8, c = 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_fine_tuning_does_not_augment_unless_asked(tmp_path):
    """The pretraining augmentation may not preserve a label (a flip reverses "left"): fine-tuning applies the
    processor's training augmentation only with ``augment: true``."""
    from modalities.video.data import _digit_images, render_clip, write_mp4
    from pipelines.data import TrainData
    from pipelines.finetune import setup
    images, _ = _digit_images()
    rng = np.random.RandomState(3)
    root = tmp_path / "own"
    for label in ("left", "right"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            write_mp4(render_clip(images[i], label, rng, frames=8, size=32), root / label / f"{i}.mp4")
    model = model_folder(tmp_path, "video-videomae-tiny", None,
                         processor={"num_frames": 4, "image_size": 32, "fit_statistics": False},
                         encoder={"image_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2, "dim": 32,
                                  "depth": 2, "heads": 4})
    recipe = load_recipe("video-videomae-tiny")
    kwargs = dict(device="cpu", data=str(root), label_column=None, split=None, test_split=None, train_set=None,
                  test_set=None, from_scratch=False)
    plain = setup(model, recipe, settings=None, **kwargs)
    assert zoo.AutoProcessor.from_pretrained(model).augments()          # the processor could flip
    assert not TrainData(plain.data.train, plain.clf.processor, plain.cfg).augment
    asked = setup(model, recipe, settings={"augment": True}, **kwargs)
    assert TrainData(asked.data.train, asked.clf.processor, asked.cfg).augment
