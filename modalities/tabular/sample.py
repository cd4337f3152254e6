"""A tiny labelled table for the conformance suite: a CSV with numbers, a category, an id and a label column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData


def _customers(rows: int, rng: np.random.Generator, first_id: int):
    import pandas as pd
    income, age = rng.normal(50, 15, rows), rng.integers(18, 80, rows)
    plan = rng.choice(["basic", "plus", "pro"], rows)
    score = (income - 50) / 15 + np.select([plan == "basic", plan == "plus"], [-1.0, 0.0], 1.0)
    tier = np.where(score < -0.6, "bronze", np.where(score < 0.6, "silver", "gold"))
    return pd.DataFrame({"customer_id": [f"c{first_id + i:04d}" for i in range(rows)], "income": income.round(2),
                         "age": age, "plan": plan, "tier": tier})


def sample_data(root: Path, rows: int = 150, seed: int = 0) -> SampleData:
    """``root/customers.csv``: ``customer_id`` (an id: never an input), ``income``, ``age``, ``plan`` (a category)
    and ``tier`` (the label: a linear function of income and the plan, in three bands); ``new_customers.csv``:
    three customers not in it, without the label."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _customers(rows, rng, 0).to_csv(root / "customers.csv", index=False)
    new = root / "new_customers.csv"
    _customers(3, rng, rows).drop(columns="tier").to_csv(new, index=False)
    return SampleData(data=root / "customers.csv", recipe="tabular-tjepa-mlc-churn", num_classes=3,
                      label_column="tier", predict_inputs=[new],
                      predict_names=[f"{new}[{i}]" for i in range(3)],
                      pretrain_overrides=["processor.exclude=[customer_id]", "train.steps=4", "train.batch_size=32",
                                          "train.warmup_steps=1", "encoder.depth=1", "encoder.dim=32"],
                      finetune_args=["--lr", "0.003"])
