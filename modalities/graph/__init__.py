"""Graph modality: GraphMAE (Hou et al. 2022) on torch-geometric."""

from pathlib import Path

from zoo import Architecture, Modality, Protocol

from .baselines import structure_features
from .data import load_data
from .evaluate import graph_cv, graph_examples, node_examples, node_probe, sgc_probe, structure_cv
from .model import GraphMAEConfig, GraphMAEEncoder, GraphMAEPretrainer, GraphMAEPretrainingConfig
from .processor import GraphProcessor, GraphProcessorConfig
from .sample import sample_data

__all__ = ["MODALITY", "GraphMAEConfig", "GraphMAEEncoder", "GraphMAEPretrainer", "GraphMAEPretrainingConfig",
           "GraphProcessor", "GraphProcessorConfig", "load_data"]

MODALITY = Modality(
    name="graph",
    description="GraphMAE: masked node features, re-masked code, GNN decoder, scaled cosine error (PyG)",
    processor=GraphProcessor,
    architectures={"graphmae": Architecture("graphmae", GraphMAEConfig, GraphMAEEncoder, GraphMAEPretrainer,
                                            GraphMAEPretrainingConfig)},
    load_data=load_data,
    baselines={"structure (graphs) / SGC (nodes)": structure_features},
    evaluators={"node": Protocol(lambda encoder, processor, spec: node_probe(encoder, processor, spec["data"],
                                                                              **spec.get("probe", {})),
                                 task="node-classification", hidden=("val",),
                                 baselines={"SGC features (x, Âx, Â²x)": lambda processor, spec: sgc_probe(
                                     processor, spec["data"], **spec.get("probe", {}))},
                                 examples=lambda spec: node_examples(spec["data"])),
                "graph-cv": Protocol(lambda encoder, processor, spec: graph_cv(encoder, processor, spec["data"],
                                                                               **spec.get("probe", {})),
                                     task="graph-classification", hidden=("accuracy_std",),
                                     baselines={"structure (degrees, clustering, spectrum)":
                                                lambda processor, spec: structure_cv(processor, spec["data"],
                                                                                     **spec.get("probe", {}))},
                                     examples=lambda spec: graph_examples(spec["data"]))},
    task="graph-classification",
    folder_source="folder",
    recipes=Path(__file__).parent / "recipes",
    sample_data=sample_data,
    usage_example=("import torch\n# one graph: non-negative features [N, F] (F as the model expects) + edges [2, E]\n"
                   "example = {'x': torch.rand(5, processor.config.num_features),\n"
                   "           'edge_index': torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])}"),
)
