"""Continued pretraining (docs/architecture.md, "Continued pretraining"): ``zoo pretrain RECIPE --init MODEL``
starts the recipe's objective from a trained encoder — a zoo folder, a Hub id, or a public transformers
checkpoint the converters read — instead of random weights, the standard domain-adaptation step (wav2vec 2.0 on
new speech: Hsu et al. 2021, "Robust wav2vec 2.0"; DAPT: Gururangan et al. 2020).

- The encoder (architecture, config and weights) comes from ``MODEL``; the recipe's ``encoder`` section is not
  used. The recipe gives the objective, the data and the schedule.
- The pretraining heads come from ``MODEL`` where it has them (``pretraining_heads.safetensors``: what a converter
  kept of a ``*ForPreTraining`` checkpoint, e.g. wav2vec 2.0's quantizer and projections), freshly seeded
  otherwise; the log says which.
- The processor's fitted statistics come from ``MODEL`` unless ``refit``: the recipe's processor section is then
  fitted on the new data (the encoder must still accept what it gives)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zoo import AutoProcessor, Encoder, Modality, Processor
from zoo.auto import load_encoder, zoo_source
from zoo.hub import FormatError, load_config, load_weights, resolve_file
from zoo.paths import portable

logger = logging.getLogger(__name__)

__all__ = ["HEADS_NAME", "Init", "load_init", "load_heads", "init_label"]

HEADS_NAME = "pretraining_heads.safetensors"


@dataclass
class Init:
    source: str                      # what the user named (a Hub id, or a folder)
    folder: str | Path               # where the zoo files are (a converted checkpoint's cache folder)
    hub_kwargs: dict[str, Any]
    encoder: Encoder
    processor: Processor | None      # None with refit


def init_label(init: str) -> str:
    """How the card names the starting point: a Hub id as it is, a local folder portably."""
    return portable(str(Path(init).resolve())) if Path(init).exists() else init


def load_init(init: str, modality: Modality, architecture: str, *, refit: bool) -> Init:
    """The encoder (and, unless ``refit``, the processor) of ``init``, checked against the recipe's family."""
    folder, hub_kwargs = zoo_source(init, {})
    config = load_config(folder, **hub_kwargs)
    found = (config.get("modality"), config.get("architecture"))
    if found != (modality.name, architecture):
        raise ValueError(f"--init {init}: a {found[0]}/{found[1]} model; the recipe pretrains "
                         f"{modality.name}/{architecture}")
    encoder = load_encoder(folder, **hub_kwargs)
    processor = None if refit else AutoProcessor.from_pretrained(folder, **hub_kwargs)
    return Init(str(init), folder, hub_kwargs, encoder, processor)


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
    pretrainer.load_state_dict({**pretrainer.state_dict(), **saved})
    logger.info("--init %s: the encoder and the pretraining heads %s from it", init.source, ", ".join(names))
    return names
