"""A fine-tuned classifier: a zoo encoder plus a linear head on its pooled output, saved as one Hub-ready folder
(the encoder's ``config.json``/``model.safetensors``/``preprocessor.json``, ``head.safetensors`` and
``classifier.json`` with the label names). ``zoo.AutoClassifier.from_pretrained`` loads it; ``predict`` gives
labels by name with their probabilities (the ``pipeline("…-classification")`` shape of Hugging Face)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .auto import AutoEncoder, AutoProcessor
from .collapse import CollapseRule, class_entropy_ratio
from .embedding import map_batches, window_means
from .hub import FormatError, load_state_strict, load_weights, read_json, resolve_file, save_weights
from .plugin import Encoder, PretrainOutput, Processor

__all__ = ["AutoClassifier", "Classifier", "CLASSIFIER_NAME", "HEAD_NAME"]

CLASSIFIER_NAME, HEAD_NAME = "classifier.json", "head.safetensors"
NORM_PREFIX = "norm."        # the head norm's weights in head.safetensors
HEAD_NORM_EPS = 1e-5         # transformers' VideoMAEForVideoClassification.fc_norm (docs/architecture.md, "Export")


class Classifier(nn.Module):
    """``encoder`` → pooled ``[B, D]`` → dropout → ``Linear(D, C)``. ``forward(batch)`` is the training loss
    (cross-entropy with optional class weights) for the engine; ``logits``/``predict`` are inference.

    ``head_norm``: a LayerNorm on the pooled embedding before the dropout and the linear layer (``head.safetensors``
    holds it as ``norm.weight``/``norm.bias``; ``classifier.json`` records ``"head_norm": true``): with an encoder
    whose tokens are not normalised after the last layer, this is VideoMAE's fine-tuning head, the layout of
    transformers' ``VideoMAEForVideoClassification`` (docs/architecture.md, "Export"). Its epsilon is 1e-5, as there.

    ``task="regression"`` (a table's numeric target): one output, trained with the MSE on the target standardised
    by ``target_mean``/``target_std`` (the training set's, saved in ``classifier.json``); ``label_names`` is
    then the target's name and ``predict`` gives values in the target's units."""

    collapse_rules = (CollapseRule(
        "class_entropy_ratio", 0.1, below=True,
        remedy="lower the learning rate (--lr, finetune.lr), use --class-weights balanced (finetune.class_weights) "
               "when one class dominates, try --mode frozen first (a head on the pretrained features), check that the "
               "labels match the inputs"),)

    def __init__(self, encoder: Encoder, label_names: Sequence[str], *, dropout: float = 0.0,
                 class_weights: Tensor | None = None, processor: Processor | None = None,
                 task: str = "classification", target_mean: float = 0.0, target_std: float = 1.0,
                 head_norm: bool = False) -> None:
        super().__init__()
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if task == "classification" and len(label_names) < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {list(label_names)}")
        if task == "regression" and (len(label_names) != 1 or not target_std > 0):
            raise ValueError(f"a regressor has one target name and target_std > 0, got {list(label_names)}, "
                             f"{target_std}")
        self.encoder, self.processor, self.task = encoder, processor, task
        self.label_names = [str(n) for n in label_names]
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.dropout = nn.Dropout(dropout)
        self.head_norm = nn.LayerNorm(encoder.dim, eps=HEAD_NORM_EPS) if head_norm else None
        self.head = nn.Linear(encoder.dim, len(self.label_names))
        self.register_buffer("class_weights", class_weights.float() if class_weights is not None else None,
                             persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head_logits(self.encoder(batch).pooled)

    def head_logits(self, pooled: Tensor) -> Tensor:
        """The head on pooled embeddings ``[B, D]`` → logits ``[B, C]``."""
        if self.head_norm is not None:
            pooled = self.head_norm(pooled)
        return self.head(self.dropout(pooled))

    def head_parameters(self) -> list[nn.Parameter]:
        """The head's parameters (the linear layer's and, with ``head_norm``, the norm's)."""
        norm = list(self.head_norm.parameters()) if self.head_norm is not None else []
        return [*norm, *self.head.parameters()]

    def pooled_head(self) -> nn.Module:
        """The head as one module on pooled embeddings, for tracing (``zoo export``): the norm, if any, then the
        linear layer (dropout is the identity at inference)."""
        return nn.Sequential(self.head_norm, self.head) if self.head_norm is not None else self.head

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> PretrainOutput:
        """The training loss and metrics; without ``labels`` in the batch no loss (``None``), as Hugging Face
        models do, and the logits in ``metrics["logits"]``."""
        logits = self.logits(batch).float()
        if "labels" not in batch:
            return PretrainOutput(None, {"logits": logits})
        if self.task == "regression":
            target = (batch["labels"].float() - self.target_mean) / self.target_std
            loss = F.mse_loss(logits[:, 0], target)
            mae = float((logits[:, 0] - target).detach().abs().mean() * self.target_std)
            return PretrainOutput(loss, {"mae": mae})
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        loss = F.cross_entropy(logits, batch["labels"], weight=weight)
        predicted = logits.argmax(dim=1)
        acc = (predicted == batch["labels"]).float().mean()
        return PretrainOutput(loss, {"accuracy": float(acc), "class_entropy_ratio": class_entropy_ratio(
            logits.detach().softmax(dim=1), batch["labels"], logits.shape[1])})

    def outputs(self, batch: dict[str, Tensor]) -> Tensor:
        """Class probabilities ``[B, C]`` or, for regression, values ``[B]`` in the target's units."""
        return self.pooled_outputs(self.encoder(batch).pooled)

    def pooled_outputs(self, pooled: Tensor) -> Tensor:
        """:meth:`outputs` from pooled embeddings ``[B, D]``."""
        logits = self.head_logits(pooled).float()
        if self.task == "regression":
            return logits[:, 0] * self.target_std + self.target_mean
        return logits.softmax(dim=1)

    @torch.no_grad()
    def example_outputs(self, examples: Sequence[Any], *, names: Sequence[str] | None = None, batch_size: int = 64,
                        device: torch.device | str | None = None) -> Tensor:
        """:meth:`outputs` of raw examples through the processor, in the mode the model is in. A processor that
        ``pools_windows`` (audio) gives each example whole: its windows encoded ``batch_size`` at a time and the head
        applied to their pooled embeddings' mean weighted by length (docs/architecture.md, "Long inputs"); the others
        give each example as ``processor(example)``."""
        if self.processor is None:
            raise ValueError("this model has no processor: load it with AutoClassifier.from_pretrained")
        device = device if device is not None else self.head.weight.device
        if self.processor.pools_windows():
            if not len(examples):
                return torch.zeros(0) if self.task == "regression" else torch.zeros(0, self.num_classes)
            pooled = window_means(lambda b: self.encoder(b).pooled.float(), self.processor, examples, names=names,
                                  batch_size=batch_size, device=device)
            return self.pooled_outputs(pooled.to(device)).cpu()
        out = list(map_batches(self.outputs, self.processor, examples, names=names, batch_size=batch_size,
                               device=device))
        if out:
            return torch.cat(out)
        return torch.zeros(0) if self.task == "regression" else torch.zeros(0, self.num_classes)

    def _run(self, examples: Sequence[Any], names: Sequence[str] | None, batch_size: int) -> Tensor:
        self.eval()
        return self.example_outputs(examples, names=names, batch_size=batch_size)

    def predict_proba(self, examples: Sequence[Any], *, names: Sequence[str] | None = None,
                      batch_size: int = 64) -> Tensor:
        """Class probabilities ``[N, C]`` of raw examples (through the saved processor), the model in eval mode."""
        if self.task == "regression":
            raise ValueError("a regressor has no class probabilities: use predict_values")
        return self._run(examples, names, batch_size)

    def predict_values(self, examples: Sequence[Any], *, names: Sequence[str] | None = None,
                       batch_size: int = 64) -> Tensor:
        """A regressor's predictions ``[N]`` in the target's units."""
        if self.task != "regression":
            raise ValueError("a classifier predicts labels: use predict or predict_proba")
        return self._run(examples, names, batch_size)

    def predict(self, examples: Sequence[Any], *, names: Sequence[str] | None = None, top_k: int = 1,
                batch_size: int = 64) -> list[list[dict[str, Any]]]:
        """For every example the ``top_k`` labels by name with their probabilities, most likely first (a
        regressor: one ``{"label": target name, "value": v}``)."""
        if self.task == "regression":
            values = self.predict_values(examples, names=names, batch_size=batch_size)
            return [[{"label": self.label_names[0], "value": float(v)}] for v in values]
        probs = self.predict_proba(examples, names=names, batch_size=batch_size)
        k = min(top_k, self.num_classes)
        values, idx = probs.topk(k, dim=1)
        return [[{"label": self.label_names[int(j)], "score": float(v)} for v, j in zip(vs, js)]
                for vs, js in zip(values, idx)]

    def save_pretrained(self, folder: str | Path, *, pretraining: dict[str, Any] | None = None,
                        finetuning: dict[str, Any] | None = None) -> Path:
        """The encoder folder plus ``head.safetensors`` and ``classifier.json`` (task, labels or target and its
        statistics, head shape, results)."""
        folder = Path(folder)
        self.encoder.save_pretrained(folder, processor=self.processor, pretraining=pretraining)
        state = dict(self.head.state_dict())
        if self.head_norm is not None:
            state.update({f"{NORM_PREFIX}{k}": v for k, v in self.head_norm.state_dict().items()})
        save_weights({k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / HEAD_NAME,
                     metadata={"format": "pt"})
        meta: dict[str, Any] = {"task": self.task, "label_names": self.label_names, "num_classes": self.num_classes,
                                "in_features": self.encoder.dim}
        if self.head_norm is not None:
            meta["head_norm"] = True
        if self.task == "regression":
            meta.update(num_classes=0, target_mean=self.target_mean, target_std=self.target_std)
        (folder / CLASSIFIER_NAME).write_text(json.dumps({**meta, "finetuning": finetuning or {}}, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, runtime: str | None = None, **hub_kwargs: Any) -> Classifier:
        meta_path = resolve_file(id_or_path, CLASSIFIER_NAME, **hub_kwargs)
        meta = read_json(meta_path)
        task, names = meta.get("task", "classification"), meta.get("label_names")
        if task not in ("classification", "regression"):
            raise FormatError(f"{meta_path}: task must be 'classification' or 'regression', got {task!r}")
        want = 1 if task == "regression" else 2
        if not isinstance(names, list) or len(names) < want or len(set(map(str, names))) != len(names) or (
                task == "regression" and len(names) != 1):
            raise FormatError(f"{meta_path}: label_names must be a list of at least 2 distinct names (a regressor: "
                              "its one target name)")
        stats = {}
        if task == "regression":
            mean, std = meta.get("target_mean"), meta.get("target_std")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (mean, std)) or not std > 0:
                raise FormatError(f"{meta_path}: target_mean and target_std must be finite numbers, std > 0")
            stats = {"target_mean": float(mean), "target_std": float(std)}
        head_norm = meta.get("head_norm", False)
        if not isinstance(head_norm, bool):
            raise FormatError(f"{meta_path}: head_norm must be true or false, got {head_norm!r}")
        encoder = AutoEncoder.from_pretrained(id_or_path, runtime=runtime, **hub_kwargs)
        processor = AutoProcessor.from_pretrained(id_or_path, **hub_kwargs)
        clf = cls(encoder, names, processor=processor, task=task, head_norm=head_norm, **stats)
        head = load_weights(resolve_file(id_or_path, HEAD_NAME, **hub_kwargs))
        where = f"{id_or_path}/{HEAD_NAME}"
        if clf.head_norm is not None:
            load_state_strict(clf.head_norm, {k.removeprefix(NORM_PREFIX): v for k, v in head.items()
                                              if k.startswith(NORM_PREFIX)}, where)
            head = {k: v for k, v in head.items() if not k.startswith(NORM_PREFIX)}
        load_state_strict(clf.head, head, where)
        return clf.eval()


class AutoClassifier:
    """``AutoClassifier.from_pretrained(id_or_path)`` → a fine-tuned :class:`Classifier` with its processor."""

    def __init__(self) -> None:
        raise TypeError("use AutoClassifier.from_pretrained(id_or_path)")

    @staticmethod
    def from_pretrained(id_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        runtime: str | None = None) -> Classifier:
        """``runtime``: ``"onnx"`` or ``"torch"`` for an exported folder that has both (default: its graph)."""
        return Classifier.from_pretrained(id_or_path, revision=revision, cache_dir=cache_dir,
                                          local_files_only=local_files_only, token=token, runtime=runtime)
