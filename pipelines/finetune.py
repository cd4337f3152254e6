"""Fine-tuning with a task head through the same engine as pretraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from zoo import AutoEncoder, AutoProcessor, Encoder, ExampleSet, PretrainOutput, get_modality
from zoo.paths import portable

from .data import TrainData, iter_batches
from .engine import setup_run, train
from .recipe import Recipe, TrainConfig

__all__ = ["Classifier", "finetune"]


class Classifier(nn.Module):
    """An encoder with a linear head on its pooled output, trained with cross-entropy."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.dim, num_classes)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(batch).pooled)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> PretrainOutput:
        logits = self.logits(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        acc = (logits.argmax(dim=1) == batch["labels"]).float().mean()
        return PretrainOutput(loss, {"accuracy": float(acc)})


def finetune(model: str | Path, recipe: Recipe, output_dir: str | Path, *, resume: bool = True,
             device: str = "cpu", train_set: ExampleSet | None = None, test_set: ExampleSet | None = None,
             from_scratch: bool = False, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune a zoo encoder on the recipe's labelled ``evaluate.train`` data (``finetune`` holds the
    engine settings, ``settings`` overrides them) and report accuracy on ``evaluate.test``; ``train_set`` /
    ``test_set`` replace the recipe's data. ``from_scratch`` trains the same architecture from a random
    initialisation (seeded by the run's seed) instead. Saves the encoder folder and the head."""
    output_dir = Path(output_dir)
    encoder = AutoEncoder.from_pretrained(model)
    processor = AutoProcessor.from_pretrained(model)
    modality = get_modality(encoder.modality)
    spec = recipe.evaluate
    if (train_set is None and "train" not in spec) or (test_set is None and "test" not in spec):
        raise ValueError(f"recipe {recipe.name!r} needs evaluate.train and evaluate.test data to fine-tune")
    train_set = train_set if train_set is not None else modality.load_data(spec["train"])
    test_set = test_set if test_set is not None else modality.load_data(spec["test"])
    if train_set.label_names is not None:
        num_classes = len(train_set.label_names)
    elif isinstance(train_set, ExampleSet) and train_set.labels is not None:
        num_classes = int(max(train_set.labels)) + 1
    else:
        raise ValueError("fine-tuning needs labelled data (a label column, or label names for a stream)")
    cfg = TrainConfig.from_dict({"steps": 50, "lr": 1e-4, "warmup_steps": 5, "device": device,
                                 **recipe.finetune, **(settings or {})}, where="recipe:finetune")
    if from_scratch:
        torch.manual_seed(cfg.seed)
        encoder = type(encoder)(encoder.config)
    ctx = setup_run(cfg, output_dir)
    clf = Classifier(encoder, num_classes)
    data = TrainData(train_set, processor, cfg, rank=ctx.info.rank, world=ctx.info.world)
    train(clf, data, cfg, output_dir, resume=resume, desc=f"finetune {recipe.name}", ctx=ctx)
    clf.eval().cpu()
    correct = total = 0
    with torch.no_grad():
        for batch in iter_batches(test_set, processor, batch_size=64, num_workers=cfg.num_workers):
            labels = batch.pop("labels")
            pred = clf.logits({k: v for k, v in batch.items() if not k.startswith("_")}).argmax(dim=1)
            correct += int((pred == labels).sum())
            total += len(labels)
    folder = output_dir / "model"
    clf.encoder.save_pretrained(folder, processor=processor,
                                pretraining={"finetuned_from": portable(str(Path(model).resolve()))
                                             if Path(model).exists() else str(model), "recipe": recipe.name})
    save_file({k: v.contiguous() for k, v in clf.head.state_dict().items()}, str(folder / "head.safetensors"))
    result = {"test_accuracy": correct / max(total, 1), "steps": cfg.steps, "num_classes": clf.head.out_features,
              "label_names": list(train_set.label_names) if train_set.label_names else None}
    (folder / "head.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
