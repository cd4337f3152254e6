"""Event histories → tensors. One raw example is one entity's history: a mapping of column → values (a dict of
arrays, a pandas DataFrame, a ``datasets`` row group) holding a time column and the event fields. Events are
sorted by time (stable: ties keep their order); a history longer than ``max_events`` keeps its most recent
``max_events`` events. The column schema (numerical vs categorical fields, statistics, vocabularies with a
missing id and an unknown bucket) comes from the core (:class:`zoo.schema.ColumnSchema`), as for tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig
from zoo.schema import ColumnError, ColumnSchema, is_missing, shown, spread, to_columns

NS_RANGE_US = 9_200_000_000_000_000 // 1000      # datetime64[ns] holds ±9.2e18 ns: 1677-09-21 … 2262-04-11
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass
class EventProcessorConfig(ProcessorConfig):
    entity_column: str = "entity"
    time_column: str = "time"
    fit_examples: int = 1000                 # histories the schema, statistics and vocabularies are learned from
    numerical: list[str] | None = None       # overrides of the inferred schema
    categorical: list[str] | None = None
    exclude: list[str] = field(default_factory=list)   # columns that are not event fields (labels, ids)
    max_categories: int = 128                # most frequent kept per field; the rest map to the unknown bucket
    numeric_share: float = 0.95
    min_frequency: int = 1
    max_events: int = 1000                   # a longer history keeps its most recent max_events events
    time_unit: str = "s"                     # unit of a numerical time column (datetimes and date strings parse)
    time_scale: float = 3600.0               # seconds; the time feature is log(1 + Δt / time_scale)
    missing_values: str = "error"            # a NaN/None in a numerical field: "error" or "missing" (own flag)
    unknown_category: str = "unknown"        # "unknown": map to the unknown bucket; "error"

    def validate(self) -> None:
        super().validate()
        self.check(bool(self.entity_column), "entity_column", "must name a column")
        self.check(bool(self.time_column), "time_column", "must name a column")
        self.check(self.entity_column != self.time_column, "time_column", "must differ from entity_column")
        self.check(self.max_categories >= 1, "max_categories", "must be >= 1")
        self.check(0 < self.numeric_share <= 1, "numeric_share", "must lie in (0, 1]")
        self.check(self.max_events >= 1, "max_events", "must be >= 1")
        self.check(self.time_unit in TIME_UNITS, "time_unit", f"must be one of {sorted(TIME_UNITS)}")
        self.check(self.time_scale > 0, "time_scale", "must be > 0")
        self.check(self.missing_values in ("error", "missing"), "missing_values", "must be 'error' or 'missing'")
        self.check(self.unknown_category in ("unknown", "error"), "unknown_category", "must be 'unknown' or 'error'")


def event_place(i: int, n: int) -> str:
    """What messages call event ``i`` (from 0) of a history of ``n``: its place among its entity's rows as the file
    lists them (or the history gives them), counted from 1 as a person counts rows."""
    return f"event {i + 1} of {n} as listed"


class _EventNames(Sequence):
    """``names[i]`` = "<entity> (event k of n as listed)": the event's place among its entity's rows as the
    file lists them (counted from 1, as a person counts rows), without building the strings up front."""

    def __init__(self, entity: str, n: int, order: np.ndarray) -> None:
        self.entity, self.n, self.order = entity, n, order

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:      # type: ignore[override]
        return f"{self.entity} ({event_place(int(self.order[i]), self.n)})"


def history_columns(example: Any, name: str) -> dict[str, np.ndarray]:
    """A raw history → a dict of equal-length numpy columns; anything else is a :class:`BadExample`."""
    if hasattr(example, "iloc") or hasattr(example, "to_pandas"):
        cols = to_columns(example)
    elif isinstance(example, Mapping):
        cols = {}
        for k, v in example.items():
            if torch.is_tensor(v):
                v = v.tolist()
            arr = v if isinstance(v, np.ndarray) else np.asarray(v)
            if arr.dtype.kind in "USO" and not isinstance(v, np.ndarray):    # text: keep the values as given
                arr = np.empty(len(v), dtype=object) if arr.ndim == 1 else arr
                if arr.ndim == 1:
                    arr[:] = list(v)
            if arr.ndim != 1:
                raise BadExample(name, str(k), f"expected one value per event, got shape {arr.shape}")
            cols[str(k)] = arr
    else:
        raise BadExample(name, "history", f"expected a mapping of columns (dict, DataFrame), got "
                                          f"{type(example).__name__}")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise BadExample(name, "history", f"columns of different lengths {lengths}")
    return cols


#: epoch times past this many seconds (year 5138) are another unit read as ``time_unit`` (milliseconds as seconds)
EPOCH_MAX_S = 1e11
#: epoch-like times (past 1973) of one history more than this factor apart mix units (seconds and milliseconds)
UNIT_FACTOR = 100.0


def check_time_unit(secs: np.ndarray, values: np.ndarray, unit: str, where: str, column: str) -> None:
    """A numerical time column holds one unit, ``processor.time_unit`` (docs/reliability.md): a value beyond year
    5138 in that unit, or, among epoch-like values (≥ 1e8 s), one more than 100× from the history's median (epoch
    milliseconds among seconds: ~1000×), is a :class:`BadExample` naming the event and the setting."""
    size = np.abs(secs)
    far = size > EPOCH_MAX_S
    median = float(np.median(size)) if size.size else 0.0
    if median >= 1e8:
        far |= (size > UNIT_FACTOR * median) | (size < median / UNIT_FACTOR)
    if far.any():
        i = int(far.nonzero()[0][0])
        what = ("lies past year 5138" if size[i] > EPOCH_MAX_S else
                f"is about {size[i] / median:.3g}x the history's median {median / TIME_UNITS[unit]:.6g}")
        raise BadExample(where, column, f"{event_place(i, len(values))}: timestamp {shown(values[i])} read in {unit} "
                                        f"{what}: a time "
                                        f"column holds one unit, processor.time_unit={unit!r} (epoch seconds and "
                                        "milliseconds mixed?)")


def parse_times(values: np.ndarray, unit: str, where: str, column: str) -> np.ndarray:
    """Timestamps → float64 seconds: numbers in ``unit``, numpy/pandas datetimes, or date strings (ISO 8601 and
    what ``pandas.to_datetime`` reads). A missing or unparseable one is a :class:`BadExample` naming the event."""
    if values.dtype.kind in "iuf":
        secs = values.astype(np.float64) * TIME_UNITS[unit]
        bad = ~np.isfinite(secs)
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise BadExample(where, column, f"{event_place(i, len(values))}: timestamp {shown(values[i])} "
                                            "is not a finite number "
                                            "(train.skip_bad: true skips the history)")
        check_time_unit(secs, values, unit, where, column)
        return secs
    if values.dtype.kind == "M":
        stamps = values
    else:
        import pandas as pd
        missing = is_missing(values)
        if missing.any():
            i = int(missing.nonzero()[0][0])
            raise BadExample(where, column, f"{event_place(i, len(values))}: missing timestamp {shown(values[i])} "
                                            "(train.skip_bad: true "
                                            "skips the history)")
        try:
            stamps = pd.to_datetime(pd.Series(values), utc=True, format="mixed").dt.tz_localize(None).to_numpy()
        except (ValueError, TypeError, OverflowError):
            for i, v in enumerate(values):       # name the first value that does not parse
                try:
                    pd.to_datetime(v, utc=True)
                except (ValueError, TypeError, OverflowError):
                    raise BadExample(where, column, f"{event_place(i, len(values))}: unparseable timestamp "
                                                    f"{shown(v)} (is "
                                                    "processor.time_column the time column?)") from None
            raise
    nat = np.isnat(stamps)
    if nat.any():
        i = int(nat.nonzero()[0][0])
        raise BadExample(where, column, f"{event_place(i, len(values))}: missing timestamp {shown(values[i])} "
                                        "(train.skip_bad: true skips "
                                        "the history)")
    # nanoseconds end in 2262 ('2399-01-01' wrapped to 1814): outside their range, microseconds (±290,000 years)
    micros = stamps.astype("datetime64[us]").astype(np.int64)
    if np.abs(micros).max(initial=0) < NS_RANGE_US:
        return stamps.astype("datetime64[ns]").astype(np.int64).astype(np.float64) * 1e-9
    return micros.astype(np.float64) * 1e-6


class EventProcessor(Processor):
    """One history → ``cat [T, F_cat]`` (ids; 0 missing, 1 unknown), ``num [T, F_num]`` (normalised; 0 where
    missing), ``num_missing [T, F_num]``, ``dt [T]`` = log(1 + Δt / time_scale) since the previous event (0 for
    the first; the encoder standardises it with the fitted ``time_mean``/``time_std``), time-ordered, the most
    recent ``max_events`` events. ``collate`` pads to the longest history with ``padding_mask`` (``True`` =
    padding) and ``lengths``."""

    config_class = EventProcessorConfig

    def __init__(self, config: EventProcessorConfig | None = None) -> None:
        super().__init__(config)
        self.schema = ColumnSchema()
        self.time_mean, self.time_std = 0.0, 1.0     # of log(1 + Δt / time_scale) over the fitted histories

    @property
    def fields(self) -> list[str]:
        return self.schema.columns

    def _not_fields(self) -> set[str]:
        cfg = self.config
        return {cfg.entity_column, cfg.time_column, *cfg.exclude}

    def fit(self, examples: Any) -> EventProcessor:
        """Infer the event fields and fit statistics and vocabularies on the events of a sample of histories."""
        cfg = self.config
        parts: dict[str, list[np.ndarray]] = {}
        gaps = []                                # the time feature's statistics, as the numerical fields have
        count = 0
        for i in range(len(examples)):
            cols = history_columns(examples[i], f"history {i}")
            if cfg.time_column not in cols:
                raise ColumnError(f"history {i}", cfg.time_column, f"no time column {cfg.time_column!r} (columns: "
                                                                   f"{sorted(cols)}; processor.time_column names it)")
            for k, v in cols.items():
                parts.setdefault(k, []).append(v)
            t = parse_times(cols[cfg.time_column], cfg.time_unit, f"history {i}", cfg.time_column)
            gaps.append(self._log_gaps(np.sort(t)[-cfg.max_events:]))
            count += 1
        if not count or not any(len(v) for p in parts.values() for v in p):
            raise ValueError("cannot fit the event schema on no events (0 histories or only empty ones)")
        cols = {k: np.concatenate(v) if len(v) == count else None for k, v in parts.items()}
        ragged = sorted(k for k, v in cols.items() if v is None)
        if ragged:
            raise ValueError(f"column(s) {ragged} appear in some histories only: every history needs the same columns "
                             "(processor.exclude leaves columns out)")
        names = [c for c in cols if c not in self._not_fields()]
        if not names:
            raise ValueError(f"the histories have no event fields besides {sorted(self._not_fields() & set(cols))}")
        self.schema = ColumnSchema.infer(cols, names, numerical=cfg.numerical, categorical=cfg.categorical,
                                         max_categories=cfg.max_categories, numeric_share=cfg.numeric_share,
                                         min_frequency=cfg.min_frequency)
        gaps = np.concatenate(gaps)
        self.time_mean, self.time_std = spread(gaps, cfg.time_column) if len(gaps) else (0.0, 1.0)
        return self

    def align_to(self, old: Processor) -> None:
        self.schema = self.schema.aligned_to(old.schema)

    def _log_gaps(self, t: np.ndarray) -> np.ndarray:
        """``log(1 + Δt / time_scale)`` between consecutive events of time-ordered ``t`` (one fewer than ``t``)."""
        return np.log1p(np.diff(t) / self.config.time_scale)

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        if not self.schema.fitted:
            raise RuntimeError("the processor is not fitted: call fit(histories) first")
        cfg = self.config
        name = name or "history"
        cols = history_columns(example, name)
        if cfg.time_column not in cols:
            raise ColumnError(name, cfg.time_column, f"no time column {cfg.time_column!r} (columns: {sorted(cols)}; "
                                                     "processor.time_column names it)")
        absent = [c for c in self.fields if c not in cols]
        if absent:
            raise ColumnError(name, absent[0], f"missing event field(s) {absent}")
        if cfg.entity_column in cols and len(cols[cfg.entity_column]):
            ent = cols[cfg.entity_column]
            if not (ent == ent[0]).all():
                raise BadExample(name, cfg.entity_column, f"a history holds several entities "
                                                          f"({sorted({str(e) for e in ent})[:5]}; "
                                                          "processor.entity_column names the entity column)")
        t = parse_times(cols[cfg.time_column], cfg.time_unit, name, cfg.time_column)
        n = len(t)
        if n == 0:
            raise BadExample(name, cfg.time_column, "the entity has no events (zero-length history)")
        order = np.argsort(t, kind="stable")[-cfg.max_events:]    # time order; the most recent max_events
        t = t[order]
        fields = {c: cols[c][order] for c in self.fields}
        names = _EventNames(name, len(order), order)
        num, num_missing = self.schema.encode_numerical(fields, len(order), names, missing=cfg.missing_values)
        cat = self.schema.encode_categorical(fields, len(order), names, unknown=cfg.unknown_category)
        dt = np.zeros(len(t))
        dt[1:] = self._log_gaps(t)
        return {"cat": cat, "num": num, "num_missing": num_missing, "dt": torch.from_numpy(dt).float()}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        lengths = torch.tensor([len(it["dt"]) for it in items])
        longest = int(lengths.max())
        pad = torch.arange(longest)[None, :] >= lengths[:, None]

        def stack(key: str) -> Tensor:
            first = items[0][key]
            out = first.new_zeros((len(items), longest, *first.shape[1:]))
            for i, it in enumerate(items):
                out[i, : len(it[key])] = it[key]
            return out
        return {"cat": stack("cat"), "num": stack("num"), "num_missing": stack("num_missing"), "dt": stack("dt"),
                "padding_mask": pad, "lengths": lengths}

    def left_out(self, example: Any, *, name: str | None = None) -> str | None:
        """How many older events a history longer than ``max_events`` leaves out (``zoo embed`` says it)."""
        try:
            n = len(example[self.config.time_column])
        except (KeyError, TypeError, IndexError):
            return None
        keep = self.config.max_events
        return None if n <= keep else f"{n - keep} older events left out (the most recent {keep} of {n} kept: " \
                                      "max_events)"

    def length(self, example: Any) -> int | None:
        try:
            return min(len(example[self.config.time_column]), self.config.max_events)
        except (KeyError, TypeError, IndexError):
            return None

    def read(self, path: str) -> Any:
        """A file holding one entity's events (CSV/parquet)."""
        return to_columns(path)

    def read_many(self, path: str) -> list[Any]:
        """Every entity's history in an event table file (CSV/parquet), grouped by the entity column."""
        return [history for _, history in self.read_named(path)]

    def read_named(self, path: str) -> list[tuple[str, Any]]:
        """Every entity's history, named by its entity id."""
        from .data import group_events
        histories = group_events(to_columns(path), self.config.entity_column)
        return [(str(e), histories[i]) for i, e in enumerate(histories.entities)]

    def input_columns(self) -> list[str] | None:
        return self.schema.columns

    def encoder_config(self) -> dict[str, Any]:
        """What the encoder is built for: the fields, and the time feature's statistics (the encoder standardises
        Δt itself, so that a subsequence can start at Δt = 0 as a history does)."""
        return {"num_numerical": self.schema.num_features, "cardinalities": self.schema.cardinalities,
                "time_mean": self.time_mean, "time_std": self.time_std}

    def state(self) -> dict[str, Any]:
        return {**self.schema.state(), "time_mean": self.time_mean, "time_std": self.time_std}

    def load_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        mean, std = state.pop("time_mean", 0.0), state.pop("time_std", 1.0)
        if not (isinstance(mean, (int, float)) and isinstance(std, (int, float)) and np.isfinite(mean)
                and np.isfinite(std) and std > 0):
            raise ValueError(f"preprocessor.json: time_mean {mean!r} / time_std {std!r} must be finite, the std > 0")
        self.schema = ColumnSchema.from_state(state)
        self.time_mean, self.time_std = float(mean), float(std)
