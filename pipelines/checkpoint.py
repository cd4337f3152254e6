"""Checkpoints (docs/architecture.md, "Run lifecycle"): model, optimiser, RNG and data position of every rank,
written atomically as safetensors + JSON, with the run's fingerprint so that a resume under other settings is
refused naming the keys that differ."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.config import flatten
from zoo.hub import FormatError, non_finite

from .distributed import DistInfo

__all__ = ["Checkpointer", "data_fingerprint", "fingerprint_mismatch", "RESUMABLE_CHANGES"]

RESUMABLE_CHANGES = ("train.steps", "train.stop_after", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.device", "train.prefetch_factor", "train.collapse_patience",
                     "train.stop_on_collapse", "train.quality_every", "train.quality_examples", "description")


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                      float(np_state[4])]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                          meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


class Checkpointer:
    """Atomic checkpoints under ``<output>/checkpoints/step-NNNNNNN``: written to a temporary folder, then
    renamed, so a run killed mid-write leaves the previous checkpoint intact. Only safetensors and JSON."""

    def __init__(self, output_dir: Path, keep: int, info: DistInfo) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep, self.info = keep, info

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                      and (p / "state.json").is_file())
        return done[-1] if done else None

    def _barrier(self) -> None:
        if self.info.world > 1:
            dist.barrier()

    def save(self, step: int, model: nn.Module, opt: torch.optim.Optimizer, extra: dict[str, Any],
             data_state: dict[str, Any] | None = None) -> Path:
        """Every rank writes its RNG and data position; rank 0 the model, optimiser and ``state.json``."""
        final = self.root / f"step-{step:07d}"
        tmp = self.root / f"step-{step:07d}.tmp"
        if self.info.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        rng_t, rng_meta = _rng_state()
        save_file(rng_t, str(tmp / f"rng-rank{self.info.rank}.safetensors"))
        (tmp / f"rng-rank{self.info.rank}.json").write_text(json.dumps(rng_meta))
        (tmp / f"data-rank{self.info.rank}.json").write_text(json.dumps(data_state or {}))
        self._barrier()
        if self.info.main:
            state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            opt_t, opt_meta = _optimizer_state(opt)
            save_file(opt_t, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
            (tmp / "state.json").write_text(json.dumps({"step": step, "world": self.info.world, **extra},
                                                       indent=2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in sorted(p for p in self.root.glob("step-*") if not p.name.endswith(".tmp"))[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return final

    def load(self, path: Path, model: nn.Module, opt: torch.optim.Optimizer,
             fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Restore a checkpoint, refusing one written by a run of other settings (see :func:`fingerprint_mismatch`)
        or by another number of processes, before anything is loaded."""
        state = json.loads((path / "state.json").read_text())
        differ = fingerprint_mismatch(state.get("fingerprint"), fingerprint)
        if differ:
            was, now = flatten(state.get("fingerprint")), flatten(json.loads(json.dumps(fingerprint)))
            shown = ", ".join(f"{k}: {was.get(k)!r} → {now.get(k)!r}" for k in differ[:8]) \
                + (" …" if len(differ) > 8 else "")
            data = _data_changed(differ, was, now)
            if data is not None:
                raise RuntimeError(f"{path} was written by a run on other data ({data}): resuming would keep training, "
                                   "or publish as finished, the weights of the data before. Start over with "
                                   "--no-resume or use another --output")
            raise RuntimeError(f"{path} was written by a run with other settings ({shown}); a resume may change only "
                               f"{', '.join(RESUMABLE_CHANGES)}. Start over with --no-resume or use another --output")
        if state["world"] != self.info.world:
            raise RuntimeError(f"{path} was written by {state['world']} processes; resume it with as many "
                               f"(this run has {self.info.world})")
        weights = load_file(str(path / "model.safetensors"))
        bad = non_finite(weights)
        if bad:                               # a checkpoint's tensors are checked as any model's (reliability.md)
            raise FormatError(f"{path / 'model.safetensors'}: weights hold NaN/inf values in {bad[:5]}: this "
                              "checkpoint cannot be resumed; start over with --no-resume (and a lower lr or "
                              "train.grad_clip) or use another --output")
        model.load_state_dict(weights, strict=True)
        _load_optimizer_state(opt, load_file(str(path / "optimizer.safetensors")),
                              json.loads((path / "optimizer.json").read_text()))
        _set_rng_state(load_file(str(path / f"rng-rank{self.info.rank}.safetensors")),
                       json.loads((path / f"rng-rank{self.info.rank}.json").read_text()))
        data_file = path / f"data-rank{self.info.rank}.json"
        state["data"] = json.loads(data_file.read_text()) if data_file.is_file() else {}
        return state


