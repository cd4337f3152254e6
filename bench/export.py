"""Exported encoders (issue #33; docs/benchmarks.md, "Export"): forward time of our eager encoder against our ONNX
Runtime graph (``zoo export``), and int8 where it keeps the probe.

1. Paper-shaped public families on random weights (no download here), the same batch, one run, the runs alternating
   and medians: ours eager, ours + ONNX Runtime (fp32 and int8), transformers eager and transformers + ONNX Runtime
   (fp32 and int8; the dynamo ONNX exporter, dynamic batch and length), every session without thread spinning (a
   spinning pool takes the cores from the eager run after it). Audio: 4 clips of 2 s at 16 kHz; video: 2 clips of
   16×224×224. Each forward's GFLOP against this machine's large-GEMM rate (:func:`gemm_gflops`): how near the
   cores' ceiling an fp32 graph runs. Then where ONNX Runtime spends the wav2vec 2.0 BASE graph's time, by operator
   type, and what ONNX Runtime's transformer fusions (``onnxruntime.transformers.optimizer``) change.
2. The six demo rows (each recipe pretrained as ``make demo`` does; kept in ``bench/results/export/runs``): eager,
   ONNX Runtime fp32 and int8 (dynamic quantisation) on 16 evaluation examples, and the recipe's final probe (its
   evaluation) with each: int8 is offered for a family (``pipelines.export.INT8_FAMILIES``) where it stays within one
   point of fp32. With ``--compile``: ``torch.compile`` (inductor) of each demo encoder — graphs, graph breaks,
   compile time, speed, parity.

``python -m bench.export [--repeats 5] [--skip-families] [--skip-demo]``; table in ``bench/results/export.md``, numbers
in ``bench/results/export.json``."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .harness import machine, publish_table, results_dir
from .real_weights import public_families

DEMO = ["audio-wav2vec2-demo", "tabular-tjepa-demo", "graph-graphmae-sbm", "video-videomae-demo",
        "pointcloud-pointmae-demo", "events-coles-demo"]          # the Makefile's DEMO_RECIPES


def _alternate(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, all run in turn ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


class _HFWrap(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).last_hidden_state


def _session(path: Path) -> Any:
    """The zoo's own session (:func:`zoo.export.ort_session`: no spinning between runs, so that the eager runs
    alternating with it get the cores)."""
    from zoo.export import ort_session
    return ort_session(path)


def gemm_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """This machine's best rate for one large fp32 matrix product (``n``×``n`` by ``n``×``n``, every thread), by
    torch's BLAS and by ONNX Runtime's own ``MatMul``: the ceiling a compute-bound fp32 graph on these cores can
    approach (the best of ``repeats``: a busy moment only lowers a rate)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    a, b = torch.randn(n, n), torch.randn(n, n)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        session = _session(path)
        feed = {"a": a.numpy(), "b": np.ascontiguousarray(b.numpy())}
        best = {}
        for name, fn in (("torch", lambda: a @ b), ("onnxruntime", lambda: session.run(None, feed))):
            fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            best[name] = round(2 * n**3 / min(times) / 1e9, 1)
    return best


