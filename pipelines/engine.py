"""The engine (docs/architecture.md, "Run lifecycle"): **one loop**, :func:`train`, over a data stream, with
:class:`Hook` s at fixed points (every N steps: validate, keep the best, stop early; at the end). It owns the
run for its whole life — the run lock, the optimiser, the loader workers and the progress bar are made once per
run, however many validations it makes. Around it, modules with one job each: :mod:`.checkpoint`,
:mod:`.metrics_log`, :mod:`.run_folder`, :mod:`.distributed`, :mod:`.schedule`. AdamW (or Adam) + warmup/cosine,
clipping, bf16 autocast on CUDA, DDP through ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import Checkpointer
from .collapse import CollapseHook, collapse_rules, final_signals
from .data import TrainData
from .distributed import DistInfo, hardware, pick_device, setup_distributed, sum_over_ranks
from .hooks import Hook
from .metrics_log import MetricsLog
from .recipe import TrainConfig
from .run_folder import RunLock, clear_run
from .schedule import lr_at, step_generator

logger = logging.getLogger(__name__)

__all__ = ["RunContext", "setup_run", "scaled_lr", "seed_all", "param_groups", "no_decay_ids", "build_optimizer",
           "train_step", "Hook", "TrainResult", "train"]


def no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters a family keeps out of weight decay beyond the 1-D ones — mask tokens, class tokens, learned
    positions, as each reference does — named by any submodule's ``no_weight_decay()`` (timm's convention: names
    relative to that submodule)."""
    ids: set[int] = set()
    for module in model.modules():
        if hasattr(module, "no_weight_decay"):
            own = dict(module.named_parameters())
            ids |= {id(own[name]) for name in module.no_weight_decay() if name in own}
    return ids


def param_groups(params: Any, weight_decay: float, skip: set[int] = frozenset()) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, norms, 1-D parameters, nor the ``skip`` ids of
    :func:`no_decay_ids`); frozen ones left out."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in skip else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with decoupled decay on matrices, or Adam with an L2 penalty on every parameter (as some papers'
    recipes specify). A model with ``optimizer_groups(weight_decay)`` names its own groups; a group's ``lr_scale``
    multiplies the scheduled learning rate (layer-wise decay in fine-tuning); frozen parameters are left out."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
    groups = model.optimizer_groups(cfg.weight_decay) if hasattr(model, "optimizer_groups") else \
        param_groups(model.parameters(), cfg.weight_decay, no_decay_ids(model))
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
    """Pick the device, join the process group under ``torchrun``, turn on deterministic algorithms. (The global
    generators are seeded once, when the loop starts: :class:`Loop`; model weights draw from the seed set where the
    model is built.)"""
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = setup_distributed(device.type)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return RunContext(scaled_lr(cfg, info.world, info.rank), device, info, Path(output_dir))


def scaled_lr(cfg: TrainConfig, world: int, rank: int = 0) -> TrainConfig:
    """The linear scaling rule (Goyal et al. 2017), as VideoMAE and MAE state their rates: a recipe with
    ``lr_batch`` gives ``lr`` for that global batch, and the run uses ``lr · batch_size · world / lr_batch``."""
    if cfg.lr_batch is None:
        return cfg
    lr = cfg.lr * cfg.batch_size * world / cfg.lr_batch
    if rank == 0:
        logger.info("learning rate %.3g: %.3g for a global batch of %d, scaled to %d x %d", lr, cfg.lr,
                    cfg.lr_batch, cfg.batch_size, world)
    return dataclasses.replace(cfg, lr=lr, lr_batch=None)


