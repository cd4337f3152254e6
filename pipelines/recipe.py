"""Recipes: YAML files naming modality, architecture, encoder, data, objective, schedule and evaluation."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo import get_modality
from zoo.config import Config, ConfigError

__all__ = ["TrainConfig", "Recipe", "load_recipe", "parse_recipe", "apply_overrides", "parse_assignments",
           "find_recipes", "RECIPE_KEYS", "set_values"]

RECIPE_KEYS = {"name", "modality", "architecture", "description", "encoder", "pretraining", "processor",
               "data", "train", "evaluate", "finetune"}



class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``5E+2`` are numbers (YAML 1.1 wants ``1.0e-3``
    and reads ``1e-3`` as a string, and every user writes learning rates that way)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

@dataclass
class TrainConfig(Config):
    """Engine settings (AdamW + linear warmup + cosine decay)."""

    steps: int = 100
    batch_size: int = 32
    optimizer: str = "adamw"          # "adamw": decoupled decay on matrices; "adam": L2 decay on every parameter
    lr: float = 1e-3
    lr_batch: int | None = None       # lr is for this global batch: scaled by batch_size x world / lr_batch
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10
    schedule: str = "cosine"          # decay after warmup: "cosine" or "linear"
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
    num_workers: int = 0              # DataLoader worker processes that decode, process and collate
    prefetch_factor: int = 2          # batches each worker prepares ahead
    shuffle_buffer: int = 1000        # streamed data: examples held by the seeded shuffle buffer (<= 1: off)
    group_by_length: bool = False     # map-style data: batches from buckets of similar length
    length_buckets: int = 64          # with group_by_length: global batches sorted together per bucket
    augment: bool = True              # the processor's training augmentation, where it has one (off at inference)
    collapse_patience: int = 5        # collapse alarm after this many consecutive logged crossings (0: off)
    stop_on_collapse: bool = False    # stop the run at the alarm (checkpoint kept, nothing published)
    quality_every: int = 500          # online RankMe / k-NN every this many steps, and at the first and last (0: off)
    quality_examples: int = 256       # examples RankMe reads (the k-NN probe: these against half as many held out)

    def validate(self) -> None:
        self.check(self.steps >= 1, "steps", "must be >= 1")
        self.check(self.batch_size >= 1, "batch_size", "must be >= 1")
        self.check(self.lr > 0, "lr", "must be > 0")
        self.check(self.lr_batch is None or self.lr_batch >= 1, "lr_batch", "must be >= 1 (or null: lr as given)")
        self.check(self.optimizer in ("adamw", "adam"), "optimizer", "must be 'adamw' or 'adam'")
        self.check(self.schedule in ("cosine", "linear"), "schedule", "must be 'cosine' or 'linear'")
        self.check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must lie in [0, 1]")
        self.check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0 (a warmup longer than the run is cut)")
        self.check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 = off)")
        self.check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        self.check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        self.check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
                   "must be auto, cpu, cuda or cuda:N")
        self.check(self.stop_after is None or self.stop_after >= 1, "stop_after", "must be >= 1")
        self.check(self.num_workers >= 0, "num_workers", "must be >= 0")
        self.check(self.prefetch_factor >= 1, "prefetch_factor", "must be >= 1")
        self.check(self.length_buckets >= 1, "length_buckets", "must be >= 1")
        self.check(self.collapse_patience >= 0, "collapse_patience", "must be >= 0 (0 = no alarm)")
        self.check(self.quality_every >= 0, "quality_every", "must be >= 0 (0 = no online quality probes)")
        self.check(2 <= self.quality_examples <= 100_000, "quality_examples",
                   "must lie in [2, 100000] (examples embedded at every measurement)")


@dataclass
class Recipe:
    """A recipe parsed once: the engine settings typed and validated, the modality's sections validated
    against its config classes (they stay mappings: each modality owns its schema)."""

    name: str
    modality: str
    architecture: str
    train: TrainConfig
    description: str = ""
    encoder: dict[str, Any] = field(default_factory=dict)
    pretraining: dict[str, Any] = field(default_factory=dict)
    processor: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    objective: Config | None = None    # the ``pretraining`` section parsed once (the architecture's config class)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as YAML would hold it (what a model's config.json records)."""
        pretraining = self.objective.to_dict() if self.objective is not None else self.pretraining
        out = {"name": self.name, "modality": self.modality, "architecture": self.architecture,
               "description": self.description, "encoder": self.encoder, "pretraining": pretraining,
               "processor": self.processor, "data": self.data, "train": self.train.to_dict(),
               "evaluate": self.evaluate, "finetune": self.finetune}
        return copy.deepcopy({k: v for k, v in out.items() if v not in ({}, "")})

    def with_overrides(self, overrides: list[str]) -> Recipe:
        return parse_recipe(apply_overrides(self.to_dict(), overrides), self.path or self.name)


EVALUATE_KEYS = {"dataset", "dataset_name", "task", "train", "test", "knn_k", "layers", "protocol",
                 "data", "probe", "svm", "boosting"}     # the last four: the protocols' own settings


