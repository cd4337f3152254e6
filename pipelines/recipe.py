"""Recipes: YAML files naming modality, architecture, encoder, data, objective, schedule and evaluation."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zoo import get_modality, installed
from zoo.config import Config, ConfigError

__all__ = ["TrainConfig", "load_recipe", "apply_overrides", "find_recipes", "RECIPE_KEYS"]

RECIPES_DIR = Path(__file__).parent / "recipes"
RECIPE_KEYS = {"name", "modality", "architecture", "description", "encoder", "pretraining", "processor",
               "data", "train", "evaluate", "finetune"}


@dataclass
class TrainConfig(Config):
    """Engine settings (AdamW + linear warmup + cosine decay)."""

    steps: int = 100
    batch_size: int = 32
    optimizer: str = "adamw"          # "adamw": decoupled decay on matrices; "adam": L2 decay on every parameter
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    bf16: bool = True
    device: str = "auto"
    skip_bad: bool = False
    deterministic: bool = True        # torch.use_deterministic_algorithms: bit-identical reruns
    stop_after: int | None = None

    def validate(self) -> None:
        self.check(self.steps >= 1, "steps", "must be >= 1")
        self.check(self.batch_size >= 1, "batch_size", "must be >= 1")
        self.check(self.lr > 0, "lr", "must be > 0")
        self.check(self.optimizer in ("adamw", "adam"), "optimizer", "must be 'adamw' or 'adam'")
        self.check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must lie in [0, 1]")
        self.check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0 (a warmup longer than the run is cut)")
        self.check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 = off)")
        self.check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        self.check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        self.check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
                   "must be auto, cpu, cuda or cuda:N")
        self.check(self.stop_after is None or self.stop_after >= 1, "stop_after", "must be >= 1")


def find_recipes() -> dict[str, Path]:
    """Recipe names → files: the built-in ``pipelines/recipes`` and every installed plugin's recipes."""
    found = {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}
    for name in installed():
        try:
            folder = get_modality(name).recipes
        except Exception:  # a broken plugin must not hide the others
            continue
        if folder is not None:
            found.update({p.stem: p for p in sorted(Path(folder).glob("*.yaml"))})
    return found


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key.sub=value`` overrides (values parsed as YAML: numbers, booleans, lists)."""
    recipe = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=10")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in RECIPE_KEYS:
            raise ConfigError(f"--set {item!r}: unknown recipe section {parts[0]!r}; known: {sorted(RECIPE_KEYS)}")
        node = recipe
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return recipe


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a recipe by file path or by name (built-in or from a plugin), apply overrides, validate."""
    path = Path(name_or_path)
    if not path.is_file():
        recipes = find_recipes()
        if str(name_or_path) not in recipes:
            raise FileNotFoundError(f"no recipe {str(name_or_path)!r}: not a file, and not one of "
                                    f"{sorted(recipes) or 'the installed recipes (none)'}")
        path = recipes[str(name_or_path)]
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    recipe = apply_overrides(recipe, overrides or [])
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown recipe section(s) {unknown}; known: {sorted(RECIPE_KEYS)}")
    for key in ("name", "modality", "architecture"):
        if key not in recipe:
            raise ConfigError(f"{path}: the recipe lacks {key!r}")
    recipe.setdefault("data", {})
    recipe["train"] = TrainConfig.from_dict(recipe.get("train"), where=f"{path.name}:train").to_dict()
    arch = get_modality(recipe["modality"]).architecture(recipe["architecture"])
    arch.config.from_dict(recipe.get("encoder"), where=f"{path.name}:encoder")
    arch.pretraining.from_dict(recipe.get("pretraining"), where=f"{path.name}:pretraining")
    recipe["_path"] = str(path)
    return recipe
