"""The peer of ``bench/events.py``: pytorch-lifestream's CoLES (``ptls`` 0.7.0) on the same processed histories.

Runs in its own environment (``make bench-ptls-env`` builds ``.venv-ptls``: ptls and its Lightning, Hydra, spaCy,
dask and duckdb pins on top of the project's torch). Reads ``<dir>/train.safetensors`` and ``test.safetensors``
(categorical ids, scaled numbers, missing flags and log time gaps, exactly what our processor produced, with each
history's offsets), trains ``CoLESModule`` with ptls' documented defaults (``TrxEncoder`` with batch norm on the
numbers, ``RnnSeqEncoder`` GRU, ``ColesDataset`` + ``SampleSlices``, margin 0.5 with 5 hard negatives, Adam +
StepLR as in its tutorial) at our recipe's sizes, then writes the frozen embeddings of both splits and the timing.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def records(path: Path) -> tuple[list[dict[str, torch.Tensor]], dict[str, int]]:
    """Histories as ptls feature dicts: ``c<j>`` categorical ids, ``n<j>`` numbers, ``m<j>`` missing flags,
    ``dt`` and ``event_time`` (the event's position: the histories are already in time order)."""
    t = load_file(str(path))
    off = t["offsets"].tolist()
    cards = {f"c{j}": int(n) for j, n in enumerate(t["cardinalities"].tolist())}
    out = []
    for i in range(len(off) - 1):
        s, e = off[i], off[i + 1]
        rec = {f"c{j}": t["cat"][s:e, j] for j in range(t["cat"].shape[1])}
        rec.update({f"n{j}": t["num"][s:e, j] for j in range(t["num"].shape[1])})
        rec.update({f"m{j}": t["num_missing"][s:e, j].float() for j in range(t["num_missing"].shape[1])})
        rec["dt"] = t["dt"][s:e]
        rec["event_time"] = torch.arange(e - s, dtype=torch.float32)
        out.append(rec)
    return out, cards


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dir")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embed-dim", type=int, default=16)
    p.add_argument("--split-count", type=int, default=5)
    p.add_argument("--cnt-min", type=int, default=25)
    p.add_argument("--cnt-max", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import pytorch_lightning as pl
    from ptls.data_load.datasets import MemoryMapDataset
    from ptls.data_load.utils import collate_feature_dict
    from ptls.frames import PtlsDataModule
    from ptls.frames.coles import ColesDataset, CoLESModule
    from ptls.frames.coles.split_strategy import SampleSlices
    from ptls.nn import RnnSeqEncoder, TrxEncoder

    folder = Path(args.dir)
    train, cards = records(folder / "train.safetensors")
    test, _ = records(folder / "test.safetensors")
    pl.seed_everything(args.seed)
    numeric = [k for k in train[0] if k[0] in "nm" or k == "dt"]
    trx = TrxEncoder(embeddings={k: {"in": n, "out": args.embed_dim} for k, n in cards.items()},
                     numeric_values={k: "identity" for k in numeric})
    seq = RnnSeqEncoder(trx_encoder=trx, hidden_size=args.hidden, type="gru")
    module = CoLESModule(seq_encoder=seq, optimizer_partial=partial(torch.optim.Adam, lr=args.lr),
                         lr_scheduler_partial=partial(torch.optim.lr_scheduler.StepLR, step_size=30, gamma=0.9))
    data = PtlsDataModule(train_data=ColesDataset(MemoryMapDataset(data=train), splitter=SampleSlices(
        split_count=args.split_count, cnt_min=args.cnt_min, cnt_max=args.cnt_max)),
        train_batch_size=args.batch_size, train_num_workers=args.num_workers)

    stamps: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *a, **k) -> None:  # noqa: ANN002, ANN003
            stamps.append(time.perf_counter())

    trainer = pl.Trainer(max_steps=args.steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Clock()])
    t0 = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - t0
    warm = min(10, len(stamps) - 1)
    steady = (len(stamps) - 1 - warm) * args.batch_size / (stamps[-1] - stamps[warm])

    @torch.no_grad()
    def embed(recs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        seq.eval()
        return torch.cat([seq(collate_feature_dict(recs[i:i + 256])) for i in range(0, len(recs), 256)])

    save_file({"train": embed(train).contiguous(), "test": embed(test).contiguous()}, str(folder / "ptls.safetensors"))
    (folder / "ptls.json").write_text(json.dumps({
        "steps": len(stamps), "wall_seconds": wall, "sequences_per_second": steady,
        "ptls_version": __import__("importlib.metadata").metadata.version("pytorch-lifestream"),
        "lightning_version": pl.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
