"""The training engine as small named steps (DESIGN §5): :func:`setup_run` (device, process group, seeds) →
:func:`build_optimizer` → :func:`train_step` per batch, with :class:`Checkpointer` (atomic checkpoints: model,
optimiser, RNG and data position of every rank) and :class:`MetricsLog` (JSONL + loss curve); :func:`train`
puts them together around a :class:`~pipelines.data.TrainData`. AdamW (or Adam) + warmup/cosine, clipping,
bf16 autocast on CUDA, DDP through ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .data import MAIN_ONLY_FDS, TrainData, batch_indices
from .recipe import TrainConfig

__all__ = ["DistInfo", "RunContext", "setup_distributed", "setup_run", "pick_device", "lr_at", "batch_indices",
           "build_optimizer", "train_step", "Checkpointer", "MetricsLog", "TrainResult", "train", "plot_curve",
           "hardware", "peak_rss_mib"]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps`` (at most ``steps``) then decay to ``min_lr_ratio * lr``: cosine, or
    with ``schedule: linear`` a straight line (fairseq's polynomial decay of power 1, as wav2vec 2.0)."""
    warmup = min(cfg.warmup_steps, cfg.steps)
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(cfg.steps - warmup, 1)
    frac = min(max(step - warmup, 0) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (cfg.lr - floor) * (1.0 - frac)
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator a pretrainer draws its masks from at one step (a pure function of seed, step, rank)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) * 4099 + rank)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


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
            shown = ", ".join(differ[:8]) + (" …" if len(differ) > 8 else "")
            raise RuntimeError(f"{path} was written by a run with other settings ({shown}); a resume may change only "
                               f"{', '.join(RESUMABLE_CHANGES)}. Start over with --no-resume or use another --output")
        if state["world"] != self.info.world:
            raise RuntimeError(f"{path} was written by {state['world']} processes; resume it with as many "
                               f"(this run has {self.info.world})")
        weights = load_file(str(path / "model.safetensors"))
        model.load_state_dict(weights, strict=True)
        _load_optimizer_state(opt, load_file(str(path / "optimizer.safetensors")),
                              json.loads((path / "optimizer.json").read_text()))
        _set_rng_state(load_file(str(path / f"rng-rank{self.info.rank}.safetensors")),
                       json.loads((path / f"rng-rank{self.info.rank}.json").read_text()))
        data_file = path / f"data-rank{self.info.rank}.json"
        state["data"] = json.loads(data_file.read_text()) if data_file.is_file() else {}
        return state


