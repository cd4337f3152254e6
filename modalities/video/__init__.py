"""Video modality: VideoMAE (Tong et al. 2022) with 90% tube masking, frames decoded by torchcodec in the workers."""

from pathlib import Path

from zoo import Architecture, Modality

from .baselines import frame_statistics
from .convert import convert_transformers
from .data import load_data, make_moving_digits
from .model import VideoMAEConfig, VideoMAEEncoder, VideoMAEPretrainer, VideoMAEPretrainingConfig
from .processor import VideoProcessor, VideoProcessorConfig
from .sample import sample_data
from .to_transformers import export_transformers

__all__ = ["MODALITY", "VideoMAEConfig", "VideoMAEEncoder", "VideoMAEPretrainer", "VideoMAEPretrainingConfig",
           "VideoProcessor", "VideoProcessorConfig", "convert_transformers", "load_data", "make_moving_digits"]

MODALITY = Modality(
    name="video",
    description="VideoMAE: tubelet ViT, 90% tube masking, encoder on visible tokens, per-channel norm-pixel MSE",
    processor=VideoProcessor,
    architectures={"videomae": Architecture("videomae", VideoMAEConfig, VideoMAEEncoder, VideoMAEPretrainer,
                                            VideoMAEPretrainingConfig)},
    load_data=load_data,
    folder_source="folder",
    recipes=Path(__file__).parent / "recipes",
    sample_data=sample_data,
    usage_example=("import numpy as np\n# a clip: frames [T, H, W, 3] uint8 (or a path to any file FFmpeg reads)\n"
                   "example = np.random.randint(0, 256, (32, 96, 128, 3), dtype=np.uint8)"),
    converters={"videomae": convert_transformers},
    exporters={"transformers": export_transformers},
    baselines={"frame + frame-difference statistics": frame_statistics},
    task="video-classification",
)
