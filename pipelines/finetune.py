"""Fine-tuning a zoo encoder on labelled data, one's own or a recipe's, through the same engine as pretraining.

``zoo finetune MODEL --data PATH_OR_HF_ID`` builds the run from the model's own recipe and processor: a folder
with class subfolders (audio, video, point clouds), a CSV/parquet table with a label column (tables, event logs),
or a Hugging Face dataset id. The label spaces of train and test are checked; without a test split a seeded,
stratified share is held out; a validation share of the training data picks the best checkpoint and stops the
run early. Frozen (linear probe), partial (top ``k`` layer groups) or full fine-tuning, layer-wise learning-rate
decay (Clark et al. 2020, ELECTRA; BEiT), class weights. The result is a :class:`zoo.Classifier` folder that
``zoo.AutoClassifier.from_pretrained`` loads, with its card, predictions, per-class table and confusion matrix.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo import AutoEncoder, AutoProcessor, Classifier, Config, Encoder, ExampleSet, Processor, StreamSet, get_modality
from zoo.data import stratified_indices
from zoo.paths import portable

from .data import TrainData, iter_batches
from .engine import param_groups, setup_run, train
from .recipe import Recipe, TrainConfig

__all__ = ["FinetuneSettings", "finetune", "layer_groups", "check_label_spaces", "held_out_split", "own_data",
           "classification_metrics"]


@dataclass
class FinetuneSettings(Config):
    """What fine-tuning adds to the engine's settings (the rest of a recipe's ``finetune:`` section)."""

    mode: str = "full"                 # "full", "partial" (the top ``top_layers`` layer groups) or "frozen"
    top_layers: int = 2
    layer_decay: float = 1.0           # the layer group i below the top trains at lr · layer_decay**i
    class_weights: str = "none"        # "none" or "balanced" (inverse class frequency in the loss)
    head_dropout: float = 0.0
    eval_every: int = 0                # validate every N steps (0: once, at the end)
    patience: int = 0                  # validations without improvement before stopping (0: never)
    metric: str = "auto"               # what validation ranks: accuracy | macro_f1 | rmse | mae (auto: accuracy/rmse)
    task: str = "auto"                 # classification | regression (auto: a numeric table column with > 20 values)
    validation_fraction: float = 0.1   # of the training data, stratified (0: no validation, the last step wins)
    test_fraction: float = 0.2         # held out when the data has no test split
    min_per_class: int = 2             # training examples a class needs

    def validate(self) -> None:
        self.check(self.mode in ("full", "partial", "frozen"), "mode", "must be 'full', 'partial' or 'frozen'")
        self.check(self.top_layers >= 1, "top_layers", "must be >= 1")
        self.check(0 < self.layer_decay <= 1, "layer_decay", "must lie in (0, 1]")
        self.check(self.class_weights in ("none", "balanced"), "class_weights", "must be 'none' or 'balanced'")
        self.check(0 <= self.head_dropout < 1, "head_dropout", "must lie in [0, 1)")
        self.check(self.eval_every >= 0 and self.patience >= 0, "eval_every", "eval_every, patience must be >= 0")
        self.check(self.metric in ("auto", "accuracy", "macro_f1", "rmse", "mae"), "metric",
                   "must be 'auto', 'accuracy', 'macro_f1', 'rmse' or 'mae'")
        self.check(self.task in ("auto", "classification", "regression"), "task",
                   "must be 'auto', 'classification' or 'regression'")
        self.check(0 <= self.validation_fraction < 1, "validation_fraction", "must lie in [0, 1)")
        self.check(0 < self.test_fraction < 1, "test_fraction", "must lie in (0, 1)")
        self.check(self.min_per_class >= 1, "min_per_class", "must be >= 1")


def check_setting_names(keys: Any, where: str) -> None:
    """A key that neither the engine nor fine-tuning reads is an error naming both lists."""
    mine = {f.name for f in fields(FinetuneSettings)}
    engine = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(keys) - mine - engine)
    if unknown:
        raise ValueError(f"{where}: fine-tuning does not read {unknown} (engine settings: {sorted(engine)}; "
                         f"fine-tuning settings: {sorted(mine)})")


def split_settings(section: dict[str, Any], where: str) -> tuple[dict[str, Any], FinetuneSettings]:
    """A ``finetune:`` section → (engine settings, fine-tuning settings); a key neither reads is an error."""
    check_setting_names(section, where)
    mine = {f.name for f in fields(FinetuneSettings)}
    engine = {f.name for f in fields(TrainConfig)}
    ft = FinetuneSettings.from_dict({k: v for k, v in section.items() if k in mine}, where=where)
    return {k: v for k, v in section.items() if k in engine}, ft


# --- which parameters train, at which rate -----------------------------------------------------------------
def layer_groups(encoder: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """The encoder's parameters from the input up, one group per layer: what comes before the largest stack of
    layers (an ``nn.ModuleList``: Transformer blocks, GNN convolutions) is the bottom group, each layer of the stack
    one group, what comes after (a final norm) joins the top layer; a stacked RNN is grouped by its ``_l<k>``
    layers; an encoder with neither is one group."""
    named = list(encoder.named_parameters())
    stacks = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m) >= 1]
    if stacks:
        prefix, stack = max(stacks, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))
        pattern = re.escape(prefix) + r"\.(\d+)\." if prefix else r"(\d+)\."
        return _bucket(named, lambda name: re.match(pattern, name), len(stack))
    rnn_layer = [re.search(r"_l(\d+)(_reverse)?$", n) for n, _ in named]
    if any(rnn_layer):
        depth = max(int(m.group(1)) for m in rnn_layer if m) + 1
        return _bucket(named, lambda name: re.search(r"_l(\d+)(_reverse)?$", name), depth)
    return [named]


def _bucket(named: list[tuple[str, nn.Parameter]], layer_of: Any, depth: int) -> list[list[tuple[str, nn.Parameter]]]:
    """Parameters into ``depth + 1`` groups: those whose name ``layer_of`` matches go to their layer's group,
    the others before the first layer to the bottom group and after it to the top layer's."""
    groups: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(depth + 1)]
    seen = False
    for name, p in named:
        m = layer_of(name)
        if m:
            groups[int(m.group(1)) + 1].append((name, p))
            seen = True
        else:
            groups[-1 if seen else 0].append((name, p))
    return [g for g in groups if g]


