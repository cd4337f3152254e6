"""Fine-tuning a zoo encoder on labelled data — one's own or a recipe's — as a thin recipe over the engine's one
loop (docs/architecture.md, "Fine-tuning"): **setup** (the model, the labelled data decided once, the settings
parsed once) → **run** (one :func:`~pipelines.engine.train` with a validation hook: the best checkpoint, early
stopping) → **report** (test metrics, predictions, plots, the card, through :mod:`pipelines.report`).

Frozen (linear probe), partial (top ``k`` layer groups) or full fine-tuning, layer-wise learning-rate decay
(Clark et al. 2020, ELECTRA; BEiT), class weights; BatchNorm statistics recomputed under the final weights before
every validation and before saving (:mod:`pipelines.batchnorm`). The result is a :class:`zoo.Classifier` folder
that ``zoo.AutoClassifier.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo import AutoEncoder, AutoProcessor, Classifier, Config, Encoder, ExampleSet, Processor, StreamSet, get_modality
from zoo.paths import portable

from .baseline import baseline_scores, finetune_remedies, verdict
from .batchnorm import recompute_batchnorm
from .checkpoint import data_fingerprint
from .collapse import collapse_facts, collapse_stop_message, stopped_by_alarm
from .data import TrainData, fit_batch, iter_batches, message_digest, readable_part
from .data_spec import command_arg, command_line
from .engine import Hook, Loop, no_decay_ids, param_groups, setup_run, train
from .labelled import LabelledData, load_labelled
from .recipe import Recipe, TrainConfig
from .report import (
    LOWER_IS_BETTER,
    confusion_png,
    finetune_card,
    predict_set,
    scatter_png,
    task_metrics,
    write_predictions,
)
from .trackers import TrackerHook

__all__ = ["FinetuneSettings", "finetune", "layer_groups", "FinetuneModel", "ValidationHook"]

logger = logging.getLogger(__name__)
BN_BATCHES = 50                      # training batches the BatchNorm statistics are recomputed over


@dataclass
class FinetuneSettings(Config):
    """What fine-tuning adds to the engine's settings (the rest of a recipe's ``finetune:`` section)."""

    mode: str = "full"                 # "full", "partial" (the top ``top_layers`` layer groups) or "frozen"
    top_layers: int = 2
    layer_decay: float = 1.0           # the layer group i below the top trains at lr · layer_decay**i
    class_weights: str = "none"        # "none" or "balanced" (inverse class frequency in the loss)
    head_dropout: float = 0.0
    head_norm: bool = False            # LayerNorm(mean of the tokens before the encoder's final norm) → linear head
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
    decay (the engine scales each group's learning rate by its ``lr_scale``); a frozen encoder stays in eval mode.

    ``head_norm``: the encoder gives up the norm after its last layer (:meth:`zoo.Encoder.take_final_norm`) and the
    head normalises the mean of the tokens instead, starting from that norm's scale and shift (VideoMAE's fine-tuning
    head, which ``zoo export --format transformers`` maps onto ``VideoMAEForVideoClassification``; docs/architecture.md,
    "Export"). The head's norm trains with the head, in every mode."""

    def __init__(self, encoder: Encoder, label_names: list[str], settings: FinetuneSettings,
                 class_weights: torch.Tensor | None = None, processor: Processor | None = None,
                 task: str = "classification", target_mean: float = 0.0, target_std: float = 1.0) -> None:
        final = encoder.take_final_norm() if settings.head_norm else None
        super().__init__(encoder, label_names, dropout=settings.head_dropout, class_weights=class_weights,
                         processor=processor, task=task, target_mean=target_mean, target_std=target_std,
                         head_norm=settings.head_norm)
        if self.head_norm is not None and isinstance(final, nn.LayerNorm) and final.elementwise_affine:
            with torch.no_grad():
                self.head_norm.weight.copy_(final.weight)
                self.head_norm.bias.copy_(final.bias)
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
        skip = no_decay_ids(self)
        return [{**group, "lr_scale": scale} for params, scale in [(self.head_parameters(), 1.0), *self.scales]
                for group in param_groups(params, weight_decay, skip) if group["params"]]