def _check_data_sections(sections: dict[str, Any], modality: Any, label: str) -> None:
    """Data specs are mappings (``--set data.train=5`` is an error here, not a TypeError later); the evaluate
    section holds only keys the evaluation reads, and a protocol the modality has (checked before pretraining,
    not at ``zoo evaluate``)."""
    for section, keys in (("data", ("train",)), ("evaluate", ("train", "test", "data"))):
        for key in keys:
            value = sections[section].get(key)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{label}:{section}.{key}: a data spec is a mapping (source, path, ...), got "
                                  f"{type(value).__name__} {value!r}")
    unknown = sorted(set(sections["evaluate"]) - EVALUATE_KEYS)
    if unknown:
        raise ConfigError(f"{label}:evaluate: unknown key(s) {unknown}; known: {sorted(EVALUATE_KEYS)}")
    protocol = sections["evaluate"].get("protocol")
    if protocol is not None and protocol not in modality.evaluators:
        raise ConfigError(f"{label}:evaluate.protocol: {protocol!r} is not a protocol of {modality.name!r} "
                          f"(it has {sorted(modality.evaluators) or 'none'})")


def find_recipes() -> dict[str, Path]:
    """Recipe names → files: every installed modality's ``recipes`` folder (built-ins are plugins too), read
    without importing the modalities."""
    from zoo.registry import describe_installed
    found: dict[str, Path] = {}
    for info in describe_installed(details=False):
        found.update(info.recipes)
    return found


def _parse_value(text: str, where: str = "--set") -> Any:
    """A ``KEY=VALUE`` value read as YAML (safe: a ``!!python/...`` tag is refused, no code runs); one that does
    not parse (``[1``, ``{``, ``*alias``) is a :class:`ConfigError` naming ``where`` (docs/reliability.md)."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: the value {text!r} does not parse as YAML ({problem}); write a plain number, "
                          "true/false, a [list] or a {mapping}, or quote it ('...') to mean the text") from None


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values read as YAML, as ``--set`` reads them) → a mapping."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value, f"{flag} {item!r}")
    return out


def apply_overrides(recipe: dict[str, Any] | Recipe, overrides: list[str]) -> dict[str, Any] | Recipe:
    """``key.sub=value`` overrides (values parsed as YAML: numbers, booleans, lists); a :class:`Recipe` comes
    back parsed again."""
    if isinstance(recipe, Recipe):
        return recipe.with_overrides(overrides)
    return set_values(recipe, overrides, RECIPE_KEYS, "recipe")


def set_values(raw: dict[str, Any], overrides: list[str], sections: set[str], what: str) -> dict[str, Any]:
    """A copy of the mapping ``raw`` with each ``key.sub=value`` of ``overrides`` set (values read as YAML); the
    first part must be one of ``sections`` (``what`` names the kind of recipe in the error)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=10")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in sections:
            raise ConfigError(f"--set {item!r}: unknown {what} section {parts[0]!r}; known: {sorted(sections)}")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(value, f"--set {item!r}")
    return raw


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe by file path or by name (from an installed modality), apply overrides, parse it once."""
    path = Path(name_or_path)
    if not path.is_file():
        recipes = find_recipes()
        if str(name_or_path) not in recipes:
            raise FileNotFoundError(f"no recipe {str(name_or_path)!r}: not a file, and not one of "
                                    f"{sorted(recipes) or 'the installed recipes (none)'}")
        path = recipes[str(name_or_path)]
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}")
    return parse_recipe(apply_overrides(raw, overrides or []), str(path))


def parse_recipe(raw: dict[str, Any], where: str = "recipe") -> Recipe:
    """A recipe mapping → :class:`Recipe`, validated (unknown sections, the modality's config classes)."""
    label = Path(where).name
    unknown = sorted(set(raw) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown recipe section(s) {unknown}; known: {sorted(RECIPE_KEYS)}")
    for key in ("name", "modality", "architecture"):
        if key not in raw:
            raise ConfigError(f"{where}: the recipe lacks {key!r}")
    sections = {k: raw.get(k) or {} for k in ("encoder", "pretraining", "processor", "data", "evaluate", "finetune")}
    for k, v in sections.items():
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: section {k!r} must be a mapping, got {type(v).__name__}")
    train = TrainConfig.from_dict(raw.get("train"), where=f"{label}:train")
    modality = get_modality(raw["modality"])
    _check_data_sections(sections, modality, label)
    arch = modality.architecture(raw["architecture"])
    arch.config.from_dict(sections["encoder"], where=f"{label}:encoder")
    objective = arch.pretraining.from_dict(sections["pretraining"], where=f"{label}:pretraining")
    modality.processor.config_class.from_dict(sections["processor"], where=f"{label}:processor")
    return Recipe(name=str(raw["name"]), modality=raw["modality"], architecture=raw["architecture"], train=train,
                  description=str(raw.get("description", "")), path=where, objective=objective,
                  **copy.deepcopy(sections))
