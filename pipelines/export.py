"""``zoo export MODEL OUT``: a zoo encoder or fine-tuned classifier as an ONNX graph in a zoo folder
(docs/command-line.md, "Export"). The graph is traced on a few of the user's inputs (``--example``) or, without
them, on the modality's own sample data processed by the model's processor; :func:`zoo.export.export_onnx` checks
it against eager and times it. The folder holds ``model.onnx``, ``config.json`` (with the ``export`` block),
``preprocessor.json``, the weights beside the graph (``--runtime torch``), a classifier's ``classifier.json`` and
``head.safetensors``, and a card that states the parity and the speed measured."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from zoo import AutoProcessor, get_modality
from zoo.classifier import CLASSIFIER_NAME, HEAD_NAME, AutoClassifier
from zoo.export import EXAMPLES, EXPORT_KEY, ONNX_NAME, export_onnx, source_name, write_export_config
from zoo.exported_program import PROGRAM_FORMAT, PROGRAM_NAME, export_program
from zoo.hub import CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME, load_config, resolve_file, save_processor

from .data_spec import named_inputs

__all__ = ["export_model", "export_card", "program_card", "export_summary", "FORMATS", "INT8_FAMILIES"]

FORMATS = ("onnx", "exported-program")
# Families whose int8 (dynamic quantisation of the linear and recurrent weights) keeps the demo row's probe within
# one point of fp32 (bench/export.py; docs/benchmarks.md, "Export"); the others refuse --quantize int8.
# (2026-12-07: point clouds lost 8.6 points; audio, tables, graphs, video and event sequences kept theirs — audio
# since its feature encoder is exported as convolutions, which stay fp32: it lost 4.2 when they were matrix products)
INT8_FAMILIES: frozenset[str] = frozenset({"audio", "tabular", "graph", "video", "events"})
# Families measured and refused: what int8 did to their demo row (a family in neither is not measured, e.g. a plugin)
INT8_REFUSED: dict[str, str] = {"pointcloud": "int8 lowered the demo row's probe by 8.6 points (0.721 to 0.636)"}


@contextmanager
def _examples(processor: Any, inputs: list[str], given: tuple[list[Any], list[str]] | None = None
              ) -> Iterator[tuple[list[Any], list[str], str]]:
    """The examples the graph is traced on: ``given`` ones, the user's files, else eight of the modality's sample data
    (written to a temporary folder that lasts as long as the export)."""
    if given is not None:
        yield given[0], given[1], f"{min(len(given[0]), EXAMPLES)} of {len(given[0])} given examples"
        return
    if inputs:
        named = [item for path in inputs for item in named_inputs(processor, path)]
        names = [Path(n).name if Path(n).is_absolute() else n for n, _ in named]       # no local path in the card
        yield ([ex for _, ex in named], names,
               f"{min(len(named), EXAMPLES)} of the {len(named)} examples of the given inputs")
        return
    modality = get_modality(processor.modality)
    if modality.sample_data is None:
        raise ValueError(f"the {processor.modality} modality has no sample data to trace the export on: name a few "
                         "input files with --example")
    with tempfile.TemporaryDirectory(prefix="zoo-export-") as tmp:
        sample = modality.sample_data(Path(tmp))
        try:
            named = named_inputs(processor, sample.data)
            pick = np.random.default_rng(0).permutation(len(named))[:EXAMPLES].tolist()   # several classes, sizes
            for i in pick:                     # a model fitted on other columns (a table's) refuses them here
                processor(named[i][1], name=Path(named[i][0]).name)
        except (ValueError, KeyError) as err:
            raise ValueError(f"the {processor.modality} sample data does not fit this model's processor "
                             f"({str(err).splitlines()[0][:200]}): name a few of your own input files with "
                             "--example FILE...") from None
        names = [Path(named[i][0]).name if Path(named[i][0]).is_absolute() else named[i][0] for i in pick]
        yield [named[i][1] for i in pick], names, f"{len(pick)} examples of the modality's sample data"


def export_model(model: str | Path, out: str | Path, *, fmt: str = "onnx", quantize: str | None = None,
                 inputs: list[str] | None = None, examples: tuple[list[Any], list[str]] | None = None
                 ) -> dict[str, Any]:
    """Export ``model`` (a folder or Hub id; a classifier when it has ``classifier.json``) into the new folder
    ``out``, traced on the ``inputs`` files, on raw ``examples`` with their names, or on the modality's sample data;
    returns the ``export`` block written to its ``config.json``."""
    config = load_config(model)
    others = get_modality(config["modality"]).exporters
    if fmt in others:
        others[fmt](model, out)
        return {"format": fmt, "file": "", "classifier": resolve_file(model, CLASSIFIER_NAME, required=False)
                is not None}
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt} is not offered for {config['modality']} models (formats: "
                         f"{', '.join([*FORMATS, *others])})")
    if quantize is not None and fmt == PROGRAM_FORMAT:
        raise ValueError("--quantize int8 quantises an ONNX graph: export with --format onnx for int8")
    if quantize is not None and (quantize != "int8" or config["modality"] not in INT8_FAMILIES):
        offered = ", ".join(sorted(INT8_FAMILIES)) or "none"
        why = INT8_REFUSED.get(config["modality"], "int8 is not measured for this family (it is offered where it "
                               "keeps the demo row's probe within one point of fp32)")
        raise ValueError(f"--quantize {quantize} is not offered for {config['modality']} models: {why} "
                         f"(docs/benchmarks.md, \"Export\"; offered for: {offered}); export in fp32")
    if EXPORT_KEY in config:
        raise ValueError(f"{model} is an exported model already: export the folder it came from")
    is_classifier = resolve_file(model, CLASSIFIER_NAME, required=False) is not None
    processor = AutoProcessor.from_pretrained(model)
    if is_classifier:
        clf = AutoClassifier.from_pretrained(model, runtime="torch")
        encoder, head = clf.encoder, clf.pooled_head()
    else:
        from zoo import AutoEncoder
        encoder, head = AutoEncoder.from_pretrained(model, runtime="torch"), None
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _examples(processor, inputs or [], examples) as (raw, names, source):
            if fmt == PROGRAM_FORMAT:
                block = export_program(encoder, processor, raw, names, head=head, out=out)
            else:
                block = export_onnx(encoder, processor, raw, names, head=head, quantize=quantize, out=out)
        save_processor(processor, out)
        files = [WEIGHTS_NAME] + ([CLASSIFIER_NAME, HEAD_NAME] if is_classifier else [])
        for name in files:
            shutil.copy2(resolve_file(model, name), out / name)
        block = {**block, "traced_on": source, "source": source_name(model), "classifier": is_classifier}
        write_export_config(config, block, out)
        export_card(out, config, block, processor)
    except BaseException:
        for name in (ONNX_NAME, PROGRAM_NAME, CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME, CLASSIFIER_NAME, HEAD_NAME,
                     "README.md"):
            (out / name).unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()                        # a failed export leaves no empty folder behind
        raise
    return block


def _tolerance_text(block: dict[str, Any], modality: str) -> str:
    """What the parity table was held to: fp32's tolerance, or for int8 (which moves outputs by design) what it kept:
    the pooled rows' smallest cosine to eager and, for a classifier, the top-1 agreement."""
    if not block["quantize"]:
        return f"; the export is refused above {block['tolerance']:g} × max(1, largest output value)."
    checks = block["checks"]
    cos = min((c["pooled_cosine"] for c in checks if "pooled_cosine" in c), default=None)
    agree = [c["top1_agreement"] for c in checks if "top1_agreement" in c]
    said = [f"the pooled embeddings' cosine to eager is at least {cos:.4f}"] if cos is not None else []
    if agree:
        said.append(f"the top-1 label agrees with eager on {min(agree):.0%} of the examples at least")
    return (". int8 moves the outputs by design, so no fp32 tolerance applies: on these batches "
            + " and ".join(said or ["the graph ran on every batch"]) + f". int8 is offered for {modality} models "
            "because it kept the demo row's probe within one point of fp32 (docs/benchmarks.md, \"Export\"); "
            "`runtime=\"torch\"` runs the fp32 weights kept beside the graph, not int8.")