def seed_all(seed: int) -> None:
    """The global generators (dropout and anything else that does not take a generator)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


class Diverged(RuntimeError, FloatingPointError):
    """The loss went NaN/inf: a :class:`RuntimeError` the CLI shows as one message (docs/reliability.md)."""


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


@dataclass
class TrainResult:
    steps: int
    wall_seconds: float                 # the whole run's, across resumes
    final_loss: float | None            # None when not finite (JSON has no NaN)
    resumed_from: int | None
    device: str
    stopped_early: bool
    skipped: int = 0                    # distinct bad examples (each counted once, however often met)
    skipped_visits: int = 0             # every time one was met (once per epoch)
    skipped_examples: list[str] = field(default_factory=list)
    data_wait_seconds: float = 0.0
    seen: list[list[str]] = field(default_factory=list)
    collapse: dict[str, Any] | None = None          # the collapse alarm (step, signal, value), if one went off
    signals: dict[str, float] = field(default_factory=dict)     # the collapse signals' last logged values


def train(model: nn.Module, data: TrainData, cfg: TrainConfig, output_dir: str | Path, *, resume: bool = True,
          desc: str = "train", hooks: tuple[Hook, ...] = (), find_unused_parameters: bool = False,
          ctx: RunContext | None = None, record_seen: bool = False,
          fingerprint: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` (``forward(batch, generator)`` → ``.loss``, ``.metrics``) on ``data`` for ``cfg.steps``
    steps under an exclusive lock on the run folder, resuming from its last checkpoint. ``fingerprint`` (the
    run's settings) is saved in every checkpoint; a checkpoint whose fingerprint differs in a key a resume may
    not change is refused, naming the keys."""
    ctx = ctx or setup_run(cfg, output_dir)
    with RunLock(ctx.output_dir, ctx.info.main) as lock:
        if not resume and ctx.info.main:
            clear_run(ctx.output_dir)
        if ctx.info.world > 1:
            dist.barrier()
        rules = collapse_rules(model)
        if rules:                   # also with patience 0 (no alarm): a run it stopped must know it may go on
            hooks = (*hooks, CollapseHook(rules, every=cfg.log_every, patience=cfg.collapse_patience,
                                          after=cfg.warmup_steps, stop=cfg.stop_on_collapse,
                                          settings={"stop_on_collapse": cfg.stop_on_collapse,
                                                    "collapse_patience": cfg.collapse_patience,
                                                    "steps": cfg.steps}))
        loop = Loop(ctx, model, data, desc=desc, hooks=hooks, fingerprint=fingerprint, record_seen=record_seen,
                    find_unused_parameters=find_unused_parameters)
        fd = lock.fileno()
        return loop.run(resume, close_fds=(fd,) if fd is not None else ())


