"""Where a command may write (docs/reliability.md, "Outputs never overwrite inputs"): never into its own input, a
model folder it did not make, or any cache the project reads from (the Hugging Face Hub cache, the ``datasets``
cache, ``$ZOO_CACHE`` with its converted checkpoints). Checked before any work starts, naming the argument."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["caches", "refuse_output"]


def caches() -> list[tuple[str, Path]]:
    """The caches a command reads from, by name (resolved; only the ones configured or present)."""
    from huggingface_hub import constants

    from zoo.paths import cache_dir
    found = [("the Hugging Face Hub cache", Path(constants.HF_HUB_CACHE)),
             ("the ssl-zoo cache ($ZOO_CACHE: converted checkpoints, generated data)", cache_dir())]
    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets"
    found.append(("the Hugging Face datasets cache", Path(datasets_cache)))
    return [(name, path.expanduser().resolve()) for name, path in found]


def _within(target: Path, root: Path) -> bool:
    return target == root or root in target.parents


def refuse_output(out: str | Path, argument: str, *, inputs: Iterable[tuple[str, str | Path]] = (),
                  file_ok: bool = False, new_folder: bool = False) -> Path:
    """``out`` resolved, or a ValueError naming ``argument`` when it would overwrite something it must not:

    - it is one of ``inputs`` (name → path; a Hub id that is not a local path is skipped) or lies inside an input
      folder; with ``new_folder`` also when an input lies inside it (a folder written over its own source);
    - it lies inside a cache (:func:`caches`);
    - it is an existing file where a folder is written (``file_ok`` False);
    - with ``new_folder``: it is an existing folder that is not empty (a model folder this command did not make).
    """
    target = Path(out).expanduser().resolve()
    for name, path in inputs:
        p = Path(path).expanduser()
        if not p.exists():
            continue
        src = p.resolve()
        if target == src or (src.is_dir() and src in target.parents) or \
                (new_folder and target.is_dir() and target in src.parents):
            raise ValueError(f"{argument} {out} is or lies inside {name} ({path}), or holds it: it would "
                             "overwrite the input; choose a new folder outside it")
    for name, root in caches():
        if _within(target, root):
            raise ValueError(f"{argument} {out} lies inside {name} ({root}): writing there could overwrite what "
                             "a model loads from; choose a folder outside the caches")
    if target.exists() and not target.is_dir() and not file_ok:
        raise ValueError(f"{argument} {out} is an existing file, not a folder: give a new folder's path")
    if new_folder and target.is_dir() and any(target.iterdir()):
        held = ", ".join(sorted(p.name for p in target.iterdir())[:5])
        raise ValueError(f"{argument} {out} is a folder that already holds files ({held}): this command writes a "
                         "whole model folder and would mix it with what is there; give a new or empty folder (or "
                         "remove that one first)")
    return target
