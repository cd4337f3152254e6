"""The data path (docs/architecture.md, "Data"): raw examples → processor → batches in
``torch.utils.data.DataLoader`` workers, sharded per rank and per worker, with a position that every checkpoint
records and a resume restores exactly.

- Map-style data (:class:`zoo.ExampleSet`): a seeded permutation per epoch cut into global batches of
  ``batch_size × world`` (the remainder of an epoch is left to the next permutation, as ``drop_last`` does),
  each rank taking its slice; a worker processes and collates a whole batch. The position is the number of
  batches consumed, so resuming is one integer. With ``group_by_length`` the batches of an epoch come from
  buckets of similar length (the processor's cheap ``length``), which cuts padding.
- Streamed data (:class:`zoo.StreamSet`): rank ``r`` of ``R`` and worker ``w`` of ``W`` read part
  ``r·W + w`` of ``R·W`` disjoint parts (``split_dataset_by_node`` for ``datasets``), shuffled through a seeded
  buffer of ``shuffle_buffer`` examples, pass after pass. Each batch carries its worker's position (epoch,
  examples read); a resume replays the raw records up to it — no decoding — so the shuffle buffer comes back
  exactly (``datasets``' own ``state_dict`` drops the buffer's contents, which would change the order), and
  the worker that was due next starts first.

Bad examples (:class:`zoo.BadExample`) are caught in the worker: with ``skip_bad`` they are dropped from the
batch and counted, otherwise the run stops with the example and field named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from zoo import BadExample, ExampleSet, Processor, StreamSet, Unreadable
from zoo.data import Record, take

from .recipe import TrainConfig

__all__ = ["batch_indices", "grouped_batches", "EpochBatches", "TrainData", "iter_batches", "process_records",
           "padded_share", "fit_batch", "iter_records", "label_tensor"]

logger = logging.getLogger(__name__)


# --- batching a list of records ------------------------------------------------------------------------
def example_generator(seed: int, epoch: int, key: int) -> torch.Generator:
    """The generator of one training example's augmentation draws, seeded by (run seed, epoch, example): the same
    draws when a killed run resumes, new ones every epoch."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 2_654_435_761 + key) % (2**63 - 1))


def name_key(name: str) -> int:
    """A stable integer for a streamed example's name (its index is not known)."""
    return zlib.crc32(name.encode())


def readable(processor: Processor, records: Sequence[Any]) -> tuple[list[int], list[str]]:
    """Which of ``records`` (``(example, label, name)``) the processor reads: their positions, and the others'
    messages (:class:`zoo.BadExample`), for a pass that leaves unreadable examples out."""
    kept, said = [], []
    for i, (example, _, name) in enumerate(records):
        try:
            processor(example, name=name)
            kept.append(i)
        except BadExample as err:
            said.append(str(err))
    return kept, said


def readable_part(data: ExampleSet, processor: Processor) -> tuple[ExampleSet, list[str]]:
    """``data`` without the examples the processor cannot read (:func:`readable`), and their messages."""
    kept, said = readable(processor, [data.record(i) for i in range(len(data))])
    return (data if len(kept) == len(data) else data.subset(kept)), said


def message_digest(message: str) -> str:
    """The key a skipped example is counted once by: its message's digest (the same file says the same thing)."""
    return hashlib.sha256(message.encode()).hexdigest()[:16]


def drop_unreadable(data: Any, skip_bad: bool, setting: str | None) -> tuple[Any, int]:
    """Examples a source could not read (:class:`zoo.Unreadable`, e.g. a graph with an edge to a missing node), found
    before the first step: the first one's error (with ``setting``, the key that skips them), or with ``skip_bad``
    (or ``setting`` None: a command that always skips) left out and counted in a warning. Returns the set and how
    many were left out. A lazy sequence of examples is not read for this (it holds none: sources that yield them
    give a list)."""
    examples = data.examples if isinstance(data, ExampleSet) else None
    bad = [i for i, ex in enumerate(examples) if isinstance(ex, Unreadable)] if isinstance(examples, list) else []
    if not bad:
        return data, 0
    first = data.examples[bad[0]].error
    if not skip_bad and setting is not None:
        raise ValueError(f"{first} ({len(bad)} of {len(data)} examples cannot be read; --set {setting}=true skips "
                         "and counts them)")
    logger.warning("%d of %d examples cannot be read and are skipped%s: %s", len(bad), len(data),
                   f" ({setting})" if setting else "", first)
    keep = sorted(set(range(len(data))) - set(bad))
    return data.subset(keep), len(bad)


