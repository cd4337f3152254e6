"""Schema-aware tabular processor: infers numerical, date and categorical columns (leaving out ids), fits
normalisation statistics, date references and category vocabularies, represents missing values explicitly, and
travels with the model in ``preprocessor.json`` (docs/architecture.md, "The modality contract"). Tables come from
pandas, pyarrow, ``datasets``, CSV/parquet files or dict rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo import BadExample, Processor, ProcessorConfig
from zoo.schema import MISSING, UNKNOWN, ColumnError, ColumnSchema, Rows, parse_dates, to_columns

__all__ = ["MISSING", "UNKNOWN", "ColumnError", "Rows", "TabularProcessor", "TabularProcessorConfig", "to_columns"]


@dataclass
class TabularProcessorConfig(ProcessorConfig):
    fit_examples: int = 100_000              # rows the statistics and vocabularies are learned from
    numerical: list[str] | None = None       # overrides of the inferred schema
    categorical: list[str] | None = None     # (a column named here is a category: never a date, never an id)
    date_columns: list[str] | None = None    # read as dates (ISO strings, datetimes; numbers as Unix seconds)
    date_reference: str | None = None        # elapsed days count from this ISO date (default: the first fitted day)
    exclude: list[str] = field(default_factory=list)   # e.g. the label column
    include: list[str] = field(default_factory=list)   # kept although all-distinct (otherwise left out as ids)
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
        if self.date_reference is not None:
            days, _, bad = parse_dates(np.array([self.date_reference], dtype=object), named=True)
            self.check(not bad.any() and bool(np.isfinite(days).all()), "date_reference",
                       "must be an ISO date or datetime, e.g. 2024-01-01")


class TabularProcessor(Processor):
    """Rows → ``num [F_num]`` (normalised, 0 where missing; the numerical columns, then each date column's
    features: elapsed days, and year / week / day position as sin and cos), ``num_missing [F_num]``, ``cat [F_cat]``
    (ids; 0 = missing, 1 = unknown). Fit once on training data; the schema, statistics, date references and
    vocabularies are saved as ``preprocessor.json``. All-distinct text or integer columns (ids) are left out
    unless ``include`` names them."""

    config_class = TabularProcessorConfig

    def __init__(self, config: TabularProcessorConfig | None = None) -> None:
        super().__init__(config)
        self.schema = ColumnSchema()

    # the schema's fields, read as before (``processor.numerical`` etc.)
    numerical = property(lambda self: self.schema.numerical)
    categorical = property(lambda self: self.schema.categorical)
    mean = property(lambda self: self.schema.mean)
    std = property(lambda self: self.schema.std)
    vocab = property(lambda self: self.schema.vocab)
    dates = property(lambda self: self.schema.dates)
    unparseable = property(lambda self: self.schema.unparseable)
    fitted = property(lambda self: self.schema.fitted)
    cardinalities = property(lambda self: self.schema.cardinalities)

    def fit(self, examples: Any) -> TabularProcessor:
        cols = to_columns(examples)
        cfg = self.config
        if not cols or len(next(iter(cols.values()))) == 0:
            raise ValueError(f"cannot fit the table schema on an empty table ({len(cols)} columns, 0 rows)")
        names = [c for c in cols if c not in set(cfg.exclude)]
        self.schema = ColumnSchema.infer(cols, names, numerical=cfg.numerical, categorical=cfg.categorical,
                                         dates=cfg.date_columns, include=cfg.include, drop_ids=True,
                                         date_reference=cfg.date_reference, max_categories=cfg.max_categories,
                                         numeric_share=cfg.numeric_share, min_frequency=cfg.min_frequency,
                                         row_names=getattr(examples, "names", None))
        if not self.schema.fitted:
            raise ValueError(f"no input columns are left (ids left out: {self.schema.ids}; processor.include keeps "
                             "them)")
        return self

    def align_to(self, old: Processor) -> None:
        self.schema = self.schema.aligned_to(old.schema)

    def transform(self, table: Any, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """A whole table at once (vectorised per column) → ``num [N, F_num]``, ``num_missing``, ``cat``."""
        if not self.fitted:
            raise RuntimeError("the processor is not fitted: call fit(train_table) first")
        cols = to_columns(table)
        cfg = self.config
        needed = self.schema.columns
        known = set(needed) | set(self.schema.ids) | set(cfg.exclude)
        where = names[0] if names is not None and len(names) == 1 else "table"
        extra = sorted(set(cols) - known)
        if extra and cfg.extra_columns == "error":
            raise ColumnError(where, extra[0], f"unknown column(s) {extra}: the model was trained on {needed} "
                                               "(processor.extra_columns: ignore ignores them)")
        absent = [c for c in needed if c not in cols]
        if absent and cfg.missing_columns == "error":
            raise ColumnError(where, absent[0], f"missing column(s) {absent} (processor.missing_columns: missing "
                                                "treats them as missing)")
        n = len(next(iter(cols.values()))) if cols else 0
        num, num_missing = self.schema.encode_numerical(cols, n, names)
        cat = self.schema.encode_categorical(cols, n, names, unknown=cfg.unknown_category)
        return {"num": num, "num_missing": num_missing, "cat": cat}

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        if not isinstance(example, dict):
            raise BadExample(name or "input", "row", f"expected a dict row, got {type(example).__name__}")
        for k, v in example.items():
            if isinstance(v, (list, tuple, dict, set, np.ndarray, torch.Tensor)) and np.ndim(v) != 0:
                raise BadExample(name or "input", str(k), f"a {type(v).__name__} where one value is expected")
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

    def read_named(self, path: str) -> list[tuple[str, Any]]:
        """Every row, named ``path[row]`` (as fine-tuning's predictions name a table's rows)."""
        return [(f"{path}[{j}]", row) for j, row in enumerate(self.read_many(path))]

    def input_columns(self) -> list[str] | None:
        return self.schema.columns

    def encoder_config(self) -> dict[str, Any]:
        return {"num_numerical": self.schema.num_features, "cardinalities": self.cardinalities}

    def state(self) -> dict[str, Any]:
        return self.schema.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.schema = ColumnSchema.from_state(state)
