"""Bound models (docs/architecture.md, "Binding"): the encoders of several modalities, each with a linear projection
into one shared space, trained so that the two sides of a pair land together — CLIP's symmetric InfoNCE with a
learned temperature (Radford et al. 2021), around one anchor side when there are more than two (ImageBind, Girdhar
et al. 2023).

On disk (one folder = one Hub repo): ``config.json`` (``modality: "bound"``, the sides and the shared width),
``model.safetensors`` (the projections and the temperature) and each side as an ordinary zoo folder in a subfolder
named for its modality, so that a side loads alone as any encoder does. Loading is the factory's
(:mod:`zoo.auto`); this module knows no modality."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hub
from .config import Config
from .plugin import Encoder, EncoderOutput, Processor

__all__ = ["BOUND", "BIND_ARCHITECTURE", "BindConfig", "BoundModel", "SharedSpaceEncoder", "is_bound"]

BOUND = "bound"                      # config.json's ``modality`` of a bound model
BIND_ARCHITECTURE = "bind"


def is_bound(config: dict[str, Any]) -> bool:
    return config.get("modality") == BOUND


@dataclass
class BindConfig(Config):
    """The shared space: ``sides`` (modality names, the anchor first), its width ``dim``, the temperature the
    training starts from (CLIP: 0.07) and the largest inverse temperature it may reach (CLIP: 100)."""

    sides: list[str] = field(default_factory=list)
    dim: int = 128
    init_temperature: float = 0.07
    max_inverse_temperature: float = 100.0

    def validate(self) -> None:
        self.check(len(self.sides) >= 2, "sides", "a bound model has at least two sides")
        self.check(len(set(self.sides)) == len(self.sides), "sides", f"each modality once, got {self.sides}")
        self.check(all(isinstance(s, str) and s and "/" not in s and s != BOUND for s in self.sides), "sides",
                   "modality names (no '/')")
        self.check(1 <= self.dim <= 65536, "dim", "must lie in [1, 65536]")
        self.check(0 < self.init_temperature <= 10, "init_temperature", "must lie in (0, 10]")
        self.check(1 < self.max_inverse_temperature <= 1e4, "max_inverse_temperature", "must lie in (1, 1e4]")
        self.check(1 / self.init_temperature <= self.max_inverse_temperature, "init_temperature",
                   "1 / init_temperature must not exceed max_inverse_temperature")

    @property
    def anchor(self) -> str:
        return self.sides[0]


class BoundModel(nn.Module):
    """Each side's encoder (``encoders[modality]``), a bias-free linear projection of its pooled embedding to the
    shared width (``projections[modality]``) and ``logit_scale``, the log of the inverse temperature.
    ``processors`` (one per side) turn raw inputs into batches for :meth:`embed`."""

    modality = BOUND
    architecture = BIND_ARCHITECTURE

    def __init__(self, encoders: dict[str, Encoder], config: BindConfig,
                 processors: dict[str, Processor] | None = None) -> None:
        super().__init__()
        if list(encoders) != list(config.sides):
            raise ValueError(f"a bound model's encoders {list(encoders)} must be its sides {config.sides}, in order")
        self.config = config
        self.encoders = nn.ModuleDict(encoders)
        self.projections = nn.ModuleDict({m: nn.Linear(e.dim, config.dim, bias=False) for m, e in encoders.items()})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        self.processors = dict(processors or {})

    @property
    def sides(self) -> list[str]:
        return list(self.config.sides)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.logit_scale.detach()))

    def side(self, modality: str) -> Encoder:
        """The encoder of one side (an ordinary encoder of its modality)."""
        self._check_side(modality)
        return self.encoders[modality]

    def _check_side(self, modality: str) -> None:
        if modality not in self.encoders:
            raise KeyError(f"this bound model's sides are {self.sides}, not {modality!r}")

    def project(self, modality: str, pooled: Tensor) -> Tensor:
        """A side's pooled embeddings ``[B, D_side]`` → unit vectors of the shared space ``[B, dim]``."""
        self._check_side(modality)
        return F.normalize(self.projections[modality](pooled.float()), dim=-1)

    def forward(self, modality: str, batch: dict[str, Tensor]) -> Tensor:
        """One side's collated batch → its unit vectors in the shared space."""
        return self.project(modality, self.side(modality)(batch).pooled)

    @torch.no_grad()
    def embed(self, modality: str, inputs: Sequence[Any] | dict[str, Tensor], *, batch_size: int = 32,
              names: Sequence[str] | None = None) -> Tensor:
        """Raw inputs of one side (file paths, arrays, rows: what its processor reads; a pandas DataFrame is its
        rows, named by its index), or a batch it collated, → ``[N, dim]`` unit vectors in the shared space (eval
        mode)."""
        self._check_side(modality)
        self.eval()
        if isinstance(inputs, dict):
            return self(modality, inputs)
        if hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):       # a DataFrame: its rows, not its columns
            names = names if names is not None else [f"row {i}" for i in inputs.index]
            inputs = inputs.to_dict("records")
        if modality not in self.processors:
            raise ValueError(f"no processor for the {modality!r} side: load the model with "
                             "zoo.AutoEncoder.from_pretrained, or pass a collated batch")
        from .embedding import map_batches
        device = self.logit_scale.device
        parts = list(map_batches(lambda b: self(modality, b), self.processors[modality], list(inputs),
                                 names=names, batch_size=batch_size, device=device))
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Cosine similarities of two sets of shared-space vectors ``[N, dim] x [M, dim] → [N, M]``."""
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T

    def signature(self, modality: str) -> str:
        """A fingerprint of one side's place in this shared space (SHA-256 of its projection and the temperature):
        what ``zoo embed --modality`` records beside the vectors, so that ``zoo search`` refuses vectors of another
        side or another bound model."""
        import hashlib
        self._check_side(modality)
        digest = hashlib.sha256(modality.encode())
        for t in (self.projections[modality].weight, self.logit_scale):
            digest.update(t.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.hexdigest()[:32]

    def head_state(self) -> dict[str, Tensor]:
        """What ``model.safetensors`` holds: the projections and the temperature (each side's encoder is saved in
        its own subfolder)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("encoders.")}

    def save_pretrained(self, folder: str | Path, *, processors: dict[str, Processor] | None = None,
                        pretraining: dict[str, Any] | None = None,
                        sides_pretraining: dict[str, dict[str, Any]] | None = None) -> Path:
        """``config.json``, ``model.safetensors`` and each side's zoo folder (``<folder>/<modality>/``, with its
        processor). The card is written by :mod:`zoo.cards`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        processors = processors if processors is not None else self.processors
        sides = {}
        for m in self.sides:
            enc = self.encoders[m]
            enc.save_pretrained(folder / m, processor=processors.get(m),
                                pretraining=(sides_pretraining or {}).get(m, {"bound_in": "the parent folder"}))
            sides[m] = {"architecture": enc.architecture, "dim": enc.dim}
        config = {"zoo_format": hub.ZOO_FORMAT, "modality": BOUND, "architecture": BIND_ARCHITECTURE,
                  "encoder": self.config.to_dict(), "sides": sides, "pretraining": pretraining or {}}
        (folder / hub.CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        hub.save_weights(self.head_state(), folder / hub.WEIGHTS_NAME,
                         metadata={"format": "pt", "zoo_format": str(hub.ZOO_FORMAT)})
        return folder

    def load_head(self, state: dict[str, Tensor], where: str) -> None:
        """The projections and temperature from ``model.safetensors``, strictly (names and shapes)."""
        own = self.head_state()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise hub.FormatError(f"{where}: model.safetensors does not fit the bound model's sides (missing "
                                  f"{missing[:5]}, unexpected {unexpected[:5]})")
        differ = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if tuple(state[k].shape) != tuple(v.shape)]
        if differ:
            raise hub.FormatError(f"{where}: model.safetensors shapes differ from config.json: {differ[:3]}")
        with torch.no_grad():
            for k, v in self.named_parameters():
                if k in state:
                    v.copy_(state[k])


class SharedSpaceEncoder(Encoder):
    """One side of a bound model as an ordinary encoder whose ``pooled`` output is that side's unit vector in the
    shared space (its tokens stay the side's own): what ``zoo embed --modality`` runs, so that windows, shards and
    every other embedding path work unchanged."""

    def __init__(self, bound: BoundModel, modality: str) -> None:
        side = bound.side(modality)
        super().__init__(side.config)
        self.modality, self.architecture = side.modality, side.architecture       # type: ignore[misc]
        self.side, self.projection = side, bound.projections[modality]
        self.side_name, self.signature = modality, bound.signature(modality)

    @property
    def dim(self) -> int:
        return self.projection.out_features

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        out = self.side(batch, return_hidden=return_hidden)
        return EncoderOutput(out.tokens, out.padding_mask, F.normalize(self.projection(out.pooled.float()), dim=-1),
                             out.hidden)