def data_fingerprint(data: Any) -> dict[str, Any] | None:
    """What a run's examples are, for its checkpoints' fingerprint: their count and a digest of their names, labels
    and sizes (files) or values (a table's or an event log's columns, a graph's tensors), so that a rerun after
    files were added, removed, rewritten or relabelled is refused instead of resuming (or finishing at once) with
    the weights of the data before. ``None`` for a stream (read once, not listed) or for data that is not an
    :class:`~zoo.ExampleSet`. A file rewritten at the same size is not told apart."""
    import hashlib
    if data is None or not hasattr(data, "name") or not hasattr(data, "__len__"):
        return None
    n = len(data)
    first = data.examples[0] if n else None
    files, graphs = isinstance(first, (str, os.PathLike)), callable(getattr(first, "to_dict", None))
    names, labels = (_column(v, n) for v in (data.names, data.labels))
    digest = hashlib.sha1()
    for i in range(n):
        size = os.stat(data.examples[i]).st_size if files and os.path.isfile(data.examples[i]) else ""
        digest.update(f"{names[i]}\t{labels[i]}\t{size}\n".encode())
        for key, value in sorted(data.examples[i].to_dict().items()) if graphs else ():    # a graph's tensors
            if torch.is_tensor(value):
                digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    columns = getattr(data.examples, "columns", None)
    for key in sorted(columns) if isinstance(columns, dict) else ():
        values = np.asarray(columns[key])
        digest.update(key.encode() + (values.tobytes() if values.dtype != object
                                      else "\x1f".join(map(str, values.tolist())).encode()))
    return {"count": n, "sha1": digest.hexdigest()}


def _column(values: Any, n: int) -> Sequence[Any]:
    """``values`` (names or labels) as a list read at once: a ``datasets`` column in one read, not a row (and its
    audio or images) decoded per example; ``None``: ``n`` Nones."""
    if values is None:
        return [None] * n
    ds, column = getattr(values, "ds", None), getattr(values, "column", None)
    return list(ds[column]) if ds is not None and column is not None else [values[i] for i in range(n)]


def _data_changed(differ: list[str], was: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How the examples differ, where the fingerprint's ``examples`` keys are among ``differ``."""
    keys = [k for k in differ if k.startswith("examples")]
    if not keys:
        return None
    parts = sorted({k.rsplit(".", 1)[0] for k in keys})
    said = []
    for p in parts:
        then, count = was.get(p + ".count"), now.get(p + ".count")
        what = p.split(".", 1)[1] if "." in p else "training"
        said.append(f"{what}: {then} examples then, {count} now" if then != count
                    else f"{what}: the same {count} examples by count, but files, values or labels changed")
    return "; ".join(said)


def fingerprint_mismatch(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's run fingerprint and this run's, leaving out those a
    resume may change (:data:`RESUMABLE_CHANGES`) and, for a checkpoint written before runs recorded their data
    (:func:`data_fingerprint`), the data."""
    if saved is None or current is None:
        return []
    if "examples" not in saved:
        current = {k: v for k, v in current.items() if k != "examples"}
    a, b = flatten(saved), flatten(json.loads(json.dumps(current)))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                  and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES))
