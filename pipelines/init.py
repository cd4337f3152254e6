"""Continued pretraining (docs/architecture.md, "Continued pretraining"): ``zoo pretrain RECIPE --init MODEL``
starts the recipe's objective from a trained encoder — a zoo folder, a Hub id, or a public transformers
checkpoint the converters read — instead of random weights, the standard domain-adaptation step (wav2vec 2.0 on
new speech: Hsu et al. 2021, "Robust wav2vec 2.0"; DAPT: Gururangan et al. 2020).

- The encoder (architecture, config and weights) comes from ``MODEL``: :func:`with_init` puts its encoder and
  processor settings into the recipe (so ``config.json`` records what ran), with the user's ``processor.*``
  overrides on top. The recipe gives the objective, the data and the schedule.
- The pretraining heads come from ``MODEL`` where it has them (``pretraining_heads.safetensors``: what a converter
  kept of a ``*ForPreTraining`` checkpoint, e.g. wav2vec 2.0's quantizer and projections), freshly seeded
  otherwise; the log says which.
- The processor's fitted state comes from ``MODEL`` unless ``refit``: the processor is then fitted on the new
  data and aligned to ``MODEL``'s (:meth:`zoo.Processor.align_to`: the same columns and vocabularies, new
  statistics); encoder settings that follow from the fit (e.g. the time-gap statistics of event logs) take the
  new values when ``MODEL``'s weights still fit them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zoo import Architecture, AutoProcessor, Encoder, Modality, Processor
from zoo.auto import load_encoder, zoo_source
from zoo.hub import FormatError, check_dtypes, load_config, load_state_strict, load_weights, resolve_file
from zoo.paths import portable

from .recipe import Recipe, parse_assignments, parse_recipe

logger = logging.getLogger(__name__)

__all__ = ["HEADS_NAME", "Init", "with_init", "refuse_encoder_overrides", "load_init", "init_processor",
           "init_encoder", "load_heads", "init_label"]

HEADS_NAME = "pretraining_heads.safetensors"


@dataclass
class Init:
    source: str                      # what the user named (a Hub id, or a folder)
    folder: str | Path               # where the zoo files are (a converted checkpoint's cache folder)
    hub_kwargs: dict[str, Any]
    encoder: Encoder
    processor: Processor             # as saved with the model


def init_label(init: str) -> str:
    """How the card names the starting point: a Hub id as it is, a local folder portably."""
    return portable(str(Path(init).resolve())) if Path(init).exists() else init


def _source(init: str, modality: str, architecture: str) -> tuple[str | Path, dict[str, Any], dict[str, Any]]:
    if not Path(init).exists() and "/" not in str(init):
        raise ValueError(f"--init {init}: no such folder, and not a Hub id (ORG/NAME; the zoo's entries are "
                         f"ssl-zoo/<entry>, `zoo list` names them)")
    folder, hub_kwargs = zoo_source(init, {})
    config = load_config(folder, **hub_kwargs)
    found = (config.get("modality"), config.get("architecture"))
    if found != (modality, architecture):
        raise ValueError(f"--init {init}: a model of {found[0]}/{found[1]}; the recipe pretrains "
                         f"{modality}/{architecture}")
    return folder, hub_kwargs, config


def with_init(recipe: Recipe, init: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """``recipe`` with ``init``'s encoder and processor sections, the ``processor.*`` ``overrides`` (``--set``)
    applied on top: what the continued run really uses, recorded as such. An ``encoder.*`` override that differs
    from ``init``'s is refused (:func:`refuse_encoder_overrides`)."""
    folder, hub_kwargs, config = _source(init, recipe.modality, recipe.architecture)
    settings = parse_assignments(list(overrides), "--set")
    refuse_encoder_overrides(init, config["encoder"], settings)
    mine = {k: v for k, v in settings.items() if k.startswith("processor.")}
    if recipe.encoder == config["encoder"] and not mine:
        return recipe                                                 # already applied
    processor = AutoProcessor.from_pretrained(folder, **hub_kwargs).config.to_dict()
    for key, value in mine.items():
        processor[key.removeprefix("processor.")] = value
    excluded = set(processor.get("exclude") or []) | set(recipe.processor.get("exclude") or [])
    if "exclude" in processor:
        processor["exclude"] = sorted(excluded)
    raw = {**recipe.to_dict(), "encoder": dict(config["encoder"]), "processor": processor}
    return parse_recipe(raw, recipe.path or recipe.name)


