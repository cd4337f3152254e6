"""Where shared data and caches live: one setting each, for every modality."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "cache_dir"]


def data_dir() -> Path:
    """Offline data sets for tests and benchmarks: ``$ZOO_DATA``, default ``../shared/data`` beside the
    checkout (absent on most machines: callers skip with a reason)."""
    return Path(os.environ.get("ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cache_dir() -> Path:
    """Data the project generates (e.g. synthesised audio): ``$ZOO_CACHE``, default ``~/.cache/ssl-zoo``."""
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "ssl-zoo"))
