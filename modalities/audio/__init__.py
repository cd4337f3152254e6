"""Audio modality: wav2vec 2.0-style self-supervised speech/audio encoders (Baevski et al. 2020)."""

from pathlib import Path

from zoo import Architecture, Modality

from .baselines import mfcc_features
from .convert import convert_transformers
from .data import load_data
from .model import Wav2Vec2Config, Wav2Vec2Encoder, Wav2Vec2Pretrainer, Wav2Vec2PretrainingConfig
from .processor import AudioProcessor, AudioProcessorConfig
from .sample import sample_data
from .to_transformers import export_transformers

__all__ = ["MODALITY", "AudioProcessor", "AudioProcessorConfig", "Wav2Vec2Config", "Wav2Vec2Encoder",
           "Wav2Vec2Pretrainer", "Wav2Vec2PretrainingConfig", "convert_transformers", "load_data"]

MODALITY = Modality(
    name="audio",
    description="wav2vec 2.0: conv features, span masking, Gumbel quantizer, contrastive + diversity loss",
    processor=AudioProcessor,
    architectures={"wav2vec2": Architecture("wav2vec2", Wav2Vec2Config, Wav2Vec2Encoder, Wav2Vec2Pretrainer,
                                            Wav2Vec2PretrainingConfig)},
    load_data=load_data,
    folder_source="folder",
    recipes=Path(__file__).parent / "recipes",
    sample_data=sample_data,
    usage_example="import numpy as np\nexample = (np.random.randn(16000).astype('float32'), 16000)  # 1 s at 16 kHz",
    converters={"wav2vec2": convert_transformers, "hubert": convert_transformers,
                "data2vec-audio": convert_transformers, "wavlm": convert_transformers},
    exporters={"transformers": export_transformers},
    baselines={"MFCC+Δ+ΔΔ mean+std (librosa)": mfcc_features},
    task="audio-classification",
)
