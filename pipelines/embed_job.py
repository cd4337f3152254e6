"""``zoo embed --output DIR`` at any scale (issue #33; docs/command-line.md, "Embedding at scale"): the inputs split
across ``torchrun`` ranks, every shard written once and atomically, a killed job resumed where it stopped, and one
``index.json`` joining the shards in input order.

- **Blocks.** Input ``i`` (its place in the ordered input list) lies in block ``i // shard_size``; rank
  ``k % world`` embeds block ``k`` into ``DIR/embeddings-{k:05d}.safetensors``: the rows of its inputs in input
  order, their names (metadata ``names``, what :func:`pipelines.shards.load_shards` reads) and which inputs it
  covers (``first``, the first input's place, and ``inputs``, their names). The split depends on the input list and
  ``shard_size`` only, not on the number of ranks or DataLoader workers: a job may resume with another number of
  processes, and one process writes the files ``zoo embed`` always wrote.
- **Atomic.** A shard is written under a temporary name, flushed to disk and renamed: a shard file that exists is
  whole.
- **Resume.** ``DIR/embed_job.json`` records the job's fingerprint (the model's files, the inputs, the settings that
  change the rows). Rerunning the same job skips every block whose shard exists — after checking that it covers the
  same inputs (a folder's files may have changed) — and embeds the rest; another job into the same folder is
  refused naming what differs (``--no-resume`` starts over).
- **Join.** Rank 0, its own blocks done, waits for every block's shard (the other ranks' done-markers are their
  shards) and writes ``index.json`` (atomically) in block order, so ``load_shards`` gives the rows in input order.
  Rank 0 holds the folder's lock (``DIR/.lock``) for the whole job: a second job into it stops at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .distributed import DistInfo

__all__ = ["ranks_from_env", "EmbedJob", "job_fingerprint", "model_digest", "recorded_shard_size",
           "shard_file", "JOB_FILE"]

JOB_FILE = "embed_job.json"
FORMAT = 1                      # of the job record and the shards' metadata
SHARD = re.compile(r"^embeddings-(\d{5,})\.safetensors$")
#: testing only: ``N`` (or ``N@RANK``: that rank only) — the process SIGKILLs itself once it has written N shards
#: (a crash at a known place)
KILL_AFTER_ENV = "ZOO_TEST_EMBED_KILL_AFTER_SHARDS"
#: the files that make a model (hashed into the fingerprint); a card or an evaluation report may change freely
MODEL_FILES = ("config.json", "preprocessor.json", "classifier.json")
MODEL_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".data")
SKIPPED_LISTED = 100            # skipped inputs index.json lists by name (all are counted; each shard lists its own)
SAY_WAITING_EVERY = 60.0        # seconds between rank 0's lines while it waits for other ranks' shards


def ranks_from_env() -> DistInfo:
    """This process's place in the job (:class:`~pipelines.distributed.DistInfo`) from the environment ``torchrun``
    sets (one process without it)."""
    def number(key: str, default: str) -> int:
        text = os.environ.get(key, default)
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not a whole number (torchrun sets it)") from None
    world, rank, local = number("WORLD_SIZE", "1"), number("RANK", "0"), number("LOCAL_RANK", "0")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world}: a rank must lie in 0..WORLD_SIZE-1")
    return DistInfo(rank, world, local)


def shard_file(block: int) -> str:
    return f"embeddings-{block:05d}.safetensors"


def model_digest(model: str | Path) -> str:
    """SHA-256 over the files that make the model (config, processor, weights or graph) in its folder — a local one
    or the Hub snapshot the id resolves to."""
    from zoo.hub import CONFIG_NAME, resolve_file
    folder = Path(resolve_file(model, CONFIG_NAME)).parent
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name in MODEL_FILES or path.name.endswith(MODEL_SUFFIXES)):
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _where(path: str | Path) -> str:
    """A local input as its resolved path (the same job run from another folder), a dataset id as it is."""
    p = Path(str(path)).expanduser()
    return str(p.resolve()) if p.exists() else str(path)


def job_fingerprint(model: str | Path, inputs: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same job: the model (where and its files' digest), the inputs as given (resolved),
    and the settings that change the rows or the blocks (not the device, batch size, workers or process count)."""
    return {"format": FORMAT, "model": _where(model), "model_sha256": model_digest(model),
            "inputs": [_where(p) for p in inputs], "settings": dict(settings)}