def forward_gflop(model: torch.nn.Module, *args: Any) -> float:
    """Floating-point operations of one forward (matrix products, convolutions, attention: torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        model(*args)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def family_row(name: str, hf: torch.nn.Module, kind: str, repeats: int) -> dict[str, Any]:
    """Ours eager, ours + ONNX Runtime (fp32 and ``zoo export --quantize int8``'s quantisation), transformers eager
    and transformers + ONNX Runtime on the same weights and batch; the forward's GFLOP and this machine's large-GEMM
    rate (:func:`gemm_gflops`) say how near to the cores' ceiling the fp32 graphs run."""
    import zoo
    from zoo.export import Exportable, quantize_int8, trace_onnx
    torch.manual_seed(0)
    x = torch.randn(4, 32000) if kind == "audio" else torch.randn(2, 16, 3, 224, 224)
    key = "input_values" if kind == "audio" else "pixel_values"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hf.save_pretrained(tmp / "hf")
        ours = zoo.AutoEncoder.from_pretrained(tmp / "hf").eval()
        model = Exportable(ours, [key]).eval()
        t0 = time.perf_counter()
        trace_onnx(model, (x,), tmp / "ours.onnx", "dynamo")
        ours_export_s = time.perf_counter() - t0
        wrap = _HFWrap(hf).eval()
        dims = ({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},) if kind == "audio" else (
            {0: torch.export.Dim.AUTO},)
        program = torch.onnx.export(wrap, (x,), dynamo=True, optimize=True, dynamic_shapes=dims, verbose=False,
                                    input_names=["x"], output_names=["last_hidden_state"])
        program.save(str(tmp / "hf.onnx"), external_data=False)
        quantize_int8(tmp / "ours.onnx", tmp / "ours.int8.onnx")
        quantize_int8(tmp / "hf.onnx", tmp / "hf.int8.onnx")
        s_ours, s_hf, s_int8, s_hf8 = (_session(tmp / f) for f in ("ours.onnx", "hf.onnx", "ours.int8.onnx",
                                                                     "hf.int8.onnx"))
        ours_in = s_ours.get_inputs()[0].name
        feed = x.numpy()
        tokens = torch.from_numpy(s_ours.run(None, {ours_in: feed})[1])
        diff = float((tokens - ours({key: x}).tokens).abs().max())
        diff_hf = float((tokens - wrap(x)).abs().max())
        int8 = torch.from_numpy(s_int8.run(None, {ours_in: feed})[1])
        cosine = float(torch.nn.functional.cosine_similarity(int8.flatten(0, -2), tokens.flatten(0, -2)).mean())
        ms = _alternate({"ours_eager": lambda: ours({key: x}), "ours_onnx": lambda: s_ours.run(None, {ours_in: feed}),
                         "ours_int8": lambda: s_int8.run(None, {ours_in: feed}),
                         "hf_eager": lambda: wrap(x), "hf_onnx": lambda: s_hf.run(None, {"x": feed}),
                         "hf_int8": lambda: s_hf8.run(None, {"x": feed})}, repeats)
        gflop = forward_gflop(ours, {key: x})
    return {"family": name, "kind": kind, **{k: round(v, 1) for k, v in ms.items()}, "parity_vs_ours_eager": diff,
            "parity_vs_transformers": diff_hf, "int8_token_cosine": round(cosine, 5),
            "ours_export_s": round(ours_export_s, 1), "gflop": round(gflop, 2)}


@torch.no_grad()
def profile_row(repeats: int) -> dict[str, Any]:
    """Where ONNX Runtime spends the time of our wav2vec 2.0 BASE graph (the families table's batch), by operator type
    (ONNX Runtime's own profiler, three runs), and what ``onnxruntime.transformers.optimizer``'s fusions (Attention,
    SkipLayerNormalization, BiasGelu; the BERT passes, as Optimum applies them) change: fused operators, speed,
    parity."""
    import collections

    import onnxruntime as ort
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model

    import zoo
    from zoo.export import Exportable, trace_onnx
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).eval()
    x = torch.randn(4, 32000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hf.save_pretrained(tmp / "hf")
        ours = zoo.AutoEncoder.from_pretrained(tmp / "hf").eval()
        trace_onnx(Exportable(ours, ["input_values"]).eval(), (x,), tmp / "ours.onnx", "dynamo")
        fused = optimize_model(str(tmp / "ours.onnx"), model_type="bert", num_heads=12, hidden_size=768)
        fused.save_model_to_file(str(tmp / "fused.onnx"))
        counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        options = ort.SessionOptions()
        options.enable_profiling, options.profile_file_prefix = True, str(tmp / "profile")
        profiled = ort.InferenceSession(str(tmp / "ours.onnx"), options, providers=["CPUExecutionProvider"])
        plain, fast = _session(tmp / "ours.onnx"), _session(tmp / "fused.onnx")
        feed = {plain.get_inputs()[0].name: x.numpy()}
        for _ in range(3):
            profiled.run(None, feed)
        spent: collections.Counter[str] = collections.Counter()
        for event in json.loads(Path(profiled.end_profiling()).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                spent[event["args"]["op_name"]] += event["dur"]
        total = sum(spent.values())
        diff = float(abs(fast.run(None, feed)[1] - plain.run(None, feed)[1]).max())
        ms = _alternate({"ours_onnx": lambda: plain.run(None, feed), "fused": lambda: fast.run(None, feed)}, repeats)
    return {"profile": "wav2vec 2.0 BASE", "ours_onnx": round(ms["ours_onnx"], 1), "fused": round(ms["fused"], 1),
            "fused_operators": counts, "fused_max_diff": diff,
            "op_share": {k: round(v / total, 3) for k, v in spent.most_common(6)}}


def _demo_model(name: str, runs: Path) -> Path:
    """The demo recipe's pretrained model (``make demo``'s run), trained here once."""
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe
    folder = runs / name
    if not (folder / "model" / "config.json").is_file():
        with torch.enable_grad():
            pretrain(load_recipe(name), folder, resume=True)
    return folder / "model"


def _examples(name: str, n: int = 16, *, probe: bool = True) -> tuple[list[Any], list[str], Any, Any]:
    """``n`` of the recipe's evaluation test examples with their names, the built recipe and its final probe (None
    without ``probe``)."""
    from pipelines.build import build
    from pipelines.quality import evaluation_sets
    from pipelines.recipe import load_recipe

    from .online_quality import final_probe
    recipe = load_recipe(name)
    built = build(recipe)
    _, test = evaluation_sets(built.modality, recipe.evaluate)
    idx = list(range(min(n, len(test))))
    return ([test.examples[i] for i in idx], [test.name(i) for i in idx], built,
            final_probe(built, recipe)[1] if probe else None)


def demo_row(name: str, runs: Path, out: Path, repeats: int) -> dict[str, Any]:
    import zoo
    from pipelines.export import export_model
    from zoo.export import input_keys
    model = _demo_model(name, runs)
    examples, names, built, probe = _examples(name)       # the probes train their own heads: gradients on
    folders = {}
    for q in (None, "int8"):
        folder = out / f"{name}-{q or 'fp32'}"
        if not (folder / "config.json").is_file():
            import pipelines.export as pe
            allowed = pe.INT8_FAMILIES
            pe.INT8_FAMILIES = frozenset({built.modality.name})        # measured here before it is offered
            try:
                export_model(model, folder, quantize=q, examples=(examples, names))
            finally:
                pe.INT8_FAMILIES = allowed
        folders[q or "fp32"] = folder
    eager = zoo.AutoEncoder.from_pretrained(model).eval()
    fp32, int8 = (zoo.AutoEncoder.from_pretrained(folders[k]) for k in ("fp32", "int8"))
    processor = zoo.AutoProcessor.from_pretrained(model)
    items = [processor(ex, name=n) for ex, n in zip(examples, names)]
    batch = processor.collate(items)
    batch = {k: batch[k] for k in input_keys(batch)}
    with torch.no_grad():
        ms = _alternate({"eager": lambda: eager(batch), "onnx_fp32": lambda: fp32(batch),
                         "onnx_int8": lambda: int8(batch)}, repeats)
    probes = {"eager": probe(eager), "onnx_fp32": probe(fp32), "onnx_int8": probe(int8)}
    block = json.loads((folders["fp32"] / "config.json").read_text())["export"]
    worst = max(v for c in block["checks"] for k, v in c["max_abs_diff"].items() if k != "token_padding_mask")
    return {"recipe": name, "modality": built.modality.name, "exporter": block["exporter"],
            "batch": {k: list(v.shape) for k, v in batch.items()}, **{f"{k}_ms": round(v, 2) for k, v in ms.items()},
            **{f"probe_{k}": v for k, v in probes.items()}, "fp32_max_diff": worst,
            "int8_keeps_probe": abs(probes["onnx_int8"] - probes["onnx_fp32"]) <= 0.01}


@torch.no_grad()
def compile_row(name: str, runs: Path, repeats: int) -> dict[str, Any]:
    """``torch.compile`` (inductor, CPU, static shapes: ``dynamic=True`` stalls in symbolic shape reasoning on the
    audio feature encoder's strided convolutions; ``allow_rnn``: without it dynamo skips a GRU encoder's whole
    forward, counting no break) of a demo encoder on 16 evaluation examples: graphs and graph
    breaks (``torch._dynamo.explain``), the first call's compile time, speed against eager, parity."""
    import zoo
    from zoo.export import input_keys
    model = _demo_model(name, runs)
    examples, names, _, _ = _examples(name, probe=False)
    eager = zoo.AutoEncoder.from_pretrained(model).eval()
    processor = zoo.AutoProcessor.from_pretrained(model)
    batch = processor.collate([processor(ex, name=n) for ex, n in zip(examples, names)])
    batch = {k: batch[k] for k in input_keys(batch)}
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):        # else dynamo runs a GRU encoder's forward eagerly
        explained = torch._dynamo.explain(eager)(batch)
        compiled = torch.compile(eager, dynamic=False)
        t0 = time.perf_counter()
        got = compiled(batch)
        compile_s = time.perf_counter() - t0
        want = eager(batch)
        ms = _alternate({"eager": lambda: eager(batch), "compiled": lambda: compiled(batch)}, repeats)
    diff = max(float((getattr(got, k).float() - getattr(want, k).float()).abs().max()) for k in ("pooled", "tokens"))
    return {"compile": name, "graphs": explained.graph_count, "graph_breaks": explained.graph_break_count,
            "break_reasons": sorted({str(b.reason).splitlines()[0][:160] for b in explained.break_reasons}),
            "compile_s": round(compile_s, 1), "compile_max_diff": diff, "eager_ms": round(ms["eager"], 2),
            "compiled_ms": round(ms["compiled"], 2)}


def tables(families: list[dict[str, Any]], demo: list[dict[str, Any]], repeats: int,
           compiled: list[dict[str, Any]] | None = None, profiles: list[dict[str, Any]] | None = None,
           ceiling: dict[str, float] | None = None) -> list[str]:
    lines = ["### Exported encoders: ONNX Runtime against eager (issue #33)", "",
             f"`python -m bench.export` ({time.strftime('%Y-%m-%d')}), machine: {machine()}; fp32 unless said, eval "
             f"mode, medians of {repeats} runs after one warm-up, all runs of a row alternating.", ""]
    if families:
        lines += ["Paper-shaped public families on random weights, the same batch (audio: 4 clips of 2 s at 16 kHz; "
                  "video: 2 clips of 16×224×224); transformers' models exported with the same dynamo ONNX exporter "
                  "(dynamic batch and length):", "",
                  "| family | ours eager (ms) | ours ONNX Runtime (ms) | transformers eager (ms) | transformers ONNX "
                  "Runtime (ms) | ours ORT vs transformers ORT | ours ORT vs ours eager | parity (ours ORT − eager) "
                  "| GFLOP | ours ORT GFLOP/s | share of the large-GEMM rate |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        top = max(ceiling.values()) if ceiling else None
        for r in families:
            rate = r["gflop"] / r["ours_onnx"] * 1e3 if "gflop" in r else None
            lines.append(f"| {r['family']} | {r['ours_eager']:.0f} | {r['ours_onnx']:.0f} | {r['hf_eager']:.0f} | "
                         f"{r['hf_onnx']:.0f} | {r['hf_onnx'] / r['ours_onnx']:.2f}x | "
                         f"{r['ours_eager'] / r['ours_onnx']:.2f}x | {r['parity_vs_ours_eager']:.1e} | "
                         + (f"{r['gflop']:.0f} | {rate:.0f} | " if rate else "— | — | ")
                         + (f"{rate / top:.0%} |" if rate and top else "— |"))
        if ceiling:
            lines += ["", "Large-GEMM rate: the best of ten 2048×2048 fp32 matrix products on these cores, "
                      + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceiling.items())
                      + "; GFLOP: one forward of the batch, by torch's FLOP counter (matrix products, convolutions, "
                      "attention)."]
        int8 = [r for r in families if "ours_int8" in r]
        if int8:
            lines += ["", "The same graphs quantised as `zoo export --quantize int8` quantises (ONNX Runtime's dynamic "
                      "int8 of the matrix products; convolutions fp32), against the fp32 graphs above:", "",
                      "| family | ours ORT int8 (ms) | int8 vs transformers ORT fp32 | int8 vs ours ORT fp32 | "
                      "int8 vs ours eager | tokens' cosine to fp32 | transformers ORT int8 (ms) | ours int8 vs "
                      "transformers int8 |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            lines += [f"| {r['family']} | {r['ours_int8']:.0f} | {r['hf_onnx'] / r['ours_int8']:.2f}x | "
                      f"{r['ours_onnx'] / r['ours_int8']:.2f}x | {r['ours_eager'] / r['ours_int8']:.2f}x | "
                      f"{r['int8_token_cosine']:.4f} | "
                      + (f"{r['hf_int8']:.0f} | {r['hf_int8'] / r['ours_int8']:.2f}x |" if "hf_int8" in r
                         else "— | — |")
                      for r in int8]
        lines.append("")
    if demo:
        lines += ["The six demo rows' encoders exported by `zoo export` on 16 evaluation examples, timed on that "
                  "batch; the recipe's final probe (its evaluation) run on each:", "",
                  "| recipe | exporter | eager (ms) | ONNX Runtime fp32 (ms) | int8 (ms) | fp32 vs eager | "
                  "probe eager | probe fp32 | probe int8 | int8 offered | fp32 parity |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        for r in demo:
            lines.append(f"| {r['recipe']} | {r['exporter']} | {r['eager_ms']:.1f} | {r['onnx_fp32_ms']:.1f} | "
                         f"{r['onnx_int8_ms']:.1f} | {r['eager_ms'] / r['onnx_fp32_ms']:.2f}x | "
                         f"{r['probe_eager']:.3f} | {r['probe_onnx_fp32']:.3f} | {r['probe_onnx_int8']:.3f} | "
                         f"{'yes' if r['int8_keeps_probe'] else 'no: moved by more than one point'} | "
                         f"{r['fp32_max_diff']:.1e} |")
    for r in profiles or []:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["op_share"].items())
        fusedops = ", ".join(f"{k} {v}" for k, v in r["fused_operators"].items()) or "none"
        lines += ["", f"Where ONNX Runtime spends the time of our {r['profile']} graph (its profiler, by operator "
                  f"type): {shares}. `onnxruntime.transformers.optimizer` (the BERT fusions) on the same graph fuses "
                  f"{fusedops}, and no Attention: {r['ours_onnx']:.0f} ms before, {r['fused']:.0f} ms after "
                  f"({r['ours_onnx'] / r['fused']:.2f}x; outputs within {r['fused_max_diff']:.1e})."]
    if compiled:
        lines += ["", "`torch.compile` (inductor, CPU, static shapes) of the same encoders on the same batch; graph "
                  "breaks counted by `torch._dynamo.explain`:", "",
                  "| recipe | graphs | graph breaks | first compile (s) | eager (ms) | compiled (ms) | compiled vs "
                  "eager | compiled − eager | break reasons |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in compiled:
            lines.append(f"| {r['compile']} | {r['graphs']} | {r['graph_breaks']} | {r['compile_s']:.0f} | "
                         f"{r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | {r['eager_ms'] / r['compiled_ms']:.2f}x | "
                         f"{r['compile_max_diff']:.1e} | {'; '.join(r['break_reasons']) or '—'} |")
    return lines


def main(repeats: int = 5, families: bool = True, demo: bool = True, recipes: list[str] | None = None,
         compile_rows: bool = False) -> str:
    out = results_dir("export")
    log = out / "rows.jsonl"
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    have = {r.get("family") or r.get("recipe") or (f"profile:{r['profile']}" if "profile" in r else None)
            or ("ceiling" if "ceiling" in r else None) or f"compile:{r.get('compile')}" for r in done}
    todo: list[tuple[str, Any]] = []
    if families:
        todo += [(name, lambda n=name, hf=hf, kind=kind: family_row(n, hf.eval(), kind, repeats))
                 for name, hf, kind in public_families() if name not in have]
        if "profile:wav2vec 2.0 BASE" not in have:
            todo.append(("profile", lambda: profile_row(repeats)))
        if "ceiling" not in have:
            todo.append(("ceiling", lambda: {"ceiling": gemm_gflops()}))
    if demo:
        todo += [(name, lambda n=name: demo_row(n, out / "runs", out, repeats)) for name in recipes or DEMO
                 if name not in have]
    if compile_rows:
        todo += [(name, lambda n=name: compile_row(n, out / "runs", repeats)) for name in recipes or DEMO
                 if f"compile:{name}" not in have]
    for _, fn in todo:
        row = fn()
        done.append(row)
        with open(log, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    root = Path(__file__).parent / "results"
    (root / "export.json").write_text(json.dumps(done, indent=2) + "\n")
    return publish_table(tables([r for r in done if "family" in r], [r for r in done if "recipe" in r], repeats,
                                [r for r in done if "compile" in r], [r for r in done if "profile" in r],
                                next((r["ceiling"] for r in done if "ceiling" in r), None)),
                          root / "export.md")


if __name__ == "__main__":
    import argparse
    import os
    os.environ.setdefault("TQDM_DISABLE", "1")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-families", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--recipes", nargs="*", default=None)
    p.add_argument("--compile", action="store_true", help="also torch.compile each demo encoder (minutes each)")
    a = p.parse_args()
    main(a.repeats, not a.skip_families, not a.skip_demo, a.recipes, a.compile)
