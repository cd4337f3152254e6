"""Public checkpoint families loaded through ``zoo.AutoEncoder``: forward throughput of the converted encoder vs
transformers on the same (randomly initialised, paper-shaped) weights and the same batch, in one run, as a ratio.
Also the largest difference between the two outputs (parity, fp32)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from .harness import machine, publish_table, results_dir


def public_families():
    """Paper-shaped transformers models of the families we convert, random weights: (name, model, kind)."""
    import transformers
    base = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    yield "wav2vec 2.0 BASE", transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**base)), "audio"
    yield "HuBERT BASE", transformers.HubertModel(transformers.HubertConfig(**base)), "audio"
    yield "data2vec-audio BASE", transformers.Data2VecAudioModel(transformers.Data2VecAudioConfig(**base)), "audio"
    yield "WavLM BASE", transformers.WavLMModel(transformers.WavLMConfig(**base)), "audio"
    yield "VideoMAE ViT-B", transformers.VideoMAEModel(transformers.VideoMAEConfig(**base)), "video"


def _time_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of each, the two run alternately (so that a busy moment of the machine hits both)."""
    first(), second()                                      # warm-up
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


@torch.no_grad()
def _row(zoo, name: str, hf, kind: str, repeats: int) -> str:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = zoo.AutoEncoder.from_pretrained(tmp).eval()
    x = torch.randn(4, 32000) if kind == "audio" else torch.randn(2, 16, 3, 224, 224)
    batch = {"input_values": x} if kind == "audio" else {"pixel_values": x}
    diff = float((ours(batch).tokens - hf(x).last_hidden_state).abs().max())
    t_hf, t_ours = _time_pair(lambda: hf(x).last_hidden_state, lambda: ours(batch).tokens, repeats)
    return f"| {name} | {t_ours * 1000:.0f} | {t_hf * 1000:.0f} | {t_hf / t_ours:.2f}x | {diff:.1e} |"


@torch.no_grad()
def main(repeats: int = 5, out: Path | None = None) -> str:
    import zoo
    out = out or results_dir("real-weights")
    rows = [_row(zoo, name, hf.eval(), kind, repeats) for name, hf, kind in public_families()]
    lines = ["### Public checkpoints: forward time, ours vs transformers (same weights, same batch)", "",
             f"Machine: {machine()}; fp32, eval mode, median of {repeats} runs after one warm-up, the two alternating; "
             "audio: 4 clips of "
             "2 s at 16 kHz; video: 2 clips of 16×224×224. Random paper-shaped weights (no download here).", "",
             "| family | ours (ms) | transformers (ms) | speed-up | max abs diff |",
             "| --- | ---: | ---: | ---: | ---: |",
             *rows]
    return publish_table(lines, out / "real-weights.md")


if __name__ == "__main__":
    main()
