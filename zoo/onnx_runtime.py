"""Running an exported folder (:mod:`zoo.export`) through ONNX Runtime: :class:`OnnxEncoder` is an
:class:`~zoo.plugin.Encoder` whose forward is the graph, so embedding, evaluation and prediction take it as they take
the eager one (docs/architecture.md, "Export"). Loading checks the folder first: the graph's opset against the config
and the runtime, the preprocessor against the hash the export recorded, and every external-data file inside the
folder; nothing from the folder is run but the graph."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .export import EXPORT_KEY, file_sha256, ort_session
from .hub import PREPROCESSOR_NAME, FormatError, resolve_file
from .plugin import Encoder, EncoderOutput

__all__ = ["OnnxEncoder", "load_onnx_encoder", "check_graph", "check_exported_preprocessor", "check_exported_files",
           "RUNTIMES"]

RUNTIMES = ("onnx", "torch")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("this folder is an exported model run by ONNX Runtime: pip install 'ssl-zoo[onnx]' (or "
                          "load it with runtime='torch' where model.safetensors is beside the graph)") from None
    return onnxruntime


def check_exported_preprocessor(id_or_path: str | Path, block: dict[str, Any], **hub_kwargs: Any) -> None:
    """Refuse an exported folder's ``preprocessor.json`` that is not, byte for byte, the one it was exported with
    (either runtime: the inputs would be processed differently from what the model was traced and checked on)."""
    pre = resolve_file(id_or_path, PREPROCESSOR_NAME, **hub_kwargs)
    if block.get("preprocessor_sha256") and file_sha256(Path(pre)) != block["preprocessor_sha256"]:
        raise FormatError(f"{pre}: preprocessor.json is not the one the model was exported with (its SHA-256 differs "
                          "from config.json's export block): the inputs would be processed differently")


def check_exported_files(id_or_path: str | Path, block: dict[str, Any], **hub_kwargs: Any) -> None:
    """Refuse an exported folder whose ``preprocessor.json`` (:func:`check_exported_preprocessor`) or any file beside
    the graph (weights, a classifier's head and labels) is not the one exported; each is hashed once, when the
    model is loaded (either runtime)."""
    check_exported_preprocessor(id_or_path, block, **hub_kwargs)
    for name, digest in (block.get("files_sha256") or {}).items():
        path = resolve_file(id_or_path, str(name), **hub_kwargs)
        if file_sha256(Path(path)) != digest:
            raise FormatError(f"{path}: {name} is not the one exported beside the model (its SHA-256 differs from "
                              "config.json's export block): changed or swapped after export")


def check_graph(path: Path, block: dict[str, Any]) -> None:
    """Refuse a graph whose opset is not the one ``config.json`` records, and one whose external data lies outside
    its folder (read from the graph's header: no weights are loaded)."""
    import onnx
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:                   # noqa: BLE001 - onnx raises its own DecodeError classes
        raise FormatError(f"{path}: not a readable ONNX graph ({type(err).__name__})") from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != block.get("opset"):
        raise FormatError(f"{path}: the graph's opset is {opset}, config.json's export block says "
                          f"{block.get('opset')}: the folder's files do not belong together")
    folder = path.parent.resolve()
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                target = (folder / entry.value).resolve()
                if Path(entry.value).is_absolute() or folder not in target.parents:
                    raise FormatError(f"{path}: initializer {tensor.name!r} points its data outside the folder "
                                      f"({entry.value!r}); refused")


class OnnxEncoder(Encoder):
    """An exported encoder: ``forward(batch)`` feeds the batch's tensors to the graph (on the CPU) and returns its
    ``pooled``/``tokens``/``padding_mask``. ``modality``, ``architecture`` and ``config`` are the source model's."""

    def __init__(self, config: Any, block: dict[str, Any], session: Any, modality: str, architecture: str,
                 logits: bool = False) -> None:
        super().__init__(config)
        self.modality, self.architecture = modality, architecture          # per instance: the source's names
        self.block, self.session, self.inputs = block, session, list(block["inputs"])
        self.outputs = list(block["outputs"])
        self._dim = int(block["dim"])
        self.register_buffer("_device", torch.zeros(0), persistent=False)   # where callers look for the device
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)    # ``next(encoder.parameters())`` works

    @property
    def dim(self) -> int:
        return self._dim

    def run(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every output of the graph for ``batch``, as tensors."""
        missing = [k for k in self.inputs if k not in batch]
        if missing:
            raise ValueError(f"the exported {self.modality} graph needs {missing} in the batch (it has "
                             f"{sorted(batch)})")
        feed = {i.name: batch[k].detach().cpu().numpy() for i, k in zip(self.session.get_inputs(), self.inputs)}
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in zip(self.outputs,
                                                                                  self.session.run(None, feed))}

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        if return_hidden:
            raise ValueError("an exported graph gives pooled, tokens and padding_mask only: load the model with "
                             "runtime='torch' for every layer's tokens")
        out = self.run(batch)
        return EncoderOutput(tokens=out["tokens"], padding_mask=out["token_padding_mask"].bool(), pooled=out["pooled"])


def load_onnx_encoder(id_or_path: str | Path, config: dict[str, Any], **hub_kwargs: Any) -> OnnxEncoder:
    """The exported folder's graph as an :class:`OnnxEncoder`, after :func:`check_graph` and the preprocessor check."""
    from .registry import get_modality
    ort = _onnxruntime()
    block = config[EXPORT_KEY]
    if not isinstance(block, dict) or block.get("format") != "onnx" or not isinstance(block.get("inputs"), list):
        raise FormatError(f"{id_or_path}: config.json's export block is not an ONNX export's")
    path = resolve_file(id_or_path, str(block.get("file", "model.onnx")), **hub_kwargs)
    unchecked = [k for k in ("graph_sha256", "preprocessor_sha256", "files_sha256") if not block.get(k)]
    if unchecked:
        logging.getLogger("zoo").warning("%s: config.json's export block records no %s (an export older than this "
                                         "version): its files are loaded unchecked; export the model again to have "
                                         "them checked", id_or_path, " or ".join(unchecked))
    if block.get("graph_sha256") and file_sha256(Path(path)) != block["graph_sha256"]:
        raise FormatError(f"{path}: the graph is not the one exported (its SHA-256 differs from config.json's export "
                          "block): corrupted or edited after export")
    check_graph(Path(path), block)
    check_exported_files(id_or_path, block, **hub_kwargs)
    cls = get_modality(config["modality"]).architecture(config["architecture"]).encoder
    enc_config = cls.config_class.from_dict(config["encoder"], where=f"{id_or_path}:config.json:encoder")
    try:
        session = ort_session(path)
    except Exception as err:                   # noqa: BLE001 - e.g. an opset newer than this runtime implements
        raise FormatError(f"{path}: ONNX Runtime {ort.__version__} does not load it (opset {block.get('opset')}): "
                          f"{str(err).splitlines()[0][:300]}") from None
    return OnnxEncoder(enc_config, block, session, config["modality"], config["architecture"]).eval()
