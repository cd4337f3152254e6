"""Tables with dates, ids and many categories (issue #32): a date column becomes elapsed days and cyclic
features recorded in preprocessor.json, an all-distinct id column is left out (said, and kept on request),
a cut vocabulary says how many rows fell to 'unknown'."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from modalities.tabular import TabularProcessor, TabularProcessorConfig
from modalities.tabular.baselines import raw_features
from tests.conftest import zoo_main


def tenure_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Customers who signed up over four years (1461 distinct days possible, ISO strings); the label is whether
    their tenure at 2023-01-01 exceeds the median; ``noise`` carries nothing."""
    rng = np.random.default_rng(seed)
    offset = rng.integers(0, 1461, n)
    signup = np.datetime64("2019-01-01") + offset.astype("timedelta64[D]")
    tenure = (np.datetime64("2023-01-01") - signup).astype(int)
    return pd.DataFrame({"signup": signup.astype(str), "noise": rng.normal(size=n).round(3),
                         "label": np.where(tenure > np.median(tenure), "long", "short")})


def test_a_date_column_carries_its_signal_through_pretrain_and_finetune(tmp_path):
    # before: 'signup' was a 64-value category (most rows 'unknown') and accuracy stayed near chance. Settings:
    # pretraining 4 steps of a 1-layer, 32-wide encoder; fine-tuning full, 40 steps, lr 0.003, batch 32
    tenure_table().to_csv(tmp_path / "t.csv", index=False)
    pre = zoo_main("pretrain", "tabular-tjepa-mlc-churn", "--data", str(tmp_path / "t.csv"), "--label-column", "label",
                   "--set", "train.steps=4", "--set", "train.batch_size=32", "--set", "train.warmup_steps=1",
                   "--set", "encoder.depth=1", "--set", "encoder.dim=32", "--output", str(tmp_path / "pre"))
    assert pre.returncode == 0, pre.stderr
    ft = zoo_main("finetune", str(tmp_path / "pre" / "model"), "--data", str(tmp_path / "t.csv"), "--label-column",
                  "label", "--mode", "full", "--steps", "40", "--lr", "0.003", "--batch-size", "32", "--seed", "0",
                  "--output", str(tmp_path / "ft"))
    assert ft.returncode == 0, ft.stderr
    result = json.loads(ft.stdout[ft.stdout.index("{"):])
    assert result["test_accuracy"] > 0.85, result
    state = json.loads((tmp_path / "pre" / "model" / "preprocessor.json").read_text())["state"]
    assert list(state["dates"]) == ["signup"] and "signup" not in state["categorical"]


def test_the_date_is_recorded_and_a_new_row_encodes_the_same_after_reload(tmp_path, caplog):
    df = tenure_table(200)
    with caplog.at_level("INFO"):
        p = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(df)
    assert "column 'signup': read as a date" in caplog.text
    first = df["signup"].min()
    d = p.dates["signup"]
    assert p.numerical == ["noise"] and p.categorical == [] and d.reference == first
    assert d.features == ["elapsed", "year_sin", "year_cos", "week_sin", "week_cos"]
    p.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor.json").read_text())["state"]["dates"]["signup"]
    assert saved["reference"] == first and saved["features"] == d.features
    q = TabularProcessor.from_dict(json.loads((tmp_path / "preprocessor.json").read_text()))
    row = {"signup": "2024-03-04", "noise": 0.5}
    a, b = p(row), q(row)
    assert all(torch.equal(a[k], b[k]) for k in a) and a["num"].shape == (6,)
    # by hand: 2024-03-04 is a Monday, day 63 (0-based) of a leap year
    elapsed = (pd.Timestamp("2024-03-04") - pd.Timestamp(first)).days
    assert a["num"][1].item() == pytest.approx((elapsed - d.mean) / d.std, rel=1e-5)
    assert a["num"][2].item() == pytest.approx(math.sin(2 * math.pi * 63 / 366), abs=1e-6)
    assert (a["num"][4].item(), a["num"][5].item()) == pytest.approx((0.0, 1.0), abs=1e-6)   # Monday = angle 0
    # a missing or unreadable date sets the missing flag of its features (never a NaN)
    for bad in (None, "", "not a date"):
        out = p({"signup": bad, "noise": 0.5})
        assert out["num_missing"].tolist() == [False] + [True] * 5 and torch.isfinite(out["num"]).all()
    # the raw-features baseline reads the same encoding
    assert raw_features(df.drop(columns="label"), p).shape == (200, 6 + 6)
    # a user can say it is a category
    assert TabularProcessor(TabularProcessorConfig(exclude=["label"], categorical=["signup"])).fit(df).dates == {}


