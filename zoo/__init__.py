"""ssl-zoo core: masking, objectives, layers, the modality contract, Hub I/O and model cards.

``zoo`` knows no modality; modalities register through the ``zoo.modalities`` entry points.
"""

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
)
from .publish import push_to_hub
from .registry import UnknownModality, get_modality, installed, register

__version__ = "0.1.0"

__all__ = [
    "AutoClassifier", "AutoEncoder", "AutoProcessor", "Architecture", "BadExample", "Classifier", "Config",
    "ConfigError", "Encoder",
    "EncoderOutput", "ExampleSet", "FormatError", "Modality", "PretrainOutput", "Pretrainer", "Processor",
    "ProcessorConfig", "Protocol", "StreamSet",
    "UnknownModality", "get_modality", "installed", "layers", "masking", "objectives", "push_to_hub",
    "register", "save_pretrained", "__version__",
]
