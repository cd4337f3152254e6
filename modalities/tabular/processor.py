"""Schema-aware tabular processor: infers numerical vs categorical columns, fits normalisation statistics
and category vocabularies, represents missing values explicitly, and travels with the model in
``preprocessor.json``. Tables come from pandas, pyarrow, ``datasets``, CSV/parquet files or dict rows."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig

logger = logging.getLogger(__name__)

MISSING, UNKNOWN = 0, 1   # reserved category ids; real categories start at 2
MISSING_STRINGS = {"", "?", "na", "nan", "n/a", "null", "none"}


@dataclass
class TabularProcessorConfig(ProcessorConfig):
    fit_examples: int = 100_000              # rows the statistics and vocabularies are learned from
    numerical: list[str] | None = None       # overrides of the inferred schema
    categorical: list[str] | None = None
    exclude: list[str] = field(default_factory=list)   # e.g. the label column
    max_categories: int = 64                 # most frequent kept; the rest map to the unknown bucket
    numeric_share: float = 0.95              # a text column is numerical when this share of its values parse
    min_frequency: int = 1
    unknown_category: str = "unknown"        # "unknown": map to the unknown bucket; "error"
    extra_columns: str = "ignore"            # columns the model does not know: "ignore" or "error"
    missing_columns: str = "error"           # columns the model needs but the input lacks: "error" or "missing"

    def validate(self) -> None:
        super().validate()
        self.check(self.max_categories >= 1, "max_categories", "must be >= 1")
        self.check(0 < self.numeric_share <= 1, "numeric_share", "must lie in (0, 1]")
        self.check(self.unknown_category in ("unknown", "error"), "unknown_category", "must be 'unknown' or 'error'")
        self.check(self.extra_columns in ("ignore", "error"), "extra_columns", "must be 'ignore' or 'error'")
        self.check(self.missing_columns in ("error", "missing"), "missing_columns", "must be 'error' or 'missing'")


class Rows(Sequence):
    """A table as a sequence of rows: ``rows[i]`` is a dict, ``rows[a:b]`` is again ``Rows``; the
    processor reads the columns directly (vectorised)."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = columns
        self.n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Rows({k: v[i] for k, v in self.columns.items()})
        return {k: v[i] for k, v in self.columns.items()}

    def select(self, idx: Sequence[int]) -> Rows:
        idx = np.asarray(idx)
        return Rows({k: v[idx] for k, v in self.columns.items()})


def to_columns(table: Any) -> dict[str, np.ndarray]:
    """pandas / pyarrow / ``datasets`` / CSV or parquet path / dict of columns / list of dict rows →
    a dict of numpy column arrays."""
    if isinstance(table, Rows):
        return table.columns
    if isinstance(table, (str, Path)):
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"no table file {path}")
        from datasets import load_dataset
        kind = {".csv": "csv", ".parquet": "parquet", ".tsv": "csv"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"{path}: unsupported table file (use .csv or .parquet)")
        extra = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
        table = load_dataset(kind, data_files=str(path), split="train", **extra)
    if hasattr(table, "select") and not hasattr(table, "to_pandas") and not hasattr(table, "iloc"):  # lazy rows
        table = table.select(list(range(len(table))))
    if hasattr(table, "to_pandas") and not hasattr(table, "iloc"):      # datasets.Dataset, pyarrow.Table
        table = table.to_pandas()
    if hasattr(table, "iloc"):                                           # pandas DataFrame
        return {str(c): table[c].to_numpy() for c in table.columns}
    if isinstance(table, dict):
        return {str(k): np.asarray(v) if not isinstance(v, np.ndarray) else v for k, v in table.items()}
    if isinstance(table, (list, tuple)) and all(isinstance(r, dict) for r in table):
        keys = list(dict.fromkeys(k for r in table for k in r))
        return {k: np.asarray([r.get(k) for r in table], dtype=object) for k in keys}
    raise TypeError(f"unsupported table type {type(table).__name__}")


class ColumnError(BadExample, KeyError):
    """A column the model needs is absent, or one it does not know is present (a BadExample and a KeyError)."""


def _is_missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype.kind in "iub":
        return np.zeros(len(values), dtype=bool)
    return np.array([v is None or (isinstance(v, float) and np.isnan(v))
                     or (isinstance(v, str) and v.strip().lower() in MISSING_STRINGS) for v in values], dtype=bool)