def test_an_id_column_is_left_out_with_a_warning_and_include_keeps_it(tmp_path, caplog):
    df = tenure_table(60).assign(customer=[f"c{i:03d}" for i in range(60)], number=np.arange(60) * 7,
                                 amount=np.random.default_rng(1).normal(size=60))
    with caplog.at_level("WARNING"):
        p = TabularProcessor(TabularProcessorConfig(exclude=["label"])).fit(df)
    assert p.schema.ids == ["customer", "number"] and "customer" not in p.input_columns()
    assert "amount" in p.numerical                                          # distinct floats are numbers
    assert "column 'customer': all of its 60 values are distinct" in caplog.text
    assert "processor.include: [customer]" in caplog.text
    kept = TabularProcessor(TabularProcessorConfig(exclude=["label"], include=["customer"])).fit(df)
    assert "customer" in kept.categorical and kept.schema.ids == ["number"]
    # the CLI flag maps to the setting
    df.to_csv(tmp_path / "t.csv", index=False)
    out = zoo_main("pretrain", "tabular-tjepa-mlc-churn", "--data", str(tmp_path / "t.csv"), "--label-column",
                   "label", "--include", "customer", "--set", "train.steps=1", "--set", "train.batch_size=16",
                   "--set", "train.warmup_steps=0", "--set", "encoder.depth=1", "--set", "encoder.dim=16",
                   "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    state = json.loads((tmp_path / "run" / "model" / "preprocessor.json").read_text())["state"]
    assert "customer" in state["categorical"] and state["ids"] == ["number"]


def test_a_cut_vocabulary_says_how_many_rows_are_unknown(caplog):
    city = [f"c{i}" for i in range(10) for _ in range(10 - i)] + [f"rare{i}" for i in range(5)]   # 60 rows
    df = pd.DataFrame({"city": city, "x": np.arange(len(city)) % 4})
    with caplog.at_level("WARNING"):
        p = TabularProcessor(TabularProcessorConfig(max_categories=3)).fit(df)
    assert p.vocab["city"] == ["c0", "c1", "c2"]                              # 10 + 9 + 8 rows kept
    assert "column 'city': 15 distinct values, 3 kept" in caplog.text
    assert "33 of 60 rows (55.0%) map to 'unknown'" in caplog.text and "processor.max_categories" in caplog.text


def test_time_zone_offsets_name_the_same_instant():
    df = pd.DataFrame({"t": ["2021-03-01T12:00:00+02:00", "2021-03-01T10:00:00Z", "2021-03-01 10:00:00",
                             "2021-02-27T09:30:00-05:00"] * 5, "x": np.arange(20.0)})
    p = TabularProcessor().fit(df)
    d = p.dates["t"]
    assert d.reference == "2021-02-27" and d.features == ["elapsed", "day_sin", "day_cos"]
    num = p.transform(df)["num"]
    assert torch.equal(num[0, 1:], num[1, 1:]) and torch.equal(num[0, 1:], num[2, 1:])         # x differs
    # 2021-03-01 10:00 UTC is 2 days 10 hours after the reference; 09:30-05:00 is 14:30 UTC
    assert num[0, 1].item() == pytest.approx((2 + 10 / 24 - d.mean) / d.std, rel=1e-6)
    assert num[3, 1].item() == pytest.approx((14.5 / 24 - d.mean) / d.std, rel=1e-6)


def test_numbers_are_dates_only_when_named_and_datetimes_read_by_type():
    df = pd.DataFrame({"year": [str(2000 + i % 7) for i in range(30)], "code": [f"{20210300 + i}" for i in range(30)],
                       "stamp": pd.date_range("2022-01-01", periods=30, freq="D", tz="Europe/Paris"),
                       "day": pd.date_range("2022-01-01", periods=30, freq="D").date})
    p = TabularProcessor(TabularProcessorConfig(include=["code"])).fit(df)
    assert p.numerical == ["year", "code"] and list(p.dates) == ["stamp", "day"]
    unix = pd.DataFrame({"when": [86400 * i for i in range(25)], "x": np.arange(25) % 3})
    q = TabularProcessor(TabularProcessorConfig(date_columns=["when"])).fit(unix)
    assert q.dates["when"].reference == "1970-01-01" and q.dates["when"].named