def process_one(processor: Processor, example: Any, name: str,
                generator: torch.Generator | None = None, augment: bool = True) -> dict[str, Any]:
    """One example through the processor (with its training augmentation — or, ``augment`` off, only its random crop
    of a long input — drawn from ``generator`` when given).
    Whatever the processor raises on it — a ValueError, a RuntimeError from a tensor op, a KeyError: decided by
    where the error comes from (this input, alone), not by its type — becomes a :class:`BadExample` naming the
    example, so that ``skip_bad`` skips it and an error names it either way; a :class:`zoo.Unreadable` raises the
    error it holds, whatever the processor."""
    if isinstance(example, Unreadable):
        raise example.error
    try:
        if generator is not None:
            view = processor.augmented if augment else processor.cropped
            return view(example, name=name, generator=generator)
        return processor(example, name=name)
    except BadExample:
        raise
    except Exception as err:                  # noqa: BLE001 - this one input made the processor fail
        raise BadExample(name, "input", f"{type(err).__name__}: {err}") from err


def process_records(processor: Processor, examples: Sequence[Any], labels: Sequence[int | None],
                    names: Sequence[str], skip_bad: bool,
                    draws: Sequence[torch.Generator] | None = None, augment: bool = True) -> dict[str, Any]:
    """Process and collate one batch (training draws: one generator per example for its augmentation, or with
    ``augment`` off for its crop, :meth:`zoo.Processor.cropped`). Returns
    the batch with ``labels`` (when every record has one) and a ``_meta`` entry: names of the kept examples,
    messages of skipped ones (and their ``(label, name)``: ``skipped_records``), the first bad one when not
    skipping."""
    meta: dict[str, Any] = {"names": list(names), "skipped": [], "skipped_records": [], "bad": None}
    first: Exception | None = None
    if draws is None:
        try:
            items = processor.process_batch(examples, list(names))
            keep = list(range(len(items)))
        except Exception as err:              # noqa: BLE001 - which example? tried one at a time below
            first = err
    if draws is not None or first is not None:  # one at a time: each with its own draws, or to find the bad ones
        items, keep = [], []
        for i, name in enumerate(names):
            try:
                items.append(process_one(processor, examples[i], name, None if draws is None else draws[i], augment))
                keep.append(i)
            except BadExample as e:
                if not skip_bad:
                    meta["bad"] = (str(e.example), e.field, e.reason)
                    return {"_meta": {**meta, "names": []}}
                meta["skipped"].append(str(e))
                meta["skipped_records"].append((labels[i], names[i]))
        if first is not None and not meta["skipped"] and not isinstance(first, BadExample):
            raise first                     # the batch failed though every example alone is fine: a real bug
    meta["names"], meta["keep"] = [names[i] for i in keep], list(keep)
    if not items:
        return {"_meta": meta}
    batch = processor.collate(items)
    kept = label_tensor([labels[i] for i in keep])
    if kept is not None:
        batch["labels"] = kept
    batch["_meta"] = meta
    return batch


def label_tensor(labels: Sequence[int | float | None]) -> torch.Tensor | None:
    """A batch's labels as a tensor (float32 regression targets, else class ids); ``None`` unless all are given."""
    if not labels or any(lab is None for lab in labels):
        return None
    floats = any(isinstance(lab, float) for lab in labels)              # regression targets
    return torch.tensor(list(labels), dtype=torch.float32 if floats else torch.long)


