"""Column schemas shared by every modality that reads tables (tabular rows, event logs): reading a table into
columns, inferring numerical, date and categorical columns (and leaving out ids), fitting normalisation statistics
and category vocabularies with an explicit missing id and an unknown bucket, and encoding columns vectorised
(docs/architecture.md, "Layers": what tables and event logs both need lives here).

Tables come from pandas, pyarrow, ``datasets``, CSV/parquet files, a dict of columns or a list of dict rows.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .plugin import BadExample

__all__ = ["MISSING", "UNKNOWN", "MISSING_STRINGS", "Rows", "ColumnError", "ColumnSchema", "DateColumn", "to_columns",
           "is_missing", "parse_numbers", "parse_dates", "date_features", "as_float", "spread", "category_key",
           "shown"]

logger = logging.getLogger(__name__)

MISSING, UNKNOWN = 0, 1   # reserved category ids; real categories start at 2
MISSING_STRINGS = {"", "?", "na", "nan", "n/a", "null", "none"}
ID_MIN_ROWS = 20                  # an all-distinct text or integer column of at least this many values is an id
# ISO 8601 dates and datetimes: 2021-03-01, 2021-03-01T10:00, 2021-03-01 10:00:00.5+02:00, ...Z
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}"
                      r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s*(?:Z|[+-]\d{2}(?::?\d{2})?))?)?")
DATE_FEATURES = ("elapsed", "year_sin", "year_cos", "week_sin", "week_cos", "day_sin", "day_cos")


class Rows(Sequence):
    """A table as a sequence of rows: ``rows[i]`` is a dict, ``rows[a:b]`` is again ``Rows``; processors read
    the columns directly (vectorised)."""

    def __init__(self, columns: dict[str, np.ndarray], names: np.ndarray | None = None) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = columns
        self.n = lengths.pop() if lengths else 0
        self.names = names        # each row's name as the data set names it (``file[row]``), kept by select

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Rows({k: v[i] for k, v in self.columns.items()}, None if self.names is None else self.names[i])
        return {k: v[i] for k, v in self.columns.items()}

    def select(self, idx: Sequence[int]) -> Rows:
        idx = np.asarray(idx, dtype=np.int64)
        return Rows({k: v[idx] for k, v in self.columns.items()}, None if self.names is None else self.names[idx])


def row_name(names: Sequence[str] | None, i: int) -> str:
    """What a message calls row ``i`` of a fitted sample: its data-set name (``file[row]``, the row a user finds
    in the file, as every other message names it), else ``row i`` (docs/reliability.md)."""
    return str(names[i]) if names is not None else f"row {i}"


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
        names = [str(c) for c in table.columns]
        twice = sorted({c for i, c in enumerate(names) if c in names[:i]})
        if twice:                             # table[c] would be a frame of both: refused (docs/reliability.md)
            raise ValueError(f"the table names column(s) {twice} more than once: rename or drop the copies "
                             "(df.loc[:, ~df.columns.duplicated()])")
        return {name: table.iloc[:, i].to_numpy() for i, name in enumerate(names)}
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
        raise BadExample(_where(names, i), column, f"expected a number, got {shown(values[i])} "
                                                   f"(a column of categories is read as one when the model is "
                                                   f"pretrained with processor.categorical: [{column}]; "
                                                   "train.skip_bad: true skips the row)")
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
        raise ValueError(f"column {column!r}: its values overflow float64 statistics (processor.exclude leaves it "
                         "out)")
    return mean, std if std >= MIN_STD else 1.0


def shown(v: Any) -> str:
    """A cell as a message shows it: ``nan``, ``'soon'`` (numpy scalars as the Python values they hold)."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def category_key(v: Any) -> str:
    return str(v).strip()


def _stripped(s: Any) -> Any:
    """The strings of an object Series stripped, NaN where a value is not a string (vectorised)."""
    import pandas as pd
    try:
        return s.str.strip()
    except AttributeError:                        # no strings at all (numbers, datetimes, None)
        return pd.Series(np.nan, index=s.index, dtype=object)


