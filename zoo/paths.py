"""Where shared data and caches live: one setting each, for every modality."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["data_dir", "cache_dir", "fresh_folder", "portable", "expand"]


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


LOCAL = "<local>/"


def _under(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def portable(value: Any) -> Any:
    """``value`` (a recipe, nested dicts and lists) with every absolute path rewritten so that it reproduces the
    run without exposing the machine: under ``$ZOO_DATA`` / ``$ZOO_CACHE`` → ``$ZOO_DATA/…`` / ``$ZOO_CACHE/…``;
    under the working directory → relative; under the home directory → ``~/…``; elsewhere → ``<local>/name``."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    path = Path(value).resolve()
    for token, root in (("$ZOO_DATA", data_dir()), ("$ZOO_CACHE", cache_dir())):
        rel = _under(path, root)
        if rel is not None:
            return f"{token}/{rel}"
    for prefix, root in (("", Path.cwd()), ("~/", Path.home())):
        rel = _under(path, root)
        if rel is not None and root != Path("/"):
            return f"{prefix}{rel}"
    return LOCAL + path.name


def expand(value: Any) -> Any:
    """The inverse where it exists: ``$ZOO_DATA/…``, ``$ZOO_CACHE/…`` and ``~/…`` back to this machine's paths
    (``<local>/…`` stays as it is: the file was on the machine that trained the model)."""
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, str):
        for token, root in (("$ZOO_DATA/", data_dir), ("$ZOO_CACHE/", cache_dir)):
            if value.startswith(token):
                return str(root() / value[len(token):])
        if value.startswith("~/"):
            return str(Path.home() / value[2:])
    return value
