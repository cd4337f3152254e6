"""One builder from a recipe to what a run needs — modality, data, fitted processor, encoder, pretrainer — for
``zoo pretrain``, the DDP test and the benchmarks alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zoo import (
    Architecture,
    BadExample,
    Encoder,
    ExampleSet,
    Modality,
    Pretrainer,
    Processor,
    StreamSet,
    get_modality,
)
from zoo.config import Config
from zoo.data import take

from .data import drop_unreadable
from .init import init_encoder, init_processor, load_heads, load_init, with_init
from .labelled import check_evaluation_labels
from .recipe import Recipe

__all__ = ["Built", "build", "build_processor", "fit_sample", "fit_processor"]


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


def fit_sample(data: ExampleSet | StreamSet, limit: int, seed: int) -> tuple[Any, list[str]]:
    """What ``Processor.fit`` sees, and the examples' names: all examples of a map-style set up to ``limit``,
    else a seeded sample of ``limit`` (in index order); the first ``limit`` examples of a stream."""
    if isinstance(data, StreamSet):
        head = data.head(limit)
        return [rec[0] for rec in head], [rec[2] for rec in head]
    if len(data) <= limit:
        return data.examples, [data.name(i) for i in range(len(data))]
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit].sort().values.tolist()
    return take(data.examples, idx), [data.name(i) for i in idx]


def fit_processor(processor: Processor, data: ExampleSet | StreamSet, seed: int, skip_bad: bool) -> Processor:
    """``processor.fit`` on the bounded sample. A bad example in it is named (the sample's own index means
    nothing to a user); with ``skip_bad`` the bad ones — those ``fit`` refuses on their own — are left out."""
    sample, names = fit_sample(data, int(getattr(processor.config, "fit_examples", 1000)), seed)
    try:
        return _fitted(processor, processor.fit(sample))
    except BadExample as err:
        first = err
    bad = []
    for i in range(len(sample)):
        try:
            processor.fit(take(sample, [i]))
        except BadExample as err:
            bad.append(i)
            if not skip_bad:
                raise BadExample(names[i], err.field, f"{err.reason} (in the processor's fit sample)") from None
    if not bad:
        raise first
    keep = [i for i in range(len(sample)) if i not in set(bad)]
    return _fitted(processor, processor.fit(take(sample, keep)))


def _fitted(processor: Processor, result: object) -> Processor:
    """The plugin contract (docs/adding-a-modality.md): ``Processor.fit`` returns the fitted processor."""
    if not isinstance(result, Processor):
        raise TypeError(f"modality {processor.modality!r}: {type(processor).__name__}.fit() returned "
                        f"{type(result).__name__}, not the processor: the plugin contract asks fit() to return the "
                        "fitted processor (end it with `return self`)")
    return result


def build(recipe: Recipe, *, data: ExampleSet | StreamSet | None = None, init: str | None = None,
          refit: bool = False) -> Built:
    """Load the training data (lazily), fit the processor on a bounded sample, then build encoder and
    pretrainer with the recipe's seed (the initial weights are part of what a seed reproduces). ``init``: continue
    from that model's encoder, heads where it has them, and processor unless ``refit`` (:mod:`.init`)."""
    if init:
        recipe = with_init(recipe, init)          # its encoder and processor settings (no-op when applied)
    modality = get_modality(recipe.modality)
    arch = modality.architecture(recipe.architecture)
    if data is None:
        if "train" not in recipe.data:
            raise ValueError(f"recipe {recipe.name!r} has no data.train section")
        data = modality.load_data(recipe.data["train"])
    data, _ = drop_unreadable(data, recipe.train.skip_bad, "train.skip_bad")     # found before the first step
    start = load_init(init, modality, arch.name) if init else None
    processor = build_processor(modality, recipe.processor)
    if start is None or refit:
        processor = fit_processor(processor, data, recipe.train.seed, recipe.train.skip_bad)
    if start is not None:
        processor = init_processor(start, processor, refit=refit)
    check_evaluation_labels(processor, recipe.evaluate)          # before any work on a recipe that scores its label
    torch.manual_seed(recipe.train.seed)
    if start is not None:
        encoder = init_encoder(start, arch, processor.encoder_config())
    else:
        enc_cfg = {**recipe.encoder, **processor.encoder_config()}
        encoder = arch.encoder(arch.config.from_dict(enc_cfg, where="recipe:encoder"))
    pre_cfg = recipe.objective            # parsed once, with the recipe; the fitted processor adds its values
    fitted = processor.objective_config()
    if fitted:
        pre_cfg = type(pre_cfg).from_dict({**pre_cfg.to_dict(), **fitted}, where="recipe:pretraining")
    pretrainer = arch.pretrainer(encoder, pre_cfg, total_steps=recipe.train.steps)
    if start is not None:
        load_heads(pretrainer, start)
    return Built(recipe, modality, arch, data, processor, encoder, pretrainer, pre_cfg)