def _parity_rows(block: dict[str, Any]) -> list[str]:
    """The card's parity table rows: each checked batch's shapes and largest difference per output."""
    rows = []
    for check in block["checks"]:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in check["shapes"].items())
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in check["max_abs_diff"].items())
        rows.append(f"| {shapes} | {diffs} |")
    return rows


def export_card(out: Path, config: dict[str, Any], block: dict[str, Any], processor: Any) -> Path:
    """The exported folder's ``README.md``: what it is, how to run it with and without the zoo, parity and speed."""
    if block["format"] == PROGRAM_FORMAT:
        return program_card(out, config, block)
    modality, arch = config["modality"], config["architecture"]
    kind, rows, sp = "classifier" if block["classifier"] else "encoder", _parity_rows(block), block["speed"]
    batch = ", ".join(f"{k} {tuple(v)}" for k, v in block["speed_batch"].items())
    held = _tolerance_text(block, modality)
    feed = ", ".join(f'"{k}": batch["{k}"].numpy()' for k in block["inputs"])
    text = f"""---
library_name: onnx
tags: [ssl-zoo, onnx, {modality}, {arch}]
---

# {block['source']} ({modality} {kind}, ONNX)

`{block['source']}` exported by `zoo export` with torch {block['torch']} ({block['exporter']} exporter, opset
{block['opset']}{', int8 dynamic quantisation' if block['quantize'] else ', fp32'}). The batch and every size the model
does not fix are dynamic (padding masks, where the modality has them, are inputs). Processing stays in Python
(`preprocessor.json`).

## How to use

```python
import zoo
# through ONNX Runtime; runtime="torch" runs the weights kept beside the graph
model = zoo.{'AutoClassifier' if block['classifier'] else 'AutoEncoder'}.from_pretrained("path/to/this/folder")
```

Without the zoo's model code (the processor still comes from the zoo; `example` is one raw input, as
`zoo predict` reads it):

```python
import onnxruntime, zoo
folder = "path/to/this/folder"
processor = zoo.AutoProcessor.from_pretrained(folder)
batch = processor.collate([processor(example)])
session = onnxruntime.InferenceSession(f"{{folder}}/model.onnx")
{', '.join(block['outputs'])} = session.run(None, {{{feed}}})
```

Inputs: {', '.join(f'`{k}`' for k in block['inputs'])}; outputs: {', '.join(f'`{k}`' for k in block['outputs'])}.

## Parity with eager PyTorch (measured at export, on {block['traced_on']})

Largest absolute difference per output (`token_padding_mask`: share of entries that differ){held}

| batch | ONNX Runtime − eager |
| --- | --- |
{chr(10).join(rows)}

## Speed (measured at export, this machine, CPU)

On the batch {batch}: eager PyTorch (fp32) {sp['eager_ms']:.1f} ms, ONNX Runtime
{'int8' if block['quantize'] else 'fp32'} {sp['onnx_ms']:.1f} ms ({sp['speedup']:.2f}x; medians of alternating runs).
"""
    path = out / "README.md"
    path.write_text(text)
    return path


