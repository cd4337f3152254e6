"""What ``--data PATH_OR_HF_ID`` means, decided once for ``zoo pretrain`` and ``zoo finetune`` alike
(docs/architecture.md, "Data"): a folder → the modality's folder source, a table file → its table source, anything
else → a Hugging Face ``datasets`` id (``source: hf``). Every source reads the same key names: ``path``,
``label_column``, ``entity_column``, ``split``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo import Modality

__all__ = ["data_spec", "describe_data", "command_arg", "command_line", "named_inputs", "READING_KEYS"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".json", ".jsonl")
#: keys of a recipe's ``data.train`` that say how the data is read, not which data: they apply to ``--data`` too
#: (a node-level graph's subgraph mini-batches, docs/modalities.md); ``--set data.train.KEY=null`` drops one
READING_KEYS = ("minibatch",)


def data_spec(modality: Modality, data: str | Path, *, label_column: str | None = None, split: str | None = None,
              entity_column: str | None = None) -> dict[str, Any]:
    """The data spec of ``--data``: ``{"source": ..., "path": ..., [label_column, split, entity_column]}``."""
    path = Path(str(data)).expanduser()
    if path.is_dir():
        if modality.folder_source is None:
            raise ValueError(f"modality {modality.name!r} reads no folders: give a table file or a datasets id")
        spec: dict[str, Any] = {"source": modality.folder_source, "path": str(path)}
    elif path.is_file():
        if modality.table_source is not None:
            spec = {"source": modality.table_source, "path": str(path)}
        elif modality.folder_source is not None:
            raise ValueError(f"--data {data}: a {modality.name} model reads a folder of files (one subfolder per "
                             "class), not a single file; a table of file paths and labels is read through a recipe's "
                             f"data spec: {{source: hf, path: csv, data_files: {path.name}, input_column: <the paths' "
                             "column>, label_column: <the labels'>}} (docs/data.md)")
        else:
            raise ValueError(f"--data {data}: modality {modality.name!r} reads no table files")
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(f"--data {data}: not a table file ({', '.join(TABLE_SUFFIXES)}): data of another kind?")
    elif path.suffix or str(data).startswith((".", "/", "~")):
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    else:
        spec = {"source": "hf", "path": str(data)}
    if label_column:
        spec["label_column"] = label_column
    if split:
        spec["split"] = split
    if entity_column and spec["source"] != modality.folder_source:
        spec["entity_column"] = entity_column
    return spec


def describe_data(data: str | Path) -> str:
    """What a card and ``config.json`` say about ``--data``: a Hub id as it is, a local file or folder by its name
    only (nothing published names a local path)."""
    path = Path(str(data)).expanduser()
    return path.name if path.exists() else str(data)


def command_arg(value: str | Path) -> str:
    """A path as a reproduce command shows it: relative as the user gave it, an absolute one portably (relative to
    the working folder, ``~/…``, ``$ZOO_DATA/…``, or ``<local>/name``); a Hub id as it is."""
    from zoo.paths import portable
    text = str(value)
    return portable(str(Path(text).expanduser().resolve())) if Path(text).expanduser().is_absolute() else text


def command_line(verb: str, target: str | Path, flags: list[tuple[str, Any]]) -> str:
    """The ``zoo VERB TARGET --flag value …`` command that reproduces a run (flags whose value is ``None`` left
    out; the target and ``--data`` shown by :func:`command_arg`), for cards and ``config.json``."""
    parts = [f"zoo {verb}", command_arg(target)]
    for flag, value in flags:
        if value is True:
            parts.append(flag)
        elif value is not None:
            parts += [flag, command_arg(value) if flag in ("--data", "--init") else str(value)]
    return " ".join(parts)


def named_inputs(processor: Any, path: str | Path, name_column: str | None = None) -> list[tuple[str, Any]]:
    """The examples of one input with their names: a folder through the modality's folder source (every file of
    its kind, named by path), a file through the processor (a table's rows, ``file[row]``, or by their
    ``name_column`` cell; an event log's entities, by their id)."""
    from zoo import get_modality
    from zoo.plugin import read_examples
    modality = get_modality(processor.modality)
    if Path(path).is_dir() and modality.folder_source is not None:
        data = modality.load_data(data_spec(modality, str(path)))
        named = [(data.name(i), data.examples[i]) for i in range(len(data))]
    else:
        named = read_examples(processor, str(path))
    return named if name_column is None else _by_column(named, name_column, str(path))


def _by_column(named: list[tuple[str, Any]], column: str, path: str) -> list[tuple[str, Any]]:
    """Each row named by its ``column`` cell (``--name-column``); a missing column, an empty cell or examples that
    are not rows are named errors, a repeated name a warning (searches and shards name rows by it)."""
    import logging

    import numpy as np
    import pandas as pd
    out = []
    for name, example in named:
        if not isinstance(example, dict) or column not in example:
            known = f"its columns: {sorted(example)}" if isinstance(example, dict) else "its examples are not rows"
            raise ValueError(f"{path}: --name-column {column!r}: no such column ({known})")
        value = example[column]
        if np.ndim(value) != 0:
            raise ValueError(f"{path}: --name-column {column!r} holds {np.size(value)} values per example, not one "
                             "(an event log's entities are already named by its entity column)")
        if pd.isna(value) or str(value).strip() == "":
            raise ValueError(f"{path}: --name-column {column!r} is empty in {name}")
        out.append((str(value), example))
    counts = pd.Series([n for n, _ in out]).value_counts()
    if len(counts) and counts.iloc[0] > 1:
        logging.getLogger("zoo").warning("%s: --name-column %r repeats %d name(s) (e.g. %r, %d times): results "
                                         "with that name cannot be told apart", path, column,
                                         int((counts > 1).sum()), counts.index[0], int(counts.iloc[0]))
    return out

