"""Online quality while a run trains (docs/architecture.md, "Online quality"): every ``train.quality_every`` steps
(and at the first and the last) the encoder embeds a fixed set of examples in eval mode and the run logs

- ``rankme``: the effective rank of those embeddings (RankMe, Garrido et al. 2023, "RankMe: Assessing the
  downstream performance of pretrained self-supervised representations by their rank"), for every family — a
  collapsing encoder's rank falls;
- ``knn``: where the recipe has labelled evaluation data (``evaluate.train``/``test``, or a protocol's
  ``examples``), the cosine k-NN accuracy of a small fixed held-out slice against a small fixed training slice,
  each neighbour's vote weighted by ``exp(cos / 0.07)`` (Wu et al. 2018, "Unsupervised feature learning via
  non-parametric instance discrimination"; fewer ties on small slices than a plain majority), each vote divided
  by its class's share of the training slice and scored as balanced accuracy (mean per-class recall): on skewed
  classes a plain score is the majority class's share whatever the embeddings. The cosine is taken on embeddings
  standardised by the training slice's per-dimension mean and deviation: the final probe (a standardised linear
  probe, or boosting) weighs no dimension by its scale, and an online k-NN on raw embeddings let a few large
  dimensions choose the neighbours (docs/benchmarks.md, "Online quality").

They go into the step's metrics row (``metrics.jsonl``, the trackers, the progress bar) and onto the card. The
measurement draws no random numbers from the run's generators and leaves the model in training mode, so a run
measured is bit for bit the run unmeasured."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import Encoder, ExampleSet, Modality, Processor, StreamSet
from zoo.data import stratified_indices

from .hooks import Hook

logger = logging.getLogger(__name__)

CACHE_BYTES = 256 * 2**20      # processed examples kept between measurements, at most
KNN_TEMPERATURE = 0.07         # the online k-NN's vote weights exp(cos / T) (Wu et al. 2018; DINO's k-NN)

__all__ = ["rankme", "QualityProbe", "QualityHook", "evaluation_sets", "quality_probe", "quality_facts",
           "plot_quality"]


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of embeddings ``z [N, D]`` (Garrido et al. 2023, eq. 1): ``exp(-Σ p_k log p_k)`` with
    ``p_k = σ_k / ‖σ‖₁ + ε`` over the singular values ``σ`` of ``z``; between 1 (every row on one line) and
    ``min(N, D)`` (singular values all equal)."""
    s = torch.linalg.svdvals(z.double())
    if float(s.sum()) == 0.0:                 # all-zero embeddings: nothing spread, rank 1 by convention
        return 1.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def evaluation_sets(modality: Modality, spec: dict[str, Any]) -> tuple[ExampleSet | StreamSet,
                                                                       ExampleSet | StreamSet] | None:
    """A recipe's labelled evaluation data as (train, test) sets: its ``evaluate.train``/``evaluate.test``, or its
    protocol's ``examples``; ``None`` where it has none."""
    if "protocol" in spec:
        protocol = modality.evaluators.get(spec["protocol"])
        return protocol.examples(spec) if protocol is not None and protocol.examples is not None else None
    if "train" in spec and "test" in spec:
        return modality.load_data(spec["train"]), modality.load_data(spec["test"])
    return None


def _slice(data: ExampleSet | StreamSet, n: int, seed: int) -> ExampleSet:
    """At most ``n`` examples of ``data``, fixed: a seeded stratified sample of a labelled map-style set, a seeded
    sample of an unlabelled one, the first ``n`` of a stream."""
    if isinstance(data, StreamSet):
        records = data.head(n)
        labels = [r[1] for r in records]
        return ExampleSet([r[0] for r in records], labels if all(v is not None for v in labels) else None,
                          [r[2] for r in records], data.label_names)
    if len(data) <= n:
        return data
    labels = data.labels
    if labels is not None and all(v is not None for v in labels):
        idx = stratified_indices(labels, n / len(data), seed)[:n]
    else:
        idx = sorted(np.random.default_rng(seed).choice(len(data), n, replace=False).tolist())
    return data.subset(idx)


