"""``zoo pretrain RECIPE --init MODEL`` (issue #27): the encoder, the heads where the model has them and the
processor come from MODEL; the loss starts where MODEL left off; the card says what the run continued from."""

import json
import logging

import numpy as np
import pytest
import torch

import zoo
from pipelines.build import build
from pipelines.pretrain import pretrain, with_own_data
from pipelines.recipe import load_recipe
from tests.conftest import zoo_main
from zoo.hub import FormatError

# the checkpoint's codebook and projections; transformers' objective has no feature penalty (fairseq's has)
HEADS = ["pretraining.codevector_groups=2", "pretraining.codevectors_per_group=8", "pretraining.codevector_dim=16",
         "pretraining.proj_dim=16", "pretraining.num_negatives=10", "pretraining.feature_penalty=0",
         "train.batch_size=8", "train.warmup_steps=1"]


def _events(tmp_path, **overrides):
    if "events" not in zoo.installed():
        pytest.skip("events is not installed")
    sample = zoo.get_modality("events").sample_data(tmp_path / "data")
    sets = [*sample.pretrain_overrides, *[f"{k}={v}" for k, v in overrides.items()]]
    return with_own_data(load_recipe(sample.recipe, sets), str(sample.data), label_column=sample.label_column)


def _first_loss(run) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if "step" in r)


def _chirps(folder, n: int = 24, seconds: float = 0.25):
    """Linear chirps between random frequencies as WAV files: each frame follows from its neighbours (what the
    contrastive task asks), and frames far apart differ (the negatives)."""
    import soundfile as sf
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    clips = []
    for i in range(n):
        f0, f1 = rng.uniform(200, 3000, 2)
        wave = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1]))) + rng.normal(0, 0.01, t.shape)
        sf.write(folder / f"chirp_{i:02d}.wav", wave.astype(np.float32), 16000)
        clips.append(torch.from_numpy(wave.astype(np.float32)))
    return clips