def recorded_shard_size(out: str | Path) -> int | None:
    """The shard size of the job recorded in ``out`` (``None`` without one): what a rerun resumes with when it
    does not name one — e.g. a job started under torchrun, finished by one process."""
    try:
        size = json.loads((Path(out) / JOB_FILE).read_text())["settings"]["shard_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    said = {"model": "the model", "model_sha256": "the model's files", "inputs": "the inputs",
            "format": "the job record's format"}
    out = [said[k] for k in ("model", "model_sha256", "inputs", "format") if old.get(k) != new.get(k)]
    was, now = old.get("settings") or {}, new.get("settings") or {}
    for key in sorted(set(was) | set(now)):
        if was.get(key) != now.get(key):
            out.append(f"--{key.replace('_', '-')} ({was.get(key)!r} then, {now.get(key)!r} now)")
    return out or ["the job record"]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class EmbedJob:
    """One process's part of an embedding job into ``out`` (see the module's docstring). Use as a context manager
    (releases the folder's lock and the process group however the job ends)::

        with EmbedJob(out, shard_size=B, ranks=ranks) as job:
            job.open(fingerprint)                   # every rank; rank 0 checks and prepares the folder
            for i, name, example in inputs:         # the ordered input list
                if job.wanted(i, name):             # this rank's, not yet in a shard
                    job.add(i, rows, row_names, name)
            index = job.finish(n)                   # rank 0: index.json once every block is written
    """

    def __init__(self, out: str | Path, *, shard_size: int, ranks: DistInfo | None = None,
                 progress: bool = False) -> None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a whole number >= 1 (inputs per shard file), got {shard_size!r}")
        self.out, self.size, self.ranks, self.progress = Path(out), shard_size, ranks or DistInfo(), progress
        self.found: set[int] = set()          # blocks whose shard exists (any rank's), as found at the start
        self.kept = 0                         # this rank's blocks found written at the start (set by finish)
        self.written = 0                      # shards this process wrote
        self.embedded = 0                     # inputs this process embedded
        self.skipped = 0                      # inputs of the whole job skipped as unreadable (rank 0, at finish)
        self._skipped: dict[int, str] = {}    # this rank's pending skipped inputs: place → why
        self._skipped_here = 0                # inputs this process skipped (the progress bar's "skipped")
        self._recorded: dict[int, list[str]] = {}
        self._pending: dict[int, dict[int, tuple[torch.Tensor, list[str], str]]] = {}
        self._written: set[int] = set()
        self._lock: Any = None
        self._group = False
        self._bar: Any = None

    # --- the start -------------------------------------------------------------------------------------------
    def __enter__(self) -> EmbedJob:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._lock is not None:
            self._lock.close()                # releases the lockf lock
            self._lock = None
        if self._group:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
            self._group = False

    def open(self, fingerprint: dict[str, Any] | Callable[[], dict[str, Any]], *, resume: bool = True) -> str | None:
        """Rank 0 locks and checks the folder — the same job resumes, another is refused, shards without a job
        record (an older ``zoo embed``'s) are removed — and records the job; the other ranks learn its verdict
        (through a gloo process group under ``torchrun``). ``fingerprint`` may be a function, called on rank 0 only
        (it hashes the model's files). Returns what rank 0 has to say (a resumed job)."""
        said, error = None, None
        if self.ranks.main:
            try:
                said = self._prepare(fingerprint() if callable(fingerprint) else fingerprint, resume)
            except (ValueError, RuntimeError, OSError) as err:
                error = str(err)
        error = self._from_main(error)
        if error is not None:
            raise ValueError(error)
        self.found = self._blocks_present()
        if self.progress and self.ranks.main:
            from tqdm.auto import tqdm
            self._bar = tqdm(desc="embed", unit="ex", mininterval=0.1 if os.isatty(2) else 30.0)
        return said

    def _from_main(self, value: Any) -> Any:
        """``value`` as rank 0 has it, on every rank."""
        if self.ranks.world == 1:
            return value
        import torch.distributed as dist
        if not dist.is_initialized():
            if "MASTER_ADDR" not in os.environ:
                raise ValueError(f"WORLD_SIZE={self.ranks.world} without MASTER_ADDR: start the processes with "
                                 "torchrun (it sets both)")
            dist.init_process_group("gloo")
            self._group = True
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _prepare(self, fingerprint: dict[str, Any], resume: bool) -> str | None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        record = self.out / JOB_FILE
        said = None
        if resume and record.is_file():
            try:
                old = json.loads(record.read_text())
            except ValueError:
                raise ValueError(f"{record} is not a job record (not JSON): remove it, or pass --no-resume to start "
                                 "over") from None
            if old != fingerprint:
                raise ValueError(f"--output {self.out} holds the shards of another embedding job ("
                                 f"{'; '.join(_differences(old, fingerprint))} differ): write to another --output "
                                 "folder, or pass --no-resume to remove them and start over")
            kept = len(self._blocks_present())
            if kept:
                said = f"resuming the job in {self.out}: {kept} shard(s) already written are kept"
        else:                                  # a new job, --no-resume, or the shards of an older zoo embed
            self._clear()
        (self.out / "index.json").unlink(missing_ok=True)      # written again at the end: never a stale one
        _write_atomic(record, json.dumps(fingerprint, indent=2) + "\n")
        return said

    def _take_lock(self) -> None:
        """``lockf`` on ``DIR/.lock``: a POSIX lock belongs to this process only (forked DataLoader workers do not
        inherit it) and the kernel drops it when the process dies, however it dies."""
        import fcntl
        path = self.out / ".lock"
        fh = open(path, "a+")
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RuntimeError(f"--output {self.out} is in use by {holder} (another zoo embed): wait for it to "
                               "finish or write to another folder") from None
        import platform
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {platform.node()}\n")
        fh.flush()
        self._lock = fh

    def _clear(self) -> None:
        for path in self.out.iterdir():
            if SHARD.match(path.name) or path.name in ("index.json", JOB_FILE) or \
                    (path.name.startswith(".") and ".tmp-" in path.name):
                path.unlink()

    def _blocks_present(self) -> set[int]:
        if not self.out.is_dir():
            return set()
        return {int(m.group(1)) for p in self.out.iterdir() if (m := SHARD.match(p.name))}

    # --- the inputs ------------------------------------------------------------------------------------------
    def block(self, i: int) -> int:
        return i // self.size

    def mine(self, i: int) -> bool:
        return self.block(i) % self.ranks.world == self.ranks.rank

    def wanted(self, i: int, name: str) -> bool:
        """Whether this rank embeds input ``i`` now: one of its blocks whose shard is not written yet. An input of
        a written block is checked against the name the shard records for it (the inputs must not have changed)."""
        if not self.mine(i):
            return False
        k = self.block(i)
        if k not in self.found:
            return True
        recorded = self._inputs_of(k)
        j = i - k * self.size
        if j >= len(recorded) or recorded[j] != name:
            was = repr(recorded[j]) if j < len(recorded) else "no input"
            raise ValueError(f"{self.out / shard_file(k)} holds {was} as input {i}, but the input list now has "
                             f"{name!r} there: the inputs changed since the shard was written (a folder's files?); "
                             "write to another --output folder, or pass --no-resume to start over")
        return False

    def _inputs_of(self, k: int) -> list[str]:
        if k not in self._recorded:
            self._recorded[k] = _metadata(self.out / shard_file(k))[1]
        return self._recorded[k]

    # --- the rows --------------------------------------------------------------------------------------------
    def add(self, i: int, rows: torch.Tensor, row_names: list[str], name: str, skipped: str | None = None) -> None:
        """The rows ``[r, D]`` of input ``i`` (one, or one per window), in any order; a block's shard is written as
        soon as all its inputs are in (the last block, shorter, at :meth:`finish`). ``skipped``: why the input could
        not be read (``--skip-bad``): it has no rows, and its shard records the reason."""
        k = self.block(i)
        if not self.mine(i) or k in self.found or k in self._written:
            raise RuntimeError(f"input {i} is not this rank's to embed (block {k})")
        block = self._pending.setdefault(k, {})
        if i in block:
            raise RuntimeError(f"input {i} embedded twice")
        block[i] = (rows, list(row_names), name)
        if skipped is not None:
            self._skipped[i] = skipped
            self._skipped_here += 1
        else:
            self.embedded += 1
        if self._bar is not None:              # counts the inputs gone through; the skipped ones are named beside
            if skipped is not None:
                self._bar.set_postfix(skipped=self._skipped_here, refresh=False)
            self._bar.update(1)
        if len(block) == self.size:
            self._write(k)

    def _write(self, k: int) -> None:
        from safetensors.torch import save_file
        items = sorted(self._pending.pop(k).items())
        first = k * self.size
        if [i for i, _ in items] != list(range(first, first + len(items))):
            raise RuntimeError(f"block {k}: inputs {[i for i, _ in items]} are not the block's {first}..")
        emb = torch.cat([rows.float() for _, (rows, _, _) in items]).contiguous()
        meta = {"names": json.dumps([n for _, (_, names, _) in items for n in names]),
                "inputs": json.dumps([name for _, (_, _, name) in items]), "first": str(first),
                "format": str(FORMAT)}
        skipped = {str(i): self._skipped.pop(i) for i, _ in items if i in self._skipped}
        if skipped:                                # input place → why it could not be read
            meta["skipped"] = json.dumps(skipped)
        self.out.mkdir(parents=True, exist_ok=True)
        final = self.out / shard_file(k)
        tmp = self.out / f".{final.name}.tmp-{os.getpid()}"
        save_file({"embeddings": emb}, str(tmp), metadata=meta)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._written.add(k)
        self.written += 1
        after, _, rank = os.environ.get(KILL_AFTER_ENV, "").partition("@")
        if after and self.written == int(after) and (not rank or int(rank) == self.ranks.rank):
            os.kill(os.getpid(), signal.SIGKILL)

    # --- the end ---------------------------------------------------------------------------------------------
    def finish(self, n: int) -> Path | None:
        """After this rank's inputs (``n``: how many inputs the whole list has): its last, shorter block written;
        on rank 0, once every block's shard exists, ``index.json`` (returned; ``None`` on the other ranks)."""
        last = self.block(n - 1) if n else -1
        for k in sorted(self._pending):
            if k != last or len(self._pending[k]) != n - k * self.size:
                raise RuntimeError(f"block {k} is missing inputs at the end ({len(self._pending[k])} of "
                                   f"{min(self.size, n - k * self.size)} embedded)")
            self._write(k)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        blocks = last + 1
        self.kept = sum(1 for k in self.found if k < blocks and k % self.ranks.world == self.ranks.rank)
        if not self.ranks.main:
            return None
        self._wait_for(blocks)
        shards, rows, skipped = [], 0, []
        for k in range(blocks):
            count, inputs, first, left = _metadata(self.out / shard_file(k))
            skipped += [{"input": inputs[int(i) - first], "why": why} for i, why in left.items()]
            expected = min(self.size, n - k * self.size)
            if first != k * self.size or len(inputs) != expected:
                raise ValueError(f"{self.out / shard_file(k)} covers {len(inputs)} input(s) from input {first}, but "
                                 f"block {k} now has {expected} from input {k * self.size}: the inputs changed since "
                                 "the shard was written; write to another --output folder, or pass --no-resume")
            shards.append({"file": shard_file(k), "rows": count})
            rows += count
        for path in self.out.iterdir():        # a longer input list's blocks, a killed write's temporary files
            m = SHARD.match(path.name)
            if (m and int(m.group(1)) >= blocks) or (path.name.startswith(".embeddings-") and ".tmp-" in path.name):
                path.unlink()
        index = self.out / "index.json"
        self.skipped = len(skipped)
        _write_atomic(index, json.dumps({"shards": shards, "rows": rows, "inputs": n, "skipped": len(skipped),
                                         "skipped_inputs": skipped[:SKIPPED_LISTED]}, indent=2) + "\n")
        return index

    def _wait_for(self, blocks: int) -> None:
        """Until every block's shard exists: the other ranks' work (this rank's is done)."""
        missing = [k for k in range(blocks) if not (self.out / shard_file(k)).is_file()]
        if missing and self.ranks.world == 1:
            raise RuntimeError(f"shards {missing[:5]} were never written")
        said, pause = time.monotonic(), 0.05
        while missing:
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            missing = [k for k in missing if not (self.out / shard_file(k)).is_file()]
            if missing and time.monotonic() - said > SAY_WAITING_EVERY:
                ranks = sorted({k % self.ranks.world for k in missing})
                print(f"rank 0 waits for {len(missing)} shard(s) of rank(s) {ranks} (e.g. {shard_file(missing[0])})",
                      flush=True)
                said = time.monotonic()


def _metadata(path: Path) -> tuple[int, list[str], int, dict[str, str]]:
    """A shard's rows, the names of the inputs it covers, the first one's place and the inputs it skipped (place →
    why)."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
        rows = fh.get_slice("embeddings").get_shape()[0]
    if "inputs" not in meta or "first" not in meta:
        raise ValueError(f"{path} records no inputs (not a shard of this job): remove it, or pass --no-resume")
    return int(rows), json.loads(meta["inputs"]), int(meta["first"]), json.loads(meta.get("skipped", "{}"))