def program_card(out: Path, config: dict[str, Any], block: dict[str, Any]) -> Path:
    """The card of an exported torch program: how to run it with and without the zoo, parity and speed."""
    kind = "classifier" if block["classifier"] else "encoder"
    modality, arch = config["modality"], config["architecture"]
    sp, batch = block["speed"], ", ".join(f"{k} {tuple(v)}" for k, v in block["speed_batch"].items())
    args, ranges = ", ".join(f'batch["{k}"]' for k in block["inputs"]), "; ".join(
        f"`{k}` [{', '.join(v)}]" for k, v in block["input_ranges"].items())
    label_note = " `logits` are in the order of `classifier.json`'s `label_names`." if block["classifier"] else ""
    text = f"""---
library_name: pytorch
tags: [ssl-zoo, torch-export, {modality}, {arch}]
---

# {block['source']} ({modality} {kind}, torch.export program)

`{block['source']}` exported by `zoo export --format exported-program` with torch {block['torch']}: `model.pt2` is a
`torch.export` program (padding masks are inputs). Every input axis it accepts, as traced (`a..` has no upper bound):
{ranges}. Processing stays in Python (`preprocessor.json`); the source's weights are kept beside it
(`model.safetensors`) for `runtime="torch"`. It was saved without a pickle (no example inputs, weights as raw
tensors); `torch.export.load` alone would unpickle whatever a changed archive holds (it falls back to
`weights_only=False`): check the archive first, as below and as `zoo` does when it loads the folder.

## How to use

```python
import zoo
model = zoo.{'AutoClassifier' if block['classifier'] else 'AutoEncoder'}.from_pretrained("path/to/this/folder")
```

Without the zoo's model code (the processor still comes from the zoo; `example` is one raw input):

```python
import torch, zoo
from zoo.exported_program import check_archive
folder = "path/to/this/folder"
processor = zoo.AutoProcessor.from_pretrained(folder)
batch = processor.collate([processor(example)])
check_archive(f"{{folder}}/model.pt2")              # refuses an archive holding anything torch would unpickle
program = torch.export.load(f"{{folder}}/model.pt2").module()
{', '.join(block['outputs'])} = program({args})
```

`example` is one raw input as the processor takes it (a file path for audio, video and point clouds; a row, a graph
or an event history as `processor.read_many(path)` gives them).{label_note}

## Parity with eager PyTorch (measured at export, on {block['traced_on']})

Largest absolute difference per output (`token_padding_mask`: share of entries that differ); the export is refused above
{block['tolerance']:g} × max(1, largest output value).

| batch | program − eager |
| --- | --- |
{chr(10).join(_parity_rows(block))}

## Speed (measured at export, this machine, CPU)

On the batch {batch}: eager PyTorch {sp['eager_ms']:.1f} ms, the program {sp['exported_ms']:.1f} ms (medians).
"""
    (out / "README.md").write_text(text)
    return out / "README.md"


def export_summary(block: dict[str, Any]) -> str:
    """One line for the command's output."""
    worst = max((v for c in block["checks"] for v in c["max_abs_diff"].values()), default=0.0)
    sp = block["speed"]
    runtime, ms = ("the program", sp["exported_ms"]) if "exported_ms" in sp else ("ONNX Runtime", sp["onnx_ms"])
    return (f"parity: largest difference {worst:.1e} over {len(block['checks'])} batches; speed: eager "
            f"{sp['eager_ms']:.1f} ms, {runtime} {ms:.1f} ms ({sp['eager_ms'] / max(ms, 1e-9):.2f}x)")