def param_groups(params: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, norms, embeddings' 1-D parameters); frozen ones left out."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with decoupled decay on matrices, or Adam with an L2 penalty on every parameter (as some papers'
    recipes specify). A model with ``optimizer_groups(weight_decay)`` names its own groups; a group's ``lr_scale``
    multiplies the scheduled learning rate (layer-wise decay in fine-tuning); frozen parameters are left out."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
    groups = model.optimizer_groups(cfg.weight_decay) if hasattr(model, "optimizer_groups") else \
        param_groups(model.parameters(), cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@dataclass
class RunContext:
    """What every step needs: settings, device, this process's rank, the run folder."""

    cfg: TrainConfig
    device: torch.device
    info: DistInfo
    output_dir: Path

    @property
    def bf16(self) -> bool:
        return self.cfg.bf16 and self.device.type == "cuda"


def setup_run(cfg: TrainConfig, output_dir: str | Path) -> RunContext:
    """Pick the device, join the process group under ``torchrun``, turn on deterministic algorithms, seed."""
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = setup_distributed(device.type)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_all(cfg.seed + info.rank)
    return RunContext(cfg, device, info, Path(output_dir))


def seed_all(seed: int) -> None:
    """The global generators (dropout and anything else that does not take a generator)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


class MetricsLog:
    """``metrics.jsonl`` (one row per logged step, written by rank 0) and its loss curve."""

    def __init__(self, output_dir: Path, main: bool) -> None:
        self.path, self.main = output_dir / "metrics.jsonl", main

    def start(self, step: int) -> None:
        """A fresh log at step 0; on resume, drop the rows logged after the checkpoint."""
        if not self.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if step == 0 or not self.path.exists():
            self.path.write_text("")
            return
        keep = [ln for ln in self._rows() if json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def _rows(self) -> list[str]:
        """The log's lines. A last line that does not parse is a write cut short (a kill or a full disk mid-row):
        it is dropped with a warning; an unparseable line before it is an error naming the file and line."""
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        for i, ln in enumerate(lines):
            try:
                row = json.loads(ln)
                if not isinstance(row, dict) or "step" not in row:
                    raise ValueError("no 'step'")
            except ValueError as err:
                if i == len(lines) - 1:
                    warnings.warn(f"{self.path}: dropping a torn last line ({ln[:40]!r}): a write was cut short",
                                  stacklevel=3)
                    return lines[:-1]
                raise ValueError(f"{self.path}, line {i + 1}: not a metrics row ({err}): {ln[:80]!r}") from None
        return lines

    def write(self, row: dict[str, Any]) -> None:
        if self.main:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    def plot(self, title: str) -> Path | None:
        return plot_curve(self.path, self.path.with_name("loss_curve.png"), title=title) if self.main else None


@dataclass
class StepResult:
    loss: float
    lr: float
    grad_norm: float
    metrics: dict[str, float]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
            if not k.startswith("_")}


def train_step(ctx: RunContext, model: nn.Module, raw: nn.Module, opt: torch.optim.Optimizer,
               batch: dict[str, Any], step: int) -> StepResult:
    """One optimiser step: schedule, forward (bf16 autocast on CUDA) with the step's mask generator, backward,
    clipping, update, the model's per-step hook; the loss averaged over ranks."""
    cfg = ctx.cfg
    lr = lr_at(step, cfg)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.bf16):
        out = model(_to_device(batch, ctx.device), step_generator(cfg.seed, step, ctx.info.rank, ctx.device))
    if not torch.isfinite(out.loss):
        raise FloatingPointError(f"step {step}: the loss is {out.loss.item()} (metrics {out.metrics})")
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    # with clipping off, an infinite bound measures the norm without changing the gradients
    grad_norm = nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    opt.step()
    hook = raw.on_step(step + 1) if hasattr(raw, "on_step") else {}
    loss = float(out.loss.detach())
    if ctx.info.world > 1:
        t = torch.tensor([loss], device=ctx.device)
        dist.all_reduce(t)
        loss = float(t) / ctx.info.world
    return StepResult(loss, lr, float(grad_norm), {**{k: float(v) for k, v in out.metrics.items()}, **(hook or {})})


def peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children (DataLoader workers), MiB."""
    return {"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


@dataclass
class TrainResult:
    steps: int
    wall_seconds: float                 # the whole run's, across resumes
    final_loss: float | None            # None when not finite (JSON has no NaN)
    resumed_from: int | None
    device: str
    stopped_early: bool
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    data_wait_seconds: float = 0.0
    seen: list[list[str]] = field(default_factory=list)


def _sum_over_ranks(ctx: RunContext, value: float) -> float:
    if ctx.info.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t)


RUN_ARTEFACTS = ("checkpoints", "metrics.jsonl", "loss_curve.png", "train_summary.json", "model")
RESUMABLE_CHANGES = ("train.steps", "train.stop_after", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.device", "train.prefetch_factor", "description")


class RunLock:
    """An exclusive lock on a run folder (``<output>/.lock``, ``flock``) held by rank 0 for the whole run: a second
    run into the same folder stops at once, naming the process that holds it, instead of interleaving metrics and
    clobbering checkpoints. Released when the process ends, however it ends."""

    def __init__(self, output_dir: Path, main: bool) -> None:
        self.path, self.main, self.fh = Path(output_dir) / ".lock", main, None

    def __enter__(self) -> RunLock:
        if not self.main:
            return self
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RuntimeError(f"run folder {self.path.parent} is in use by {holder}: wait for it to finish or "
                               "write to another --output") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {platform.node()}\n")
        fh.flush()
        self.fh = fh
        MAIN_ONLY_FDS.add(fh.fileno())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            MAIN_ONLY_FDS.discard(self.fh.fileno())
            self.fh.close()
            self.fh = None


def clear_run(output_dir: Path) -> None:
    """``--no-resume``: remove an older run's checkpoints, metrics, summary and model from the folder (and nothing
    else), so that none of them can be resumed or published under the new run's name."""
    for name in RUN_ARTEFACTS:
        path = Path(output_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def fingerprint_mismatch(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's run fingerprint and this run's, leaving out those a
    resume may change (:data:`RESUMABLE_CHANGES`)."""
    if saved is None or current is None:
        return []

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    a, b = flat(saved), flat(json.loads(json.dumps(current)))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                  and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES))


def train(model: nn.Module, data: TrainData, cfg: TrainConfig, output_dir: str | Path, *, resume: bool = True,
          desc: str = "train", find_unused_parameters: bool = False, ctx: RunContext | None = None,
          record_seen: bool = False, fingerprint: dict[str, Any] | None = None) -> TrainResult:
    """Train under an exclusive lock on the run folder (see :func:`_train`). ``fingerprint`` (the recipe) is saved
    in every checkpoint; a checkpoint whose fingerprint differs in a key a resume may not change is refused."""
    ctx = ctx or setup_run(cfg, output_dir)
    with RunLock(ctx.output_dir, ctx.info.main):
        if not resume and ctx.info.main:
            clear_run(ctx.output_dir)
        if ctx.info.world > 1:
            dist.barrier()
        return _train(model, data, cfg, resume=resume, desc=desc,
                      find_unused_parameters=find_unused_parameters, ctx=ctx, record_seen=record_seen,
                      fingerprint=fingerprint)


def _train(model: nn.Module, data: TrainData, cfg: TrainConfig, *, resume: bool,
           desc: str, find_unused_parameters: bool, ctx: RunContext, record_seen: bool,
           fingerprint: dict[str, Any] | None) -> TrainResult:
    """Train ``model`` (``forward(batch, generator)`` → ``.loss``, ``.metrics``) on ``data`` for ``cfg.steps``
    steps: setup → optimiser → resume (weights, optimiser, RNG, data position) → train steps with metrics and
    checkpoints → loss curve. ``data_wait_s`` in ``metrics.jsonl`` is the time a step waited for its batch."""
    info, device = ctx.info, ctx.device
    seed_all(cfg.seed + info.rank)      # after the model was built: training draws start from the seed
    model.to(device)
    raw = model
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)
    opt = build_optimizer(raw, cfg)
    ckpt = Checkpointer(ctx.output_dir, cfg.keep_checkpoints, info)
    log = MetricsLog(ctx.output_dir, info.main)
    start, resumed_from, data_state, before, loss = 0, None, None, 0.0, float("nan")
    last = ckpt.latest() if resume else None
    if last is not None:
        state = ckpt.load(last, raw, opt, fingerprint)
        start = resumed_from = state["step"]
        data_state = state["data"]
        before, loss = float(state.get("wall_seconds", 0.0)), float(state.get("loss", float("nan")))
    log.start(start)
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)
    batches = data.batches(data_state)
    waited, seen = 0.0, []
    t0 = time.perf_counter()
    quiet = not info.main or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc=desc, disable=quiet, dynamic_ncols=True,
               unit="step")
    model.train()
    try:
        for step in bar:
            t_wait = time.perf_counter()
            batch = next(batches)
            wait = time.perf_counter() - t_wait
            waited += wait
            if record_seen:
                seen.append(list(batch["_names"]))
            t_step = time.perf_counter()
            res = train_step(ctx, model, raw, opt, batch, step)
            loss = res.loss
            rate = len(batch["_names"]) * info.world / max(time.perf_counter() - t_wait, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{res.lr:.2e}", ex_s=f"{rate:.0f}")
            if (step + 1) % cfg.log_every == 0 or step + 1 == end:
                log.write({"step": step + 1, "loss": loss, "lr": res.lr, "grad_norm": res.grad_norm, **res.metrics,
                           "data_wait_s": round(wait, 5), "step_s": round(time.perf_counter() - t_step, 5),
                           "examples": len(batch["_names"]), "elapsed_s": round(time.perf_counter() - t0, 3)})
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
                ckpt.save(step + 1, raw, opt, {"loss": loss, "wall_seconds": before + time.perf_counter() - t0,
                                               "fingerprint": fingerprint}, data.state())
    finally:
        bar.close()
        batches.close()          # stops the DataLoader workers
    log.plot(desc)
    skipped = int(_sum_over_ranks(ctx, data.skipped))
    return TrainResult(steps=end, wall_seconds=before + time.perf_counter() - t0,
                       final_loss=loss if math.isfinite(loss) else None, resumed_from=resumed_from,
                       device=hardware(device), stopped_early=end < cfg.steps, skipped=skipped,
                       skipped_examples=data.skipped_examples, data_wait_seconds=waited, seen=seen)


def plot_curve(metrics_path: Path, png: Path, title: str = "") -> Path | None:
    """Loss (and learning rate) against step, from ``metrics.jsonl``."""
    rows = [json.loads(ln) for ln in Path(metrics_path).read_text().splitlines() if ln.strip()]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["loss"] for r in rows], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in rows], color="tab:orange", alpha=0.5, label="lr")
    ax2.set_ylabel("learning rate")
    ax.set_title(title or "training loss")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
