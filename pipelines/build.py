"""One builder from a recipe to what a run needs — modality, data, fitted processor, encoder, pretrainer — for
``zoo pretrain``, the DDP test and the benchmarks alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zoo import Architecture, Encoder, ExampleSet, Modality, Pretrainer, Processor, StreamSet, get_modality
from zoo.config import Config
from zoo.data import take

from .recipe import Recipe

__all__ = ["Built", "build", "build_processor", "fit_sample"]


@dataclass
class Built:
    recipe: Recipe
    modality: Modality
    architecture: Architecture
    data: ExampleSet | StreamSet
    processor: Processor
    encoder: Encoder
    pretrainer: Pretrainer
    pretraining: Config


def build_processor(modality: Modality, section: dict[str, Any] | None) -> Processor:
    proc_cls = modality.processor
    return proc_cls(proc_cls.config_class.from_dict(section, where="recipe:processor"))


def fit_sample(data: ExampleSet | StreamSet, limit: int, seed: int) -> Any:
    """What ``Processor.fit`` sees: all examples of a map-style set up to ``limit``, else a seeded sample of
    ``limit`` (in index order); the first ``limit`` examples of a stream."""
    if isinstance(data, StreamSet):
        return [rec[0] for rec in data.head(limit)]
    if len(data) <= limit:
        return data.examples
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return take(data.examples, idx.tolist())


def build(recipe: Recipe, *, data: ExampleSet | StreamSet | None = None) -> Built:
    """Load the training data (lazily), fit the processor on a bounded sample, then build encoder and
    pretrainer with the recipe's seed (the initial weights are part of what a seed reproduces)."""
    modality = get_modality(recipe.modality)
    arch = modality.architecture(recipe.architecture)
    if data is None:
        if "train" not in recipe.data:
            raise ValueError(f"recipe {recipe.name!r} has no data.train section")
        data = modality.load_data(recipe.data["train"])
    processor = build_processor(modality, recipe.processor)
    limit = int(getattr(processor.config, "fit_examples", 1000))
    processor.fit(fit_sample(data, limit, recipe.train.seed))
    torch.manual_seed(recipe.train.seed)
    enc_cfg = {**recipe.encoder, **processor.encoder_config()}
    encoder = arch.encoder(arch.config.from_dict(enc_cfg, where="recipe:encoder"))
    pre_cfg = arch.pretraining.from_dict(recipe.pretraining, where="recipe:pretraining")
    pretrainer = arch.pretrainer(encoder, pre_cfg, total_steps=recipe.train.steps)
    return Built(recipe, modality, arch, data, processor, encoder, pretrainer, pre_cfg)
