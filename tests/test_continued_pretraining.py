"""``zoo pretrain RECIPE --init MODEL`` (issue #27): the encoder, the heads where the model has them and the
processor come from MODEL; the loss starts where MODEL left off; the card says what the run continued from."""

import json
import logging

import pytest
import torch

import zoo
from pipelines.build import build
from pipelines.pretrain import pretrain, with_own_data
from pipelines.recipe import load_recipe
from tests.conftest import zoo_main
from zoo.hub import FormatError

HEADS = ["pretraining.codevector_groups=2", "pretraining.codevectors_per_group=8", "pretraining.codevector_dim=16",
         "pretraining.proj_dim=16", "pretraining.num_negatives=10", "train.batch_size=8", "train.warmup_steps=1"]


def _events(tmp_path, **overrides):
    if "events" not in zoo.installed():
        pytest.skip("events is not installed")
    sample = zoo.get_modality("events").sample_data(tmp_path / "data")
    sets = [*sample.pretrain_overrides, *[f"{k}={v}" for k, v in overrides.items()]]
    return with_own_data(load_recipe(sample.recipe, sets), str(sample.data), label_column=sample.label_column)


def _first_loss(run) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if "step" in r)


def test_wav2vec2_continues_from_a_transformers_checkpoint_with_its_heads(tmp_path, caplog):
    if "audio" not in zoo.installed():
        pytest.skip("audio is not installed")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8, num_codevector_groups=2)).eval()
    hf.save_pretrained(tmp_path / "hf")
    sample = zoo.get_modality("audio").sample_data(tmp_path / "data")
    recipe = with_own_data(load_recipe(sample.recipe, [*HEADS, "train.steps=2"]), str(sample.data))
    with caplog.at_level(logging.INFO, logger="pipelines.init"):
        built = build(recipe, init=str(tmp_path / "hf"))
    assert "the pretraining heads project_hid, project_q, quantizer from it" in caplog.text
    pre = built.pretrainer
    assert torch.equal(pre.quantizer.logits.weight, hf.quantizer.weight_proj.weight)
    assert torch.equal(pre.quantizer.codevectors, hf.quantizer.codevectors[0])
    assert torch.equal(pre.project_q.weight, hf.project_q.weight)
    assert torch.equal(pre.project_hid.bias, hf.project_hid.bias)
    ref = zoo.AutoEncoder.from_pretrained(tmp_path / "hf")
    assert all(torch.equal(a, b) for a, b in zip(built.encoder.state_dict().values(), ref.state_dict().values()))
    # a recipe whose codebook differs from the checkpoint's is refused, naming the heads file
    other = with_own_data(load_recipe(sample.recipe, [*HEADS, "pretraining.codevectors_per_group=16"]),
                          str(sample.data))
    with pytest.raises(FormatError, match="pretraining_heads.safetensors does not fit.*other shapes"):
        build(other, init=str(tmp_path / "hf"))
    # the run: the card and config.json say what it continued from
    summary = pretrain(recipe, tmp_path / "run", init=str(tmp_path / "hf"))
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["pretraining"]["continued_from"] == summary["continued_from"]
    assert config["encoder"]["dim"] == 32                             # the checkpoint's, not the recipe's
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "continued from" in card and "(its processor)" in card


def test_continued_pretraining_starts_where_the_model_left_off_and_resumes(tmp_path, caplog):
    # CoLES has no head: the loss is on the encoder's embeddings, so a trained encoder starts lower
    trained = pretrain(_events(tmp_path, **{"train.steps": 40}), tmp_path / "a")["model_dir"]
    fresh = pretrain(_events(tmp_path, **{"train.steps": 1}), tmp_path / "fresh")
    assert fresh["steps"] == 1
    with caplog.at_level(logging.INFO, logger="pipelines.init"):
        pretrain(_events(tmp_path, **{"train.steps": 1}), tmp_path / "b", init=trained)
    assert "the encoder from it (the objective has no pretraining heads)" in caplog.text
    assert _first_loss(tmp_path / "b") < 0.8 * _first_loss(tmp_path / "fresh")
    # the processor is the model's, not refitted (the same statistics), unless --refit
    assert json.loads((tmp_path / "b" / "model" / "preprocessor.json").read_text()) == \
        json.loads((tmp_path / "a" / "model" / "preprocessor.json").read_text())
    # from the command line: stopped after one step, resumed to three, the card names the model
    sample = zoo.get_modality("events").sample_data(tmp_path / "data")
    args = ["pretrain", sample.recipe, "--data", str(sample.data), "--label-column", sample.label_column,
            "--init", trained, "--refit", "--output", str(tmp_path / "c"),
            *[a for o in [*sample.pretrain_overrides, "train.steps=3"] for a in ("--set", o)]]
    first = zoo_main(*args, "--set", "train.stop_after=1")
    assert first.returncode == 0, first.stderr
    again = zoo_main(*args)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] == 1 and summary["steps"] == 3 and summary["refit"] is True
    card = (tmp_path / "c" / "model" / "README.md").read_text()
    assert "continued from" in card and "(processor refitted)" in card and "--init" in card
    # another family is refused by name
    other = zoo.get_modality("events")
    with pytest.raises(ValueError, match="--init .*: a events/coles model; the recipe pretrains"):
        from pipelines.init import load_init
        load_init(trained, other, "not-coles", refit=False)
