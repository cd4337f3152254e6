"""Embeddings in shards: ``embeddings-00000.safetensors, …`` (``embeddings [n, D]``, ``labels [n]`` when
labelled, names in the metadata) and ``index.json`` — what ``zoo embed --output DIR`` and the evaluation write, with
memory holding one shard."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["write_shards", "load_shards"]


def write_shards(rows: Iterator[tuple[torch.Tensor, list[str], torch.Tensor | None]], out_dir: str | Path, *,
                 shard_size: int = 50_000, progress: bool = False, unit: str = "ex") -> Path:
    """``(embeddings [b, D], names, labels [b] or None)`` blocks into shards of ``shard_size`` rows (see
    :func:`embed_shards`); memory holds one shard."""

    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a whole number >= 1 (rows per shard file), got {shard_size!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("embeddings-*.safetensors"):
        old.unlink()
    shards: list[dict[str, Any]] = []
    buf: list[tuple[torch.Tensor, list[str], torch.Tensor | None]] = []
    held = 0

    def flush() -> None:
        nonlocal buf, held
        if not held:
            return
        emb = torch.cat([b[0] for b in buf])
        tensors = {"embeddings": emb.contiguous()}
        if all(b[2] is not None for b in buf):
            tensors["labels"] = torch.cat([b[2] for b in buf])
        shard_names = [n for b in buf for n in b[1]]
        path = out_dir / f"embeddings-{len(shards):05d}.safetensors"
        save_file(tensors, str(path), metadata={"names": json.dumps(shard_names)})
        shards.append({"file": path.name, "rows": int(emb.shape[0])})
        buf, held = [], 0

    bar = tqdm(desc="embed", unit=unit, disable=not progress, mininterval=0.1 if os.isatty(2) else 30.0)
    for emb, names_b, labels in rows:
        while emb.shape[0]:
            room = shard_size - held
            buf.append((emb[:room], names_b[:room], labels[:room] if labels is not None else None))
            held += min(room, emb.shape[0])
            bar.update(min(room, emb.shape[0]))
            emb, names_b = emb[room:], names_b[room:]
            labels = labels[room:] if labels is not None else None
            if held == shard_size:
                flush()
    flush()
    bar.close()
    index = out_dir / "index.json"
    index.write_text(json.dumps({"shards": shards, "rows": sum(s["rows"] for s in shards)}, indent=2) + "\n")
    return index


def load_shards(index: str | Path) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Embeddings, labels (or None) and names from :func:`embed_shards`' ``index.json``."""

    from safetensors import safe_open
    index = Path(index)
    meta = json.loads(index.read_text())
    embs, labels, names = [], [], []
    for shard in meta["shards"]:
        with safe_open(str(index.parent / shard["file"]), "pt") as fh:
            embs.append(fh.get_tensor("embeddings"))
            labels.append(fh.get_tensor("labels") if "labels" in fh.keys() else None)
            names += json.loads(fh.metadata()["names"])
    if not embs:
        raise ValueError(f"{index}: no embeddings (the data set was empty or every example was skipped)")
    lab = torch.cat(labels) if all(x is not None for x in labels) else None
    return torch.cat(embs), lab, names
