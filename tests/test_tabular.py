"""Tabular modality (T-JEPA): schema inference, statistics and vocabularies through preprocessor.json,
bad input, feature-subset masks, EMA, and pretrain → save → reload end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from modalities.tabular import (
    Rows,
    TabularProcessor,
    TabularProcessorConfig,
    TJepaConfig,
    TJepaEncoder,
    TJepaPretrainer,
    TJepaPretrainingConfig,
)

from .conftest import zoo_main


def mixed_table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 90, n).astype(float),
        "income": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 10, n)),
        "city": rng.choice(["paris", "rome", "oslo", None], n, p=[0.5, 0.3, 0.15, 0.05]),
        "member": rng.random(n) < 0.5,
        "score": [str(x) for x in rng.integers(0, 5, n)],      # numbers stored as text
        "label": rng.integers(0, 2, n),
    })


def test_schema_inference_and_overrides():
    df = mixed_table()
    p = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(df)
    assert p.numerical == ["age", "income", "score"] and p.categorical == ["city", "member"]
    assert p.mean[0] == pytest.approx(df["age"].mean()) and p.std[1] == pytest.approx(df["income"].std(ddof=0))
    assert p.vocab["city"][0] == "paris" and "None" not in p.vocab["city"]       # most frequent first
    assert p.cardinalities == [2 + 3, 2 + 2]
    q = TabularProcessor(TabularProcessorConfig(exclude=["label"], categorical=["score"])).fit(df)
    assert "score" in q.categorical and "score" not in q.numerical
    with pytest.raises(KeyError, match="unknown column"):
        TabularProcessor(TabularProcessorConfig(numerical=["nope"])).fit(df)


def test_transform_values_missing_unknown_and_round_trip(tmp_path):
    df = mixed_table()
    p = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(df)
    row = {"age": 30.0, "income": float("nan"), "city": "rome", "member": True, "score": "3"}
    out = p(row)
    assert out["num"][0].item() == pytest.approx((30 - p.mean[0]) / p.std[0], rel=1e-5)
    assert out["num_missing"].tolist() == [False, True, False] and out["num"][1] == 0
    assert out["cat"][0].item() == p.vocab["city"].index("rome") + 2
    assert p({**row, "city": "tokyo"})["cat"][0].item() == 1                     # unknown bucket
    assert p({**row, "city": None})["cat"][0].item() == 0                        # explicit missing
    p.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "preprocessor.json").read_text())
    assert data["state"]["vocab"]["city"] == p.vocab["city"]
    q = TabularProcessor.from_dict(data)
    batch = p.transform(df.drop(columns="label"))
    again = q.transform(df.drop(columns="label"))
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_bad_input_and_column_policies():
    df = mixed_table()
    p = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(df)
    row = {"age": 30.0, "income": 1.0, "city": "rome", "member": True, "score": "3"}
    with pytest.raises(zoo.BadExample, match="example r9: field 'age': expected a number, got 'old'"):
        p({**row, "age": "old"}, name="r9")
    with pytest.raises(zoo.BadExample, match="'income': infinite value"):
        p({**row, "income": float("inf")})
    with pytest.raises(KeyError, match=r"missing column\(s\) \['city'\]"):
        p({k: v for k, v in row.items() if k != "city"})
    assert p({**row, "extra": 1})["num"].shape == (3,)                           # ignored by default
    strict = TabularProcessor(TabularProcessorConfig(exclude=["label"], extra_columns="error",
                                                     unknown_category="error", missing_columns="error")).fit(df)
    with pytest.raises(KeyError, match=r"unknown column\(s\) \['extra'\]"):
        strict({**row, "extra": 1})
    with pytest.raises(zoo.BadExample, match="'city': unseen category 'tokyo'"):
        strict({**row, "city": "tokyo"})
    lenient = TabularProcessor(TabularProcessorConfig(exclude=["label"], missing_columns="missing")).fit(df)
    out = lenient({k: v for k, v in row.items() if k not in ("city", "age")})
    assert out["cat"][0] == 0 and out["num_missing"][0]
    with pytest.raises(RuntimeError, match="not fitted"):
        TabularProcessor().transform(df)


def test_table_sources(tmp_path):
    df = mixed_table()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    import pyarrow as pa
    from datasets import Dataset
    for source in (df, pa.Table.from_pandas(df), Dataset.from_pandas(df), str(tmp_path / "t.csv"),
                   str(tmp_path / "t.parquet"), df.to_dict("records")):
        p = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(source)
        assert p.numerical[:2] == ["age", "income"] and "city" in p.categorical, type(source)
    data = zoo.get_modality("tabular").load_data({"source": "table", "path": str(tmp_path / "t.csv"),
                                                  "label_column": "label"})
    assert isinstance(data.examples, Rows) and len(data) == 40 and "label" not in data.examples.columns


def test_encoder_and_pretrainer_shapes_masks_and_ema():
    torch.manual_seed(0)
    cfg = TJepaConfig(num_numerical=3, cardinalities=[5, 4], dim=16, depth=2, heads=2, reg_tokens=1)
    enc = TJepaEncoder(cfg)
    batch = {"num": torch.randn(6, 3), "num_missing": torch.zeros(6, 3, dtype=torch.bool),
             "cat": torch.randint(0, 4, (6, 2))}
    out = enc(batch)
    assert out.tokens.shape == (6, 5, 16) and out.pooled.shape == (6, 16) and not out.padding_mask.any()
    pre = TJepaPretrainer(enc, TJepaPretrainingConfig(context_share=[0.4, 0.4], target_share=[0.4, 0.4]),
                          total_steps=10)
    res = pre(batch, torch.Generator().manual_seed(0))
    assert res.metrics["context_size"] == 2 and res.metrics["target_size"] == 2
    res.loss.backward()
    assert torch.isfinite(res.loss) and enc.tokenizer.num_weight.grad is not None
    assert all(p.grad is None for p in pre.teacher.parameters())
    before = [p.detach().clone() for p in pre.teacher.parameters()]
    m = pre.on_step(5)["ema_momentum"]
    assert m == pytest.approx(0.996 + 0.004 * 0.5)
    for b, t, s in zip(before, pre.teacher.parameters(), enc.parameters()):
        assert torch.allclose(t, m * b + (1 - m) * s.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="no features"):
        TJepaEncoder(TJepaConfig())


@pytest.mark.slow   # the conformance suite runs this path (zoo pretrain --data, reload, identical outputs)
def test_end_to_end_cli_pretrain_save_reload_same_embeddings(tmp_path):
    df = mixed_table(120)
    df.to_csv(tmp_path / "train.csv", index=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "tab-e2e", "modality": "tabular", "architecture": "t-jepa",
        "encoder": {"dim": 16, "depth": 1, "heads": 2, "reg_tokens": 1},
        "pretraining": {"context_share": [0.4, 0.4], "target_share": [0.4, 0.4]},
        "data": {"train": {"source": "table", "path": str(tmp_path / "train.csv"), "label_column": "label"}},
        "train": {"steps": 3, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 3},
        "evaluate": {"train": {"source": "table", "path": str(tmp_path / "train.csv"), "label_column": "label"},
                     "test": {"source": "table", "path": str(tmp_path / "train.csv"), "label_column": "label"},
                     "knn_k": 3}}))
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model"
    enc, proc = zoo.AutoEncoder.from_pretrained(model), zoo.AutoProcessor.from_pretrained(model)
    assert enc.config.num_numerical == 3 and list(enc.config.cardinalities) == proc.cardinalities
    rows = df.drop(columns="label").head(5)
    with torch.no_grad():
        a = enc(proc.collate(proc.process(rows)[0])).pooled
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = zoo_main("embed", str(model), str(tmp_path / "rows.csv"), "--output", str(tmp_path / "e.safetensors"))
    assert out.returncode == 0, out.stderr
    from safetensors.torch import load_file
    assert torch.allclose(load_file(str(tmp_path / "e.safetensors"))["embeddings"], a, atol=1e-6)
    rows.assign(extra=1).to_csv(tmp_path / "extra.csv", index=False)          # documented: extra ignored
    assert zoo_main("embed", str(model), str(tmp_path / "extra.csv")).returncode == 0
    rows.drop(columns="city").to_csv(tmp_path / "missing.csv", index=False)   # documented: an error
    out = zoo_main("embed", str(model), str(tmp_path / "missing.csv"))
    assert out.returncode == 2 and "missing column(s) ['city']" in out.stderr
    out = zoo_main("evaluate", str(model))                 # from the run folder's own recipe.json
    assert out.returncode == 0, out.stderr
    # #15 class 11: what is published records no path of this machine
    published = (model / "config.json").read_text()
    assert str(tmp_path) not in published and "<local>/train.csv" in published
    assert str(tmp_path / "train.csv") in (tmp_path / "run" / "recipe.json").read_text()   # the run keeps it


def test_card_usage_snippet_for_tabular(tmp_path):
    import subprocess
    import sys

    from zoo.cards import write_card
    df = mixed_table()
    proc = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(df)
    enc = TJepaEncoder(TJepaConfig(**proc.encoder_config(), dim=16, depth=1, heads=2))
    enc.save_pretrained(tmp_path / "m", processor=proc)
    card = write_card(tmp_path / "m", repo_id="acme/tab").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0].replace("'acme/tab'", repr(str(tmp_path / "m")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 16])" in out.stdout


def test_tjepa_defaults_are_the_references_and_sizes_are_drawn_per_batch():
    cfg = TJepaPretrainingConfig()
    assert (cfg.context_share, cfg.target_share, cfg.num_targets) == ([0.2, 0.4], [0.2, 0.4], 4)
    assert cfg.overlapping_targets and cfg.target_norm == "none"
    # 14 features (Adult): round(14 * 0.2) = 3 .. round(14 * 0.4) = 6 for both; one draw is 3 + round(3 u)
    g = torch.Generator().manual_seed(5)
    u = torch.rand(2, generator=torch.Generator().manual_seed(5)).tolist()
    assert zoo.masking.subset_sizes(14, (0.2, 0.4), (0.2, 0.4), generator=g) == (3 + round(3 * u[0]),
                                                                                  3 + round(3 * u[1]))
    g = torch.Generator().manual_seed(0)
    sizes = [zoo.masking.subset_sizes(14, (0.2, 0.4), (0.2, 0.4), generator=g) for _ in range(400)]
    assert {c for c, _ in sizes} == {3, 4, 5, 6} and {t for _, t in sizes} == {3, 4, 5, 6}
    # a draw that does not fit is drawn again: context [5, 8] + target [5, 8] of 10 features
    sizes = [zoo.masking.subset_sizes(10, (0.5, 0.8), (0.5, 0.8), generator=g) for _ in range(200)]
    assert all(c + t <= 10 for c, t in sizes) and {c for c, _ in sizes} == {5}
    with pytest.raises(ValueError, match="do not fit"):
        zoo.masking.subset_sizes(10, (0.6, 0.8), (0.5, 0.8))


def test_tjepa_targets_come_from_the_non_context_pool_and_may_overlap():
    s = zoo.masking.feature_subsets(500, 14, num_targets=4, target_size=5, context_size=6, overlapping_targets=True,
                                    generator=torch.Generator().manual_seed(1))
    context = ~s.context_hidden
    assert (context.sum(dim=1) == 6).all() and (s.targets.sum(dim=2) == 5).all()
    assert not (s.targets & context[:, None, :]).any()                     # never a context feature
    assert (s.targets.sum(dim=1) > 1).any()                                  # target sets overlap one another
    assert s.targets.any(dim=1).sum(dim=1).max() == 8                        # and cover the whole pool of 8
    # each target is uniform over the pool: every non-context feature is picked about 5/8 of the time
    share = (s.targets.float().sum(dim=(0, 1)) / (500 * 4)) / (~context).float().mean(dim=0)
    assert torch.allclose(share, torch.full((14,), 5 / 8), atol=0.05)


def test_tjepa_targets_are_the_teachers_outputs_as_they_are():
    torch.manual_seed(0)
    enc = TJepaEncoder(TJepaConfig(num_numerical=6, cardinalities=[], dim=16, depth=1, heads=2, reg_tokens=1))
    batch = {"num": torch.randn(8, 6) * 3, "num_missing": torch.zeros(8, 6, dtype=torch.bool),
             "cat": torch.zeros(8, 0, dtype=torch.long)}
    with torch.no_grad():
        enc.body.norm.weight.fill_(2.0)                      # as if training had scaled the final norm
    for norm in ("none", "layer"):
        pre = TJepaPretrainer(enc, TJepaPretrainingConfig(num_targets=1, target_norm=norm), total_steps=10).eval()
        out = pre(batch, torch.Generator().manual_seed(3))
        # recompute by hand with the same draws
        g = torch.Generator().manual_seed(3)
        c, t = zoo.masking.subset_sizes(6, (0.2, 0.4), (0.2, 0.4), num_targets=1, generator=g)
        sets = zoo.masking.feature_subsets(8, 6, 1, t, c, overlapping_targets=True, generator=g)
        with torch.no_grad():
            full, _ = pre.teacher.module.encode_tokens(pre.teacher.module.tokenizer(batch))
            if norm == "layer":
                full = torch.nn.functional.layer_norm(full, (16,))
            ctx, _ = enc.encode_tokens(enc.tokenizer(batch), sets.context_hidden)
            pred = pre.predictor(ctx, sets.context_hidden, sets.targets[:, 0])
        m = sets.targets[:, 0]
        expected = ((pred - full) ** 2).mean(dim=-1)[m].mean()
        assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
        # "none" regresses the teacher's scaled outputs, "layer" re-normalises them to unit scale
        assert float(full.std()) == pytest.approx(2.0 if norm == "none" else 1.0, rel=0.05)


def test_a_stray_string_does_not_turn_a_numeric_column_categorical(tmp_path, caplog):
    # #15 class 2: "abc" in one of 120 cells used to make the column a 64-value vocabulary, silently
    df = mixed_table(120)
    df["income"] = df["income"].astype(object)
    df.loc[7, "income"] = "abc"
    df.to_csv(tmp_path / "t.csv", index=False)
    rows = zoo.get_modality("tabular").load_data({"source": "table", "path": str(tmp_path / "t.csv"),
                                                  "label_column": "label"})
    with caplog.at_level("WARNING"):
        p = TabularProcessor().fit(rows.examples)
    assert "income" in p.numerical and p.unparseable == {"income": [(7, "abc")]}
    assert f"1 of 120 values are not numbers ({tmp_path / 't.csv'}[7]: 'abc')" in caplog.text
    present = pd.to_numeric(df["income"], errors="coerce").dropna()
    assert p.mean[p.numerical.index("income")] == pytest.approx(present.mean())
    with pytest.raises(zoo.BadExample, match="row 7.*'income'.*expected a number, got 'abc'"):
        p.process(rows.examples, names=[f"row {i}" for i in range(120)])
    items, skipped = p.process(rows.examples, skip_bad=True, names=[f"row {i}" for i in range(120)])
    assert len(items) == 119 and len(skipped) == 1 and "row 7" in skipped[0]
    # a column that is mostly text stays categorical; the share is a setting
    words = pd.DataFrame({"x": ["a", "b", "1", "c"] * 10, "y": [1.0, 2.0, 3.0, 4.0] * 10})
    assert TabularProcessor().fit(words).categorical == ["x"]
    assert TabularProcessor(TabularProcessorConfig(numeric_share=0.25)).fit(words).numerical == ["x", "y"]


def test_statistics_are_finite_and_bad_ones_are_refused_on_load(tmp_path):
    # #15 class 6: 1e300 used to save std Infinity and zero the column; std 0 / NaN / < 0 used to load
    df = pd.DataFrame({"x": [1e300, -1e300, 5e299, 0.0], "y": [1.0, 2.0, 3.0, 4.0]})
    p = TabularProcessor().fit(df)
    assert all(np.isfinite(p.std)) and p.std[0] == pytest.approx(np.std([1.0, -1.0, 0.5, 0.0]) * 1e300)
    assert p.transform(df)["num"][:, 0].abs().max() > 0.5                     # the column is not zeroed
    p.save_pretrained(tmp_path)
    state = json.loads((tmp_path / "preprocessor.json").read_text())
    for bad in (0.0, -1.0, float("nan")):
        broken = {**state, "state": {**state["state"], "std": [bad, 1.0]}}
        with pytest.raises(ValueError, match="column 'x' has mean .* and std"):
            TabularProcessor.from_dict(json.loads(json.dumps(broken)))
    broken = {**state, "state": {**state["state"], "mean": [float("nan"), 0.0]}}
    with pytest.raises(ValueError, match="the mean must be finite"):
        TabularProcessor.from_dict(json.loads(json.dumps(broken)))