# --- hooks ------------------------------------------------------------------------------------------------------
def _bn_batches(clf: Classifier, data: LabelledData, batch_size: int, skip_bad: bool = False) -> Any:
    """Recompute the classifier's BatchNorm statistics over (at most :data:`BN_BATCHES`) training batches (with
    ``skip_bad``, of the examples that can be read: training counted those it met)."""
    device = clf.head.weight.device

    def forward(batch: dict[str, Any]) -> None:
        clf.encoder({k: v.to(device) for k, v in batch.items() if torch.is_tensor(v) and k != "labels"})
    batches = islice(iter_batches(data.train, clf.processor, batch_size=batch_size, skip_bad=skip_bad,
                                  on_skip=lambda messages, _: data.unread_train.update(messages)), BN_BATCHES)
    return recompute_batchnorm(clf, forward, batches)


class PreciseBatchNorm(Hook):
    """At the last step (before the final checkpoint): BatchNorm statistics under the final weights."""

    def __init__(self, data: LabelledData, batch_size: int, skip_bad: bool = False) -> None:
        self.data, self.batch_size, self.skip_bad = data, batch_size, skip_bad

    def on_interval(self, run: Loop, step: int) -> bool:
        _bn_batches(run.model, self.data, self.batch_size, self.skip_bad)
        run.model.train()
        return False


class ValidationHook(Hook):
    """Every ``eval_every`` steps (and at the last): BatchNorm statistics recomputed, the validation set scored,
    ``validation.jsonl`` appended, the best classifier kept in ``best/``, and after ``patience`` validations
    without improvement the run stopped. Its history is part of every checkpoint (an exact resume)."""

    def __init__(self, data: LabelledData, ft: FinetuneSettings, metric: str, output_dir: Path,
                 batch_size: int) -> None:
        self.data, self.ft, self.metric, self.batch_size = data, ft, metric, batch_size
        self.every = ft.eval_every
        self.path, self.best_dir = output_dir / "validation.jsonl", output_dir / "best"
        self.sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        self.history: list[dict[str, Any]] = []

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))

    def on_interval(self, run: Loop, step: int) -> bool:
        clf = run.model
        skip = run.cfg.skip_bad
        _bn_batches(clf, self.data, self.batch_size, skip)
        unread: list[str] = []
        y, out, _ = predict_set(clf, clf.processor, self.data.validation, device=run.ctx.device, skip_bad=skip,
                                skipped=unread)
        self.data.unread_held.update(unread)
        score = task_metrics(self.data.task, y, out, self.data.label_names)[self.metric]
        best = max((self.sign * h["score"] for h in self.history), default=-math.inf)
        row = {"step": step, "score": score, "metric": self.metric, "best": self.sign * score > best}
        self.history.append(row)
        if run.ctx.info.main:
            self.path.write_text("".join(json.dumps(h) + "\n" for h in self.history))
            if row["best"]:
                clf.save_pretrained(self.best_dir)
        clf.train()
        since = len(self.history) - 1 - max(i for i, h in enumerate(self.history) if h["best"])
        return bool(self.ft.patience and since >= self.ft.patience and step < run.cfg.steps)

    def best_step(self) -> int | None:
        return max(self.history, key=lambda h: self.sign * h["score"])["step"] if self.history else None


# --- the recipe: setup → run → report ---------------------------------------------------------------------------
@dataclass
class Setup:
    """A fine-tuning run's inputs, decided once."""

    clf: FinetuneModel
    data: LabelledData
    cfg: TrainConfig
    ft: FinetuneSettings
    metric: str
    origin: str
    fingerprint: dict[str, Any]
    command: str
    baseline: bool = True
    family: str | None = None          # the transformers family of the encoder (zoo export --format transformers)