def _missing_cells(values: np.ndarray) -> np.ndarray:
    """:func:`is_missing` vectorised through pandas, NaT included (dates: a column of any kind)."""
    import pandas as pd
    s = pd.Series(values, dtype=object) if values.dtype.kind not in "fiubmM" else pd.Series(values)
    out = s.isna().to_numpy(dtype=bool, copy=True)
    if s.dtype == object:
        out |= _stripped(s).str.lower().isin(MISSING_STRINGS).to_numpy(dtype=bool)
    return out


def parse_dates(values: np.ndarray, *, named: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(days, missing, unparseable)``: days since 1970-01-01 00:00 UTC (float64, NaN where missing or
    unparseable). Datetime values (numpy/pandas/arrow timestamps, ``datetime.date``) and ISO 8601 strings read;
    a time-zone offset is honoured and a naive time is taken as UTC. Numbers are never dates unless the column is
    ``named`` by the user (then they are Unix seconds, and non-ISO strings are read as pandas reads them)."""
    import datetime

    import pandas as pd
    missing = _missing_cells(values)
    n = len(values)
    if values.dtype.kind in "fiub":
        if not named:
            return np.full(n, np.nan), missing, ~missing
        days = values.astype(np.float64) / 86400.0
        days[missing] = np.nan
        return days, missing, ~missing & ~np.isfinite(days)
    if values.dtype.kind == "M":
        stamps = pd.to_datetime(pd.Series(values), utc=True)
    else:
        s = pd.Series(values, dtype=object)
        text = _stripped(s)                                        # NaN where the value is not a string
        iso = text.str.fullmatch(ISO_DATE).eq(True)
        typed = text.isna() & ~s.isna()
        if typed.any():                                            # datetime objects among the values
            typed &= s.map(lambda v: isinstance(v, (datetime.date, np.datetime64))).astype(bool)
        cand = pd.Series(None, index=s.index, dtype=object)
        cand[iso] = text[iso]
        cand[typed] = s[typed]
        stamps = pd.to_datetime(cand, errors="coerce", utc=True, format="ISO8601")
        if named:                                                  # the user says it is a date: read more forms
            rest = ~iso & ~typed & ~pd.Series(missing, index=s.index)
            if rest.any():
                numbers = pd.to_numeric(s[rest], errors="coerce")
                words = rest & numbers.reindex(s.index).isna()
                stamps[rest & ~words] = pd.to_datetime(numbers.dropna(), unit="s", utc=True, errors="coerce")
                if words.any():
                    stamps[words] = pd.to_datetime(text[words], errors="coerce", utc=True, format="mixed")
    days = ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64, na_value=np.nan,
                                                                              copy=True)
    days[missing] = np.nan
    return days, missing, ~missing & np.isnan(days)


def _all_distinct(values: np.ndarray) -> bool:
    """At least :data:`ID_MIN_ROWS` present values, no two alike (an identifier)."""
    import pandas as pd
    present = pd.Series(values[~_missing_cells(values)], dtype=object)
    return len(present) >= ID_MIN_ROWS and int(present.nunique()) == len(present)


def _day_string(days: float) -> str:
    return str(np.datetime64(int(np.floor(days)), "D"))


def date_features(days: np.ndarray, features: Sequence[str], reference: float) -> np.ndarray:
    """``[n, len(features)]`` of days since the epoch (UTC): ``elapsed`` days since ``reference`` (epoch days),
    and the position in the year, the week (Monday 00:00 = angle 0) and the day as ``*_sin``/``*_cos`` of its
    angle. NaN days give 0 (their missing flag says why)."""
    ok = np.isfinite(days)
    d = np.where(ok, days, 0.0)
    whole = np.floor(d)
    day = whole.astype(np.int64).astype("datetime64[D]")
    year = day.astype("datetime64[Y]")
    start = year.astype("datetime64[D]").astype(np.int64)
    length = (year + 1).astype("datetime64[D]").astype(np.int64) - start
    turns = {"year": (d - start) / length,
             "week": (np.mod(whole + 3, 7) + d - whole) / 7,        # 1970-01-01 was a Thursday (weekday 3)
             "day": d - whole}
    out = np.zeros((len(d), len(features)))
    for j, f in enumerate(features):
        if f == "elapsed":
            out[:, j] = d - reference
        else:
            cycle, fn = f.split("_")
            out[:, j] = (np.sin if fn == "sin" else np.cos)(2 * np.pi * turns[cycle])
    out[~ok] = 0.0
    return out


@dataclass
class DateColumn:
    """A date column's encoding: ``features`` (of :data:`DATE_FEATURES`) from days since ``reference`` (an ISO
    date or datetime, UTC), ``elapsed`` standardised by ``mean``/``std``; ``named``: the user named the column a
    date (numbers and non-ISO strings then read too)."""

    reference: str
    features: list[str]
    mean: float
    std: float
    named: bool = False

    @property
    def reference_days(self) -> float:
        days, _, bad = parse_dates(np.array([self.reference], dtype=object), named=True)
        if bad.any() or not np.isfinite(days[0]):
            raise ValueError(f"date reference {self.reference!r} is not an ISO date (processor.date_reference)")
        return float(days[0])

    def encode(self, days: np.ndarray) -> np.ndarray:
        """The column's features ``[n, F]`` (elapsed standardised; 0 where NaN)."""
        out = date_features(days, self.features, self.reference_days)
        if "elapsed" in self.features:
            j = self.features.index("elapsed")
            out[:, j] = np.where(np.isfinite(days), (out[:, j] - self.mean) / self.std, 0.0)
        return out

    def state(self) -> dict[str, Any]:
        return {"reference": self.reference, "features": list(self.features), "mean": self.mean, "std": self.std,
                "named": self.named}

    @classmethod
    def from_state(cls, column: str, state: Any) -> DateColumn:
        ok = isinstance(state, dict) and isinstance(state.get("reference"), str) \
            and isinstance(state.get("features"), list) and set(state["features"]) <= set(DATE_FEATURES) \
            and all(isinstance(state.get(k), (int, float)) and np.isfinite(state[k]) for k in ("mean", "std")) \
            and state["std"] >= MIN_STD
        if not ok:
            raise ValueError(f"preprocessor.json: date column {column!r} needs a reference (ISO date), features of "
                             f"{list(DATE_FEATURES)}, a finite mean and a std >= {MIN_STD}; got {state!r}")
        out = cls(state["reference"], list(state["features"]), float(state["mean"]), float(state["std"]),
                  bool(state.get("named", False)))
        out.reference_days                                      # noqa: B018 - refuses an unreadable reference
        return out


