"""Encoders and classifiers that leave the zoo (docs/architecture.md, "Export"): a model's forward traced once into an
ONNX graph with every size dynamic (batch, samples, frames, points, nodes and edges, tokens, events) and the padding
masks as inputs, checked against eager on padded batches and a batch of one, timed against eager, and written as a
zoo folder (``config.json`` with an ``export`` block, ``preprocessor.json``, the card) that
:mod:`zoo.onnx_runtime` runs through ONNX Runtime. Processing stays in Python."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .plugin import Encoder, Processor

__all__ = ["ONNX_NAME", "EXPORT_KEY", "OUTPUTS", "ExportError", "Exportable", "input_keys", "example_batches",
           "export_onnx", "quantize_int8", "ort_session", "trace_onnx", "source_name", "file_sha256", "parity"]

ONNX_NAME = "model.onnx"
EXPORT_KEY = "export"                                # config.json's block that marks and describes an exported folder
OUTPUTS = ("pooled", "tokens", "token_padding_mask")   # a classifier's graph has "logits" first
TOLERANCE = 1e-4                                     # |ONNX Runtime − eager| ≤ TOLERANCE · max(1, |eager|max)
EXAMPLES = 8                                         # processed examples the export traces and checks on, at most
QUANTIZED_OPS = ["MatMul", "Gemm"]                   # --quantize int8: the weights of the matrix products


class ExportError(ValueError):
    """A model that does not export, or an export that does not reproduce eager: says which op, module and
    modality."""


class Exportable(nn.Module):
    """The traced program: positional tensors (``keys`` of a collated batch, in order) → ``pooled, tokens,
    token_padding_mask`` (a classifier: ``logits`` first)."""

    def __init__(self, encoder: Encoder, keys: Sequence[str], head: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder, self.keys, self.head = encoder, list(keys), head

    @property
    def output_names(self) -> list[str]:
        return (["logits"] if self.head is not None else []) + list(OUTPUTS)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.encoder(dict(zip(self.keys, inputs)))
        res = (out.pooled, out.tokens, out.padding_mask)
        return (self.head(out.pooled), *res) if self.head is not None else res


def input_keys(batch: dict[str, Any]) -> list[str]:
    """The model's inputs in a collated batch: its tensors but the labels and the bookkeeping (``_names``)."""
    return [k for k, v in batch.items() if torch.is_tensor(v) and k != "labels" and not k.startswith("_")]


def example_batches(processor: Processor, examples: Sequence[Any], names: Sequence[str]) -> list[dict[str, Tensor]]:
    """What an export is traced and checked on: the first ``EXAMPLES`` examples processed and collated as one padded
    batch (traced), the first alone (a batch of one), and the others in reverse order (other sizes, other padding)."""
    if len(examples) < 2:
        raise ExportError(f"an export is traced on a batch of at least 2 examples and checked on others; got "
                          f"{len(examples)}")
    items = [processor(ex, name=n) for ex, n in zip(examples[:EXAMPLES], names[:EXAMPLES])]
    batches = [processor.collate(items), processor.collate(items[:1])]
    if len(items) > 2:
        batches.append(processor.collate(items[1:][::-1]))
    return [{k: v for k, v in b.items() if torch.is_tensor(v)} for b in batches]


