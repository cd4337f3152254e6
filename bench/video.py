"""VideoMAE benchmarks.

1. Pretraining step (forward + backward + AdamW): ours vs transformers ``VideoMAEForPreTraining`` on the same
   configuration (the paper's ViT-S/16 at 16×224²; the tiny demo model), the same weights (theirs converted into
   ours) and the same tube masks; the loss of both on those masks shows they compute the same objective.
2. Decoding through the pipeline: frames/s delivered as ready batches (torchcodec seeks the 16 sampled frames of
   each 96-frame 320×240 mp4, resize and crop to 224², normalise) with 0 and 2 DataLoader workers.
3. Probe quality on the embedded moving digits: ``video-videomae-tiny`` pretrained, then probes on the frozen
   encoder vs random init vs frame statistics.

``python -m bench.video`` (about 8 minutes on 2 CPU cores). Each step benchmark runs in its own subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .harness import machine, train_step_times

os.environ.setdefault("TQDM_DISABLE", "1")

CONFIGS = {
    "ViT-S/16 (paper)": (dict(image_size=224, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=384,
                              num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                              decoder_hidden_size=192, decoder_num_hidden_layers=4, decoder_num_attention_heads=3,
                              decoder_intermediate_size=768), 2,
                         "D=384, 12 layers, 6 heads, 16×224², tubelets 2×16×16 (1568 tokens, 160 visible), "
                         "decoder 4×192, batch 2"),
    "tiny (demo recipe)": (dict(image_size=64, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=128,
                                num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                                decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
                                decoder_intermediate_size=256), 16,
                           "D=128, 4 layers, 4 heads, 16×64², tubelets 2×8×8 (512 tokens, 56 visible), "
                           "decoder 2×64, batch 16"),
}
COMMON = dict(use_mean_pooling=False, norm_pix_loss=True, layer_norm_eps=1e-6)
STEPS, WARMUP = 6, 2


def _hf_model(name: str):
    import transformers
    torch.manual_seed(0)
    return transformers.VideoMAEForPreTraining(transformers.VideoMAEConfig(**CONFIGS[name][0], **COMMON))


def _inputs(name: str):
    from zoo.masking import tube_mask
    enc, batch, _ = CONFIGS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, enc["num_frames"], 3, enc["image_size"], enc["image_size"], generator=g)
    side = enc["image_size"] // enc["patch_size"]
    mask = tube_mask(batch, enc["num_frames"] // enc["tubelet_size"], side * side, 0.9, generator=g)
    return x, mask


def _run(kind: str, name: str) -> dict:
    x, mask = _inputs(name)
    hf = _hf_model(name)
    if kind == "ours":
        from modalities.video import VideoMAEEncoder, VideoMAEPretrainer
        from modalities.video.convert import config_from_transformers, map_pretraining_heads, map_state_dict
        enc_cfg, pre_cfg = config_from_transformers(hf.config.to_dict())
        model = VideoMAEPretrainer(VideoMAEEncoder(enc_cfg), pre_cfg)
        state = hf.state_dict()
        model.encoder.load_state_dict(map_state_dict(state, enc_cfg))
        model.load_state_dict(map_pretraining_heads(state), strict=False)
        del hf

        def step():
            return model.loss(x, mask).loss
    else:
        model = hf

        def step():
            return model(x, bool_masked_pos=mask).loss
    with torch.no_grad():
        model.eval()
        first = float(step())
    model.train()
    times = train_step_times(model, step, warmup=WARMUP, steps=STEPS)
    return {"step_s": times[len(times) // 2], "loss": first}


def step_table() -> str:
    lines = ["### VideoMAE pretraining step (forward + backward + AdamW)", "", f"Machine: {machine()}", "",
             "The same configuration, weights (the reference's, converted into ours) and tube masks for both; "
             "the loss column is each model's objective on those masks before training.", "",
             "| config | ours (clips/s) | transformers VideoMAEForPreTraining (clips/s) | ratio | loss ours / ref |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, (_, batch, desc) in CONFIGS.items():
        res: dict[str, dict] = {}
        for _ in range(2):                    # alternated, each in a fresh process; the faster run of each counts
            for kind in ("ours", "transformers"):
                out = subprocess.run([sys.executable, "-m", "bench.video", kind, name], capture_output=True,
                                     text=True, check=True)
                run = json.loads(out.stdout.strip().splitlines()[-1])
                if kind not in res or run["step_s"] < res[kind]["step_s"]:
                    res[kind] = run
        ours, ref = res["ours"], res["transformers"]
        lines.append(f"| {name}: {desc} | {batch / ours['step_s']:.2f} | {batch / ref['step_s']:.2f} | "
                     f"**{ref['step_s'] / ours['step_s']:.2f}x** | {ours['loss']:.5f} / {ref['loss']:.5f} |")
    text = "\n".join(lines)
    print(text + "\n")
    return text


def _decode_rate(files: list[str], workers: int, batches: int = 12) -> float:
    from modalities.video import VideoProcessor, VideoProcessorConfig
    from pipelines.data import TrainData
    from pipelines.recipe import TrainConfig
    from zoo import ExampleSet
    proc = VideoProcessor(VideoProcessorConfig(num_frames=16, frame_stride=4, image_size=224))
    cfg = TrainConfig(batch_size=4, num_workers=workers, steps=1000)
    it = TrainData(ExampleSet(files, None, [Path(f).name for f in files]), proc, cfg).batches()
    next(it)
    t0, frames = time.perf_counter(), 0
    for _ in range(batches):
        b = next(it)
        frames += b["pixel_values"].shape[0] * b["pixel_values"].shape[1]
    rate = frames / (time.perf_counter() - t0)
    it.close()
    return rate


def decode_table() -> str:
    import numpy as np

    from modalities.video.data import write_mp4
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.RandomState(0)
    files = []
    for i in range(24):
        t = np.arange(96)[:, None, None, None]
        yy, xx = np.mgrid[0:240, 0:320]
        base = (128 + 100 * np.sin((xx[None, ..., None] + 3 * t) / 17.0 + rng.rand() * 6)
                * np.cos((yy[None, ..., None] - 2 * t) / 23.0)).clip(0, 255)
        frames = np.concatenate([base, np.roll(base, 40, axis=2), 255 - base], axis=-1).astype(np.uint8)
        files.append(str(write_mp4(frames, tmp / f"clip{i:02d}.mp4", fps=30)))
    rates = {w: _decode_rate(files, w) for w in (0, 2)}
    lines = ["### Video decoding through the pipeline (torchcodec, ready batches)", "", f"Machine: {machine()}", "",
             "24 generated mp4 files (H.264, 96 frames of 320×240 each); 16 frames sampled at stride 4 (seeking "
             "only those), resized and centre-cropped to 224², normalised, batches of 4.", "",
             "| DataLoader workers | frames/s | clips/s |", "| ---: | ---: | ---: |"]
    lines += [f"| {w} | {r:.0f} | {r / 16:.1f} |" for w, r in rates.items()]
    text = "\n".join(lines)
    print(text + "\n")
    return text


CARDS = Path(__file__).resolve().parents[1] / "model_cards"


def probe_table(out: Path = Path(__file__).parent / "results" / "video-moving-digits") -> str:
    from pipelines.evaluate import evaluate_model
    from pipelines.pretrain import pretrain
    from pipelines.recipe import load_recipe
    from pipelines.report import comparison_markdown
    recipe = load_recipe("video-videomae-tiny")
    summary = pretrain(recipe, out, resume=False)
    report = evaluate_model(Path(summary["model_dir"]), recipe)
    text = "\n".join([f"### {recipe.name}: probes on the moving digits (held-out handwriting)", "",
                      f"Machine: {machine()}; pretraining {summary['steps']} steps took "
                      f"{summary['wall_seconds']:.0f} s.", "",
                      comparison_markdown(report).replace("### Compared with baselines\n\n", "")])
    print(text + "\n")
    return text


def main(cards: bool = True) -> str:
    """Every table; with ``cards`` the probed model's card (probe, step and decoding tables) is written and copied
    to ``model_cards/video-videomae-tiny/`` as the zoo entry's card."""
    out = Path(__file__).parent / "results" / "video-moving-digits"
    tables = [step_table(), decode_table(), probe_table(out)]
    if cards:
        import shutil

        from zoo.cards import _existing_comparison, write_card
        model = out / "model"
        speed = "\n\n".join(t.replace("### ", "#### ") for t in tables[:2])
        write_card(model, repo_id="ssl-zoo/video-videomae-tiny", limits=LIMITS,
                   comparison=_existing_comparison(model) + "\n\n### Speed (bench/video.py)\n\n" + speed)
        dest = CARDS / "video-videomae-tiny"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("README.md", "embedding_map.png"):
            shutil.copy(model / name, dest / name)
    return "\n\n".join(tables)


LIMITS = ("Pretrained for 800 steps on 800 synthetic clips (scikit-learn digits moving in four directions) on 2 "
          "CPU cores: a demonstration of the method and the pipeline, not a general video encoder. The tiny config "
          "uses 8×8 patches and a 2-layer decoder (the paper: 16×16 and 4 layers). The recipe turns the paper's "
          "training augmentation off (at 400 steps clip jitter, multi-scale crop and flip lowered the probe from "
          "0.860 to 0.820, both below the random-init 0.885); clips are read from their centre.")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("ours", "transformers"):
        print(json.dumps(_run(sys.argv[1], sys.argv[2])))
    elif len(sys.argv) > 1:
        {"step": step_table, "decode": decode_table, "probe": probe_table}[sys.argv[1]]()
    else:
        main()
