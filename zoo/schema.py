"""Column schemas shared by every modality that reads tables (tabular rows, event logs): reading a table into
columns, inferring numerical vs categorical columns, fitting normalisation statistics and category vocabularies
with an explicit missing id and an unknown bucket, and encoding columns vectorised.

Tables come from pandas, pyarrow, ``datasets``, CSV/parquet files, a dict of columns or a list of dict rows.
"""

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

from .plugin import BadExample

__all__ = ["MISSING", "UNKNOWN", "MISSING_STRINGS", "Rows", "ColumnError", "ColumnSchema", "to_columns",
           "is_missing", "parse_numbers", "as_float", "spread", "category_key", "shown"]

logger = logging.getLogger(__name__)

MISSING, UNKNOWN = 0, 1   # reserved category ids; real categories start at 2
MISSING_STRINGS = {"", "?", "na", "nan", "n/a", "null", "none"}


class Rows(Sequence):
    """A table as a sequence of rows: ``rows[i]`` is a dict, ``rows[a:b]`` is again ``Rows``; processors read
    the columns directly (vectorised)."""

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
        idx = np.asarray(idx, dtype=np.int64)
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
        if kind == "csv":
            _check_header(path, extra.get("delimiter", ","))
        try:
            table = load_dataset(kind, data_files=str(path), split="train", **extra)
        except Exception as err:               # datasets wraps the reader's message: name the file and the cause
            cause = err.__cause__ or err.__context__ or err
            raise ValueError(f"{path}: the table does not parse: {str(cause).strip().splitlines()[-1][:200]}") \
                from None
    if hasattr(table, "select") and not hasattr(table, "to_pandas") and not hasattr(table, "iloc"):  # lazy rows
        table = table.select(list(range(len(table))))
    if hasattr(table, "to_pandas") and not hasattr(table, "iloc"):      # datasets.Dataset, pyarrow.Table
        table = table.to_pandas()
    if hasattr(table, "iloc"):                                           # pandas DataFrame
        return {str(c): table[c].to_numpy() for c in table.columns}
    if isinstance(table, dict):
        cols = {str(k): np.asarray(v) if not isinstance(v, np.ndarray) else v for k, v in table.items()}
        lengths = {k: (len(v) if v.ndim == 1 else f"shape {v.shape}") for k, v in cols.items()}
        if len(set(map(str, lengths.values()))) > 1 or any(v.ndim != 1 for v in cols.values()):
            raise ValueError(f"columns of different lengths (or not one value per row): {lengths}")
        return cols
    if isinstance(table, (list, tuple)) and all(isinstance(r, dict) for r in table):
        keys = list(dict.fromkeys(k for r in table for k in r))
        return {k: np.asarray([r.get(k) for r in table], dtype=object) for k in keys}
    raise TypeError(f"unsupported table type {type(table).__name__}")


def _check_header(path: Path, delimiter: str) -> None:
    """A CSV without rows, or whose header names a column twice (readers rename the second silently: ``a`` →
    ``a.1``), is refused naming the file."""
    import csv
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, [])
        rows = any(any(cell.strip() for cell in row) for row in reader)
    if not header:
        raise ValueError(f"{path}: an empty file (a table needs a header and rows)")
    if not rows:
        raise ValueError(f"{path}: the table holds no rows (only its header: {header[:8]})")
    seen = [c for i, c in enumerate(header) if c in header[:i]]
    if seen:
        raise ValueError(f"{path}: the header names column(s) {sorted(set(seen))} more than once")


class ColumnError(BadExample, KeyError):
    """A column the model needs is absent, or one it does not know is present (a BadExample and a KeyError)."""


def is_missing(values: np.ndarray) -> np.ndarray:
    """Missing cells: NaN, None and the strings of :data:`MISSING_STRINGS`."""
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype.kind in "iubmM":
        return np.isnat(values) if values.dtype.kind in "mM" else np.zeros(len(values), dtype=bool)
    return np.array([v is None or (isinstance(v, float) and np.isnan(v))
                     or (isinstance(v, str) and v.strip().lower() in MISSING_STRINGS) for v in values], dtype=bool)


MIN_STD = 1e-30                   # a saved std below this is refused (1/std overflows float32 near 1e-38)


def parse_numbers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(floats, missing, unparseable)``: unparseable = present but not a number (0 in ``floats``)."""
    missing = is_missing(values)
    if values.dtype.kind in "fiub":
        return values.astype(np.float64), missing, np.zeros(len(values), dtype=bool)
    out, bad = np.zeros(len(values)), np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if missing[i]:
            continue
        if isinstance(v, (complex, np.complexfloating)) or (isinstance(v, str) and "j" in v.lower()
                                                            and v.strip().lower() not in ("inf", "-inf")):
            bad[i] = True                   # a complex number is not a real one (never its real part)
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError, OverflowError):
            bad[i] = True
    return out, missing, bad


def _where(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names is not None and len(names) > 1 else names[0] if names else f"row {i}"


def as_float(values: np.ndarray, column: str, names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Floats and the missing mask of a numerical column; a cell that is not a number is a :class:`BadExample`
    naming its row (``names[i]``, or ``names[0]`` when one name stands for the whole table) and the column."""
    out, missing, bad = parse_numbers(values)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise BadExample(_where(names, i), column, f"expected a number, got {shown(values[i])}")
    if np.isinf(out).any():
        i = int(np.isinf(out).nonzero()[0][0])
        raise BadExample(_where(names, i), column, "infinite value")
    return out, missing