def _unpack(batch: dict[str, Any]) -> dict[str, Any]:
    """Take a worker's ``_meta`` off its batch; a bad example (skipping off) stops here, named."""
    meta = batch.pop("_meta")
    if meta["bad"] is not None:
        raise BadExample(*meta["bad"])
    return meta


def padded_share(batch: dict[str, Any]) -> float | None:
    """Share of padded positions in a batch with a ``padding_mask`` (``True`` = padding)."""
    pad = batch.get("padding_mask")
    return float(pad.float().mean()) if torch.is_tensor(pad) and pad.numel() else None


# --- map-style: which examples a rank gets at each step -------------------------------------------------
def _epoch_perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(n: int, step: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Example indices of one rank at one step: a seeded permutation per epoch, cut into global batches of
    ``batch * world`` and sharded across ranks without overlap. A pure function of the step."""
    per_step = batch * world
    if n < per_step:
        raise ValueError(f"{n} training examples cannot fill one global batch of {batch} x {world} ranks")
    epoch, offset = divmod(step, n // per_step)
    start = offset * per_step + rank * batch
    return _epoch_perm(n, seed, epoch)[start:start + batch]


def grouped_batches(lengths: torch.Tensor, per_step: int, seed: int, epoch: int, buckets: int) -> torch.Tensor:
    """One epoch of global batches ``[steps, per_step]`` grouped by length: the epoch's permutation is cut into
    chunks of ``buckets`` global batches, each chunk sorted by length and cut into batches, and the batches of
    the epoch shuffled (seeded). Every example still appears once per epoch."""
    n = len(lengths)
    steps = n // per_step
    perm = _epoch_perm(n, seed, epoch)[: steps * per_step]
    chunk = per_step * buckets
    parts = []
    for c in range(0, len(perm), chunk):
        part = perm[c:c + chunk]
        parts.append(part[torch.argsort(lengths[part], descending=True, stable=True)])
    out = torch.cat(parts).view(steps, per_step)
    order = torch.randperm(steps, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7919))
    return out[order]


class EpochBatches(Sampler[list[int]]):
    """Batch sampler of one rank from batch ``start`` on (endless: the engine counts steps)."""

    def __init__(self, n: int, batch: int, seed: int, rank: int, world: int, start: int = 0,
                 lengths: torch.Tensor | None = None, buckets: int = 64, tag_epoch: bool = False) -> None:
        if n < batch * world:
            raise ValueError(f"{n} training examples cannot fill one global batch of {batch} x {world} ranks")
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, start
        self.lengths, self.buckets, self.tag_epoch = lengths, buckets, tag_epoch
        self._epoch: tuple[int, torch.Tensor] | None = None

    def indices(self, k: int) -> list[int]:
        if self.lengths is None:
            return batch_indices(self.n, k, self.batch, self.seed, self.rank, self.world).tolist()
        per_step = self.batch * self.world
        epoch, offset = divmod(k, self.n // per_step)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, grouped_batches(self.lengths, per_step, self.seed, epoch, self.buckets))
        row = self._epoch[1][offset]
        return row[self.rank * self.batch:(self.rank + 1) * self.batch].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            if self.tag_epoch:                # (index, epoch): the epoch seeds each example's augmentation
                epoch = k // (self.n // (self.batch * self.world))
                yield [(i, epoch) for i in self.indices(k)]
            else:
                yield self.indices(k)
            k += 1


class _MapBatches(Dataset):
    """``__getitems__`` makes a whole batch in the worker (processed and collated in one go, so a processor can
    vectorise over the batch, e.g. a table's rows)."""

    def __init__(self, data: ExampleSet, processor: Processor, skip_bad: bool,
                 augment_seed: int | None = None, augment: bool = True) -> None:
        self.data, self.processor, self.skip_bad, self.augment_seed = data, processor, skip_bad, augment_seed
        self.augment = augment                  # False: the draws only crop (Processor.cropped)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])

    def __getitems__(self, idx: list[int] | list[tuple[int, int]]) -> dict[str, Any]:
        pairs = [(i, 0) if isinstance(i, int) else i for i in idx]
        idx = [i for i, _ in pairs]
        draws = None if self.augment_seed is None else \
            [example_generator(self.augment_seed, epoch, i) for i, epoch in pairs]
        d = self.data
        return process_records(self.processor, take(d.examples, idx), [d.label(i) for i in idx],
                               [d.name(i) for i in idx], self.skip_bad, draws, self.augment)


# --- streamed: parts per rank and worker, a seeded buffer, positions ------------------------------------
def _buffered(records: Iterator[Record], size: int, rng: random.Random) -> Iterator[Record]:
    """A bounded shuffle: hold ``size`` records, emit a random one as each new record arrives."""
    if size <= 1:
        yield from records
        return
    buf: list[Record] = []
    for rec in records:
        if len(buf) < size:
            buf.append(rec)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = rec
    rng.shuffle(buf)
    yield from buf


class _StreamBatches(IterableDataset):
    """Batches of one rank's part of a stream; each DataLoader worker reads its own part (its *role*)."""

    def __init__(self, stream: StreamSet, processor: Processor, *, batch: int, seed: int, rank: int, world: int,
                 buffer: int, skip_bad: bool, positions: dict[int, tuple[int, int]] | None = None,
                 rotation: int = 0, epochs: int | None = None, augment: bool = False, crop: bool = False) -> None:
        self.stream, self.processor, self.batch, self.seed, self.augment = stream, processor, batch, seed, augment
        self.crop = crop and not augment        # draws that only crop a long input (Processor.cropped)
        self.rank, self.world, self.buffer, self.skip_bad = rank, world, buffer, skip_bad
        self.positions, self.rotation, self.epochs = positions or {}, rotation, epochs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        role = (wid + self.rotation) % workers
        part, parts = self.rank * workers + role, self.world * workers
        epoch, done = self.positions.get(role, (0, 0))
        while self.epochs is None or epoch < self.epochs:
            rng = random.Random((self.seed * 1_000_003 + epoch) * 65_537 + part)
            records = _buffered(self.stream.records(part, parts, epoch), self.buffer, rng)
            seen, pending = 0, []
            for rec in records:
                seen += 1
                if seen <= done:            # replay up to the resumed position (raw records only)
                    continue
                pending.append(rec)
                if len(pending) == self.batch:
                    yield self._make(pending, role, epoch, seen)
                    pending = []
            if pending:                     # the last batch of a pass may be smaller
                yield self._make(pending, role, epoch, seen)
            if seen == 0:                   # an empty part: this worker has nothing to give
                return
            epoch, done = epoch + 1, 0

    def _make(self, recs: list[Record], role: int, epoch: int, done: int) -> dict[str, Any]:
        examples, labels, names = zip(*recs)
        draws = [example_generator(self.seed, epoch, name_key(n)) for n in names] \
            if self.augment or self.crop else None
        out = process_records(self.processor, list(examples), list(labels), list(names), self.skip_bad, draws,
                              self.augment)
        out["_meta"]["position"] = (role, epoch, done)
        return out


# --- what the engine and the evaluation iterate ---------------------------------------------------------
class _CloseInWorkers:
    """A worker_init_fn: in each worker, close the descriptors only the main process may hold (the run folder's
    lock), so that a SIGKILLed run's orphaned workers do not hold it while they notice their parent is gone."""

    def __init__(self, fds: tuple[int, ...]) -> None:
        self.fds = fds

    def __call__(self, worker_id: int) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _loader(dataset: Any, *, workers: int, prefetch: int, pin: bool, batch_sampler: Any = None,
            close_fds: tuple[int, ...] = ()) -> DataLoader:
    """A DataLoader whose dataset makes whole batches (no collation here)."""
    extra: dict[str, Any] = {"prefetch_factor": prefetch} if workers > 0 else {}
    # its own generator: a DataLoader otherwise draws its base seed from the global RNG, which would shift the
    # dropout draws of training (and change results against runs that decoded up front)
    extra["generator"] = torch.Generator().manual_seed(0)
    if batch_sampler is not None:
        extra["batch_sampler"] = batch_sampler
    else:
        extra["batch_size"] = None
    if workers > 0:
        extra["worker_init_fn"] = _CloseInWorkers(close_fds)
    return DataLoader(dataset, num_workers=workers, collate_fn=_identity, pin_memory=pin, **extra)


def _identity(x: Any) -> Any:
    return x


def fit_batch(cfg: TrainConfig, data: ExampleSet | StreamSet, what: str) -> TrainConfig:
    """``cfg`` with a batch that a small map-style set can fill: fewer training examples than one global batch
    train with batches of all of them, said in the log (instead of stopping the run)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    if isinstance(data, ExampleSet) and 0 < len(data) < cfg.batch_size * world:
        fitted = max(1, len(data) // world)
        logger.warning("%s: %d training examples cannot fill a batch of %d x %d ranks: batches of %d", what,
                       len(data), cfg.batch_size, world, fitted)
        return dataclasses.replace(cfg, batch_size=fitted)
    return cfg


class TrainData:
    """Training batches of one rank, endless, with the position to checkpoint (:meth:`state`) and the counts of
    skipped examples: ``skipped`` distinct examples (a bad example met again in a later epoch counts once; told
    apart by their messages, which name the example and the field) and ``skipped_visits``, every time one was met.
    ``batches(state)`` starts from a checkpointed position."""

    def __init__(self, data: ExampleSet | StreamSet, processor: Processor, cfg: TrainConfig, *, rank: int = 0,
                 world: int = 1, pin_memory: bool = False) -> None:
        self.data, self.processor, self.cfg, self.rank, self.world = data, processor, cfg, rank, world
        self.pin = pin_memory
        self.streamed = isinstance(data, StreamSet)
        self.augment = cfg.augment and processor.augments()        # the processor's training augmentation
        self.crop = not self.augment and processor.crops()         # else its random crop of a long input
        self.skipped_visits = 0
        self._skipped_seen: set[str] = set()          # digests of the distinct skip messages
        self.skipped_examples: list[str] = []
        self._position: dict[str, Any] = {}
        self.lengths: torch.Tensor | None = None
        if not self.streamed and cfg.group_by_length:
            lengths = [processor.length(data.examples[i]) for i in range(len(data))]
            if any(n is None for n in lengths):
                raise ValueError(f"train.group_by_length: the {processor.modality} processor cannot tell the length "
                                 "of these examples without decoding them")
            self.lengths = torch.tensor(lengths)

    @property
    def size(self) -> int | None:
        return None if self.streamed else len(self.data)

    @property
    def skipped(self) -> int:
        return len(self._skipped_seen)

    @property
    def skipped_seen(self) -> set[str]:
        """The digests (:func:`message_digest`) of the distinct examples skipped so far."""
        return set(self._skipped_seen)

    def state(self) -> dict[str, Any]:
        return {**self._position, "skipped": self.skipped, "skipped_visits": self.skipped_visits,
                "skipped_seen": sorted(self._skipped_seen), "skipped_examples": self.skipped_examples[:20]}

    def batches(self, state: dict[str, Any] | None = None, close_fds: tuple[int, ...] = ()) -> Iterator[dict[str, Any]]:
        """Endless batches from the checkpointed position ``state``; ``close_fds`` are closed in the workers."""
        cfg, workers = self.cfg, self.cfg.num_workers
        state = state or {}
        self.skipped_visits = int(state.get("skipped_visits", state.get("skipped", 0)))
        self._skipped_seen = set(state.get("skipped_seen", []))
        self.skipped_examples = list(state.get("skipped_examples", []))
        if self.streamed:
            if state and state.get("workers", workers) != max(workers, 1):
                raise RuntimeError(f"this streamed run was checkpointed with {state['workers']} data workers per "
                                   f"rank; resume it with train.num_workers={state['workers']}")
            w = max(workers, 1)
            positions = {int(k): tuple(v) for k, v in state.get("positions", {}).items()}
            rotation = int(state.get("next_role", 0))
            ds = _StreamBatches(self.data, self.processor, batch=cfg.batch_size, seed=cfg.seed, rank=self.rank,
                                world=self.world, buffer=cfg.shuffle_buffer, skip_bad=cfg.skip_bad,
                                positions=positions, rotation=rotation, augment=self.augment, crop=self.crop)
            self._position = {"kind": "stream", "workers": w, "positions": {str(k): list(v) for k, v in
                                                                             positions.items()},
                              "next_role": rotation}
            loader = _loader(ds, workers=workers, prefetch=cfg.prefetch_factor, pin=self.pin, close_fds=close_fds)
        else:
            start = int(state.get("batches", 0))
            draws = self.augment or self.crop
            sampler = EpochBatches(len(self.data), cfg.batch_size, cfg.seed, self.rank, self.world, start,
                                   self.lengths, cfg.length_buckets, tag_epoch=draws)
            self._position = {"kind": "map", "batches": start}
            loader = _loader(_MapBatches(self.data, self.processor, cfg.skip_bad,
                                         cfg.seed if draws else None, self.augment), workers=workers,
                             prefetch=cfg.prefetch_factor, pin=self.pin, batch_sampler=sampler, close_fds=close_fds)
        return self._consume(iter(loader), workers)

    def _consume(self, it: Iterator[dict[str, Any]], workers: int) -> Iterator[dict[str, Any]]:
        for batch in it:
            meta = _unpack(batch)
            if self.streamed:
                role, epoch, done = meta["position"]
                self._position["positions"][str(role)] = [epoch, done]
                self._position["next_role"] = (role + 1) % max(workers, 1)
            else:
                self._position["batches"] += 1
            for message in meta["skipped"]:
                self.skipped_visits += 1
                digest = message_digest(message)
                if digest not in self._skipped_seen:
                    self._skipped_seen.add(digest)
                    if len(self.skipped_examples) < 20:
                        self.skipped_examples.append(message)
            if not meta["names"]:
                continue                     # every example of this batch was skipped
            batch["_names"] = meta["names"]
            yield batch


def iter_batches(data: ExampleSet | StreamSet, processor: Processor, *, batch_size: int = 64, num_workers: int = 0,
                 skip_bad: bool = False, on_skip: Callable[[list[str], list[tuple[Any, str]]], None] | None = None
                 ) -> Iterator[dict[str, Any]]:
    """One pass in order (map-style) or one pass of every part (streamed), processed in ``num_workers`` workers;
    each batch has ``_names`` (and ``labels`` when labelled). Memory holds a few batches, not the data set. With
    ``skip_bad``, ``on_skip(messages, [(label, name), ...])`` hears of each batch's skipped examples (a batch whose
    examples were all skipped included)."""
    if isinstance(data, StreamSet):
        ds = _StreamBatches(data, processor, batch=batch_size, seed=0, rank=0, world=1, buffer=0,
                            skip_bad=skip_bad, epochs=1)
        loader = _loader(ds, workers=num_workers, prefetch=2, pin=False)
    else:
        chunks = [list(range(i, min(i + batch_size, len(data)))) for i in range(0, len(data), batch_size)]
        loader = _loader(_MapBatches(data, processor, skip_bad), workers=num_workers, prefetch=2, pin=False,
                         batch_sampler=chunks)
    for batch in loader:
        meta = _unpack(batch)
        if on_skip is not None and meta["skipped"]:
            on_skip(meta["skipped"], meta.get("skipped_records", []))
        if meta["names"]:
            batch["_names"] = meta["names"]
            batch["_skipped"] = meta["skipped"]
            yield batch


def iter_records(data: ExampleSet | StreamSet, size: int) -> Iterator[list[Record]]:
    """One pass of ``data`` in order (a stream: every part), ``size`` raw ``(example, label, name)`` records at a
    time, read in this process: for a loop that makes its own batches (the windows of long inputs)."""
    records = (data.record(i) for i in range(len(data))) if isinstance(data, ExampleSet) else data.records(0, 1, 0)
    while chunk := list(islice(records, size)):
        yield chunk
