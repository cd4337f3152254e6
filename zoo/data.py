"""Data sources as modalities return them (docs/architecture.md, "Data"): raw examples read on demand, never
decoded here.

- :class:`ExampleSet` — map-style: random access and a length (a file list, a memory-mapped Hugging Face
  ``Dataset``, a table's rows), with labels and names looked up per index.
- :class:`StreamSet` — iterable: examples read in order (a ``datasets.IterableDataset`` with
  ``streaming=True``, sharded parquet), split into disjoint parts per rank and worker.
- :func:`hf_source` — the generic ``source: hf`` every modality accepts, through ``datasets.load_dataset``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ExampleSet", "StreamSet", "HFStream", "Record", "take", "stratified_indices", "hf_source", "HF_KEYS",
           "folder_source"]

Record = tuple[Any, "int | None", str]     # (raw example, label or None, name for messages)


@dataclass
class ExampleSet:
    """Map-style raw examples with optional integer labels, names for messages and label names. ``examples``,
    ``labels`` and ``names`` may be lazy sequences: only ``len`` and indexing are used."""

    examples: Sequence[Any]
    labels: Sequence[int] | None = None
    names: Sequence[str] | None = None
    label_names: Sequence[str] | None = None
    regression: bool = False               # labels are numbers to predict (floats), not class ids

    def __len__(self) -> int:
        return len(self.examples)

    def name(self, i: int) -> str:
        return str(self.names[i]) if self.names is not None else f"example {i}"

    def label(self, i: int) -> int | float | None:
        if self.labels is None or self.labels[i] is None:          # an empty label cell (docs/reliability.md)
            return None
        return float(self.labels[i]) if self.regression else int(self.labels[i])

    def record(self, i: int) -> Record:
        return self.examples[i], self.label(i), self.name(i)

    def subset(self, idx: Sequence[int]) -> ExampleSet:
        """The examples at ``idx``, with their labels and names."""
        idx = [int(i) for i in idx]
        return ExampleSet(take(self.examples, idx), [self.labels[i] for i in idx] if self.labels is not None
                          else None, [self.name(i) for i in idx], self.label_names, self.regression)


def stratified_indices(labels: Sequence[int], fraction: float, seed: int = 0) -> list[int]:
    """A seeded, stratified sample: ``max(1, round(fraction * n_c))`` random indices of every class ``c``
    (all of them at ``fraction`` 1), returned in ascending order."""
    import numpy as np
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    y = np.asarray(list(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        keep.append(rng.choice(members, max(1, round(fraction * len(members))), replace=False))
    return sorted(int(i) for i in np.concatenate(keep))



def take(examples: Sequence[Any], idx: Sequence[int]) -> Sequence[Any]:
    """``examples[idx]``: through ``select`` where the sequence has one (tables, ``datasets.Dataset``) so that a
    processor can work on a batch of rows at once, else a list."""
    idx = [int(i) for i in idx]
    if hasattr(examples, "select"):
        return examples.select(idx)
    return [examples[i] for i in idx]


class StreamSet:
    """Raw examples read in order. ``records(part, parts, epoch)`` yields the ``part``-th of ``parts`` disjoint
    parts of one pass (no example in two parts, none in no part); the union of all parts is the whole set."""

    label_names: Sequence[str] | None = None
    description: str = "stream"

    def records(self, part: int, parts: int, epoch: int) -> Iterator[Record]:
        raise NotImplementedError

    def head(self, n: int) -> list[Record]:
        """The first ``n`` records of epoch 0 (the processor's fit sample)."""
        out = []
        for rec in self.records(0, 1, 0):
            if len(out) >= n:
                break
            out.append(rec)
        return out


class HFStream(StreamSet):
    """A ``datasets.IterableDataset``: each part is ``split_dataset_by_node(rank=part, world_size=parts)`` (whole
    shards when their count divides ``parts``, else every ``parts``-th example), iterated with ``.iter`` so that
    ``datasets`` does not split it a second time by DataLoader worker; ``set_epoch`` reorders the shards."""

    def __init__(self, dataset: Any, to_record: Callable[[dict[str, Any], str], Record], *, name: str,
                 label_names: Sequence[str] | None = None, read_batch: int = 64) -> None:
        self.dataset, self.to_record, self.description = dataset, to_record, name
        self.label_names, self.read_batch = label_names, read_batch

    def records(self, part: int, parts: int, epoch: int) -> Iterator[Record]:
        from datasets.distributed import split_dataset_by_node
        ds = self.dataset
        ds.set_epoch(epoch)
        if parts > 1:
            ds = split_dataset_by_node(ds, rank=part, world_size=parts)
        k = 0
        for batch in ds.iter(batch_size=self.read_batch):
            cols = list(batch)
            for i in range(len(batch[cols[0]]) if cols else 0):
                yield self.to_record({c: batch[c][i] for c in cols},
                                     f"{self.description} part {part}/{parts} epoch {epoch} row {k}")
                k += 1


class _Column(Sequence):
    """One column of a ``datasets.Dataset``, read row by row (nothing materialised)."""

    def __init__(self, ds: Any, column: str | None, drop: Sequence[str] = (), mapping: dict | None = None,
                 labels: bool = False) -> None:
        self.ds, self.column, self.drop, self.mapping, self.labels = ds, column, set(drop), mapping, labels

    def __len__(self) -> int:
        return len(self.ds)

    def _value(self, row: dict[str, Any]) -> Any:
        if self.column is None:
            return {k: v for k, v in row.items() if k not in self.drop}
        v = row[self.column]
        if self.labels and (v is None or v != v):      # an empty label cell: no label (never a class 'nan')
            return None
        return self.mapping[v] if self.mapping is not None else v

    def __iter__(self) -> Iterator[Any]:
        if self.column is None or not self.labels:
            return (self[i] for i in range(len(self)))
        return (self._value({self.column: v}) for v in self.ds[self.column])      # one column read, not each row

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        return self._value(self.ds[int(i)])

    def select(self, idx: Sequence[int]) -> list[Any]:
        cols = self.ds[list(idx)]
        keys = list(cols)
        return [self._value({k: cols[k][j] for k in keys}) for j in range(len(idx))]


HF_KEYS = {"source", "path", "name", "data_files", "data_dir", "split", "streaming", "input_column", "label_column",
           "name_column", "label_names", "read_batch", "limit", "problem_type"}


def hf_source(spec: dict[str, Any], *, input_column: str | None = None,
              prepare: Callable[[Any, dict[str, Any]], Any] | None = None) -> ExampleSet | StreamSet:
    """``source: hf`` — any data set ``datasets.load_dataset`` reads: ``path`` (a Hub id or a builder such as
    ``parquet``, ``csv``, ``json``, ``audiofolder``), ``name``, ``data_files`` / ``data_dir``, ``split``
    (default ``train``), ``streaming`` (an ``IterableDataset``: nothing is read before training) and the columns:
    ``input_column`` (the raw example; absent: the whole row without the label and name columns, as tables
    want), ``label_column`` (optional; class names from a ``ClassLabel`` feature, ``label_names`` or, map-style,
    the column's sorted unique values; with ``problem_type: regression`` the column's numbers as they are;
    ``auto``: regression when they are numbers with more than 20 distinct values),
    ``name_column`` (what errors call the example). ``prepare(ds, spec)``
    is the modality's hook, e.g. audio keeps the encoded bytes (``Audio(decode=False)``) for its processor."""
    from datasets import load_dataset
    unknown = sorted(set(spec) - HF_KEYS)
    if unknown:
        raise KeyError(f"source hf: unknown key(s) {unknown}; known: {sorted(HF_KEYS)}")
    if "path" not in spec:
        raise KeyError("source hf needs 'path': a Hub id or a builder such as parquet, csv, json, audiofolder")
    kwargs = {k: spec[k] for k in ("name", "data_files", "data_dir") if spec.get(k) is not None}
    streaming = bool(spec.get("streaming", False))
    try:
        ds = load_dataset(spec["path"], split=spec.get("split", "train"), streaming=streaming, **kwargs)
    except (FileNotFoundError, ValueError, KeyError):
        raise
    except Exception as err:                  # the Hub unreachable, no such dataset: say what was looked for
        raise FileNotFoundError(f"{spec['path']}: not a local file or folder, and `datasets` cannot load it as a "
                                f"dataset ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    columns = list(ds.column_names or ds.features or [])
    inp = spec.get("input_column", input_column)
    label_col, name_col = spec.get("label_column"), spec.get("name_column")
    for what, col in (("input_column", inp), ("label_column", label_col), ("name_column", name_col)):
        if col is not None and columns and col not in columns:
            raise KeyError(f"source hf {spec['path']}: {what} {col!r} is not a column (columns: {columns})")
    if prepare is not None:
        ds = prepare(ds, {**spec, "input_column": inp})
    problem = spec.get("problem_type", "classification")
    if problem not in ("classification", "regression", "auto"):
        raise ValueError(f"source hf: problem_type must be 'classification', 'regression' or 'auto', got {problem!r}")
    uniques = None
    if problem == "auto":                     # numbers with more than 20 distinct values: a regression target
        uniques = ds.unique(label_col) if label_col and not streaming else None
        given = [v for v in uniques or [] if v is not None and v == v]           # not None, not NaN
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given)
        problem = "regression" if uniques is not None and numeric and len(given) > 20 else "classification"
    regression = problem == "regression" and label_col is not None
    label_names = spec.get("label_names") if not regression else None
    feature = ds.features.get(label_col) if (label_col and ds.features and not regression) else None
    if label_names is None and hasattr(feature, "names"):
        label_names = list(feature.names)
    mapping = None
    if label_col and label_names is None and not streaming and not regression:
        # the values present, in order (numbers numerically): labels {1, 5} are two classes, not six
        present = [v for v in (uniques if uniques is not None else ds.unique(label_col)) if v is not None and v == v]
        values = sorted(present,
                        key=lambda v: (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else (1, 0, str(v)))
        label_names, mapping = [str(v) for v in values], {v: i for i, v in enumerate(values)}
    elif label_names is not None and not hasattr(feature, "names"):
        mapping = {v: i for i, v in enumerate(label_names)}
    drop = [c for c in (label_col, name_col) if c]
    title = spec.get("data_dir") or spec.get("data_files") or spec["path"]
    if streaming:
        def to_record(row: dict[str, Any], where: str) -> Record:
            example = row[inp] if inp is not None else {k: v for k, v in row.items() if k not in drop}
            label = None
            if label_col is not None:
                v = row[label_col]
                if v is None or v != v:
                    raise ValueError(f"{where}: field {label_col!r}: an empty label cell (fill it, or give "
                                     "label_names and leave the row out of the stream)")
                label = float(v) if regression else int(mapping[str(v)] if mapping is not None else v)
            return example, label, str(row[name_col]) if name_col else where
        if mapping is not None:
            mapping = {str(k): v for k, v in mapping.items()}
        return HFStream(ds, to_record, name=f"{spec['path']}:{title}", label_names=label_names,
                        read_batch=int(spec.get("read_batch", 64)))
    if "limit" in spec:
        ds = ds.select(range(min(int(spec["limit"]), len(ds))))
    names = _Column(ds, name_col) if name_col else _Names(f"{spec['path']}[{{}}]", len(ds))
    labels = _Column(ds, label_col, mapping=mapping, labels=True) if label_col else None
    return ExampleSet(_Column(ds, inp, drop), labels, names, label_names, regression)


class _Names(Sequence):
    def __init__(self, pattern: str, n: int) -> None:
        self.pattern, self.n = pattern, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.pattern.format(int(i))


def _say_unread(others: list[Path], root: Path, kind: str) -> None:
    """A warning counting the files of a folder that are not read (no suffix of its kind), by suffix: a file
    left out is said, never dropped in silence."""
    if others:
        from collections import Counter
        by = Counter(p.suffix.lower() or "no suffix" for p in others).most_common()
        logging.getLogger("zoo").warning("%s: %d file(s) not read, not %s files (%s)", root, len(others), kind,
                                         ", ".join(f"{n} {s}" for s, n in by[:6]) + (", …" if len(by) > 6 else ""))


def folder_source(spec: dict[str, Any], suffixes: Sequence[str], kind: str) -> ExampleSet:
    """``source: folder`` — the files of ``path`` whose suffix is one of ``suffixes`` (``kind`` names them in
    messages), labelled by their class subfolder (``path/<class>/...``; files directly in ``path`` make an
    unlabelled set). ``split`` picks ``path/<split>`` when that folder exists (``train``, the default, may be the
    folder itself). Examples are the file paths, named by their path as given."""
    root, split = Path(spec["path"]).expanduser(), spec.get("split")
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} not found")
    if split is None and (root / "train").is_dir():
        split = "train"
    other_splits: set[Path] = set()
    if split is not None and (root / str(split)).is_dir():
        root = root / str(split)
    elif split not in (None, "train"):
        raise FileNotFoundError(f"{root}: no {split}/ subfolder")
    else:                                   # the folder itself is the training data: its test/ is not
        other_splits = {root / s for s in ("test", "validation")}
    listed = [p for p in root.rglob("*") if p.is_file() and not any(d in p.parents for d in other_splits)]
    files = sorted(p for p in listed if p.suffix.lower() in suffixes)
    _say_unread([p for p in listed if p.suffix.lower() not in suffixes and not p.name.startswith(".")], root, kind)
    if not files:
        others = sorted({p.suffix.lower() or p.name for p in root.rglob("*") if p.is_file()})
        raise FileNotFoundError(f"no {kind} files ({', '.join(suffixes)}) under {root}"
                                + (f"; it holds {', '.join(others[:8])} files: data of another kind?" if others
                                   else ": the folder is empty"))
    classes = sorted({p.relative_to(root).parts[0] for p in files if p.parent != root})
    labelled = bool(classes) and all(p.parent != root for p in files)
    if labelled:                            # a class folder without files is an error, not a class dropped
        empty = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in classes
                       and d not in other_splits and not d.name.startswith("."))
        if empty:
            raise FileNotFoundError(f"{root}: class folder(s) {empty} hold no {kind} files "
                                    f"({', '.join(suffixes)}): add files or remove the folder(s)")
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[p.relative_to(root).parts[0]] for p in files] if labelled else None
    return ExampleSet([str(p) for p in files], labels, [str(p) for p in files], classes if labelled else None)
