"""What must hold before a folder goes to the Hub — where the factory (:mod:`zoo.auto`), the cards and the folder
I/O (:mod:`zoo.hub`) are all known: a valid repo id, a model that loads, a card whose metadata parses."""

from __future__ import annotations

from pathlib import Path

from .auto import AutoEncoder
from .cards import load_card
from .hub import CARD_NAME, REPO_FILES, check_repo_id

__all__ = ["check_publishable"]


def check_publishable(folder: str | Path, repo_id: str) -> list[str]:
    """What ``publish`` checks before anything goes up. Returns the files that would be uploaded."""
    check_repo_id(repo_id)
    folder = Path(folder)
    AutoEncoder.from_pretrained(folder)
    if not (folder / CARD_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {CARD_NAME}: run `zoo card {folder}` first")
    load_card(folder / CARD_NAME)
    return [n for n in REPO_FILES if (folder / n).is_file()]
