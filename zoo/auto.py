"""``AutoEncoder`` / ``AutoProcessor``: load any zoo model by dispatching on its config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .hub import FormatError, build_encoder, load_config, load_processor_dict
from .plugin import Encoder, Processor
from .registry import get_modality

__all__ = ["AutoEncoder", "AutoProcessor", "load_encoder"]


def load_encoder(id_or_path: str | Path, *, expect: type[Encoder] | None = None, **hub_kwargs: Any) -> Encoder:
    """The class lookup (timm's ``_factory``): ``config.json`` names modality and architecture, the registry
    gives the class; with ``expect``, a config of another architecture is refused."""
    if expect is not None and expect is not Encoder:
        return expect.from_pretrained(id_or_path, **hub_kwargs)
    config = load_config(id_or_path, **hub_kwargs)
    cls = get_modality(config["modality"]).architecture(config["architecture"]).encoder
    return build_encoder(cls, config, id_or_path, **hub_kwargs)


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
        try:
            processor = modality.processor.from_dict(load_processor_dict(id_or_path, **hub_kwargs))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            if isinstance(err, FormatError):
                raise
            raise FormatError(f"{id_or_path}: preprocessor.json does not load: {str(err).strip(chr(39))}") from None
        # what fit learned must be what the encoder was built for (else a raw shape error at the first batch)
        implied = json.loads(json.dumps(processor.encoder_config()))
        differ = {k: (v, config["encoder"].get(k)) for k, v in implied.items() if config["encoder"].get(k) != v}
        if differ:
            raise FormatError(f"{id_or_path}: preprocessor.json does not fit config.json: "
                              + "; ".join(f"{k} is {a!r} in the processor, {b!r} in the encoder"
                                          for k, (a, b) in differ.items()))
        return processor