@contextmanager
def _module_trail(model: nn.Module) -> Iterator[list[str]]:
    """The modules entered and not yet left while ``model`` runs: after an error, the last one is where it was."""
    trail: list[str] = []
    handles = []

    def leave(module: nn.Module, args: Any, output: Any) -> None:        # returns None: the output is kept
        if trail:
            trail.pop()
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: trail.append(n) and None))
        handles.append(module.register_forward_hook(leave))
    try:
        yield trail
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters' own notes (torchvision's ops not registered, TorchScript's deprecation, tracer warnings) are
    not about the user's model: silenced while tracing; an error still says everything."""
    import logging
    import warnings
    logs = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
                                                 "torch.fx")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _culprit(err: BaseException) -> str:
    """The op (or construct) an exporter stopped at, read from the first error's message."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = f"{type(err).__name__}: {err}"
    if "data-dependent" in text or "GuardOnDataDependent" in type(err).__name__:
        where = re.search(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)', text)
        at = f" at {Path(where.group(1)).name}:{where.group(2)} ({where.group(4).strip()})" if where else ""
        return f"data-dependent Python control flow on a tensor's value{at}"
    op = re.search(r"(aten::[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+|prim::\w+)", text)
    return f"op {op.group(1)}" if op else text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__


def varying_axes(batches: Sequence[dict[str, Tensor]], keys: Sequence[str]) -> list[set[int]]:
    """Per input, the batch axis and every axis whose size differs between the example batches."""
    return [{0} | {i for i in range(batches[0][k].dim()) if len({b[k].shape[i] for b in batches if k in b}) > 1}
            if batches[0][k].dim() else set() for k in keys]


def trace_onnx(model: Exportable, args: tuple[Tensor, ...], path: Path, exporter: str,
           axes: Sequence[set[int]] | None = None) -> None:
    """``model`` on ``args`` → an ONNX file at ``path``: every dimension of every input dynamic (the tracer keeps
    static what the model fixes), or with ``axes`` those axes of each input only."""
    names = model.output_names
    if exporter == "torchscript":          # recurrent layers: the ONNX GRU/LSTM ops keep the time axis dynamic
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=model.keys, output_names=names,
                          dynamic_axes={k: list(range(a.dim())) for k, a in zip(model.keys, args)},
                          opset_version=17)
        strip_provenance(path)
        return
    dims = tuple({i: torch.export.Dim.AUTO for i in range(a.dim()) if axes is None or i in axes[n]}
                 for n, a in enumerate(args))
    program = torch.onnx.export(model, args, dynamo=True, optimize=True, dynamic_shapes=(dims,), verbose=False,
                                input_names=model.keys, output_names=names)
    # an input named like one of the exporter's values ("cat": the concatenation) would define a name twice
    taken = set(model.keys)
    for i, node in enumerate(program.model.graph.all_nodes()):
        for value in node.outputs:
            if value.name in taken and value not in program.model.graph.outputs:
                value.name = f"{value.name}__{i}"
    program.save(str(path), external_data=False)
    strip_provenance(path)


def strip_provenance(path: Path) -> None:
    """Remove what the exporters record of the tracing machine — each node's stack trace and source names (local
    absolute paths), doc strings — from the ONNX file at ``path``: a published folder names no local path."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)

    def clean(graph: Any) -> None:
        graph.doc_string = ""
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    clean(attr.g)
                for sub in attr.graphs:
                    clean(sub)
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            value.doc_string = ""
            del value.metadata_props[:]
    clean(proto.graph)
    for fn in proto.functions:
        for node in fn.node:
            node.doc_string = ""
            del node.metadata_props[:]
    del proto.metadata_props[:]
    proto.doc_string = ""
    onnx.save(proto, str(path))


def run_torch(module: nn.Module, keys: Sequence[str], batch: dict[str, Tensor]) -> list[np.ndarray]:
    """A module taking a batch's ``keys`` as positional tensors (the eager :class:`Exportable`, an exported program)
    → its outputs as arrays."""
    with torch.no_grad():
        return [t.detach().cpu().numpy() for t in module(*[batch[k] for k in keys])]


def _run_eager(model: Exportable, batch: dict[str, Tensor]) -> list[np.ndarray]:
    return run_torch(model, model.keys, batch)


def _run_onnx(session: Any, keys: Sequence[str], batch: dict[str, Tensor]) -> list[np.ndarray]:
    return session.run(None, {i.name: batch[k].numpy() for i, k in zip(session.get_inputs(), keys)})


def agreement(reference: Sequence[np.ndarray], got: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, float]:
    """What a quantised graph is judged by where differences are expected: the smallest cosine between eager's and
    the graph's pooled rows (``pooled_cosine``) and, for a classifier, the share of examples whose top-1 agrees
    (``top1_agreement``)."""
    out = {}
    by = dict(zip(names, zip(reference, got)))
    if "pooled" in by and by["pooled"][0].size:
        a, b = (np.asarray(x, np.float64).reshape(len(x), -1) for x in by["pooled"])
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        out["pooled_cosine"] = round(float(((a * b).sum(1) / norms).min()), 6)
    if "logits" in by and by["logits"][0].size:
        a, b = by["logits"]
        out["top1_agreement"] = float((a.argmax(-1) == b.argmax(-1)).mean())
    return out


def parity(reference: Sequence[np.ndarray], got: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, float]:
    """Max absolute difference per output (a boolean output: the share of entries that differ)."""
    out = {}
    for name, a, b in zip(names, reference, got):
        if a.shape != b.shape:
            raise ExportError(f"output {name}: ONNX Runtime gave shape {tuple(b.shape)}, eager {tuple(a.shape)}")
        if a.dtype == np.bool_:
            out[name] = float((a != b).mean()) if a.size else 0.0
        else:
            out[name] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
    return out