def _trained_transformers_wav2vec2(folder, untrained, clips):
    """A tiny ``Wav2Vec2ForPreTraining`` trained by transformers' own loss for 60 steps on ``clips``, saved as a
    public checkpoint is (``config.json`` + ``model.safetensors``); its random initialisation saved in
    ``untrained``."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8, num_codevector_groups=2,
        mask_time_length=4, num_negatives=10))
    hf.save_pretrained(untrained)
    x = torch.stack(clips)
    x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)
    frames = int(hf._get_feat_extract_output_lengths(x.shape[1]))
    opt = torch.optim.AdamW(hf.parameters(), lr=5e-3)
    hf.train()
    np.random.seed(0)                                                 # the masks' sampler
    for _ in range(60):
        mask = _compute_mask_indices((len(x), frames), mask_prob=0.65, mask_length=4, min_masks=2)
        neg = _sample_negative_indices((len(x), frames), 10, mask_time_indices=mask)
        out = hf(x, mask_time_indices=torch.from_numpy(mask), sampled_negative_indices=torch.from_numpy(neg))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    hf.eval().save_pretrained(folder)
    return hf


def test_wav2vec2_continues_from_a_converted_checkpoint_with_its_heads(tmp_path, caplog):
    if "audio" not in zoo.installed():
        pytest.skip("audio is not installed")
    sample = zoo.get_modality("audio").sample_data(tmp_path / "tones")      # the recipe; the data: chirps
    sample.data = tmp_path / "chirps"
    hf = _trained_transformers_wav2vec2(tmp_path / "hf", tmp_path / "hf-untrained", _chirps(sample.data))
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
    # the same data, recipe and seed from random init: the same architecture before its training
    pretrain(with_own_data(load_recipe(sample.recipe, [*HEADS, "train.steps=1"]), str(sample.data)),
             tmp_path / "fresh", init=str(tmp_path / "hf-untrained"))
    # from the command line: stopped after one step, resumed to three; the card names the checkpoint
    args = ["pretrain", sample.recipe, "--data", str(sample.data), "--init", str(tmp_path / "hf"),
            "--output", str(tmp_path / "run"), *[a for o in [*HEADS, "train.steps=3"] for a in ("--set", o)]]
    first = zoo_main(*args, "--set", "train.stop_after=1")
    assert first.returncode == 0, first.stderr
    assert _first_loss(tmp_path / "run") < 0.8 * _first_loss(tmp_path / "fresh")
    again = zoo_main(*args)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] == 1 and summary["steps"] == 3
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["pretraining"]["continued_from"] == summary["continued_from"]
    assert config["encoder"]["dim"] == 32                             # the checkpoint's, not the recipe's
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "continued from" in card and "(its processor)" in card and "--init" in card


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
    # refitted: the time-gap statistics the encoder reads are the new data's, in its config and its processor
    config = json.loads((tmp_path / "c" / "model" / "config.json").read_text())
    proc = json.loads((tmp_path / "c" / "model" / "preprocessor.json").read_text())
    assert config["encoder"]["time_mean"] == proc.get("state", proc)["time_mean"]
    # another family is refused by name
    other = zoo.get_modality("events")
    with pytest.raises(ValueError, match="--init .*: a model of events/coles; the recipe pretrains"):
        from pipelines.init import load_init
        load_init(trained, other, "not-coles")


def _shop(path, cities: dict[str, int], mean: float, seed: int):
    import pandas as pd
    rng = np.random.default_rng(seed)
    city = [c for c, n in cities.items() for _ in range(n)]
    rng.shuffle(city)
    pd.DataFrame({"city": city, "spend": rng.normal(mean, 2.0, len(city)),
                  "visits": rng.integers(1, 9, len(city))}).to_csv(path, index=False)
    return str(path)


def test_refit_keeps_the_models_columns_and_vocabularies(tmp_path, caplog):
    if "tabular" not in zoo.installed():
        pytest.skip("tabular is not installed")
    a = _shop(tmp_path / "a.csv", {"nice": 60, "lyon": 40, "paris": 20}, 0.0, 0)
    recipe = load_recipe("tabular-tjepa-demo", ["train.steps=2", "train.batch_size=32"])
    model = pretrain(with_own_data(recipe, a), tmp_path / "a")["model_dir"]
    before = json.loads((tmp_path / "a" / "model" / "preprocessor.json").read_text())
    # new data: other frequencies (a fresh fit would renumber the categories), another spend scale, a new city
    b = _shop(tmp_path / "b.csv", {"paris": 70, "lyon": 30, "nice": 10, "lille": 5}, 10.0, 1)
    with caplog.at_level(logging.INFO):
        pretrain(with_own_data(recipe, b), tmp_path / "b", init=model, refit=True)
    after = json.loads((tmp_path / "b" / "model" / "preprocessor.json").read_text())
    state_a, state_b = before.get("state", before), after.get("state", after)
    assert state_b["vocab"] == state_a["vocab"] and state_b["numerical"] == state_a["numerical"]
    spend = state_b["numerical"].index("spend")
    assert abs(state_b["mean"][spend] - 10.0) < 0.5 and abs(state_a["mean"][spend]) < 0.5
    assert "1 categories of the new data are not in the model's vocabulary ('lille')" in caplog.text
    assert "the processor refitted on the new data" in caplog.text
    # a table with other columns cannot be aligned: refused, naming them
    import pandas as pd
    pd.read_csv(b).rename(columns={"visits": "orders"}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match=r"--refit keeps the model's columns: numerical \['spend', 'visits'\]"):
        pretrain(with_own_data(recipe, str(tmp_path / "c.csv")), tmp_path / "c", init=model, refit=True)
    # a recipe or entry name is not a model: said at once, without a trip to the Hub
    from pipelines.init import with_init
    with pytest.raises(ValueError, match="no such folder, and not a Hub id"):
        with_init(recipe, "tabular-tjepa-demo")
    # a run folder holding the model it continues from is refused (a rerun would overwrite it)
    with pytest.raises(ValueError, match="lies inside the run folder"):
        pretrain(with_own_data(recipe, b), tmp_path / "a", init=model)