def _parse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(floats, missing, unparseable)``: unparseable = present but not a number (0 in ``floats``)."""
    missing = _is_missing(values)
    if values.dtype.kind in "fiub":
        return values.astype(np.float64), missing, np.zeros(len(values), dtype=bool)
    out, bad = np.zeros(len(values)), np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if missing[i]:
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            bad[i] = True
    return out, missing, bad


def _as_float(values: np.ndarray, column: str, names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    out, missing, bad = _parse(values)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        where = names[i] if names is not None else f"row {i}"
        raise BadExample(where, column, f"expected a number, got {values[i]!r}")
    return out, missing


def _spread(x: np.ndarray, column: str) -> tuple[float, float]:
    """Mean and standard deviation without overflow (values near 1e300 square to inf); 1.0 for a constant."""
    if not len(x):
        return 0.0, 1.0
    scale = float(np.abs(x).max()) or 1.0
    y = x / scale
    mean, std = float(y.mean()) * scale, float(y.std()) * scale
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise ValueError(f"column {column!r}: its values overflow float64 statistics")
    return mean, std if std > 0 else 1.0


def _key(v: Any) -> str:
    return str(v).strip()


class TabularProcessor(Processor):
    """Rows → ``num [F_num]`` (normalised, 0 where missing), ``num_missing [F_num]``, ``cat [F_cat]`` (ids;
    0 = missing, 1 = unknown). Fit once on training data; the schema, statistics and vocabularies are
    saved as ``preprocessor.json``."""

    config_class = TabularProcessorConfig

    def __init__(self, config: TabularProcessorConfig | None = None) -> None:
        super().__init__(config)
        self.unparseable: dict[str, list[tuple[int, Any]]] = {}   # fit: non-numbers in numerical columns
        self.numerical: list[str] = []
        self.categorical: list[str] = []
        self.mean: list[float] = []
        self.std: list[float] = []
        self.vocab: dict[str, list[str]] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.numerical or self.categorical)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding-table sizes per categorical column (missing + unknown + vocabulary)."""
        return [len(self.vocab[c]) + 2 for c in self.categorical]

    def fit(self, examples: Any) -> TabularProcessor:
        cols = to_columns(examples)
        cfg = self.config
        if not cols or len(next(iter(cols.values()))) == 0:
            raise ValueError(f"cannot fit the table schema on an empty table ({len(cols)} columns, 0 rows)")
        names = [c for c in cols if c not in set(cfg.exclude)]
        num = set(cfg.numerical or [])
        cat = set(cfg.categorical or [])
        unknown = sorted((num | cat) - set(names))
        if unknown:
            raise KeyError(f"schema override names unknown column(s) {unknown}; the table has {names}")
        parsed = {}                               # text columns parsed once, for the schema and the statistics
        for c in names:
            if c in num or c in cat:
                continue
            v = cols[c]
            if v.dtype.kind in "fiu":
                num.add(c)
            elif v.dtype.kind == "b":
                cat.add(c)
            else:        # text columns: numerical when numeric_share of the present values are numbers
                _, miss, bad = parsed[c] = _parse(v)
                present = int((~miss).sum())
                (num if present and 1 - bad.sum() / present >= cfg.numeric_share else cat).add(c)
        self.numerical = [c for c in names if c in num]
        self.categorical = [c for c in names if c in cat]
        self.mean, self.std, self.unparseable = [], [], {}
        for c in self.numerical:
            x, miss, bad = parsed[c] if c in parsed else _parse(cols[c])
            if bad.any():                         # a few stray cells do not flip the column: report them
                rows = bad.nonzero()[0]
                self.unparseable[c] = [(int(i), cols[c][i]) for i in rows[:5]]
                logger.warning("column %r: %d of %d values are not numbers (%s); it stays numerical "
                               "(numeric_share %.2f) and those rows raise BadExample (skip_bad skips them)", c,
                               len(rows), len(x), ", ".join(f"row {i}: {v!r}" for i, v in self.unparseable[c]),
                               cfg.numeric_share)
            if np.isinf(x).any():
                raise BadExample(f"row {int(np.isinf(x).nonzero()[0][0])}", c, "infinite value")
            mean, std = _spread(x[~miss & ~bad], c)
            self.mean.append(mean)
            self.std.append(std)
        self.vocab = {}
        for c in self.categorical:
            v = cols[c]
            counts = Counter(_key(x) for x, m in zip(v, _is_missing(v)) if not m)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            keep = [k for k, n in ranked if n >= self.config.min_frequency]
            self.vocab[c] = keep[: self.config.max_categories]
        return self

    def transform(self, table: Any, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """A whole table at once (vectorised per column) → ``num [N, F_num]``, ``num_missing``, ``cat``."""
        if not self.fitted:
            raise RuntimeError("the processor is not fitted: call fit(train_table) first")
        cols = to_columns(table)
        cfg = self.config
        known = set(self.numerical) | set(self.categorical) | set(cfg.exclude)
        where = names[0] if names is not None and len(names) == 1 else "table"
        extra = sorted(set(cols) - known)
        if extra and cfg.extra_columns == "error":
            raise ColumnError(where, extra[0], f"unknown column(s) {extra}: the model was trained on "
                                               f"{self.numerical + self.categorical}")
        needed = self.numerical + self.categorical
        absent = [c for c in needed if c not in cols]
        if absent and cfg.missing_columns == "error":
            raise ColumnError(where, absent[0], f"missing column(s) {absent} (set missing_columns: missing to "
                                                "treat them as missing)")
        n = len(next(iter(cols.values()))) if cols else 0
        num = torch.zeros(n, len(self.numerical))
        num_missing = torch.ones(n, len(self.numerical), dtype=torch.bool)
        for j, c in enumerate(self.numerical):
            if c not in cols:
                continue
            x, miss = _as_float(cols[c], c, names)
            if np.isinf(x).any():
                i = int(np.isinf(x).nonzero()[0][0])
                raise BadExample(names[i] if names is not None else f"row {i}", c, "infinite value")
            z = (x - self.mean[j]) / self.std[j]
            z[miss] = 0.0
            num[:, j] = torch.from_numpy(z).float()
            num_missing[:, j] = torch.from_numpy(miss)
        cat = torch.zeros(n, len(self.categorical), dtype=torch.long)
        for j, c in enumerate(self.categorical):
            if c not in cols:
                continue
            lookup = {k: i + 2 for i, k in enumerate(self.vocab[c])}
            v = cols[c]
            miss = _is_missing(v)
            ids = np.array([MISSING if m else lookup.get(_key(x), UNKNOWN) for x, m in zip(v, miss)], dtype=np.int64)
            if cfg.unknown_category == "error" and (ids == UNKNOWN).any():
                i = int((ids == UNKNOWN).nonzero()[0][0])
                raise BadExample(names[i] if names is not None else f"row {i}", c,
                                 f"unseen category {v[i]!r} (known: {self.vocab[c][:10]}…)")
            cat[:, j] = torch.from_numpy(ids)
        return {"num": num, "num_missing": num_missing, "cat": cat}

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        if not isinstance(example, dict):
            raise BadExample(name or "input", "row", f"expected a dict row, got {type(example).__name__}")
        out = self.transform({k: np.asarray([v], dtype=object if isinstance(v, str) or v is None else None)
                              for k, v in example.items()}, [name or "input"])
        return {k: v[0] for k, v in out.items()}

    def process_batch(self, examples: Any, names: Sequence[str]) -> list[dict[str, Tensor]]:
        """A batch of rows (``Rows``, a list of dict rows, a ``datasets`` selection) transformed at once."""
        out = self.transform(examples, list(names))
        return [dict(zip(out, row)) for row in zip(*out.values())]

    def process(self, examples: Any, *, skip_bad: bool = False,
                names: Sequence[str] | None = None) -> tuple[list[dict[str, Tensor]], list[str]]:
        if skip_bad:
            return super().process(examples, skip_bad=True, names=names)
        names = names if names is not None else [f"row {i}" for i in range(len(examples))]
        return self.process_batch(examples, names), []

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {k: torch.stack([it[k] for it in items]) for k in ("num", "num_missing", "cat")}

    def read(self, path: str) -> Any:
        return Rows(to_columns(path))

    def read_many(self, path: str) -> list[Any]:
        rows = self.read(path)
        return [rows[i] for i in range(len(rows))]

    def encoder_config(self) -> dict[str, Any]:
        return {"num_numerical": len(self.numerical), "cardinalities": self.cardinalities}

    def state(self) -> dict[str, Any]:
        return {"numerical": self.numerical, "categorical": self.categorical, "mean": self.mean, "std": self.std,
                "vocab": self.vocab}

    def load_state(self, state: dict[str, Any]) -> None:
        self.numerical, self.categorical = list(state["numerical"]), list(state["categorical"])
        self.mean, self.std = list(state["mean"]), list(state["std"])
        self.vocab = {k: list(v) for k, v in state["vocab"].items()}
        if len(self.mean) != len(self.numerical) or set(self.vocab) != set(self.categorical):
            raise ValueError("preprocessor.json: statistics do not match the schema")
        for c, m, s in zip(self.numerical, self.mean, self.std):
            if not (isinstance(m, (int, float)) and isinstance(s, (int, float)) and np.isfinite(m)
                    and np.isfinite(s) and s > 0):
                raise ValueError(f"preprocessor.json: column {c!r} has mean {m!r} and std {s!r}; "
                                 "the mean must be finite and the std finite and > 0")