def _scale(reference: Sequence[np.ndarray]) -> float:
    return max([1.0] + [float(np.abs(a).max()) for a in reference if a.dtype != np.bool_ and a.size])


def _timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def speed(model: Exportable, run: Callable[[dict[str, Tensor]], Any], batch: dict[str, Tensor], *, name: str = "onnx",
          repeats: int = 5) -> dict[str, float]:
    """Eager and the exported ``run`` on ``batch``, alternating (one warm-up each), medians in milliseconds:
    ``eager_ms``, ``<name>_ms`` and the speed-up."""
    eager_ms, exported_ms = [], []
    _run_eager(model, batch), run(batch)
    for _ in range(repeats):
        eager_ms += _timed(lambda: _run_eager(model, batch), 1)
        exported_ms += _timed(lambda: run(batch), 1)
    e, o = statistics.median(eager_ms) * 1e3, statistics.median(exported_ms) * 1e3
    return {"eager_ms": round(e, 2), f"{name}_ms": round(o, 2), "speedup": round(e / o, 3) if o > 0 else float("nan")}


def traced(model: Exportable, batches: Sequence[dict[str, Tensor]], trace: Callable[[Any], Any], exporter: str, *,
           retry: bool = True) -> Any:
    """``trace(axes)`` with every axis of every input dynamic (``axes`` None), retried (``retry``) with the batch axis
    and the axes that differ between the example batches (some size the model fixes, a table's columns, trips the
    tracer); a failure is an :class:`ExportError` naming the construct or op, the module and the modality."""
    encoder = model.encoder
    modality, arch = encoder.modality or "?", encoder.architecture or type(encoder).__name__
    with _module_trail(model) as trail, _quiet_exporter():
        try:
            try:
                return trace(None)
            except Exception:                  # noqa: BLE001 - retried with fewer dynamic axes, reported below
                if not retry:
                    raise
                trail.clear()
                return trace(varying_axes(batches, model.keys))
        except Exception as err:               # noqa: BLE001 - any exporter failure is reported the same way
            module = trail[-1] if trail else ""
            kind = type(dict(model.named_modules()).get(module, model)).__name__
            raise ExportError(f"cannot export the {modality} encoder ({arch}): {_culprit(err)} in module "
                              f"'{module or '(top)'}' ({kind}); exporter: {exporter}") from err


