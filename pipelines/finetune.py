"""Fine-tuning with a task head through the same engine as pretraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from zoo import AutoEncoder, AutoProcessor, Encoder, PretrainOutput, get_modality

from .engine import fit
from .recipe import TrainConfig

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


def finetune(model: str | Path, recipe: dict[str, Any], output_dir: str | Path, *, resume: bool = True,
             device: str = "cpu") -> dict[str, Any]:
    """Fine-tune a zoo encoder on the recipe's labelled ``evaluate.train`` data (``finetune`` holds the
    engine settings) and report accuracy on ``evaluate.test``. Saves the encoder folder and the head."""
    output_dir = Path(output_dir)
    encoder = AutoEncoder.from_pretrained(model)
    processor = AutoProcessor.from_pretrained(model)
    modality = get_modality(encoder.modality)
    spec = recipe.get("evaluate", {})
    if "train" not in spec or "test" not in spec:
        raise ValueError(f"recipe {recipe['name']!r} needs evaluate.train and evaluate.test data to fine-tune")
    train, test = modality.load_data(spec["train"]), modality.load_data(spec["test"])
    if train.labels is None:
        raise ValueError("fine-tuning needs labelled data")
    cfg = TrainConfig.from_dict({"steps": 50, "lr": 1e-4, "warmup_steps": 5, "device": device,
                                 **recipe.get("finetune", {})}, where="recipe:finetune")
    items, _ = processor.process(train.examples, names=train.names)
    clf = Classifier(encoder, int(max(train.labels)) + 1)
    fit(clf, items, processor.collate, cfg, output_dir, resume=resume, labels=list(train.labels),
        desc=f"finetune {recipe['name']}")
    clf.eval().cpu()
    with torch.no_grad():
        test_items, _ = processor.process(test.examples, names=test.names)
        preds = torch.cat([clf.logits(processor.collate(test_items[i:i + 64])).argmax(dim=1)
                           for i in range(0, len(test_items), 64)])
    acc = float((preds == torch.as_tensor(list(test.labels))).float().mean())
    folder = output_dir / "model"
    clf.encoder.save_pretrained(folder, processor=processor,
                                pretraining={"finetuned_from": str(model), "recipe": recipe["name"]})
    save_file({k: v.contiguous() for k, v in clf.head.state_dict().items()}, str(folder / "head.safetensors"))
    result = {"test_accuracy": acc, "steps": cfg.steps, "num_classes": clf.head.out_features,
              "label_names": list(train.label_names) if train.label_names else None}
    (folder / "head.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