class QualityProbe:
    """The fixed examples a run is measured on: ``batch`` (RankMe), and with labels a ``train``/``test`` pair for
    the k-NN probe (``train`` is then the RankMe batch too). ``k`` is at most the smallest class's count in the
    slice: more neighbours than a class has would outvote it whatever the embeddings. ``standardised=False``
    takes the k-NN's cosine on the raw embeddings (the online k-NN before 2026-12-07; kept for the bench's
    comparison)."""

    def __init__(self, processor: Processor, batch: ExampleSet, test: ExampleSet | None = None, k: int = 20,
                 source: str = "", standardised: bool = True) -> None:
        self.processor, self.batch, self.test, self.source = processor, batch, test, source
        self.standardised = standardised
        self._cache: dict[str, list[dict[str, Any]]] = {}
        counts = np.unique(np.asarray(list(batch.labels)), return_counts=True)[1] if test is not None else [k]
        self.k = max(1, min(k, len(batch), int(min(counts))))

    def _embed(self, encoder: Encoder, data: ExampleSet, key: str, device: torch.device | str
               ) -> tuple[torch.Tensor, list[int] | None]:
        """Pooled embeddings (and labels) of ``data``. Processed batches are kept after the first measurement
        (up to :data:`CACHE_BYTES`): a measurement is then the encoder's forward alone. A processor that pools
        windows (long audio) goes through the evaluation's path each time."""
        from .data import iter_batches
        from .evaluate import iter_embeddings
        if self.processor.pools_windows():
            parts = list(iter_embeddings(encoder, self.processor, data, device=device))
            return torch.cat([p[0] for p in parts]), (torch.cat([p[2] for p in parts]).tolist()
                                                      if all(p[2] is not None for p in parts) else None)
        batches = self._cache.get(key)
        if batches is None:
            batches = [{k: v for k, v in b.items() if k not in ("_names", "_skipped")}
                       for b in iter_batches(data, self.processor, batch_size=64)]
            size = sum(v.nbytes for b in batches for v in b.values() if torch.is_tensor(v))
            if size <= CACHE_BYTES:
                self._cache[key] = batches
        encoder.eval()
        rows = [encoder({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items() if k != "labels"}
                        ).pooled.float().cpu() for b in batches]
        labels = [b.get("labels") for b in batches]
        return torch.cat(rows), (torch.cat(labels).tolist() if all(v is not None for v in labels) else None)

    @torch.no_grad()
    def measure(self, encoder: Encoder, device: torch.device | str = "cpu") -> dict[str, float]:
        """``rankme`` (and ``knn``) of ``encoder`` as it is now, in eval mode; the caller restores its mode."""
        from .probes import knn_accuracy
        z, ytr = self._embed(encoder, self.batch, "batch", device)
        out = {"rankme": round(rankme(z), 4)}
        if self.test is not None:
            t, yte = self._embed(encoder, self.test, "test", device)
            out["knn"] = round(knn_accuracy(z, ytr, t, yte, self.k, temperature=KNN_TEMPERATURE, balanced=True,
                                           standardised=self.standardised), 4)
        return out


def _readable(data: ExampleSet, processor: Processor, skip_bad: bool) -> tuple[ExampleSet, int]:
    """With ``skip_bad`` (the run's ``train.skip_bad``), ``data`` without the examples the processor cannot read
    and how many were left out: one unreadable example would otherwise turn the probe off for the whole run."""
    if not skip_bad:
        return data, 0
    from .data import readable_part
    kept, said = readable_part(data, processor)
    return kept, len(said)


