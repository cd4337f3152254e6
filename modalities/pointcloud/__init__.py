"""Point-cloud modality: Point-MAE (Pang et al. 2022) in pure PyTorch on CPU and GPU, with open3d for files."""

from pathlib import Path

from zoo import Architecture, Modality, Protocol

from .baselines import fpfh_features
from .convert import convert_reference
from .data import load_data, make_shapes
from .evaluate import linear_svm
from .model import PointMAEConfig, PointMAEEncoder, PointMAEPretrainer, PointMAEPretrainingConfig
from .processor import PointCloudProcessor, PointCloudProcessorConfig
from .sample import sample_data

__all__ = ["MODALITY", "PointCloudProcessor", "PointCloudProcessorConfig", "PointMAEConfig", "PointMAEEncoder",
           "PointMAEPretrainer", "PointMAEPretrainingConfig", "load_data", "make_shapes"]

MODALITY = Modality(
    name="pointcloud",
    description="Point-MAE: FPS + kNN patches, mini-PointNet tokens, 60% patch masking, Chamfer L2 (pure PyTorch)",
    processor=PointCloudProcessor,
    architectures={"point-mae": Architecture("point-mae", PointMAEConfig, PointMAEEncoder, PointMAEPretrainer,
                                             PointMAEPretrainingConfig)},
    load_data=load_data,
    folder_source="folder",
    recipes=Path(__file__).parent / "recipes",
    sample_data=sample_data,
    usage_example=("import numpy as np\n# a cloud: points [N, 3] (or a path to a ply/pcd/xyz/off/obj/stl file)\n"
                   "example = np.random.randn(2048, 3).astype('float32')"),
    baselines={"FPFH mean+std (open3d)": fpfh_features},
    converters={"point-mae": convert_reference},          # the reference's .pth files: zoo convert --model-type
    evaluators={"linear-svm": Protocol(lambda encoder, processor, spec: linear_svm(encoder, processor, spec,
                                                                                  **spec.get("svm", {})),
                                       task="object-classification",
                                     examples=lambda spec: (load_data(spec["train"]), load_data(spec["test"])))},
    task="object-classification",
)
