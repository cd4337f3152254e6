"""``AutoEncoder`` / ``AutoProcessor``: load any zoo model by dispatching on its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .hub import load_config, load_encoder, load_processor_dict
from .plugin import Encoder, Processor
from .registry import get_modality

__all__ = ["AutoEncoder", "AutoProcessor"]


class AutoEncoder:
    """``AutoEncoder.from_pretrained(id_or_path)`` → the modality's encoder with its weights."""

    def __init__(self) -> None:
        raise TypeError("use AutoEncoder.from_pretrained(id_or_path)")

    @staticmethod
    def from_pretrained(id_or_path: str | Path, revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        token: str | bool | None = None) -> Encoder:
        return load_encoder(id_or_path, revision=revision, cache_dir=cache_dir,
                            local_files_only=local_files_only, token=token)


class AutoProcessor:
    """``AutoProcessor.from_pretrained(id_or_path)`` → the fitted processor saved with the model."""

    def __init__(self) -> None:
        raise TypeError("use AutoProcessor.from_pretrained(id_or_path)")

    @staticmethod
    def from_pretrained(id_or_path: str | Path, **hub_kwargs: Any) -> Processor:
        config = load_config(id_or_path, **hub_kwargs)
        modality = get_modality(config["modality"])
        return modality.processor.from_dict(load_processor_dict(id_or_path, **hub_kwargs))