def refuse_encoder_overrides(init: str, encoder: dict[str, Any], settings: dict[str, Any]) -> None:
    """An ``encoder.*`` ``--set`` that differs from ``init``'s encoder config cannot apply (the weights are
    ``init``'s): refused naming the key, the model's value and the remedies (docs/reliability.md). One equal to the
    model's is what runs anyway."""
    _missing = object()
    for key, value in settings.items():
        if not key.startswith("encoder."):
            continue
        node: Any = encoder
        for part in key.split(".")[1:]:
            node = node.get(part, _missing) if isinstance(node, dict) else _missing
        if node is _missing or node != value:
            have = "has no such setting" if node is _missing else f"has {key.removeprefix('encoder.')}={node!r}"
            raise ValueError(f"--set {key}={value!r} cannot apply with --init {init}: the encoder (its architecture "
                             f"and weights) comes from the model, which {have}; drop the --set {key}, or pretrain "
                             "from scratch without --init")


def load_init(init: str, modality: Modality, architecture: str) -> Init:
    """The encoder and the processor of ``init``, checked against the recipe's family."""
    folder, hub_kwargs, _ = _source(init, modality.name, architecture)
    encoder = load_encoder(folder, **hub_kwargs)
    processor = AutoProcessor.from_pretrained(folder, **hub_kwargs)
    return Init(str(init), folder, hub_kwargs, encoder, processor)


def init_processor(start: Init, processor: Processor, *, refit: bool) -> Processor:
    """The continued run's processor: ``processor`` (built from the recipe's processor settings: ``start``'s own
    with the user's overrides, :func:`with_init`) with ``start``'s fitted state, or, with ``refit`` (``processor``
    fitted on the new data), aligned to ``start``'s columns and vocabularies."""
    if refit:
        processor.align_to(start.processor)
        logger.info("--init %s: the processor refitted on the new data (aligned to its columns and vocabularies, "
                    "where it has them)", start.source)
    else:
        processor.load_state(start.processor.state())
        logger.info("--init %s: the processor's fitted state from it (--refit fits it on the new data)",
                    start.source)
    return processor


def init_encoder(start: Init, architecture: Architecture, fitted: dict[str, Any]) -> Encoder:
    """``start``'s encoder; where the processor's fit gives encoder settings other than ``start``'s (``--refit``:
    e.g. the time-gap statistics of an event log), the same weights under those settings, if they fit."""
    old = start.encoder.config.to_dict()
    changed = {k: v for k, v in fitted.items() if old.get(k) != v}
    if not changed:
        return start.encoder
    encoder = architecture.encoder(architecture.config.from_dict({**old, **changed}, where="--refit"))
    try:
        load_state_strict(encoder, start.encoder.state_dict(), f"--init {start.source}")
    except FormatError:
        raise ValueError(f"--init {start.source} --refit: the new data gives the encoder "
                         f"{ {k: changed[k] for k in changed} }, the model has { {k: old.get(k) for k in changed} }: "
                         "its weights do not fit that shape; pretrain without --refit, or from scratch") from None
    logger.info("--init %s --refit: the encoder's %s follow the new data", start.source, ", ".join(changed))
    return encoder


def load_heads(pretrainer: nn.Module, init: Init) -> list[str]:
    """Copy ``init``'s pretraining heads into ``pretrainer`` when it has them (every head parameter, each of the
    right shape: else a :class:`FormatError`); returns the heads loaded, ``[]`` when they start fresh."""
    heads = {k: v for k, v in pretrainer.state_dict().items() if not k.startswith("encoder.")}
    learned = {k for k, _ in pretrainer.named_parameters() if not k.startswith("encoder.")}
    names = sorted({k.split(".")[0] for k in learned})
    path = resolve_file(init.folder, HEADS_NAME, required=False, **init.hub_kwargs)
    if path is None:
        if not names:
            logger.info("--init %s: the encoder from it (the objective has no pretraining heads)", init.source)
        else:
            logger.info("--init %s: the encoder from it; it has no pretraining heads, so %s are built by the "
                        "objective (freshly seeded, or from the encoder, as an EMA teacher is)", init.source,
                        ", ".join(names))
        return []
    saved = load_weights(path)
    missing = sorted(learned - set(saved))            # buffers (a schedule's temperature) may start anew
    unexpected = sorted(set(saved) - set(heads))
    wrong = sorted(k for k in set(heads) & set(saved) if tuple(saved[k].shape) != tuple(heads[k].shape))
    if missing or unexpected or wrong:
        raise FormatError(f"--init {init.source}: {HEADS_NAME} does not fit the recipe's pretraining heads "
                          f"(missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}): "
                          "match the recipe's pretraining section to the checkpoint's")
    check_dtypes(heads, saved, f"--init {init.source}: {HEADS_NAME}")
    pretrainer.load_state_dict({**pretrainer.state_dict(), **saved})
    logger.info("--init %s: the encoder and the pretraining heads %s from it", init.source, ", ".join(names))
    return names
