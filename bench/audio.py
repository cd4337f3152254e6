"""wav2vec 2.0 pretraining throughput: ours vs Hugging Face transformers ``Wav2Vec2ForPreTraining`` on the
same configuration, batch, masks and distractors (one AdamW step each), plus peak memory and model FLOP
utilisation against the CPU matmul peak.

Each implementation runs in its own subprocess so that peak RSS growth is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch

from .harness import machine, train_step_times

CPU_PEAK_GFLOPS = 175.0  # 2048² fp32 matmul on this machine's 2 threads (ENVIRONMENT.md)
CONV = [(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2
ENC = dict(dim=256, depth=4, heads=4, mlp_ratio=4.0, pos_conv_kernel=64, pos_conv_groups=16, dropout=0.1,
           attn_dropout=0.1, conv_norm="group", norm_first=False)
PRE = dict(mask_prob=0.65, mask_length=10, num_negatives=100, codevector_groups=2, codevectors_per_group=320,
           codevector_dim=256, proj_dim=256, feature_grad_mult=1.0, feature_penalty=0.0)
BATCH, SECONDS, STEPS, WARMUP = 8, 2.0, 6, 2


def _inputs():
    g = torch.Generator().manual_seed(0)
    samples = int(SECONDS * 16000)
    x = torch.randn(BATCH, samples, generator=g)
    from modalities.audio.model import conv_output_lengths
    from zoo.masking import span_mask
    from zoo.objectives import sample_negatives
    frames = int(conv_output_lengths(samples, CONV))
    mask = span_mask(BATCH, frames, PRE["mask_prob"], PRE["mask_length"], generator=g, min_spans=2)
    neg = sample_negatives(mask, PRE["num_negatives"], generator=g)
    return x, mask, neg


def _run(kind: str) -> dict:
    torch.manual_seed(0)
    x, mask, neg = _inputs()
    if kind == "ours":
        from modalities.audio import Wav2Vec2Config, Wav2Vec2Encoder, Wav2Vec2Pretrainer, Wav2Vec2PretrainingConfig
        model = Wav2Vec2Pretrainer(Wav2Vec2Encoder(Wav2Vec2Config(conv_layers=CONV, **ENC)),
                                   Wav2Vec2PretrainingConfig(**PRE), total_steps=100)
        batch = {"input_values": x, "padding_mask": torch.zeros_like(x, dtype=torch.bool),
                 "time_mask": mask, "negatives": neg}     # the same masks and distractors as the reference

        def step():
            return model(batch, torch.Generator().manual_seed(1)).loss
    else:
        import transformers
        cfg = transformers.Wav2Vec2Config(
            conv_dim=[c for c, _, _ in CONV], conv_kernel=[k for _, k, _ in CONV], conv_stride=[s for _, _, s in CONV],
            hidden_size=ENC["dim"], num_hidden_layers=ENC["depth"], num_attention_heads=ENC["heads"],
            intermediate_size=int(ENC["dim"] * ENC["mlp_ratio"]), num_conv_pos_embeddings=ENC["pos_conv_kernel"],
            num_conv_pos_embedding_groups=ENC["pos_conv_groups"], hidden_dropout=0.1, attention_dropout=0.1,
            feat_extract_norm="group", do_stable_layer_norm=False, num_negatives=PRE["num_negatives"],
            num_codevector_groups=PRE["codevector_groups"], num_codevectors_per_group=PRE["codevectors_per_group"],
            codevector_dim=PRE["codevector_dim"], proj_codevector_dim=PRE["proj_dim"], layerdrop=0.0,
            mask_time_prob=PRE["mask_prob"], mask_time_length=PRE["mask_length"])
        model = transformers.Wav2Vec2ForPreTraining(cfg)
        t = mask.shape[1]
        flat = torch.where(neg >= 0, neg + torch.arange(BATCH)[:, None, None] * t, 0)

        def step():
            return model(x, mask_time_indices=mask, sampled_negative_indices=flat).loss
    model.train()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = train_step_times(model, step, warmup=WARMUP, steps=STEPS)
    flops = 0
    if kind == "ours":
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc:
            step().backward()
        flops = fc.get_total_flops()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {"step_s": times[len(times) // 2], "peak_mib": peak / 1024, "flops": flops}


def main() -> str:
    res = {}
    for kind in ("ours", "transformers"):
        out = subprocess.run([sys.executable, "-m", "bench.audio", kind], capture_output=True, text=True, check=True)
        res[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, ref = res["ours"], res["transformers"]
    mfu = ours["flops"] / ours["step_s"] / (CPU_PEAK_GFLOPS * 1e9)
    lines = ["### wav2vec 2.0 pretraining step (forward + backward + AdamW)", "", f"Machine: {machine()}", "",
             f"Config: conv {len(CONV)}x{CONV[0][0]} ch, D={ENC['dim']}, {ENC['depth']} layers, batch {BATCH} x "
             f"{SECONDS:.0f} s audio, G=2 x V=320, K=100 distractors; the same masks and distractors for both.", "",
             "| implementation | steps/s | peak RSS growth (MiB) |", "| --- | ---: | ---: |",
             f"| ours | {1 / ours['step_s']:.2f} | {ours['peak_mib']:.0f} |",
             f"| transformers Wav2Vec2ForPreTraining | {1 / ref['step_s']:.2f} | {ref['peak_mib']:.0f} |",
             f"| **ratio (ours / reference)** | **{ref['step_s'] / ours['step_s']:.2f}x** | "
             f"{ours['peak_mib'] / max(ref['peak_mib'], 1):.2f}x |", "",
             f"Model FLOP utilisation (ours): {ours['flops'] / 1e9:.1f} GFLOP per step, "
             f"{mfu * 100:.1f}% of the {CPU_PEAK_GFLOPS:.0f} GFLOP/s CPU matmul peak."]
    text = "\n".join(lines)
    print(text + "\n")
    return text


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(_run(sys.argv[1])))
    else:
        main()