def quality_probe(modality: Modality, processor: Processor, train_data: ExampleSet | StreamSet,
                  spec: dict[str, Any], examples: int, seed: int = 0, standardised: bool = True,
                  skip_bad: bool = False) -> QualityProbe:
    """The probe of a run: ``examples`` of the recipe's labelled evaluation training data (k-NN against half as
    many of its test data; ``standardised``: see :class:`QualityProbe`), else ``examples`` of the training data
    (RankMe alone); with ``skip_bad`` those that cannot be read are left out (:func:`_readable`), said in its
    ``source``."""
    sets = evaluation_sets(modality, spec) if spec else None
    if sets is not None:
        train, test = sets
        (batch, bad), (held, bad_held) = (_readable(_slice(d, n, seed), processor, skip_bad)
                                          for d, n in ((train, examples), (test, max(1, examples // 2))))
        if batch.labels is not None and held.labels is not None and len(set(batch.labels)) > 1:
            left = f" ({bad + bad_held} unreadable left out)" if bad + bad_held else ""
            return QualityProbe(processor, batch, held, int(spec.get("knn_k", 20)),
                                source=f"{len(held)} held-out evaluation examples against {len(batch)}{left}",
                                standardised=standardised)
    batch, bad = _readable(_slice(train_data, examples, seed), processor, skip_bad)
    return QualityProbe(processor, batch, source=f"{len(batch)} training examples"
                        + (f" ({bad} unreadable left out)" if bad else ""))


class QualityHook(Hook):
    """Measures the run with its :class:`QualityProbe` at the start of a fresh run (the random-init reference,
    kept in the history for the card and its curve), every ``every`` steps and at the last, on the main rank, and
    reports ``rankme``/``knn`` into the step's metrics row and progress bar. Its history (step, values) is part of
    every checkpoint."""

    def __init__(self, probe: QualityProbe, encoder: Encoder, every: int) -> None:
        self.probe, self.encoder, self.every = probe, encoder, every
        self.history: list[dict[str, float]] = []
        self.failed: str | None = None

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))

    def _measure(self, run: Any, step: int, report: bool = True) -> None:
        if not run.ctx.info.main or self.failed:
            return
        py, np_state, t0 = random.getstate(), np.random.get_state(), time.perf_counter()
        devices = [run.ctx.device] if run.ctx.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                values = self.probe.measure(self.encoder, run.ctx.device)
        except (ValueError, RuntimeError, TypeError, KeyError) as err:   # the probe never stops the training
            self.failed = f"{type(err).__name__}: {err}"
            logger.warning("%s: online quality is off for this run: measuring it failed at step %d (%s)", run.desc,
                           step, self.failed)
            return
        finally:
            random.setstate(py)
            np.random.set_state(np_state)
            run.model.train()
        self.history = [h for h in self.history if h["step"] < step] + [{"step": step, **values}]
        if report:      # step 0 (the trackers' step 0, not metrics.jsonl) and a stop's measurement: not a row
            run.report({**values, "quality_s": round(time.perf_counter() - t0, 4)}, show=tuple(values))

    def on_start(self, run: Any) -> None:
        if run.step == 0:
            self._measure(run, 0, report=False)
            if self.history and self.history[-1]["step"] == 0:          # measured (a failed probe is off)
                run.report_start({k: v for k, v in self.history[-1].items() if k != "step"})

    def on_interval(self, run: Any, step: int) -> bool:
        self._measure(run, step)
        return False

    def on_end(self, run: Any) -> None:
        """A run stopped before its last step (early stopping, the collapse alarm, ``stop_after``) is measured where
        it stopped, for the card (its metrics row is written already)."""
        if run.step and self.history and self.history[-1]["step"] != run.step:
            self._measure(run, run.step, report=False)


def quality_facts(history: list[dict[str, float]], source: str, curve: str | None = None) -> dict[str, str]:
    """The card's line on online quality: the last measurement against the first (step 0: random init)."""
    if not history:
        return {}
    first, last = history[0], history[-1]

    def fmt(key: str, digits: str) -> str:
        text = f"{last[key]:{digits}}"
        return text + (f" ({first[key]:{digits}} at step {first['step']})" if first is not last else "")
    parts = [f"RankMe {fmt('rankme', '.1f')}"]
    if "knn" in last:
        parts.append(f"k-NN {fmt('knn', '.3f')}")
    line = f"{', '.join(parts)} at step {last['step']}, on {source}"
    return {"online quality": line + (f"; curve: [{curve}]({curve})" if curve else "")}


def plot_quality(history: list[dict[str, float]], png: Path, title: str = "") -> Path | None:
    """RankMe (and k-NN accuracy) against step."""
    if len(history) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [h["rankme"] for h in history], marker="o", label="RankMe")
    ax.set_xlabel("step")
    ax.set_ylabel("RankMe (effective rank)")
    if "knn" in history[-1]:
        ax2 = ax.twinx()
        ax2.plot(steps, [h.get("knn", float("nan")) for h in history], marker="s", color="tab:green",
                 label="k-NN accuracy")
        ax2.set_ylabel("k-NN accuracy (held out)")
        ax2.set_ylim(0, 1)
    ax.set_title(title or "online quality")
    lines = [line for a in fig.axes for line in a.get_lines()]
    ax.legend(lines, [line.get_label() for line in lines], loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