class FinetuneModel(Classifier):
    """A :class:`zoo.Classifier` whose optimiser groups carry the mode (frozen / partial / full) and the layer-wise
    decay (the engine scales each group's learning rate by its ``lr_scale``); a frozen encoder stays in eval mode."""

    def __init__(self, encoder: Encoder, label_names: list[str], settings: FinetuneSettings,
                 class_weights: torch.Tensor | None = None, processor: Processor | None = None,
                 task: str = "classification", target_mean: float = 0.0, target_std: float = 1.0) -> None:
        super().__init__(encoder, label_names, dropout=settings.head_dropout, class_weights=class_weights,
                         processor=processor, task=task, target_mean=target_mean, target_std=target_std)
        self.settings = settings
        groups = layer_groups(encoder)
        trainable = {"full": len(groups), "partial": min(settings.top_layers, len(groups)), "frozen": 0}[settings.mode]
        self.scales: list[tuple[list[nn.Parameter], float]] = []
        for depth_from_top, group in enumerate(reversed(groups)):
            train_it = depth_from_top < trainable
            for _, p in group:
                p.requires_grad_(train_it)
            if train_it:
                self.scales.append(([p for _, p in group], settings.layer_decay ** (depth_from_top + 1)))
        self.num_groups, self.trainable_groups = len(groups), trainable

    def train(self, mode: bool = True) -> FinetuneModel:
        super().train(mode)
        if self.settings.mode == "frozen":
            self.encoder.eval()
        return self

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decay on matrices only; the head at the full rate, encoder layers at their scale."""
        return [{**group, "lr_scale": scale} for params, scale in [(list(self.head.parameters()), 1.0), *self.scales]
                for group in param_groups(params, weight_decay) if group["params"]]


# --- data: one's own, checked, split -----------------------------------------------------------------------
def own_data(modality: Any, data: str, *, label_column: str | None, split: str | None,
             processor: Processor, task: str = "classification") -> dict[str, Any]:
    """The data spec of ``--data``: a folder → the modality's class-folder source; a CSV/parquet/JSON file → the
    modality's table source (or ``datasets``' builder, every column but the label an input); else a ``datasets``
    id or builder name with ``--label-column``."""
    path = Path(data)
    if path.is_dir():
        if modality.folder_source is None:
            raise ValueError(f"modality {modality.name!r} reads no class folders: give a table or a datasets id")
        if callable(modality.folder_source):                  # a folder laid out its own way (graphs: tables)
            return modality.folder_source(str(path), label_column or "label", split)
        return {"source": modality.folder_source, "data_dir": str(path), "split": split or "train"}
    if path.is_file():
        if label_column is None:
            raise ValueError(f"{path}: a table needs --label-column (the column holding the labels)")
        if modality.table_source is not None:
            return modality.table_source(str(path), label_column, processor)
        builder = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}.get(
            path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: unsupported table file (use .csv, .parquet or .json)")
        return {"source": "hf", "path": builder, "data_files": str(path), "label_column": label_column,
                "problem_type": task}
    if path.suffix or data.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    return {"source": "hf", "path": data, "split": split or "train", "label_column": label_column or "label",
            "problem_type": task}


def _names(data: ExampleSet | StreamSet) -> list[str]:
    if data.label_names is not None:
        return [str(n) for n in data.label_names]
    if isinstance(data, ExampleSet) and data.labels is not None:
        return [str(i) for i in range(int(max(data.labels)) + 1)]
    raise ValueError("fine-tuning needs labelled data (a label column, class folders, or label names for a stream)")


def check_label_spaces(train: ExampleSet | StreamSet, test: ExampleSet | StreamSet,
                       min_per_class: int = 2) -> list[str]:
    """The label names both sets share, in order; different names or counts stop the run naming both lists, and
    classes with fewer than ``min_per_class`` training examples are named."""
    a, b = _names(train), _names(test)
    if a != b:
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"train and test label sets differ: train has {len(a)} labels {a}, test has {len(b)} "
                         f"labels {b}" + (f"; only in train: {only_a}" if only_a else "")
                         + (f"; only in test: {only_b}" if only_b else "")
                         + ("" if only_a or only_b else "; the same names in another order"))
    if isinstance(train, ExampleSet):
        counts = Counter(int(y) for y in train.labels)
        few = {a[i]: counts.get(i, 0) for i in range(len(a)) if counts.get(i, 0) < min_per_class}
        if few:
            raise ValueError(f"classes with fewer than {min_per_class} training examples: {few} "
                             "(add examples, or drop these classes)")
    return a


def held_out_split(data: ExampleSet, fraction: float, seed: int) -> tuple[ExampleSet, ExampleSet]:
    """A seeded, stratified split: ``max(1, round(fraction · n_c))`` examples of every class ``c`` held out (a
    regression target: of every quintile of the target)."""
    if not isinstance(data, ExampleSet) or data.labels is None:
        raise ValueError("a held-out split needs map-style labelled data (a streamed set needs --test-split)")
    labels = list(data.labels)
    if data.regression:                       # strata: the target's quintiles
        y = np.asarray(labels, dtype=float)
        labels = np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8])).tolist() if len(y) >= 5 else [0] * len(y)
    held = set(stratified_indices(labels, fraction, seed))
    rest = [i for i in range(len(data)) if i not in held]
    return data.subset(rest), data.subset(sorted(held))


# --- metrics ---------------------------------------------------------------------------------------------------
def classification_metrics(y: np.ndarray, pred: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, the confusion matrix (rows: true, columns: predicted) and per-class precision,
    recall, F1 and support."""
    c = len(label_names)
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(c), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(c), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(c), where=precision + recall > 0)
    present = cm.sum(1) > 0
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "macro_f1": float(f1[present].mean()) if present.any()
            else 0.0, "confusion_matrix": cm.tolist(),
            "per_class": {n: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                              "support": int(cm[i].sum())} for i, n in enumerate(label_names)}}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Mean absolute error, root mean squared error and R² (1 − SSE / the target's sum of squares)."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    err = pred - y
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": 1.0 - float((err ** 2).sum()) / total if total > 0 else 0.0}


LOWER_IS_BETTER = {"rmse", "mae"}


@torch.no_grad()
def predict_set(clf: Classifier, processor: Processor, data: ExampleSet | StreamSet, *, num_workers: int = 0,
                device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(true labels, probabilities [N, C] or values [N], names)`` of a labelled set, read through the
    DataLoader workers."""
    clf.eval().to(device)
    ys, probs, names = [], [], []
    for batch in iter_batches(data, processor, batch_size=64, num_workers=num_workers):
        labels = batch.pop("labels")
        names += list(batch.pop("_names"))
        batch.pop("_skipped", None)
        probs.append(clf.outputs({k: v.to(device) for k, v in batch.items()}).cpu())
        ys.append(labels)
    if not ys:
        raise ValueError("nothing to evaluate: the set holds no examples")
    return torch.cat(ys).numpy(), torch.cat(probs).numpy(), names


def confusion_png(cm: list[list[int]], label_names: list[str], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = np.asarray(cm)
    size = max(4.0, 0.45 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=90 if len(label_names) > 6 else 0)
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(label_names) <= 20:
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scatter_png(y: np.ndarray, pred: np.ndarray, path: Path, title: str) -> Path:
    """Predicted against true values, with the diagonal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, pred, s=6, alpha=0.5)
    lo, hi = float(min(np.min(y), np.min(pred))), float(max(np.max(y), np.max(pred)))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the run -------------------------------------------------------------------------------------------------
def _class_weights(data: ExampleSet | StreamSet, c: int, kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    if not isinstance(data, ExampleSet):
        raise ValueError("class_weights: balanced needs map-style data (the class counts)")
    counts = np.bincount(np.asarray(list(data.labels), dtype=np.int64), minlength=c).astype(float)
    return torch.tensor(counts.sum() / (c * np.maximum(counts, 1.0)), dtype=torch.float32)


def finetune(model: str | Path, recipe: Recipe, output_dir: str | Path, *, resume: bool = True,
             device: str = "cpu", train_set: ExampleSet | StreamSet | None = None,
             test_set: ExampleSet | StreamSet | None = None, from_scratch: bool = False,
             settings: dict[str, Any] | None = None, data: str | None = None, label_column: str | None = None,
             split: str | None = None, test_split: str | None = None, repo_id: str | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` and report test metrics. Data: ``data`` (one's own: a folder, a table or a datasets
    id; ``test_split`` or a held-out share for testing), else ``train_set``/``test_set``, else the recipe's
    ``evaluate.train``/``evaluate.test``. Settings: the recipe's ``finetune`` section, then ``settings``.
    ``from_scratch`` trains the same architecture from a seeded random initialisation. Writes
    ``<output>/model`` (a classifier folder with card, ``predictions.jsonl``, ``confusion_matrix.png``)."""
    output_dir = Path(output_dir)
    encoder, processor = AutoEncoder.from_pretrained(model), AutoProcessor.from_pretrained(model)
    modality = get_modality(encoder.modality)
    engine_cfg, ft = split_settings({"steps": 50, "lr": 1e-4, "warmup_steps": 5, **recipe.finetune,
                                     **(settings or {})}, where="finetune")
    cfg = TrainConfig.from_dict({**engine_cfg, "device": device}, where="finetune")
    spec = recipe.evaluate
    task = ft.task
    if data is not None:
        is_table = Path(data).is_file() and modality.table_source is None
        if task == "auto" and not (is_table and label_column):
            task = "classification"
        if task == "regression" and not (is_table or not Path(data).exists()):
            raise ValueError(f"regression targets are read from a table's label column; {data} is not one")
        train_spec = own_data(modality, data, label_column=label_column, split=split, processor=processor,
                              task=task)                # "auto": the source decides from the column's values
        train_set = modality.load_data(train_spec)
        if task == "auto":
            task = "regression" if getattr(train_set, "regression", False) else "classification"
            train_spec["problem_type"] = task
        if test_split is not None:
            test_set = modality.load_data({**train_spec, "split": test_split})
        elif Path(data).is_dir() and (Path(data) / "test").is_dir():
            test_set = modality.load_data(own_data(modality, data, label_column=label_column, split="test",
                                                   processor=processor))
        else:
            train_set, test_set = held_out_split(train_set, ft.test_fraction, cfg.seed)
    else:
        if (train_set is None and "train" not in spec) or (test_set is None and "test" not in spec):
            raise ValueError(f"recipe {recipe.name!r} has no evaluate.train / evaluate.test data: give --data")
        train_set = train_set if train_set is not None else modality.load_data(spec["train"])
        test_set = test_set if test_set is not None else modality.load_data(spec["test"])
        found = "regression" if getattr(train_set, "regression", False) else "classification"
        if task not in ("auto", found):
            raise ValueError(f"finetune.task is {task!r} but the data's labels are for {found}")
        task = found
    metric = ft.metric if ft.metric != "auto" else ("rmse" if task == "regression" else "accuracy")
    if (metric in LOWER_IS_BETTER) != (task == "regression"):
        raise ValueError(f"finetune.metric {metric!r} does not rank {task}: use "
                         + ("rmse or mae" if task == "regression" else "accuracy or macro_f1"))
    if task == "regression":
        label_names = [label_column or "target"]
        for what, part in (("train", train_set), ("test", test_set)):
            if getattr(part, "regression", False) is not True:
                raise ValueError(f"the {what} set's labels are class ids, not regression targets")
        if ft.class_weights != "none":
            raise ValueError("finetune.class_weights: a regression target has no classes to weigh")
    else:
        label_names = check_label_spaces(train_set, test_set, ft.min_per_class)
    val_set = None
    if ft.validation_fraction > 0 and (ft.eval_every > 0 or ft.patience > 0):
        train_set, val_set = held_out_split(train_set, ft.validation_fraction, cfg.seed + 1)
    stats: dict[str, float] = {}
    if task == "regression":
        y = np.asarray(list(train_set.labels), dtype=float) if isinstance(train_set, ExampleSet) else None
        if y is None:
            raise ValueError("regression fine-tuning needs map-style training data (the target's statistics)")
        if not np.isfinite(y).all():
            bad = int(np.argmax(~np.isfinite(y)))
            raise ValueError(f"{train_set.name(bad)}: field {label_names[0]!r}: the target is {y[bad]} (NaN/inf)")
        stats = {"target_mean": float(y.mean()), "target_std": float(y.std()) if y.std() > 0 else 1.0}
    if from_scratch:
        torch.manual_seed(cfg.seed)
        encoder = type(encoder)(encoder.config)
    torch.manual_seed(cfg.seed)
    weights = _class_weights(train_set, len(label_names), ft.class_weights) if task == "classification" else None
    clf = FinetuneModel(encoder, label_names, ft, weights, processor=processor, task=task, **stats)
    ctx = setup_run(cfg, output_dir)
    trainer_data = TrainData(train_set, processor, cfg, rank=ctx.info.rank, world=ctx.info.world)
    desc = f"finetune {recipe.name}"
    history_path = output_dir / "validation.jsonl"
    history = [json.loads(x) for x in history_path.read_text().splitlines()] if resume and history_path.is_file() \
        else []
    best_dir = output_dir / "best"
    if not resume:
        history_path.unlink(missing_ok=True)
        shutil.rmtree(best_dir, ignore_errors=True)
    every = ft.eval_every if val_set is not None and ft.eval_every > 0 else cfg.steps
    stopped_at = None
    step = 0
    for chunk_end in list(range(every, cfg.steps, every)) + [cfg.steps]:
        if history and history[-1]["step"] >= chunk_end:
            step = chunk_end
            continue                                     # done before a resume
        fresh = not (resume or step > 0)
        res = train(clf, trainer_data, _stretch(cfg, output_dir, chunk_end, fresh), output_dir, resume=not fresh,
                    desc=desc, ctx=ctx)
        step = res.steps
        if val_set is not None:
            y, p, _ = predict_set(clf, processor, val_set, num_workers=cfg.num_workers, device=ctx.device)
            score = _metrics(task, y, p, label_names)[metric]
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            best = max((sign * h["score"] for h in history), default=-math.inf)
            row = {"step": step, "score": score, "metric": metric, "best": sign * score > best}
            history.append(row)
            with open(history_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if row["best"]:
                clf.save_pretrained(best_dir)
            since = len(history) - 1 - max(i for i, h in enumerate(history) if h["best"])
            if ft.patience and since >= ft.patience and step < cfg.steps:
                stopped_at = step
                break
    if val_set is not None and (best_dir / "head.safetensors").is_file():
        clf.load_state_dict(Classifier.from_pretrained(best_dir).state_dict())
    y, probs, names = predict_set(clf, processor, test_set, num_workers=cfg.num_workers, device=ctx.device)
    metrics = _metrics(task, y, probs, label_names)
    headline = ("mae", "rmse", "r2") if task == "regression" else ("accuracy", "macro_f1")
    folder = output_dir / "model"
    origin = portable(str(Path(model).resolve())) if Path(model).exists() else str(model)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_row = max(history, key=lambda h: sign * h["score"]) if history else None
    facts = {"finetuned_from": origin, "recipe": recipe.name, "mode": ft.mode, "steps": step,
             "stopped_early_at": stopped_at, "best_step": best_row["step"] if best_row else step,
             "validation": history, "settings": {**engine_cfg, **ft.to_dict()}, "from_scratch": from_scratch,
             "data": data or "recipe", "test_examples": int(len(y)), "task": task,
             "test": {k: metrics[k] for k in headline}}
    clf.save_pretrained(folder, pretraining={"finetuned_from": origin, "recipe": portable(recipe.to_dict())},
                        finetuning=facts)
    with open(folder / "predictions.jsonl", "w") as fh:
        for name, t, row in zip(names, y, probs):
            if task == "regression":
                fh.write(json.dumps({"name": name, "label": float(t), "predicted": float(row)}) + "\n")
                continue
            fh.write(json.dumps({"name": name, "label": label_names[int(t)],
                                 "predicted": label_names[int(row.argmax())],
                                 "probabilities": {n: round(float(v), 6) for n, v in zip(label_names, row)}}) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if task == "regression":
        scatter_png(y, probs, folder / "predicted_vs_true.png",
                    f"{recipe.name}: {label_names[0]}, test RMSE {metrics['rmse']:.4g}")
    else:
        confusion_png(metrics["confusion_matrix"], label_names, folder / "confusion_matrix.png",
                      f"{recipe.name}: test accuracy {metrics['accuracy']:.3f}")
    _card(folder, repo_id or f"{recipe.name}-finetuned", modality, metrics, label_names, facts, data or recipe.name)
    out = {f"test_{k}": metrics[k] for k in headline}
    return {**out, "task": task, "steps": step, "best_step": facts["best_step"], "stopped_early_at": stopped_at,
            "num_classes": len(label_names) if task == "classification" else 0, "label_names": label_names,
            "model_dir": str(folder)}


def _metrics(task: str, y: np.ndarray, out: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    if task == "regression":
        return regression_metrics(y, out)
    return classification_metrics(y, out.argmax(1), label_names)


def _stretch(cfg: TrainConfig, output_dir: Path, end: int, fresh: bool) -> TrainConfig:
    """The engine settings of one stretch between validations: the whole run's schedule, stopping at step ``end``
    (the engine writes a checkpoint there, from which the next stretch resumes)."""
    from dataclasses import replace
    steps = [int(p.name.split("-")[1]) for p in (output_dir / "checkpoints").glob("step-*")
             if p.is_dir() and p.name.split("-")[1].isdigit()] if not fresh else []
    start = max(steps, default=0)
    return replace(cfg, stop_after=None if end >= cfg.steps else max(end - start, 0))


def _card(folder: Path, repo_id: str, modality: Any, metrics: dict[str, Any], label_names: list[str],
          facts: dict[str, Any], dataset: str) -> None:
    from zoo.cards import write_card
    head = (f"Mode `{facts['mode']}`, {facts['steps']} steps (best validation at step {facts['best_step']}"
            + (f", stopped early at {facts['stopped_early_at']}" if facts["stopped_early_at"] else "")
            + f"); {facts['test_examples']} test examples.")
    if facts["task"] == "regression":
        task, shown = "tabular-regression", (("mae", "MAE"), ("rmse", "RMSE"))
        comparison = (f"### Fine-tuning\n\nTarget: `{label_names[0]}` (regression). {head}\n\n| MAE | RMSE | R² |\n"
                      f"| ---: | ---: | ---: |\n| {metrics['mae']:.4g} | {metrics['rmse']:.4g} | {metrics['r2']:.3f} |"
                      "\n\n![predicted against true](predicted_vs_true.png)")
    else:
        task = modality.task if modality.task != "feature-extraction" else "classification"
        shown = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
        rows = "\n".join(f"| {n} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                         for n, r in metrics["per_class"].items())
        comparison = (f"### Fine-tuning\n\nLabels ({len(label_names)}): {', '.join(label_names)}. {head}\n\n"
                      "| label | precision | recall | F1 | support |\n| --- | ---: | ---: | ---: | ---: |\n" + rows
                      + "\n\n![confusion matrix](confusion_matrix.png)")
    kind = "regressor" if facts["task"] == "regression" else "classifier"
    results = [{"task": task, "task_name": f"fine-tuned {kind}",
                "dataset": str(dataset), "dataset_name": str(dataset), "split": "test", "metric": m,
                "metric_name": name, "value": round(metrics[m], 4)} for m, name in shown]
    write_card(folder, repo_id=repo_id, results=results, comparison=comparison)