def checked(model: Exportable, batches: Sequence[dict[str, Tensor]], run: Callable[[dict[str, Tensor]], Any], *,
            what: str, exporter: str, strict: bool = True) -> list[dict[str, Any]]:
    """The exported ``run`` against eager on every batch: shapes, largest difference per output and scale. With
    ``strict`` a difference above :data:`TOLERANCE` × scale is an :class:`ExportError`; a batch the export does not
    run on always is (``what``: the graph, the program)."""
    modality = model.encoder.modality or "?"
    checks = []
    for i, batch in enumerate(batches):
        shapes = ", ".join(f"{k} {tuple(batch[k].shape)}" for k in model.keys)
        ref = _run_eager(model, batch)
        try:
            got = run(batch)
        except Exception as err:               # noqa: BLE001 - a runtime's own errors, a guard the tracer kept
            raise ExportError(f"the exported {modality} {what} does not run on a batch of other sizes ({shapes}): "
                              f"{str(err).splitlines()[0][:300]}; exporter: {exporter}") from err
        diff = parity(ref, got, model.output_names)
        scale = _scale(ref)
        checks.append({"shapes": {k: list(batch[k].shape) for k in model.keys}, "max_abs_diff": diff, "scale": scale,
                       **agreement(ref, got, model.output_names)})
        bad = {k: v for k, v in diff.items() if v > TOLERANCE * scale}
        if bad and strict:
            raise ExportError(f"the exported {modality} {what} differs from eager on batch {i} ({shapes}): "
                              + ", ".join(f"{k} by {v:.2e}" for k, v in bad.items())
                              + f" (tolerance {TOLERANCE:g} × {scale:.3g}); exporter: {exporter}")
    return checks


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ort_session(path: str | Path) -> Any:
    """An ONNX Runtime session (CPU) on the graph at ``path`` whose thread pool does not spin between runs: the
    runtime takes turns with Python and torch work in the same process (processing the next batch, pooling) and a
    pool that busy-waits after each run takes the cores from them (a 2 ms torch forward right after a run took
    5.6 ms with spinning, 2.8 ms without, on 2 cores; docs/benchmarks.md, "Export")."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"zoo export needs {', '.join(missing)}: pip install 'ssl-zoo[onnx]'")


def quantize_int8(src: Path, dst: Path) -> None:
    """``--quantize int8``: ONNX Runtime's dynamic quantisation of the graph at ``src`` into ``dst`` — the weights of
    the matrix products (:data:`QUANTIZED_OPS`) as int8, their inputs quantised at run time; convolutions stay fp32
    (a convolution whose weight is computed, as weight norm's, cannot be)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)     # the quantizer's advice to pre-process the graph, logged on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
    finally:
        root.setLevel(level)


def export_onnx(encoder: Encoder, processor: Processor, examples: Sequence[Any], names: Sequence[str], *,
                head: nn.Module | None = None, quantize: str | None = None, out: Path) -> dict[str, Any]:
    """Trace ``encoder`` (with a classifier's ``head``) into ``out/model.onnx`` on the ``examples`` and check it:
    ONNX Runtime against eager on every :func:`example_batches` batch (fp32: within :data:`TOLERANCE`, else
    :class:`ExportError`; int8: the difference is reported). Returns the ``export`` block for ``config.json``."""
    _require_onnx()
    import onnx
    modality = encoder.modality or "?"
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize must be int8, got {quantize!r}")
    batches = example_batches(processor, examples, names)
    keys = input_keys(batches[0])
    model = Exportable(encoder.eval(), keys, head.eval() if head is not None else None).eval()
    exporter = getattr(encoder, "onnx_exporter", "dynamo")
    path = out / ONNX_NAME
    out.mkdir(parents=True, exist_ok=True)
    args = tuple(batches[0][k] for k in keys)
    traced(model, batches, lambda axes: trace_onnx(model, args, path, exporter, axes), exporter,
           retry=exporter == "dynamo")
    if quantize == "int8":
        fp32 = out / "model.fp32.onnx"
        path.rename(fp32)
        try:
            quantize_int8(fp32, path)
        except Exception as err:               # noqa: BLE001 - the quantizer's own errors
            raise ExportError(f"int8 quantisation of the {modality} graph failed: {type(err).__name__}: {err}"
                              ) from err
        finally:
            fp32.unlink()
    session = ort_session(path)
    checks = checked(model, batches, lambda batch: _run_onnx(session, keys, batch), what="graph", exporter=exporter,
                     strict=quantize is None)
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    pooled_dim = int(_run_eager(model, batches[1])[model.output_names.index("pooled")].shape[-1])
    return {"format": "onnx", "file": ONNX_NAME, "inputs": keys, "outputs": model.output_names, "opset": opset,
            "exporter": exporter, "quantize": quantize, "dim": pooled_dim, "torch": torch.__version__,
            "checks": checks, "tolerance": TOLERANCE,
            "speed": speed(model, lambda batch: _run_onnx(session, keys, batch), batches[0]),
            "speed_batch": {k: list(batches[0][k].shape) for k in keys}}


def copy_beside(source: Path, out: Path, files: Sequence[str]) -> list[str]:
    """Copy ``files`` of a local model folder into ``out`` (the torch runtime beside the graph)."""
    copied = []
    for name in files:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
            copied.append(name)
    return copied


def source_name(model: str | Path) -> str:
    """What the card calls the source: a Hub id as it is; a local folder by its name, with its run's name when it is
    a run's ``model`` folder (never a local path)."""
    path = Path(str(model))
    if not path.exists():
        return str(model)
    path = path.resolve()
    return f"{path.parent.name}/{path.name}" if path.name == "model" and path.parent.name else path.name


def write_export_config(config: dict[str, Any], block: dict[str, Any], out: Path) -> Path:
    """``config.json``: the model's, with the ``export`` block and the hashes of its graph, ``preprocessor.json`` and
    the files beside them (weights, a classifier's head and labels): a file changed after export — corrupted, edited,
    swapped — is refused on loading."""
    beside = ("model.safetensors", "head.safetensors", "classifier.json")     # read by either runtime
    block = {**block, "preprocessor_sha256": file_sha256(out / "preprocessor.json"),
             "graph_sha256": file_sha256(out / block["file"]),
             "files_sha256": {name: file_sha256(out / name) for name in beside if (out / name).is_file()}}
    path = out / "config.json"
    path.write_text(json.dumps({**config, EXPORT_KEY: block}, indent=2) + "\n")
    return path
