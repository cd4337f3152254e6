"""What must hold before a folder goes to the Hub — where the factory (:mod:`zoo.auto`), the cards and the folder
I/O (:mod:`zoo.hub`) are all known: a valid repo id, a model that loads, a card whose metadata parses."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from . import hub
from .auto import AutoEncoder
from .cards import load_card, write_card
from .hub import CARD_NAME, check_repo_id, repo_files
from .plugin import Encoder, Processor

__all__ = ["check_publishable", "push_to_hub"]


def push_to_hub(model: str | Path | Encoder, repo_id: str, *, processor: Processor | None = None,
                **kwargs: Any) -> Any:
    """Upload a zoo folder (exactly its repo files), or an encoder — saved with ``processor`` and a card naming
    ``repo_id`` into a temporary folder first. ``kwargs`` go to :func:`zoo.hub.push_to_hub` (token, private,
    revision, endpoint)."""
    if not isinstance(model, Encoder):
        return hub.push_to_hub(model, repo_id, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, processor=processor)
        write_card(tmp, repo_id=repo_id)
        return hub.push_to_hub(tmp, repo_id, **kwargs)


def check_publishable(folder: str | Path, repo_id: str) -> list[str]:
    """What ``publish`` checks before anything goes up. Returns the files that would be uploaded."""
    check_repo_id(repo_id)
    folder = Path(folder)
    AutoEncoder.from_pretrained(folder)
    if not (folder / CARD_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {CARD_NAME}: run `zoo card {folder}` first")
    load_card(folder / CARD_NAME)
    return repo_files(folder)