def _fit_date(c: str, values: np.ndarray, named: bool, reference: str | None,
              row_names: Sequence[str] | None = None) -> DateColumn:
    """Fit one date column: the reference (``reference``, else the first fitted day), the elapsed statistics and
    which cyclic features carry something (a year: a span of a year or more; a week: 7 or more distinct days; a
    day: times of day that differ), said in the log."""
    days, miss, bad = parse_dates(values, named=named)
    ok = np.isfinite(days)
    if not ok.any():
        raise ValueError(f"column {c!r}: none of its {len(values)} values reads as a date (ISO 8601, e.g. "
                         f"2021-03-01 or 2021-03-01T10:00+02:00); drop it from processor.date_columns")
    if bad.any():
        rows = bad.nonzero()[0]
        logger.warning("column %r: %d of %d values are not dates (%s): read as missing (their missing flag is set)",
                       c, len(rows), len(values),
                       ", ".join(f"{row_name(row_names, i)}: {shown(values[i])}" for i in rows[:5]))
    x = days[ok]
    ref = reference if reference is not None else _day_string(float(x.min()))
    col = DateColumn(ref, [], 0.0, 1.0, named)
    mean, std = spread(x - col.reference_days, c)
    whole = np.floor(x)
    feats = ["elapsed"]
    if x.max() - x.min() >= 365:
        feats += ["year_sin", "year_cos"]
    if len(np.unique(whole)) >= 7:
        feats += ["week_sin", "week_cos"]
    if len(np.unique(np.round((x - whole) * 86400))) >= 2:
        feats += ["day_sin", "day_cos"]
    col.features, col.mean, col.std = feats, mean, std
    logger.info("column %r: read as a date%s (%s … %s, %d missing of %d) → %s (elapsed in days since %s); "
                "processor.categorical: [%s] keeps it a category", c, " (processor.date_columns)" if named else "",
                _day_string(float(x.min())), _day_string(float(x.max())), int((~ok).sum()), len(values),
                ", ".join(feats), ref, c)
    return col


