"""A run folder's lock (one run at a time) and ``--no-resume``'s clean start."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

__all__ = ["RunLock", "clear_run", "RUN_ARTEFACTS"]

RUN_ARTEFACTS = ("checkpoints", "metrics.jsonl", "loss_curve.png", "train_summary.json", "model")

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as err:                # .lock a directory, --output a file, no permission: name them
            what = "is a directory" if self.path.is_dir() else (err.strerror or type(err).__name__).lower()
            raise RuntimeError(f"{self.path}: the run's lock file cannot be opened ({what}): remove it if no run "
                               "uses this folder, or write to another --output") from None
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
        return self

    def fileno(self) -> int | None:
        """The lock's descriptor, which forked DataLoader workers must close (``flock`` lasts while any copy of the
        descriptor is open: a SIGKILLed run's orphaned workers would otherwise keep the folder locked)."""
        return self.fh.fileno() if self.fh is not None else None

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
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


