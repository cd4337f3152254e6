"""Encoders and classifiers as ``torch.export`` programs (docs/architecture.md, "Export"): ``zoo export --format
exported-program`` traces the same program as the ONNX export (:class:`zoo.export.Exportable`, every size dynamic
where the model allows it) with ``torch.export`` and saves it as a PT2 archive, ``model.pt2``, that runs without the
zoo's model code (``torch.export.load(path).module()``).

Only safetensors are loaded here, and a PT2 archive can hold pickles: ``torch.export.load`` unpickles the example
inputs and any tensor saved with ``use_pickle`` (falling back to ``weights_only=False`` when the restricted
unpickler refuses). So the export saves no example inputs and only plain tensors (raw bytes), and loading first
reads the archive's table of contents and its weight and constant configs: an entry outside the layout the export
writes, a non-empty example-inputs file or a pickled tensor is refused, naming it, before ``torch.export.load``
sees the file."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .export import (
    EXPORT_KEY,
    TOLERANCE,
    Exportable,
    ExportError,
    checked,
    example_batches,
    file_sha256,
    input_keys,
    run_torch,
    speed,
    traced,
)
from .hub import FormatError, resolve_file
from .plugin import Encoder, EncoderOutput, Processor

__all__ = ["PROGRAM_NAME", "PROGRAM_FORMAT", "export_program", "check_archive", "load_program", "ProgramEncoder",
           "load_program_encoder", "input_ranges"]

PROGRAM_NAME = "model.pt2"
PROGRAM_FORMAT = "exported-program"
# what torch.export.save writes for a module with plain tensors and no example inputs, under the archive's folder
_ENTRY = re.compile(r"[^/]+/(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                    r"|models/[\w.-]+\.json|data/(weights/weight|constants/tensor)_\d+"
                    r"|data/(weights|constants)/[\w.-]+_config\.json|data/sample_inputs/[\w.-]+\.pt)")


def check_archive(path: str | Path) -> None:
    """Refuse a PT2 archive that :func:`torch.export.load` would unpickle anything from (see the module)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise FormatError(f"{path}: not a PT2 archive ({type(err).__name__})") from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            if not _ENTRY.fullmatch(name):
                raise FormatError(f"{path}: entry {name!r} is not part of a program zoo export writes (graph, raw "
                                  "weights, their configs); refused before loading")
            if "/data/sample_inputs/" in name and info.file_size:
                raise FormatError(f"{path}: entry {name!r} holds pickled example inputs; refused before loading")
            if name.endswith("_config.json"):
                try:
                    entries = json.loads(archive.read(info)).get("config", {})
                except (ValueError, AttributeError):
                    raise FormatError(f"{path}: entry {name!r} is not a weights config") from None
                pickled = sorted(k for k, v in entries.items() if not isinstance(v, dict) or v.get("use_pickle"))
                if pickled:
                    raise FormatError(f"{path}: {name!r} stores {pickled[:3]} as pickles; refused before loading")


def load_program(path: str | Path) -> nn.Module:
    """The archive's program as a module, after :func:`check_archive`."""
    check_archive(path)
    return torch.export.load(str(path)).module()


def _trace(model: Exportable, args: tuple[Tensor, ...], axes: Sequence[set[int]] | None) -> Any:
    dims = tuple({i: torch.export.Dim.AUTO for i in range(a.dim()) if axes is None or i in axes[n]}
                 for n, a in enumerate(args))
    return torch.export.export(model, args, dynamic_shapes=(dims,))


def input_ranges(program: Any, keys: Sequence[str]) -> dict[str, list[str]]:
    """Per input, each axis as the program accepts it: a fixed size, or ``min..max`` of a dynamic one (the tracer can
    narrow an axis below what eager accepts, e.g. a minimum audio length): the card states them."""
    bounds = {str(k): v for k, v in program.range_constraints.items()}
    found = {}
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"][-len(keys):]
    for key, node in zip(keys, inputs):
        dims = []
        for size in getattr(node.meta.get("val"), "shape", ()):
            if isinstance(size, int):
                dims.append(str(size))
            else:
                r = bounds.get(str(size.node.expr))
                upper = "" if r is None or not str(r.upper).isdigit() else str(r.upper)
                dims.append(f"{r.lower if r is not None else 0}..{upper}")
        found[key] = dims
    return found


def _widen(ranges: dict[str, list[str]], checks: list[dict[str, Any]]) -> dict[str, list[str]]:
    """A dynamic axis's lower bound lowered to the smallest size the checks ran it at (the tracer states 2 for the
    batch, which runs at 1)."""
    out = {}
    for key, dims in ranges.items():
        out[key] = []
        for axis, dim in enumerate(dims):
            if ".." in dim:
                low, high = dim.split("..")
                ran = min((c["shapes"][key][axis] for c in checks if key in c["shapes"]), default=int(low))
                dim = f"{min(int(low), ran)}..{high}"
            out[key].append(dim)
    return out


