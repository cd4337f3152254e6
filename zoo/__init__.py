"""ssl-zoo core: masking, objectives, layers, the modality contract, Hub I/O and model cards.

``zoo`` knows no modality; modalities register through the ``zoo.modalities`` entry points. Names are imported
on first use (PEP 562), so ``zoo list`` and ``--help`` answer without importing torch or any modality.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "AutoEncoder": "auto", "AutoProcessor": "auto", "AutoClassifier": "classifier", "Classifier": "classifier",
    "Config": "config", "ConfigError": "config", "FormatError": "hub", "save_pretrained": "hub",
    "Architecture": "plugin", "BadExample": "plugin", "Encoder": "plugin", "EncoderOutput": "plugin",
    "ExampleSet": "plugin", "Modality": "plugin", "Pretrainer": "plugin", "PretrainOutput": "plugin",
    "Processor": "plugin", "ProcessorConfig": "plugin", "Protocol": "plugin", "StreamSet": "plugin",
    "Unreadable": "plugin",
    "push_to_hub": "publish", "UnknownModality": "registry", "get_modality": "registry", "installed": "registry",
    "register": "registry", "describe_installed": "registry",
    "layers": "layers", "masking": "masking", "objectives": "objectives",
}

__all__ = ["Architecture", "AutoClassifier", "AutoEncoder", "AutoProcessor", "BadExample", "Classifier", "Config",
    "ConfigError", "Encoder", "EncoderOutput", "ExampleSet", "FormatError", "Modality", "PretrainOutput",
    "Pretrainer", "Processor", "ProcessorConfig", "Protocol", "StreamSet", "UnknownModality", "Unreadable",
    "__version__",
    "describe_installed", "get_modality", "installed", "layers", "masking", "objectives", "push_to_hub",
    "register", "save_pretrained"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)          # a submodule: zoo.plugin, zoo.hub, …
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    module = importlib.import_module(f".{_WHERE[name]}", __name__)
    value = module if name == _WHERE[name] else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what type checkers and IDEs see
    from . import layers, masking, objectives
    from .auto import AutoEncoder, AutoProcessor
    from .classifier import AutoClassifier, Classifier
    from .config import Config, ConfigError
    from .hub import FormatError, save_pretrained
    from .plugin import (
        Architecture,
        BadExample,
        Encoder,
        EncoderOutput,
        ExampleSet,
        Modality,
        Pretrainer,
        PretrainOutput,
        Processor,
        ProcessorConfig,
        Protocol,
        StreamSet,
        Unreadable,
    )
    from .publish import push_to_hub
    from .registry import UnknownModality, describe_installed, get_modality, installed, register