class Loop:
    """One run's loop, read top to bottom in :meth:`run`: set up (model on the device, DDP, optimiser, checkpoints,
    log) → resume → steps, with hooks and checkpoints → end hooks and the loss curve. Hooks see it as ``run``:
    ``run.model`` (the unwrapped model), ``run.ctx``, ``run.step``, ``run.log``."""

    def __init__(self, ctx: RunContext, model: nn.Module, data: TrainData, *, desc: str, hooks: tuple[Hook, ...],
                 fingerprint: dict[str, Any] | None, record_seen: bool, find_unused_parameters: bool) -> None:
        cfg, info = ctx.cfg, ctx.info
        seed_all(cfg.seed + info.rank)      # after the model was built: training draws start from the seed
        self.ctx, self.cfg, self.data, self.desc, self.hooks = ctx, cfg, data, desc, hooks
        self.fingerprint, self.record_seen = fingerprint, record_seen
        self.model = model.to(ctx.device)
        self.ddp = self.model if info.world == 1 else nn.parallel.DistributedDataParallel(
            self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)
        self.opt = build_optimizer(self.model, cfg)
        self.ckpt = Checkpointer(ctx.output_dir, cfg.keep_checkpoints, info)
        self.log = MetricsLog(ctx.output_dir, info.main)
        self.step, self.loss, self.before, self.stopped = 0, float("nan"), 0.0, False
        self.lr = self.grad_norm = float("nan")
        self.last_metrics: dict[str, float] = {}        # the last logged row (the collapse alarm reads it)
        self.row: dict[str, float] | None = None        # this step's metrics row, written after its interval hooks
        self.start_row: dict[str, float] | None = None  # figures measured before the first step (the trackers' step 0)
        self.extra_shown: dict[str, str] = {}           # figures hooks asked to show on the progress bar
        self.postfix: dict[str, str] = {}               # the last step's figures on the progress bar
        self.shown = [r.signal for r in collapse_rules(model)]     # on the progress bar

    def _resume(self) -> tuple[int | None, dict[str, Any] | None]:
        last = self.ckpt.latest()
        if last is None:
            return None, None
        state = self.ckpt.load(last, self.model, self.opt, self.fingerprint)
        if state["step"] > self.cfg.steps:
            raise RuntimeError(f"{last} holds {state['step']} steps of training, more than train.steps="
                               f"{self.cfg.steps}: its weights are not those of a {self.cfg.steps}-step run. "
                               "Start over with --no-resume or use another --output")
        self.step, self.stopped = state["step"], bool(state.get("stopped", False))
        self.before, self.loss = float(state.get("wall_seconds", 0.0)), float(state.get("loss", float("nan")))
        self.last_metrics = dict(state.get("last_metrics") or {})      # a run resumed at its end: its collapse signals
        saved = state.get("hooks", {})
        if isinstance(saved, list):          # checkpoints of before 2026-12-07: states in the hooks' order
            saved = {hook.key: s for hook, s in zip(self.hooks, saved)}
        for hook in self.hooks:
            if hook.key in saved:
                hook.load_state(saved[hook.key])
        if self.stopped:
            for hook in self.hooks:
                why = hook.resume_stopped(self.step)
                if why:
                    self.stopped = False
                    logger.info("%s: the run stopped at step %d goes on from its checkpoint (%s)", self.desc,
                                self.step, why)
        return state["step"], state["data"]

    def run(self, resume: bool, close_fds: tuple[int, ...] = ()) -> TrainResult:
        resumed_from, data_state = self._resume() if resume else (None, None)
        self.log.start(self.step)
        cfg = self.cfg
        self.end = end = self.step if self.stopped else (
            cfg.steps if cfg.stop_after is None else min(cfg.steps, self.step + cfg.stop_after))
        self.t0, self.waited, self.seen = time.perf_counter(), 0.0, []
        quiet = not self.ctx.info.main or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
        self.bar: Any = None
        batches = self.data.batches(data_state, close_fds=close_fds) if self.step < end else iter(())
        self.model.train()
        try:
            for hook in self.hooks:
                hook.on_start(self)
            # after the hooks' start, so that what they say (where a tracker writes) is not drawn over by the bar
            self.bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc, disable=quiet, dynamic_ncols=True,
                            unit="step", mininterval=0.1 if os.isatty(2) else 30.0)
            while self.step < end and not self.stopped:
                self._one_step(batches)
                self.stopped = self._interval_hooks()
                self._write_row()
                if (self.step % cfg.checkpoint_every == 0 or self.step == end or self.stopped):
                    self._checkpoint()
        except BaseException as err:
            for hook in self.hooks:
                hook.on_error(self, err)
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
            if hasattr(batches, "close"):
                batches.close()          # stops the DataLoader workers
        for hook in self.hooks:
            hook.on_end(self)
        self.log.plot(self.desc)
        skipped = int(sum_over_ranks(self.ctx.info, self.ctx.device, self.data.skipped))
        visits = int(sum_over_ranks(self.ctx.info, self.ctx.device, self.data.skipped_visits))
        ran = self.step > (resumed_from or 0)          # a rerun of a finished run adds no time
        return TrainResult(steps=self.step, wall_seconds=self.before + (time.perf_counter() - self.t0 if ran else 0.0),
                           final_loss=self.loss if math.isfinite(self.loss) else None, resumed_from=resumed_from,
                           device=hardware(self.ctx.device), stopped_early=self.step < cfg.steps,
                           skipped=skipped, skipped_visits=visits, skipped_examples=self.data.skipped_examples,
                           data_wait_seconds=self.waited, seen=self.seen,
                           collapse=next((h.alarm for h in self.hooks if isinstance(h, CollapseHook)), None),
                           signals=final_signals(self.model, self.last_metrics))

    def _one_step(self, batches: Any) -> None:
        t_wait = time.perf_counter()
        batch = next(batches)
        wait = time.perf_counter() - t_wait
        self.waited += wait
        step, info = self.step, self.ctx.info
        if self.record_seen:
            self.seen.append(list(batch["_names"]))
        t_step = time.perf_counter()
        try:
            res = train_step(self.ctx, self.ddp, self.model, self.opt, batch, step)
        except FloatingPointError as err:
            raise Diverged(self._diverged(step, err)) from None
        self.loss, self.step = res.loss, step + 1
        rate = len(batch["_names"]) * info.world / max(time.perf_counter() - t_wait, 1e-9)
        self.bar.update(1)
        shown = {k: f"{res.metrics[k]:.3g}" for k in self.shown if k in res.metrics}
        self.postfix = {"loss": f"{res.loss:.4f}", "lr": f"{res.lr:.2e}", "ex_s": f"{rate:.0f}", **shown}
        self.bar.set_postfix(**self.postfix, **self.extra_shown, refresh=False)
        self.lr, self.grad_norm = res.lr, res.grad_norm
        if self.step % self.cfg.log_every == 0 or self.step == self.end:
            self.row = self.last_metrics = {
                "step": self.step, "loss": res.loss, "lr": res.lr, "grad_norm": res.grad_norm, **res.metrics,
                "data_wait_s": round(wait, 5), "step_s": round(time.perf_counter() - t_step, 5),
                "examples": len(batch["_names"]), "examples_per_s": round(rate, 2),
                "elapsed_s": round(self.before + time.perf_counter() - self.t0, 3)}

    def report(self, values: dict[str, float], *, show: tuple[str, ...] = ()) -> None:
        """Figures a hook measured at this step, added to the step's metrics row (a row is made for a step that
        ``train.log_every`` skips) and so to ``metrics.jsonl``, the trackers and ``last_metrics``; ``show``: the
        ones put on the progress bar from now on. Called from an interval hook (after a step), never before the
        first step (``metrics.jsonl`` holds steps 1..N)."""
        if self.row is None:
            self.row = self.last_metrics = {"step": self.step, "loss": self.loss, "lr": self.lr,
                                            "grad_norm": self.grad_norm,
                                            "elapsed_s": round(self.before + time.perf_counter() - self.t0, 3)}
        self.row.update(values)
        for k in show:
            if k in values:
                self.extra_shown[k] = f"{values[k]:.4g}"
        if show:
            self.bar.set_postfix(**self.postfix, **self.extra_shown)

    def report_start(self, values: dict[str, float]) -> None:
        """Figures a hook measured before a fresh run's first step (e.g. the random init's online quality): the
        trackers get them at step 0 (a hook after the one that measured sends them, on :meth:`~Hook.on_start`);
        ``metrics.jsonl`` keeps steps 1..N."""
        self.start_row = {**(self.start_row or {}), **values}

    def _write_row(self) -> None:
        """The step's metrics row, once its interval hooks added theirs: ``metrics.jsonl``, then each hook's
        :meth:`~pipelines.hooks.Hook.on_log` (the trackers)."""
        if self.row is None:
            return
        row, self.row = self.row, None
        self.log.write(row)
        if self.ctx.info.main:
            for hook in self.hooks:
                hook.on_log(self, row)

    def _diverged(self, step: int, err: FloatingPointError) -> str:
        """What a run whose loss went NaN/inf says: the step, the run folder, the last checkpoint and remedies."""
        last = self.ckpt.latest()
        clip = f"train.grad_clip (now {self.cfg.grad_clip:g})" if self.cfg.grad_clip > 0 else \
            "train.grad_clip=1.0 (clipping is off)"
        return (f"the loss went non-finite at step {step + 1} of the run in {self.ctx.output_dir} ({err}); "
                + (f"the last checkpoint is {last} (a rerun resumes from it)" if last else
                   "no checkpoint was saved yet")
                + f"; nothing is published. Lower train.lr (now {self.cfg.lr:g}) or set {clip} (finetune.lr / "
                "finetune.grad_clip when fine-tuning), check the data for extreme values, or start over with "
                "--no-resume")

    def _interval_hooks(self) -> bool:
        stop = False
        for hook in self.hooks:
            if (hook.every and self.step % hook.every == 0) or self.step == self.cfg.steps:
                stop = hook.on_interval(self, self.step) or stop
        return stop

    def _checkpoint(self) -> None:
        extra = {"loss": self.loss, "wall_seconds": self.before + time.perf_counter() - self.t0,
                 "fingerprint": self.fingerprint, "stopped": self.stopped, "last_metrics": self.last_metrics,
                 "hooks": {hook.key: hook.state() for hook in self.hooks}}
        self.ckpt.save(self.step, self.model, self.opt, extra, self.data.state())