def export_program(encoder: Encoder, processor: Processor, examples: Sequence[Any], names: Sequence[str], *,
                   head: nn.Module | None = None, out: Path) -> dict[str, Any]:
    """Trace ``encoder`` (with a classifier's ``head``) into ``out/model.pt2`` on the ``examples``, reload it as
    :func:`load_program` would and check it against eager on every :func:`zoo.export.example_batches` batch (within
    :data:`zoo.export.TOLERANCE`, else :class:`ExportError`). Returns the ``export`` block for ``config.json``."""
    modality, arch = encoder.modality or "?", encoder.architecture or type(encoder).__name__
    if getattr(encoder, "onnx_exporter", "dynamo") != "dynamo":
        raise ExportError(f"the {modality} encoder ({arch}) is recurrent: torch.export unrolls the recurrence over "
                          "the traced length, so the program would accept that length only; export it with "
                          "--format onnx (the ONNX GRU op keeps the length dynamic)")
    batches = example_batches(processor, examples, names)
    keys = input_keys(batches[0])
    model = Exportable(encoder.eval(), keys, head.eval() if head is not None else None).eval()
    args = tuple(batches[0][k] for k in keys)
    program = traced(model, batches, lambda axes: _trace(model, args, axes), "torch.export")
    program.example_inputs = None              # else pickled into the archive
    for node in program.graph.nodes:           # the tracing machine's stack traces name its local paths
        node.meta.pop("stack_trace", None)
    ranges = input_ranges(program, keys)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PROGRAM_NAME
    torch.export.save(program, str(path))
    module = load_program(path)
    checks = checked(model, batches, lambda batch: run_torch(module, keys, batch), what="program",
                     exporter="torch.export")
    pooled_dim = int(run_torch(model, keys, batches[1])[model.output_names.index("pooled")].shape[-1])
    return {"format": PROGRAM_FORMAT, "file": PROGRAM_NAME, "inputs": keys, "outputs": model.output_names,
            "exporter": "torch.export", "quantize": None, "dim": pooled_dim, "torch": torch.__version__,
            "checks": checks, "tolerance": TOLERANCE, "input_ranges": _widen(ranges, checks),
            "speed": speed(model, lambda batch: run_torch(module, keys, batch), batches[0], name="exported"),
            "speed_batch": {k: list(batches[0][k].shape) for k in keys}}


class ProgramEncoder(Encoder):
    """An exported program as an encoder: ``forward(batch)`` feeds the batch's tensors to the program and returns
    its ``pooled``/``tokens``/``padding_mask``. ``modality``, ``architecture`` and ``config`` are the source's."""

    def __init__(self, config: Any, block: dict[str, Any], module: nn.Module, modality: str,
                 architecture: str) -> None:
        super().__init__(config)
        self.modality, self.architecture = modality, architecture
        self.block, self.program, self.inputs = block, module, list(block["inputs"])
        self.outputs = list(block["outputs"])
        self._dim = int(block["dim"])

    @property
    def dim(self) -> int:
        return self._dim

    def train(self, mode: bool = True) -> ProgramEncoder:
        """An exported program has no training mode (torch.export traced it in eval mode): only the flag is set."""
        self.training = mode
        return self

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        if return_hidden:
            raise ValueError("an exported program gives pooled, tokens and padding_mask only: load the model with "
                             "runtime='torch' for every layer's tokens")
        missing = [k for k in self.inputs if k not in batch]
        if missing:
            raise ValueError(f"the exported {self.modality} program needs {missing} in the batch (it has "
                             f"{sorted(batch)})")
        out = dict(zip(self.outputs, self.program(*[batch[k] for k in self.inputs])))
        return EncoderOutput(tokens=out["tokens"], padding_mask=out["token_padding_mask"].bool(), pooled=out["pooled"])


def load_program_encoder(id_or_path: str | Path, config: dict[str, Any], **hub_kwargs: Any) -> ProgramEncoder:
    """The exported folder's program as a :class:`ProgramEncoder`, after its hash, :func:`check_archive` and the
    preprocessor check."""
    from .onnx_runtime import check_exported_files
    from .registry import get_modality
    block = config[EXPORT_KEY]
    if not isinstance(block, dict) or block.get("format") != PROGRAM_FORMAT or not isinstance(block.get("inputs"),
                                                                                                list):
        raise FormatError(f"{id_or_path}: config.json's export block is not an exported program's")
    path = Path(resolve_file(id_or_path, str(block.get("file", PROGRAM_NAME)), **hub_kwargs))
    for key in ("graph_sha256", "preprocessor_sha256"):
        if not block.get(key):
            raise FormatError(f"{id_or_path}: config.json's export block has no {key}: an exported program is loaded "
                              "only with the hashes its export recorded")
    if file_sha256(path) != block["graph_sha256"]:
        raise FormatError(f"{path}: the program is not the one exported (its SHA-256 differs from config.json's "
                          "export block): corrupted or edited after export")
    check_exported_files(id_or_path, block, **hub_kwargs)
    cls = get_modality(config["modality"]).architecture(config["architecture"]).encoder
    enc_config = cls.config_class.from_dict(config["encoder"], where=f"{id_or_path}:config.json:encoder")
    return ProgramEncoder(enc_config, block, load_program(path), config["modality"], config["architecture"]).eval()