def spread(x: np.ndarray, column: str) -> tuple[float, float]:
    """Mean and standard deviation without overflow (values near 1e300 square to inf); 1.0 for a constant."""
    if not len(x):
        return 0.0, 1.0
    scale = float(np.abs(x).max()) or 1.0
    y = x / scale
    mean, std = float(y.mean()) * scale, float(y.std()) * scale
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise ValueError(f"column {column!r}: its values overflow float64 statistics")
    return mean, std if std >= MIN_STD else 1.0


def shown(v: Any) -> str:
    """A cell as a message shows it: ``nan``, ``'soon'`` (numpy scalars as the Python values they hold)."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def category_key(v: Any) -> str:
    return str(v).strip()


@dataclass
class ColumnSchema:
    """Which columns are numerical and which categorical, with the numerical columns' mean and std and each
    categorical column's vocabulary (most frequent first). Category ids: 0 = missing, 1 = unknown, 2.. = the
    vocabulary. ``unparseable`` (fit only, not saved) lists stray non-numbers found in numerical columns."""

    numerical: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    unparseable: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)

    @property
    def fitted(self) -> bool:
        return bool(self.numerical or self.categorical)

    @property
    def columns(self) -> list[str]:
        return self.numerical + self.categorical

    @property
    def cardinalities(self) -> list[int]:
        """Embedding-table sizes per categorical column (missing + unknown + vocabulary)."""
        return [len(self.vocab[c]) + 2 for c in self.categorical]

    @classmethod
    def infer(cls, cols: dict[str, np.ndarray], names: Sequence[str], *, numerical: Sequence[str] | None = None,
              categorical: Sequence[str] | None = None, max_categories: int = 64, numeric_share: float = 0.95,
              min_frequency: int = 1) -> ColumnSchema:
        """Infer the schema of ``names`` (numbers → numerical, booleans and text → categorical unless
        ``numeric_share`` of a text column's present values parse as numbers), then fit statistics and
        vocabularies. ``numerical``/``categorical`` override the inference for the columns they name."""
        num, cat = set(numerical or []), set(categorical or [])
        unknown = sorted((num | cat) - set(names))
        if unknown:
            raise KeyError(f"schema override names unknown column(s) {unknown}; the table has {list(names)}")
        parsed = {}                               # text columns parsed once, for the schema and the statistics
        for c in names:
            if c in num or c in cat:
                continue
            v = cols[c]
            if v.dtype.kind in "fiu":
                num.add(c)
            elif v.dtype.kind == "b":
                cat.add(c)
            else:
                _, miss, bad = parsed[c] = parse_numbers(v)
                present = int((~miss).sum())
                (num if present and 1 - bad.sum() / present >= numeric_share else cat).add(c)
        schema = cls([c for c in names if c in num], [c for c in names if c in cat])
        for c in schema.numerical:
            x, miss, bad = parsed[c] if c in parsed else parse_numbers(cols[c])
            if bad.any():                         # a few stray cells do not flip the column: report them
                rows = bad.nonzero()[0]
                schema.unparseable[c] = [(int(i), cols[c][i]) for i in rows[:5]]
                logger.warning("column %r: %d of %d values are not numbers (%s); it stays numerical "
                               "(numeric_share %.2f) and those rows raise BadExample (skip_bad skips them)", c,
                               len(rows), len(x), ", ".join(f"row {i}: {v!r}" for i, v in schema.unparseable[c]),
                               numeric_share)
            if np.isinf(x).any():
                raise BadExample(f"row {int(np.isinf(x).nonzero()[0][0])}", c, "infinite value")
            mean, std = spread(x[~miss & ~bad], c)
            schema.mean.append(mean)
            schema.std.append(std)
        for c in schema.categorical:
            v = cols[c]
            counts = Counter(category_key(x) for x, m in zip(v, is_missing(v)) if not m)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            keep = [k for k, n in ranked if n >= min_frequency]
            schema.vocab[c] = keep[:max_categories]
        return schema

    def encode_numerical(self, cols: dict[str, np.ndarray], n: int, names: Sequence[str] | None, *,
                         missing: str = "missing") -> tuple[Tensor, Tensor]:
        """``(values [n, F_num] normalised and 0 where missing, missing [n, F_num])``; an absent column is all
        missing. ``missing="error"`` makes a missing cell (NaN, None) a :class:`BadExample`."""
        values = torch.zeros(n, len(self.numerical))
        absent = torch.ones(n, len(self.numerical), dtype=torch.bool)
        for j, c in enumerate(self.numerical):
            if c not in cols:
                continue
            x, miss = as_float(cols[c], c, names)
            if missing == "error" and miss.any():
                i = int(miss.nonzero()[0][0])
                raise BadExample(_where(names, i), c, f"missing value {shown(cols[c][i])} (NaN or empty)")
            z = (x - self.mean[j]) / self.std[j]
            z[miss] = 0.0
            with np.errstate(over="ignore"):
                beyond = ~np.isfinite(z.astype(np.float32))
            if beyond.any():
                i = int(beyond.nonzero()[0][0])
                raise BadExample(_where(names, i), c, f"value {shown(cols[c][i])} lies {z[i]:.3g} standard deviations "
                                                      "from the mean: beyond what float32 holds (a unit error?)")
            values[:, j] = torch.from_numpy(z).float()
            absent[:, j] = torch.from_numpy(miss)
        return values, absent

    def encode_categorical(self, cols: dict[str, np.ndarray], n: int, names: Sequence[str] | None, *,
                           unknown: str = "unknown") -> Tensor:
        """Category ids ``[n, F_cat]`` (0 missing or absent column, 1 unknown); ``unknown="error"`` makes an
        unseen category a :class:`BadExample`."""
        ids_all = torch.zeros(n, len(self.categorical), dtype=torch.long)
        for j, c in enumerate(self.categorical):
            if c not in cols:
                continue
            lookup = {k: i + 2 for i, k in enumerate(self.vocab[c])}
            v = cols[c]
            miss = is_missing(v)
            ids = np.array([MISSING if m else lookup.get(category_key(x), UNKNOWN) for x, m in zip(v, miss)],
                           dtype=np.int64)
            if unknown == "error" and (ids == UNKNOWN).any():
                i = int((ids == UNKNOWN).nonzero()[0][0])
                raise BadExample(_where(names, i), c, f"unseen category {shown(v[i])} (known: {self.vocab[c][:10]}…)")
            ids_all[:, j] = torch.from_numpy(ids)
        return ids_all

    def aligned_to(self, old: ColumnSchema) -> ColumnSchema:
        """This newly fitted schema's statistics under ``old``'s columns, column order and vocabularies (category
        ids index an embedding table; a refit must not renumber them). Categories ``old`` never saw map to
        unknown, and are said once per column."""
        if set(self.numerical) != set(old.numerical) or set(self.categorical) != set(old.categorical):
            raise ValueError(f"--refit keeps the model's columns: numerical {old.numerical}, categorical "
                             f"{old.categorical}; the new data has numerical {self.numerical}, categorical "
                             f"{self.categorical}")
        mean, std = dict(zip(self.numerical, self.mean)), dict(zip(self.numerical, self.std))
        for c in old.categorical:
            known = set(old.vocab[c])
            unseen = [k for k in self.vocab[c] if k not in known]
            if unseen:
                logger.warning("column %r: %d categories of the new data are not in the model's vocabulary (%s): "
                               "they map to 'unknown'", c, len(unseen), ", ".join(map(repr, unseen[:5])))
        return ColumnSchema(list(old.numerical), list(old.categorical), [mean[c] for c in old.numerical],
                            [std[c] for c in old.numerical], {c: list(old.vocab[c]) for c in old.categorical})

    def state(self) -> dict[str, Any]:
        return {"numerical": self.numerical, "categorical": self.categorical, "mean": self.mean, "std": self.std,
                "vocab": self.vocab}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ColumnSchema:
        """The saved schema, checked: statistics match the columns, every mean finite and every std finite and
        at least :data:`MIN_STD` (a smaller one turns ordinary values into infinities in float32)."""
        keys = ("numerical", "categorical", "mean", "std", "vocab")
        if not isinstance(state, dict) or any(k not in state for k in keys) or not isinstance(state["vocab"], dict) \
                or not all(isinstance(state[k], list) for k in keys[:4]):
            raise ValueError(f"preprocessor.json: the schema state needs lists {list(keys[:4])} and a mapping "
                             f"'vocab', got {type(state).__name__} {sorted(state) if isinstance(state, dict) else ''}")
        schema = cls(list(state["numerical"]), list(state["categorical"]), list(state["mean"]), list(state["std"]),
                     {k: list(v) for k, v in state["vocab"].items()})
        if len(schema.mean) != len(schema.numerical) or len(schema.std) != len(schema.numerical) \
                or set(schema.vocab) != set(schema.categorical):
            raise ValueError("preprocessor.json: statistics do not match the schema")
        for c, m, s in zip(schema.numerical, schema.mean, schema.std):
            if not (isinstance(m, (int, float)) and isinstance(s, (int, float)) and np.isfinite(m)
                    and np.isfinite(s) and s >= MIN_STD):
                raise ValueError(f"preprocessor.json: column {c!r} has mean {m!r} and std {s!r}; "
                                 f"the mean must be finite and the std finite and >= {MIN_STD}")
        return schema
