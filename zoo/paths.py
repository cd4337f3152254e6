"""Where shared data and caches live: one setting each, for every modality."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["data_dir", "cache_dir", "fresh_folder"]


def data_dir() -> Path:
    """Offline data sets for tests and benchmarks: ``$ZOO_DATA``, default ``../shared/data`` beside the
    checkout (absent on most machines: callers skip with a reason)."""
    return Path(os.environ.get("ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cache_dir() -> Path:
    """Data the project generates (e.g. synthesised audio): ``$ZOO_CACHE``, default ``~/.cache/ssl-zoo``."""
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "ssl-zoo"))


@contextmanager
def fresh_folder(root: str | Path) -> Iterator[Path]:
    """Build a generated data set in ``<root>.partial`` (emptied first) and move it to ``root`` only once the block
    completes, so that a killed generation never leaves a half-written set that looks finished."""
    root = Path(root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    os.replace(tmp, root)