def finetune(model: str | Path, recipe: Recipe, output_dir: str | Path, *, resume: bool = True,
             device: str = "cpu", train_set: ExampleSet | StreamSet | None = None,
             test_set: ExampleSet | StreamSet | None = None, from_scratch: bool = False,
             settings: dict[str, Any] | None = None, data: str | None = None, label_column: str | None = None,
             split: str | None = None, test_split: str | None = None, repo_id: str | None = None,
             baseline: bool = True, report_to: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` and report test metrics. Data: ``data`` (one's own: a folder, a table or a datasets
    id), else ``train_set``/``test_set``, else the recipe's ``evaluate.train``/``evaluate.test``. Settings: the
    recipe's ``finetune`` section, then ``settings``. ``from_scratch``: the same architecture, seeded random
    weights. Writes ``<output>/model`` (a classifier folder with card, ``predictions.jsonl`` and plots).
    ``report_to``: experiment trackers (:mod:`.trackers`)."""
    output_dir = Path(output_dir)
    trackers = TrackerHook(report_to, output_dir, name=f"{recipe.name}-finetune", job="finetune")   # before work
    s = setup(model, recipe, device=device, settings=settings, data=data, label_column=label_column, split=split,
              test_split=test_split, train_set=train_set, test_set=test_set, from_scratch=from_scratch)
    s.baseline = baseline
    ctx = setup_run(s.cfg, output_dir)
    hooks: tuple[Hook, ...] = (PreciseBatchNorm(s.data, s.cfg.batch_size, s.cfg.skip_bad),)
    validation = None
    if s.data.validation is not None:
        validation = ValidationHook(s.data, s.ft, s.metric, output_dir, s.cfg.batch_size)
        hooks = (validation,)
    if not resume:
        shutil.rmtree(output_dir / "best", ignore_errors=True)
        (output_dir / "validation.jsonl").unlink(missing_ok=True)
    stream = TrainData(s.data.train, s.clf.processor, s.cfg, rank=ctx.info.rank, world=ctx.info.world)
    result = train(s.clf, stream, s.cfg, output_dir, resume=resume, desc=f"finetune {recipe.name}",
                   hooks=(*hooks, trackers), ctx=ctx, fingerprint=s.fingerprint)
    if result.steps == 0:
        raise RuntimeError("no training step ran: nothing is saved (a head that did not train is never published)")
    if stopped_by_alarm(result, s.cfg):
        raise RuntimeError(collapse_stop_message(result.collapse, output_dir, "nothing is saved"))
    if validation is not None and (output_dir / "best" / "head.safetensors").is_file():
        s.clf.load_state_dict(Classifier.from_pretrained(output_dir / "best").state_dict())
    s.data.unread_train = {m for m in s.data.unread_train if message_digest(m) not in stream.skipped_seen}
    out = report(s, recipe, output_dir, result, validation, ctx.device, repo_id)
    trackers.finish(summary=out)                 # the card's figures, then the trackers closed
    return out


# augment: false — the pretraining augmentation need not preserve a label (a flip reverses "left"); a fine-tuning
# section or `--set finetune.augment=true` asks for it (Point-MAE's fine-tuning runner scales and shifts its clouds)
DEFAULTS = {"steps": 50, "lr": 1e-4, "warmup_steps": 5, "augment": False}


def setup(model: str | Path, recipe: Recipe, *, device: str, settings: dict[str, Any] | None, data: str | None,
          label_column: str | None, split: str | None, test_split: str | None,
          train_set: ExampleSet | StreamSet | None, test_set: ExampleSet | StreamSet | None,
          from_scratch: bool) -> Setup:
    """Load the model, decide the labelled data and the settings once, build the classifier."""
    encoder, processor = AutoEncoder.from_pretrained(model), AutoProcessor.from_pretrained(model)
    modality = get_modality(encoder.modality)
    engine_cfg, ft = split_settings({**DEFAULTS, **recipe.finetune, **(settings or {})}, where="finetune")
    cfg = TrainConfig.from_dict({**engine_cfg, "device": device}, where="finetune")
    labelled = load_labelled(modality, processor, ft, cfg.seed, data=data, label_column=label_column, split=split,
                             test_split=test_split, recipe_eval=recipe.evaluate, train_set=train_set,
                             test_set=test_set, skip_bad=cfg.skip_bad)
    metric = ft.metric if ft.metric != "auto" else ("rmse" if labelled.task == "regression" else "accuracy")
    if (metric in LOWER_IS_BETTER) != (labelled.task == "regression"):
        raise ValueError(f"finetune.metric {metric!r} does not rank {labelled.task}: use "
                         + ("rmse or mae" if labelled.task == "regression" else "accuracy or macro_f1"))
    cfg = fit_batch(cfg, labelled.train, "finetune")
    if from_scratch:
        torch.manual_seed(cfg.seed)
        encoder = type(encoder)(encoder.config)
    torch.manual_seed(cfg.seed)
    clf = FinetuneModel(encoder, labelled.label_names, ft, _class_weights(labelled, ft.class_weights),
                        processor=processor, task=labelled.task, **_target_stats(labelled))
    if processor.long_inputs():                         # what the model sees of a long input (docs/architecture.md)
        logger.info("long inputs: %s", processor.long_inputs())
    local = Path(str(model)).exists()
    origin = portable(str(Path(model).resolve())) if local else str(model)
    fingerprint = {"model": str(Path(model).resolve()) if local else str(model),
                   "data": str(Path(data).resolve()) if data and Path(data).exists() else data,
                   "label_column": label_column, "split": split, "test_split": test_split,
                   "from_scratch": from_scratch, "train": {**cfg.to_dict(), "device": None}, "finetune": ft.to_dict(),
                   "examples": {"train": data_fingerprint(labelled.train), "test": data_fingerprint(labelled.test)}}
    from zoo.auto import zoo_source
    from zoo.hub import load_config
    source, hub_kwargs = zoo_source(model, {})
    family = (load_config(source, **hub_kwargs).get("pretraining") or {}).get("transformers_model_type")
    return Setup(clf, labelled, cfg, ft, metric, origin, fingerprint,
                 _command(model, data, label_column, split, test_split, settings), family=family)


def _command(model: str | Path, data: str | None, label_column: str | None, split: str | None,
             test_split: str | None, settings: dict[str, Any] | None) -> str:
    """The ``zoo finetune`` command that reproduces the run (each setting as the flag that sets it)."""
    return command_line("finetune", model, [("--data", data), ("--label-column", label_column), ("--split", split),
                                            ("--test-split", test_split),
                                            *[(f"--{k.replace('_', '-')}", v) for k, v in (settings or {}).items()]])


def _class_weights(data: LabelledData, kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    if data.task == "regression":
        raise ValueError("finetune.class_weights: a regression target has no classes to weigh")
    if not isinstance(data.train, ExampleSet):
        raise ValueError("class_weights: balanced needs map-style data (the class counts)")
    c = len(data.label_names)
    counts = np.bincount(np.asarray(list(data.train.labels), dtype=np.int64), minlength=c).astype(float)
    return torch.tensor(counts.sum() / (c * np.maximum(counts, 1.0)), dtype=torch.float32)


def _target_stats(data: LabelledData) -> dict[str, float]:
    """A regression target's mean and std on the training set (the head predicts it standardised)."""
    if data.task != "regression":
        return {}
    if not isinstance(data.train, ExampleSet):
        raise ValueError("regression fine-tuning needs map-style training data (the target's statistics)")
    y = np.asarray(list(data.train.labels), dtype=float)
    if not np.isfinite(y).all():
        bad = int(np.argmax(~np.isfinite(y)))
        raise ValueError(f"{data.train.name(bad)}: field {data.label_names[0]!r}: the target is {y[bad]} (NaN/inf)")
    return {"target_mean": float(y.mean()), "target_std": float(y.std()) if y.std() > 0 else 1.0}


def _baseline(s: Setup, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The modality's hand-made baselines on the run's own split (with ``finetune.skip_bad``, its readable
    examples, as the model's), each said beside the model's test figure, and the verdict
    (:func:`~pipelines.baseline.verdict` warns when the model loses)."""
    if not s.baseline:
        return None
    modality = get_modality(s.clf.encoder.modality)
    train, test = s.data.train, s.data.test
    if s.cfg.skip_bad and isinstance(train, ExampleSet) and isinstance(test, ExampleSet):   # the model's split
        train, test = (readable_part(d, s.clf.processor)[0] for d in (train, test))
    scores = baseline_scores(modality, s.clf.processor, train, test, task=s.data.task,
                             metric=s.metric, num_classes=len(s.data.label_names), seed=s.cfg.seed)
    judged = verdict(float(metrics[s.metric]), scores, what="the fine-tuned model's test",
                     lower_is_better=s.metric in LOWER_IS_BETTER,
                     remedies=finetune_remedies(s.ft.mode, s.data.validation is not None))
    for name, value in scores["scores"].items():
        logger.info("baseline %s: test %s %.4f (the fine-tuned model: %.4f)", name, s.metric, value,
                    metrics[s.metric])
    return {**scores, **judged}


def _summary(compared: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the command's JSON summary shows of the baseline: its name, figure and whether the model beat it."""
    if compared is None:
        return None
    return {k: compared.get(k) for k in ("baseline", "baseline_value", "metric", "reaches", "beaten", "tied", "notice")}


def report(s: Setup, recipe: Recipe, output_dir: Path, result: Any, validation: ValidationHook | None,
           device: torch.device, repo_id: str | None) -> dict[str, Any]:
    """Test metrics, the classifier folder with its predictions, plots and card."""
    task, names_ = s.data.task, s.data.label_names
    unread: list[str] = []                             # test examples that cannot be read (finetune.skip_bad)
    y, out, names = predict_set(s.clf, s.clf.processor, s.data.test, num_workers=s.cfg.num_workers, device=device,
                                skip_bad=s.cfg.skip_bad, skipped=unread)
    unread = sorted(s.data.unread_held | set(unread) | s.data.unread_train)    # not met in training
    for message in sorted(set(result.skipped_examples) | set(unread)):         # training's: its first 20
        logger.warning("left out as unreadable (finetune.skip_bad): %s", message)
    metrics = task_metrics(task, y, out, names_)
    compared = _baseline(s, metrics)
    headline = ("mae", "rmse", "r2") if task == "regression" else ("accuracy", "macro_f1")
    history = validation.history if validation is not None else []
    stopped = result.steps if result.steps < s.cfg.steps else None
    skipped = s.data.skipped + result.skipped + len(unread)   # before training (tables), in training, elsewhere
    best = validation.best_step() if validation is not None else None
    sizes = [len(d) if isinstance(d, ExampleSet) else "streamed" for d in (s.data.train, s.data.validation)
             if d is not None]
    facts = {"finetuned_from": s.origin, "recipe": recipe.name, "mode": s.ft.mode, "steps": result.steps,
             "stopped_early_at": stopped, "best_step": best or result.steps, "validation": history,
             "settings": {**s.cfg.to_dict(), **s.ft.to_dict()}, "data": s.data.description,
             "test_examples": int(len(y)), "skipped_examples": skipped, "task": task, "command": s.command,
             "test": {k: metrics[k] for k in headline},
             "training": {"data": s.data.description, "fine-tuned from": s.origin, "mode": s.ft.mode,
                          "steps": result.steps, "batch size": s.cfg.batch_size, "learning rate": s.cfg.lr,
                          ("examples (train / validation / test)" if len(sizes) == 2 else "examples (train / test)"):
                              " / ".join(map(str, [*sizes, len(y)]))
                              + (f" ({skipped} unreadable left out)" if skipped else ""),
                          "wall time (s)": round(result.wall_seconds, 2), "hardware": result.device,
                          "seed": s.cfg.seed, **collapse_facts(result.signals, result.collapse)},
             "baseline": compared}
    folder = output_dir / "model"
    family = {"transformers_model_type": s.family} if s.family else {}
    s.clf.save_pretrained(folder, pretraining={"finetuned_from": s.origin, "recipe": portable(recipe.to_dict()),
                                               **family}, finetuning=facts)
    write_predictions(folder / "predictions.jsonl", task, names, y, out, names_)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if task == "regression":
        scatter_png(y, out, folder / "predicted_vs_true.png",
                    f"{recipe.name}: {names_[0]}, test RMSE {metrics['rmse']:.4g}")
    else:
        confusion_png(metrics["confusion_matrix"], names_, folder / "confusion_matrix.png",
                      f"test accuracy {metrics['accuracy']:.3f} ({len(y)} examples)")
    finetune_card(folder, repo_id or command_arg(folder), get_modality(s.clf.encoder.modality), metrics,
                  names_, facts, s.data.description)
    return {**{f"test_{k}": metrics[k] for k in headline}, "task": task, "steps": result.steps,
            "best_step": facts["best_step"], "stopped_early_at": stopped, "collapse_alarm": result.collapse,
            "baseline": _summary(compared),
            "num_classes": len(names_) if task == "classification" else 0, "label_names": names_,
            "model_dir": str(folder)}