@dataclass
class ColumnSchema:
    """Which columns are numerical, which dates and which categorical, with the numerical columns' mean and std,
    each date column's :class:`DateColumn` and each categorical column's vocabulary (most frequent first).
    Category ids: 0 = missing, 1 = unknown, 2.. = the vocabulary. ``ids`` are columns left out as identifiers.
    ``unparseable`` (fit only, not saved) lists stray non-numbers found in numerical columns."""

    numerical: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    unparseable: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    dates: dict[str, DateColumn] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def fitted(self) -> bool:
        return bool(self.numerical or self.categorical or self.dates)

    @property
    def columns(self) -> list[str]:
        """The input columns: numerical, dates, categorical."""
        return self.numerical + list(self.dates) + self.categorical

    @property
    def num_features(self) -> int:
        """Width of the numerical features: one per numerical column, then each date column's features."""
        return len(self.numerical) + sum(len(d.features) for d in self.dates.values())

    @property
    def cardinalities(self) -> list[int]:
        """Embedding-table sizes per categorical column (missing + unknown + vocabulary)."""
        return [len(self.vocab[c]) + 2 for c in self.categorical]

    @classmethod
    def infer(cls, cols: dict[str, np.ndarray], names: Sequence[str], *, numerical: Sequence[str] | None = None,
              categorical: Sequence[str] | None = None, dates: Sequence[str] | None = None,
              include: Sequence[str] | None = None, drop_ids: bool = False, date_reference: str | None = None,
              max_categories: int = 64, numeric_share: float = 0.95, min_frequency: int = 1,
              row_names: Sequence[str] | None = None) -> ColumnSchema:
        """Infer the schema of ``names`` (numbers → numerical; datetimes, and text of which ``numeric_share`` reads
        as ISO dates → dates; booleans and other text → categorical unless ``numeric_share`` of a text column's
        present values parse as numbers), then fit statistics and vocabularies. ``numerical``/``categorical``/
        ``dates`` override the inference for the columns they name. With ``drop_ids``, a text or integer column of
        at least :data:`ID_MIN_ROWS` all-distinct values is left out (said) unless ``include`` names it."""
        num, cat, dat = set(numerical or []), set(categorical or []), set(dates or [])
        named, keep = num | cat | dat, set(include or [])
        unknown = sorted((named | keep) - set(names))
        if unknown:
            raise KeyError(f"schema override names unknown column(s) {unknown}; the table has {list(names)} "
                           "(processor.numerical / categorical / date_columns / include)")
        twice = sorted((num & cat) | (num & dat) | (cat & dat))
        if twice:
            raise ValueError(f"column(s) {twice} named in more than one of processor.numerical / categorical / "
                             "date_columns")
        parsed, ids = {}, []                      # text columns parsed once, for the schema and the statistics
        for c in names:
            if c in named:
                continue
            v = cols[c]
            integral = False
            if v.dtype.kind == "M":
                dat.add(c)
            elif v.dtype.kind in "fiu":
                num.add(c)
                integral = v.dtype.kind in "iu"
            elif v.dtype.kind == "b":
                cat.add(c)
            else:
                x, miss, bad = parsed[c] = parse_numbers(v)
                present = int((~miss).sum())
                if present and 1 - bad.sum() / present >= numeric_share:
                    num.add(c)
                    integral = bool(np.all(x[~miss & ~bad] == np.round(x[~miss & ~bad])))
                else:
                    _, dmiss, dbad = parse_dates(v)
                    dpresent = int((~dmiss).sum())
                    (dat if dpresent and 1 - dbad.sum() / dpresent >= numeric_share else cat).add(c)
            if drop_ids and c not in keep and (c in cat or integral) and _all_distinct(v):
                ids.append(c)
                num.discard(c)
                cat.discard(c)
        for c in ids:
            logger.warning("column %r: all of its %d values are distinct (an id?): left out of the inputs; "
                           "processor.include: [%s] (zoo pretrain --include %s) keeps it", c,
                           int((~is_missing(cols[c])).sum()), c, c)
        schema = cls([c for c in names if c in num], [c for c in names if c in cat], ids=ids)
        for c in schema.numerical:
            x, miss, bad = parsed[c] if c in parsed else parse_numbers(cols[c])
            if bad.any():                         # a few stray cells do not flip the column: report them
                rows = bad.nonzero()[0]
                schema.unparseable[c] = [(int(i), cols[c][i]) for i in rows[:5]]
                logger.warning("column %r: %d of %d values are not numbers (%s); it stays numerical "
                               "(processor.numeric_share %.2f) and those rows raise BadExample (train.skip_bad "
                               "skips them)", c, len(rows), len(x),
                               ", ".join(f"{row_name(row_names, i)}: {v!r}" for i, v in schema.unparseable[c]),
                               numeric_share)
            if np.isinf(x).any():
                raise BadExample(row_name(row_names, int(np.isinf(x).nonzero()[0][0])), c, "infinite value")
            mean, std = spread(x[~miss & ~bad], c)
            schema.mean.append(mean)
            schema.std.append(std)
        for c in names:
            if c in dat:
                schema.dates[c] = _fit_date(c, cols[c], c in named, date_reference, row_names)
        for c in schema.categorical:
            v = cols[c]
            counts = Counter(category_key(x) for x, m in zip(v, is_missing(v)) if not m)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            keep_ = [k for k, n in ranked if n >= min_frequency]
            schema.vocab[c] = keep_[:max_categories]
            present = sum(counts.values())
            lost = present - sum(counts[k] for k in schema.vocab[c])
            if lost:
                logger.warning("column %r: %d distinct values, %d kept (processor.max_categories: %d, "
                               "processor.min_frequency: %d): %d of %d rows (%.1f%%) map to 'unknown'; raise "
                               "processor.max_categories to keep more", c, len(ranked), len(schema.vocab[c]),
                               max_categories, min_frequency, lost, present, 100.0 * lost / present)
        return schema

    def encode_numerical(self, cols: dict[str, np.ndarray], n: int, names: Sequence[str] | None, *,
                         missing: str = "missing") -> tuple[Tensor, Tensor]:
        """``(values [n, num_features] normalised and 0 where missing, missing [n, num_features])``: the numerical
        columns, then each date column's features (a missing or unreadable date sets the flag of all of them); an
        absent column is all missing. ``missing="error"`` makes a missing cell (NaN, None) a :class:`BadExample`."""
        values = torch.zeros(n, self.num_features)
        absent = torch.ones(n, self.num_features, dtype=torch.bool)
        for j, c in enumerate(self.numerical):
            if c not in cols:
                continue
            x, miss = as_float(cols[c], c, names)
            if missing == "error" and miss.any():
                i = int(miss.nonzero()[0][0])
                raise BadExample(_where(names, i), c, f"missing value {shown(cols[c][i])} (NaN or empty; "
                                                      "processor.missing_values: missing flags it instead)")
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
        j = len(self.numerical)
        for c, d in self.dates.items():
            k = len(d.features)
            if c in cols:
                days, miss, bad = parse_dates(cols[c], named=d.named)
                if missing == "error" and (miss | bad).any():
                    i = int((miss | bad).nonzero()[0][0])
                    raise BadExample(_where(names, i), c, f"{'missing' if miss[i] else 'unreadable'} date "
                                                          f"{shown(cols[c][i])} (processor.missing_values: missing "
                                                          "flags it instead)")
                if bad.any() and c not in self._warned:
                    self._warned.add(c)
                    i = int(bad.nonzero()[0][0])
                    logger.warning("column %r: %s (%s) is not a date: read as missing (its missing flag is set; "
                                   "said once)", c, shown(cols[c][i]), _where(names, i))
                values[:, j:j + k] = torch.from_numpy(d.encode(days)).float()
                absent[:, j:j + k] = torch.from_numpy(~np.isfinite(days))[:, None]
            j += k
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
                raise BadExample(_where(names, i), c, f"unseen category {shown(v[i])} (known: {self.vocab[c][:10]}…; "
                                                      "processor.unknown_category: unknown maps it to 'unknown')")
            ids_all[:, j] = torch.from_numpy(ids)
        return ids_all

    def aligned_to(self, old: ColumnSchema) -> ColumnSchema:
        """This newly fitted schema's statistics under ``old``'s columns, column order, vocabularies and date
        features (category ids index an embedding table, features a token each; a refit must not renumber them).
        Categories ``old`` never saw map to unknown, and are said once per column."""
        if set(self.numerical) != set(old.numerical) or set(self.categorical) != set(old.categorical) \
                or set(self.dates) != set(old.dates):
            raise ValueError(f"--refit keeps the model's columns: numerical {old.numerical}, dates {list(old.dates)}, "
                             f"categorical {old.categorical}; the new data has numerical {self.numerical}, dates "
                             f"{list(self.dates)}, categorical {self.categorical}")
        mean, std = dict(zip(self.numerical, self.mean)), dict(zip(self.numerical, self.std))
        for c in old.categorical:
            known = set(old.vocab[c])
            unseen = [k for k in self.vocab[c] if k not in known]
            if unseen:
                logger.warning("column %r: %d categories of the new data are not in the model's vocabulary (%s): "
                               "they map to 'unknown'", c, len(unseen), ", ".join(map(repr, unseen[:5])))
        dates = {c: DateColumn(self.dates[c].reference, list(d.features), self.dates[c].mean, self.dates[c].std,
                               d.named) for c, d in old.dates.items()}
        return ColumnSchema(list(old.numerical), list(old.categorical), [mean[c] for c in old.numerical],
                            [std[c] for c in old.numerical], {c: list(old.vocab[c]) for c in old.categorical},
                            dates=dates, ids=list(old.ids))

    def state(self) -> dict[str, Any]:
        return {"numerical": self.numerical, "categorical": self.categorical, "mean": self.mean, "std": self.std,
                "vocab": self.vocab, "dates": {c: d.state() for c, d in self.dates.items()}, "ids": self.ids}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ColumnSchema:
        """The saved schema, checked: statistics match the columns, every mean finite and every std finite and
        at least :data:`MIN_STD` (a smaller one turns ordinary values into infinities in float32); ``dates`` and
        ``ids`` may be absent (a file written before dates were read)."""
        keys = ("numerical", "categorical", "mean", "std", "vocab")
        if not isinstance(state, dict) or any(k not in state for k in keys) or not isinstance(state["vocab"], dict) \
                or not all(isinstance(state[k], list) for k in keys[:4]) \
                or not isinstance(state.get("dates", {}), dict) or not isinstance(state.get("ids", []), list):
            raise ValueError(f"preprocessor.json: the schema state needs lists {list(keys[:4])} and a mapping "
                             f"'vocab', got {type(state).__name__} {sorted(state) if isinstance(state, dict) else ''}")
        schema = cls(list(state["numerical"]), list(state["categorical"]), list(state["mean"]), list(state["std"]),
                     {k: list(v) for k, v in state["vocab"].items()},
                     dates={str(c): DateColumn.from_state(c, d) for c, d in state.get("dates", {}).items()},
                     ids=[str(c) for c in state.get("ids", [])])
        if len(schema.mean) != len(schema.numerical) or len(schema.std) != len(schema.numerical) \
                or set(schema.vocab) != set(schema.categorical):
            raise ValueError("preprocessor.json: statistics do not match the schema")
        for c, m, s in zip(schema.numerical, schema.mean, schema.std):
            if not (isinstance(m, (int, float)) and isinstance(s, (int, float)) and np.isfinite(m)
                    and np.isfinite(s) and s >= MIN_STD):
                raise ValueError(f"preprocessor.json: column {c!r} has mean {m!r} and std {s!r}; "
                                 f"the mean must be finite and the std finite and >= {MIN_STD}")
        return schema
