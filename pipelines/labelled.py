"""The labelled data of a fine-tuning run, decided once (docs/architecture.md, "Fine-tuning"): the training,
validation and test sets, the task (classification or regression) and the label names, checked — label spaces
of train and test, classes with too few examples, a label or id column that the model would read as an input."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo import BadExample, ExampleSet, Modality, Processor, StreamSet
from zoo.data import stratified_indices

from .data import drop_unreadable
from .data_spec import data_spec, describe_data

__all__ = ["LabelledData", "load_labelled", "check_label_spaces", "held_out_split", "check_not_an_input",
           "check_evaluation_labels",
           "drop_unlabelled"]

logger = logging.getLogger(__name__)

Data = ExampleSet | StreamSet


@dataclass
class LabelledData:
    """What fine-tuning trains on, validates on and reports on, with its task and label names."""

    train: Data
    test: Data
    validation: Data | None
    task: str                                # "classification" or "regression"
    label_names: list[str]                   # a regression: the one target name
    description: str                         # what cards and config.json name (never a local path)
    spec: dict[str, Any] | None = None       # the training data's spec (own data)
    skipped: int = 0                         # examples left out as unreadable before training (finetune.skip_bad)
    unread_train: set[str] = field(default_factory=set)   # met unreadable by the BatchNorm pass (training's own)
    unread_held: set[str] = field(default_factory=set)    # met unreadable in validation or the test


def _names(data: Data) -> list[str]:
    if data.label_names is not None:
        return [str(n) for n in data.label_names]
    if isinstance(data, ExampleSet) and data.labels is not None:
        return [str(v) for v in sorted({int(y) for y in data.labels})]
    raise ValueError("fine-tuning needs labelled data (a label column, class folders, or label names for a stream)")


def check_label_spaces(train: Data, test: Data, min_per_class: int = 2) -> list[str]:
    """The label names both sets share, in order; different names stop the run naming both lists, and classes
    with fewer than ``min_per_class`` training examples are named."""
    a, b = _names(train), _names(test)
    if a != b:
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"train and test label sets differ: train has {len(a)} labels {a}, test has {len(b)} "
                         f"labels {b}" + (f"; only in train: {only_a}" if only_a else "")
                         + (f"; only in test: {only_b}" if only_b else "")
                         + ("" if only_a or only_b else "; the same names in another order"))
    if len(a) < 2:
        raise ValueError(f"the labels hold {len(a)} class ({a}): a classifier needs at least 2")
    if isinstance(train, ExampleSet):
        counts = Counter(int(y) for y in train.labels)
        few = {a[i]: counts.get(i, 0) for i in range(len(a)) if counts.get(i, 0) < min_per_class}
        if few:
            raise ValueError(f"classes with fewer than {min_per_class} training examples: {few} "
                             "(add examples, or drop these classes)")
    return a


def held_out_split(data: Data, fraction: float, seed: int) -> tuple[ExampleSet, ExampleSet]:
    """A seeded, stratified split: ``max(1, round(fraction · n_c))`` examples of every class ``c`` held out (a
    regression target: of every quintile of the target)."""
    if isinstance(data, ExampleSet) and (data.labels is None or all(v is None for v in data.labels)):
        raise ValueError(f"the data holds no labels ({len(data)} examples, none labelled): fine-tuning and "
                         "evaluation need a folder with one subfolder per class (train/ and test/ optional), or a "
                         "table with --label-column")
    if not isinstance(data, ExampleSet) or data.labels is None:
        raise ValueError("a held-out split needs map-style labelled data (a streamed set needs --test-split)")
    labels = list(data.labels)
    if data.regression:                       # strata: the target's quintiles
        y = np.asarray(labels, dtype=float)
        labels = np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8])).tolist() if len(y) >= 5 else [0] * len(y)
    held = set(stratified_indices(labels, fraction, seed))
    rest = [i for i in range(len(data)) if i not in held]
    return data.subset(rest), data.subset(sorted(held))


def check_not_an_input(processor: Processor, columns: dict[str, str | None],
                       consequence: str = "fine-tuning would learn from the {role} itself") -> None:
    """A label column (or an id column) is never an input: refuse a model whose processor reads one of
    ``columns`` (role → column name) as a field, naming it, what reading it would do (``consequence``) and the
    remedy."""
    inputs = set(processor.input_columns() or ())
    for role, column in columns.items():
        if column and column in inputs:
            raise ValueError(f"the {role} column {column!r} is an input field of this model's processor (it was "
                             f"fitted on a table holding it): {consequence.format(role=role)}. "
                             f"Pretrain again without it (zoo pretrain RECIPE --data ... --label-column {column}, "
                             f"or --set processor.exclude=[{column}])")


def check_evaluation_labels(processor: Processor, spec: dict[str, Any],
                            consequence: str = "every probe of the encoder and the baselines would read the label "
                                               "itself") -> None:
    """A recipe's ``evaluate`` section names its label columns in its data specs (``train``, ``test``): none may be
    an input field of ``processor`` (:func:`check_not_an_input`), or the probes, the online k-NN and the hand-made
    baselines would all read the label itself and score it, whatever the encoder learnt (fine-tuning on that data:
    learn from it)."""
    for part in ("train", "test"):
        data = spec.get(part)
        if isinstance(data, dict) and data.get("label_column"):
            check_not_an_input(processor, {f"evaluate.{part} label": data["label_column"]}, consequence)


def drop_unlabelled(data: Data, skip_bad: bool, column: str | None, setting: str | None = "finetune.skip_bad") -> Data:
    """Examples whose label cell is empty (a source gives them the label ``None``, never a class ``'nan'``):
    refused naming the first ones, the column and the setting that skips them; with ``skip_bad`` left out and
    counted in a warning (docs/reliability.md). ``setting``: the ``--set`` key that skips (``None``: a command
    that always skips them, e.g. ``zoo evaluate``)."""
    if not isinstance(data, ExampleSet) or data.labels is None:
        return data
    empty = np.fromiter((y is None for y in data.labels), dtype=bool, count=len(data))
    if not empty.any():
        return data
    where = np.flatnonzero(empty)
    named = [data.name(int(i)) for i in where[:5]] + (["..."] if len(where) > 5 else [])
    what = f"{len(where)} of {len(data)} examples have an empty label cell" + (f" in column {column!r}" if column
                                                                                else "")
    if not skip_bad and setting is not None:
        raise ValueError(f"{what}: {', '.join(named)}. Fill them, or skip these examples with "
                         f"--set {setting}=true")
    logger.warning("%s and are skipped%s: %s", what, f" ({setting})" if setting else "", ", ".join(named))
    return data.subset(np.flatnonzero(~empty))


CHECK_CHUNK = 4096      # rows checked at once by a vectorised processor before fine-tuning


def drop_bad_rows(data: Data, processor: Processor, skip_bad: bool, setting: str | None) -> tuple[Data, int]:
    """Where the processor reads many examples at once (it overrides ``process_batch``: a table's rows), every
    example is checked before training, so that a bad cell stops the run at once naming its row and field, not at
    whatever step first draws it, and ``skip_bad`` leaves it out of training, the test and the baselines alike,
    counted (a warning names the first; ``setting`` None: a command that always skips, as
    :func:`drop_unlabelled`). Returns the set and how many were left out."""
    data, unreadable = drop_unreadable(data, skip_bad, setting)       # what its source could not read
    if not isinstance(data, ExampleSet) or type(processor).process_batch is Processor.process_batch or not len(data):
        return data, unreadable
    names = [data.name(i) for i in range(len(data))]
    keep, bad = [], []
    for lo in range(0, len(data), CHECK_CHUNK):
        idx = list(range(lo, min(lo + CHECK_CHUNK, len(data))))
        try:
            processor.process_batch(data.subset(idx).examples, names[lo:lo + len(idx)])
            keep += idx
            continue
        except BadExample as err:
            if not skip_bad and setting is not None:
                raise ValueError(str(err).replace("train.skip_bad", setting)) from None
        for i in idx:                          # this chunk holds a bad row: each row alone
            try:
                processor(data.examples[i], name=names[i])
                keep.append(i)
            except BadExample as err:
                bad.append(str(err).replace("train.skip_bad", setting or "skip_bad"))
    if bad:
        logger.warning("%d of %d examples cannot be read and are skipped (%s): %s", len(bad), len(data),
                       setting or "skip_bad", "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else ""))
    return (data.subset(keep) if bad else data), len(bad) + unreadable


def load_labelled(modality: Modality, processor: Processor, ft: Any, seed: int, *, data: str | None = None,
                  label_column: str | None = None, split: str | None = None, test_split: str | None = None,
                  recipe_eval: dict[str, Any] | None = None, train_set: Data | None = None,
                  test_set: Data | None = None, skip_bad: bool = False,
                  skip_setting: str | None = "finetune.skip_bad") -> LabelledData:
    """The run's labelled data from one place: ``data`` (one's own: a folder, a table, a datasets id; the test
    set from ``test_split``, a folder's ``test/`` or a seeded held-out share), else the given sets, else the
    recipe's ``evaluate.train``/``evaluate.test``. ``ft`` holds task, fractions and ``min_per_class``; examples
    with an empty label cell are refused, or with ``skip_bad`` skipped and counted (:func:`drop_unlabelled`)."""
    spec = None
    if data is not None:
        entity = getattr(processor.config, "entity_column", None)
        check_not_an_input(processor, {"label": label_column})
        spec = data_spec(modality, data, label_column=label_column, split=split, entity_column=entity)
        if spec["source"] != modality.folder_source and not label_column:
            raise ValueError(f"{data}: a table needs --label-column (the column holding the labels)")
        if spec["source"] in ("hf", modality.table_source):
            spec["problem_type"] = ft.task        # "auto": the source decides from the column's values
        train_set = drop_unlabelled(modality.load_data(spec), skip_bad, label_column, skip_setting)
        folder_test = spec["source"] == modality.folder_source and (Path(data) / "test").is_dir()
        if test_split is not None or folder_test:
            test_set = drop_unlabelled(modality.load_data({**spec, "split": test_split or "test"}), skip_bad,
                                       label_column, skip_setting)
        else:
            train_set, test_set = held_out_split(train_set, ft.test_fraction, seed)
        description = describe_data(data)
    else:
        recipe_eval = recipe_eval or {}
        if (train_set is None and "train" not in recipe_eval) or (test_set is None and "test" not in recipe_eval):
            raise ValueError("the recipe has no evaluate.train / evaluate.test data: give --data")
        check_evaluation_labels(processor, recipe_eval, "fine-tuning would learn from the label itself")
        train_set = train_set if train_set is not None else modality.load_data(recipe_eval["train"])
        test_set = test_set if test_set is not None else modality.load_data(recipe_eval["test"])
        description = str(recipe_eval.get("dataset", "the recipe's data"))
        train_set, test_set = (drop_unlabelled(d, skip_bad, None, skip_setting) for d in (train_set, test_set))
    (train_set, bad_train), (test_set, bad_test) = (drop_bad_rows(d, processor, skip_bad, skip_setting)
                                                    for d in (train_set, test_set))
    task = _task(train_set, test_set, ft.task)
    names = [label_column or "target"] if task == "regression" else \
        check_label_spaces(train_set, test_set, ft.min_per_class)
    validation = None
    if ft.validation_fraction > 0 and (ft.eval_every > 0 or ft.patience > 0):
        train_set, validation = held_out_split(train_set, ft.validation_fraction, seed + 1)
    return LabelledData(train_set, test_set, validation, task, names, description, spec, bad_train + bad_test)


def _task(train: Data, test: Data, wanted: str) -> str:
    """The task the labels are for; ``wanted`` (``auto``, ``classification``, ``regression``) must agree."""
    found = "regression" if getattr(train, "regression", False) else "classification"
    if wanted not in ("auto", found):
        raise ValueError(f"finetune.task is {wanted!r} but the data's labels are for {found}"
                         + (" (regression targets are read from a table's numeric label column)"
                            if wanted == "regression" else ""))
    if bool(getattr(test, "regression", False)) != (found == "regression"):
        raise ValueError("the train and test sets' labels are not of one kind (class ids vs regression targets)")
    return found
