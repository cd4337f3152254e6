"""Binding two or more installed modalities into one embedding space (docs/architecture.md, "Binding"): each side's
encoder — from a zoo folder, a Hub id or a public checkpoint (as ``--init`` reads them), or from random init with its
recipe — frozen, trained in its last k blocks or fully; a projection per side to a shared width; CLIP's symmetric
InfoNCE with a learned temperature (Radford et al. 2021), every side against the first (the anchor, as ImageBind,
Girdhar et al. 2023); optionally each side's own self-supervised objective kept with a weight (CAV-MAE, Gong et al.
2023). The run goes through the one loop (:func:`pipelines.engine.train`): streaming, workers, exact resume, the
collapse alarm, trackers, progress. ``zoo bind RECIPE``; the recipe::

    name: av-digits-bind
    bind:
      dim: 64                         # the shared width
      sides:                          # the anchor first
        video: {recipe: video-videomae-demo, init: null, train: full, weight: 0.0}
        audio: {init: some/model, train: last-2}
    data:
      train: {source: table, path: pairs.csv, columns: {video: file, audio: file}, split: train}
    evaluate:
      test: {source: table, path: pairs.csv, columns: {video: file, audio: file}, split: test, label_column: digit}
    train: {steps: 200, batch_size: 32, lr: 0.0003}
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn

from zoo import BadExample, ExampleSet, PretrainOutput
from zoo.bound import BindConfig, BoundModel
from zoo.collapse import CollapseRule, mean_pairwise_cosine, normalised_std
from zoo.config import Config, ConfigError
from zoo.objectives import clip_loss

from .bind_card import SIMILARITY_PAIRS
from .build import Built, build
from .collapse import collapse_facts, collapse_stop_message, stopped_by_alarm
from .data import TrainData, fit_batch, process_records
from .engine import setup_run, train
from .hooks import Hook
from .pairs import FROZEN_KEY, Absent, PairProcessor, PooledInput, load_pairs, side_examples, split_batch
from .recipe import TrainConfig, _Loader, load_recipe, parse_recipe, set_values
from .trackers import TrackerHook

logger = logging.getLogger(__name__)

__all__ = ["SideConfig", "BindRecipe", "load_bind_recipe", "parse_bind_recipe", "find_bind_recipes", "BuiltBind",
           "build_bind", "BindPretrainer", "bind", "embed_pairs", "evaluate_pairs", "BIND_KEYS"]

BIND_KEYS = {"name", "description", "bind", "data", "evaluate", "train"}
RECIPES = Path(__file__).parent / "bind_recipes"
_TRAIN_MODE = re.compile(r"^(full|frozen|last-([1-9][0-9]*))$")


@dataclass
class SideConfig(Config):
    """One side: its ``recipe`` (encoder, processor, objective; a name or a file) and/or ``init`` (a model to start
    from: a zoo folder, a Hub id, a public checkpoint); ``train``: ``full``, ``frozen`` or ``last-K`` (the last K
    blocks and what follows them); ``weight``: the side's own objective's weight beside InfoNCE (0: off);
    ``set``: ``--set``-style overrides of the side's recipe."""

    recipe: str | None = None
    init: str | None = None
    train: str = "full"
    weight: float = 0.0
    set: list[str] = field(default_factory=list)

    def validate(self) -> None:
        self.check(bool(self.recipe or self.init), "recipe", "a side needs a recipe (random init) or an init model")
        self.check(bool(_TRAIN_MODE.match(self.train)), "train", "must be full, frozen or last-K (e.g. last-2)")
        self.check(self.weight >= 0 and math.isfinite(self.weight), "weight", "must be a finite number >= 0")
        self.check(not (self.weight > 0 and self.train == "frozen"), "weight",
                   "a frozen side's own objective trains nothing: set train to full or last-K, or weight to 0")

    @property
    def last(self) -> int | None:
        m = _TRAIN_MODE.match(self.train)
        return int(m.group(2)) if m and m.group(2) else None


@dataclass
class BindRecipe:
    """A bind recipe parsed once: the shared space, each side, the paired data and the engine's settings."""

    name: str
    bind: BindConfig
    sides: dict[str, SideConfig]
    train: TrainConfig
    data: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        bind = {**self.bind.to_dict(), "sides": {m: s.to_dict() for m, s in self.sides.items()}}
        return copy.deepcopy({k: v for k, v in {"name": self.name, "description": self.description, "bind": bind,
                                                 "data": self.data, "evaluate": self.evaluate,
                                                 "train": self.train.to_dict()}.items() if v not in ({}, "")})

    def with_overrides(self, overrides: list[str]) -> BindRecipe:
        return parse_bind_recipe(apply_bind_overrides(self.to_dict(), overrides), self.path or self.name)


def apply_bind_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key.sub=value`` (values read as YAML), e.g. ``bind.sides.audio.train=frozen``, ``train.steps=10``."""
    return set_values(raw, overrides, BIND_KEYS, "bind recipe")


def parse_bind_recipe(raw: dict[str, Any], where: str = "bind recipe") -> BindRecipe:
    """A bind recipe mapping → :class:`BindRecipe`, validated (sections, sides installed, each side's settings)."""
    from zoo import get_modality
    label = Path(where).name
    unknown = sorted(set(raw) - BIND_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; a bind recipe has {sorted(BIND_KEYS)}")
    for key in ("name", "bind"):
        if key not in raw:
            raise ConfigError(f"{where}: the bind recipe lacks {key!r}")
    section = raw["bind"]
    if not isinstance(section, dict) or not isinstance(section.get("sides"), dict):
        raise ConfigError(f"{where}: bind.sides must map each modality to its settings (recipe, init, train, weight)")
    sides = {}
    for modality, settings in section["sides"].items():
        try:
            get_modality(str(modality))                  # installed, else UnknownModality naming the installed ones
            sides[str(modality)] = SideConfig.from_dict(settings or {}, where=f"{label}:bind.sides.{modality}")
        except (ConfigError, KeyError) as err:
            raise ConfigError(f"{where}: bind.sides.{modality} (sides with the --set values: "
                              f"{sorted(section['sides'])}): {str(err).strip(chr(39))}") from None
    space = BindConfig.from_dict({**{k: v for k, v in section.items() if k != "sides"}, "sides": list(sides)},
                                 where=f"{label}:bind")
    for key in ("data", "evaluate"):
        value = raw.get(key) or {}
        if not isinstance(value, dict) or any(not isinstance(v, dict) for v in value.values()):
            raise ConfigError(f"{where}: {key} maps split names (train, test) to paired data specs")
    return BindRecipe(name=str(raw["name"]), bind=space, sides=sides,
                      train=TrainConfig.from_dict(raw.get("train"), where=f"{label}:train"),
                      data=copy.deepcopy(raw.get("data") or {}), evaluate=copy.deepcopy(raw.get("evaluate") or {}),
                      description=str(raw.get("description", "")), path=where)


def find_bind_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES.glob("*.yaml"))}


def load_bind_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> BindRecipe:
    """A bind recipe by file path or by name (``pipelines/bind_recipes``), with ``--set`` overrides."""
    path = Path(name_or_path)
    if not path.is_file():
        found = find_bind_recipes()
        if str(name_or_path) not in found:
            raise FileNotFoundError(f"no bind recipe {str(name_or_path)!r}: not a file, and not one of {sorted(found)}")
        path = found[str(name_or_path)]
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a bind recipe is a mapping of sections, got {type(raw).__name__}")
    return parse_bind_recipe(apply_bind_overrides(raw, overrides or []), str(path))


# --- building -------------------------------------------------------------------------------------------------------
def side_recipe(modality: str, side: SideConfig, steps: int | None, seed: int) -> Any:
    """The side's recipe (its own, or the one its init model recorded) with the bind's seed and, unless ``steps`` is
    ``None`` (the recipe's own), the bind's steps."""
    sets = [*side.set, *([f"train.steps={steps}"] if steps is not None else []), f"train.seed={seed}"]
    if side.recipe:
        recipe = load_recipe(side.recipe, sets)
    else:
        from .evaluate import recorded_recipe
        recipe = parse_recipe(recorded_recipe(side.init), str(side.init)).with_overrides(sets)
    if recipe.modality != modality:
        raise ConfigError(f"bind.sides.{modality}: the recipe {recipe.name!r} is for {recipe.modality!r}")
    return recipe


@dataclass
class BuiltBind:
    recipe: BindRecipe
    pairs: ExampleSet
    processor: PairProcessor
    bound: BoundModel
    pretrainer: BindPretrainer
    sides: dict[str, Built]


def build_bind(recipe: BindRecipe, *, pairs: ExampleSet | None = None) -> BuiltBind:
    """The paired training data, then each side built as its own recipe builds it (:func:`pipelines.build.build`:
    processor fitted on that side of the pairs, or the init model's), then the projections with the bind's seed."""
    modalities = list(recipe.sides)
    if pairs is None:
        if "train" not in recipe.data:
            raise ValueError(f"bind recipe {recipe.name!r} has no data.train section")
        pairs = load_pairs(recipe.data["train"], modalities)
    built = {}
    for m, side in recipe.sides.items():
        built[m] = build(side_recipe(m, side, recipe.train.steps, recipe.train.seed),
                         data=side_examples(pairs, m), init=side.init)
    torch.manual_seed(recipe.train.seed)
    bound = BoundModel({m: b.encoder for m, b in built.items()}, recipe.bind,
                       {m: b.processor for m, b in built.items()})
    own = {m: built[m].pretrainer for m, s in recipe.sides.items() if s.weight > 0}
    pretrainer = BindPretrainer(bound, recipe.sides, own)
    return BuiltBind(recipe, pairs, PairProcessor({m: b.processor for m, b in built.items()}), bound, pretrainer,
                     built)


def _blocks(encoder: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The encoder's stack of blocks: its ``nn.ModuleList`` holding the most parameters, with its name."""
    best = None
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module):
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, name, module)
    return (best[1], best[2]) if best else None


def set_trainable(encoder: nn.Module, mode: SideConfig) -> int:
    """Freeze what ``mode.train`` keeps fixed; returns the number of trainable parameters. ``last-K``: the last K
    blocks of the encoder's block stack (:func:`_blocks`) and every parameter registered after that stack (final
    norms, pooling heads)."""
    if mode.train == "full":
        encoder.requires_grad_(True)
    else:
        encoder.requires_grad_(False)
        if mode.last is not None:
            found = _blocks(encoder)
            if found is None:
                raise ConfigError(f"train: {mode.train}: the {type(encoder).__name__} has no stack of blocks "
                                  "(nn.ModuleList) to train the last of; use full or frozen")
            name, blocks = found
            if mode.last > len(blocks):
                raise ConfigError(f"train: {mode.train}: the {type(encoder).__name__} has {len(blocks)} blocks")
            for block in list(blocks)[-mode.last:]:
                block.requires_grad_(True)
            names = [n for n, _ in encoder.named_parameters()]
            first = next(i for i, n in enumerate(names) if n.startswith(name + "."))
            after = {n for i, n in enumerate(names) if i > first and not n.startswith(name + ".")}
            for n, p in encoder.named_parameters():
                if n in after:
                    p.requires_grad_(True)
    return sum(p.numel() for p in encoder.parameters() if p.requires_grad)


class BindPretrainer(nn.Module):
    """The bound model's training module: ``forward(pair batch, generator) → PretrainOutput``. InfoNCE between the
    anchor's and each other side's projected embeddings, plus ``weight x`` each side's own objective where it is
    on. Logs ``temperature``, ``pair_gap`` (mean cosine of the pairs minus that of the non-pairs: 0 when every pair
    is as similar as any other), ``batch_top1`` and the collapse signals of the projected embeddings (their lowest
    ``embedding_std`` and highest ``mean_cosine`` over the sides)."""

    collapse_rules = (CollapseRule(
        "embedding_std", 0.05, below=True,
        remedy="lower train.lr, check that each side's inputs differ from pair to pair (a constant side binds "
               "nothing), train fewer blocks of a pretrained side (bind.sides.<m>.train=last-2 or frozen)"),)

    def __init__(self, bound: BoundModel, sides: dict[str, SideConfig], own: dict[str, nn.Module]) -> None:
        super().__init__()
        self.bound = bound
        self.own = nn.ModuleDict(own)
        self.modes = dict(sides)
        self.trainable = {m: set_trainable(bound.encoders[m], s) for m, s in sides.items()}
        self.max_scale = math.log(bound.config.max_inverse_temperature)

    def train(self, mode: bool = True) -> BindPretrainer:
        super().train(mode)
        for m, side in self.modes.items():
            if side.train == "frozen":
                self.bound.encoders[m].eval()            # a frozen side embeds as at inference (no dropout)
        return self

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> PretrainOutput:
        sides = self.bound.sides
        parts = split_batch(batch, sides)
        z = {}
        for m in sides:
            if FROZEN_KEY in parts[m]:                      # a frozen side embedded once before training
                pooled = parts[m][FROZEN_KEY]
            else:
                with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable[m] > 0):
                    pooled = self.bound.encoders[m](parts[m]).pooled
            z[m] = self.bound.project(m, pooled)
        gather = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        anchor, scale = sides[0], self.bound.logit_scale
        terms = [clip_loss(z[anchor], z[m], scale, gather=gather) for m in sides[1:]]
        loss = torch.stack(terms).mean()
        metrics: dict[str, Any] = {"bind_loss": float(loss.detach()), "temperature": float(torch.exp(-scale.detach()))}
        for m, pretrainer in self.own.items():
            out = pretrainer(parts[m], generator)
            loss = loss + self.modes[m].weight * out.loss
            metrics[f"{m}_loss"] = float(out.loss.detach())
        metrics.update(self._signals(z))
        return PretrainOutput(loss, metrics)

    @torch.no_grad()
    def _signals(self, z: dict[str, torch.Tensor]) -> dict[str, float]:
        sides = self.bound.sides
        a, b = z[sides[0]].float(), z[sides[1]].float()
        sims = a @ b.T
        n = sims.shape[0]
        off = (sims.sum() - sims.diagonal().sum()) / max(n * (n - 1), 1)
        top1 = 0.5 * float((sims.argmax(dim=1) == torch.arange(n)).float().mean()
                           + (sims.argmax(dim=0) == torch.arange(n)).float().mean())
        return {"pair_gap": float(sims.diagonal().mean() - off), "batch_top1": top1,
                "embedding_std": min(float(normalised_std(v)) for v in z.values()),
                "mean_cosine": max(float(mean_pairwise_cosine(v)) for v in z.values())}

    def on_step(self, step: int) -> dict[str, float]:
        """The inverse temperature kept within ``[1, max_inverse_temperature]`` (CLIP clips it at 100); each side's own
        per-step schedules (EMA teachers, temperatures)."""
        with torch.no_grad():
            self.bound.logit_scale.clamp_(0.0, self.max_scale)
        out: dict[str, float] = {}
        for m, pretrainer in self.own.items():
            if hasattr(pretrainer, "on_step"):
                out.update({f"{m}_{k}": v for k, v in (pretrainer.on_step(step) or {}).items()})
        return out


@torch.no_grad()
def frozen_once(built: BuiltBind, *, skip_bad: bool, batch_size: int = 32) -> tuple[ExampleSet, PairProcessor]:
    """Every frozen side's pooled embeddings computed once, in eval mode, through its processor's inference view
    (no augmentation, no random crop), and training fed those vectors (:class:`PooledInput`): its steps then cost
    the other sides and the projections alone, and nothing is decoded twice. A pair whose frozen side cannot be
    read raises :class:`zoo.BadExample` naming the pair and the side, or with ``skip_bad`` is left out (counted)
    when its batch comes. Returns the training pairs and their processor (the built ones when no side is frozen)."""
    frozen = [m for m, s in built.recipe.sides.items() if s.train == "frozen"]
    if not frozen:
        return built.pairs, built.processor
    pairs, device = built.pairs, built.bound.logit_scale.device
    vectors: dict[str, list[Any]] = {m: [] for m in frozen}
    for m in frozen:
        encoder, one = built.bound.encoders[m].eval(), PairProcessor({m: built.bound.processors[m]})
        for lo in range(0, len(pairs), batch_size):
            idx = range(lo, min(lo + batch_size, len(pairs)))
            batch = process_records(one, [pairs.examples[i] for i in idx], [None] * len(idx),
                                    [pairs.name(i) for i in idx], skip_bad)
            meta = batch.pop("_meta")
            if meta["bad"] is not None:
                raise BadExample(*meta["bad"])
            kept = set(meta["keep"])                  # positions in the batch; the skip messages in their order
            dropped = iter(meta["skipped"])
            out = iter(encoder(split_batch({k: v.to(device) for k, v in batch.items()}, [m])[m]).pooled.cpu()
                       if meta["names"] else ())
            vectors[m] += [next(out) if k in kept else Absent(_field_reason(next(dropped, ""), m))
                           for k in range(len(idx))]
    examples = [{**ex, **{m: vectors[m][i] for m in frozen}} for i, ex in enumerate(pairs.examples)]
    logger.info("%s: the frozen side(s) %s embedded once (%d pairs); training reads those vectors",
                built.recipe.name, ", ".join(frozen), len(pairs))
    return (ExampleSet(examples, pairs.labels, [pairs.name(i) for i in range(len(pairs))], pairs.label_names),
            PairProcessor({m: PooledInput() if m in frozen else p for m, p in built.processor.processors.items()}))


def _field_reason(message: str, side: str) -> str:
    """A skip message "example NAME: field 'SIDE: F': REASON" → "F: REASON" (what a frozen side's Absent says)."""
    rest = message.partition(": field '")[2]
    if not rest:
        return "unreadable"
    field, _, reason = rest.partition("': ")
    return f"{field.removeprefix(side + ': ')}: {reason}"


# --- evaluation -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def embed_pairs(bound: BoundModel, pairs: ExampleSet, *, batch_size: int = 32, skip_bad: bool = True
                ) -> tuple[dict[str, torch.Tensor], list[int | None] | None, list[str]]:
    """Every side of every pair in the shared space (eval mode), the kept pairs' labels (None for a pair without
    one) and the skipped pairs' messages: a pair with a side that cannot be read is left out of every side and
    counted, or without ``skip_bad`` raises :class:`zoo.BadExample` naming the pair and the side."""
    bound.eval()
    processor = PairProcessor(bound.processors)
    device = bound.logit_scale.device
    out: dict[str, list[torch.Tensor]] = {m: [] for m in bound.sides}
    labels: list[int | None] = []
    skipped: list[str] = []
    for lo in range(0, len(pairs), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(pairs))))
        batch = process_records(processor, [pairs.examples[i] for i in idx], [pairs.label(i) for i in idx],
                                [pairs.name(i) for i in idx], skip_bad=skip_bad)
        meta = batch.pop("_meta")
        if meta["bad"] is not None:
            raise BadExample(*meta["bad"])
        skipped += meta["skipped"]
        if not meta["names"]:
            continue
        batch.pop("labels", None)
        labels += [pairs.label(idx[k]) for k in meta["keep"]]     # per kept pair: a pair may have no label
        parts = split_batch({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, bound.sides)
        for m in bound.sides:
            out[m].append(bound(m, parts[m]).cpu())
    z = {m: torch.cat(v) if v else torch.zeros(0, bound.dim) for m, v in out.items()}
    labelled = pairs.labels is not None and any(y is not None for y in labels)
    return z, (labels if labelled else None), skipped


def evaluate_pairs(bound: BoundModel, test: ExampleSet, train: ExampleSet | None = None, *,
                   png: str | Path | None = None, title: str = "", prototype_pairs: int = 500,
                   skip_bad: bool = True) -> dict[str, Any]:
    """Cross-modal retrieval on held-out pairs, every other side against the anchor in both directions, against
    chance; zero-shot classification through the other side (class prototypes from a seeded sample of at most
    ``prototype_pairs`` of ``train``'s pairs, else from the test pairs themselves) where the pairs are labelled; the
    similarity matrix as a PNG when ``png`` is given."""
    from .retrieval import chance_metrics, retrieval_metrics
    z, labels, skipped = embed_pairs(bound, test, skip_bad=skip_bad)
    n = len(next(iter(z.values())))
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 held-out pairs, {n} could be read ({len(skipped)} skipped)")
    anchor = bound.sides[0]
    report: dict[str, Any] = {"pairs": n, "skipped": len(skipped), "skipped_pairs": skipped[:20], "retrieval": {},
                              "chance": chance_metrics(n)}
    for m in bound.sides[1:]:
        report["retrieval"].update(retrieval_metrics(z[anchor], z[m], (anchor, m)))
    if labels is not None:
        report["zero_shot"] = _zero_shot(bound, z, labels, train, prototype_pairs)
    if png is not None:
        similarity_png(z[anchor], z[bound.sides[1]], labels, png, (anchor, bound.sides[1]), title)
    return report


def _zero_shot(bound: BoundModel, z: dict[str, torch.Tensor], labels: list[int | None], train: ExampleSet | None,
               prototype_pairs: int) -> dict[str, Any]:
    """Each labelled held-out pair classified through the other side by the nearest class prototype (from a seeded
    sample of ``train``'s labelled pairs, else from the test pairs), beside always naming the commonest class."""
    from .retrieval import prototype_accuracy
    has = torch.tensor([y is not None for y in labels])
    zq, yq = {m: v[has] for m, v in z.items()}, [y for y in labels if y is not None]
    ref, ref_labels, source = zq, yq, "test pairs"
    if train is not None and train.labels is not None:
        import numpy as np
        keep = [i for i in range(len(train)) if train.label(i) is not None]
        if len(keep) > prototype_pairs:
            keep = sorted(np.random.default_rng(0).choice(keep, prototype_pairs, replace=False).tolist())
        got, got_labels, _ = embed_pairs(bound, train.subset(keep))
        if got_labels is not None and len(got_labels):
            ref, ref_labels, source = got, got_labels, "train pairs"
    out: dict[str, Any] = {}
    anchor = bound.sides[0]
    for m in bound.sides[1:]:
        for q, o in ((anchor, m), (m, anchor)):
            out[f"{q}→{o} prototypes"] = prototype_accuracy(zq[q], yq, ref[o], ref_labels)
    out["prototypes_from"] = source
    out["majority_class"] = max(yq.count(c) for c in set(yq)) / len(yq)
    out["labelled_pairs"] = len(yq)
    return out


def similarity_png(a: torch.Tensor, b: torch.Tensor, labels: list[int] | None, path: str | Path,
                   names: tuple[str, str], title: str = "", limit: int = SIMILARITY_PAIRS) -> Path:
    """The cosine similarities of the first ``limit`` held-out pairs (sorted by label when labelled): pairs on the
    diagonal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    idx = list(range(min(limit, len(a))))
    if labels is not None:
        idx.sort(key=lambda i: -1 if labels[i] is None else labels[i])
    sims = (a[idx] @ b[idx].T).numpy()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(sims, cmap="viridis", vmin=-1, vmax=1)
    ax.set_xlabel(f"{names[1]} (held-out pair)")
    ax.set_ylabel(f"{names[0]} (held-out pair)")
    ax.set_title((title or f"{names[0]} ↔ {names[1]}: cosine similarity") + f" ({len(idx)} of {len(a)} pairs)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# --- the run --------------------------------------------------------------------------------------------------------
def bind(recipe: BindRecipe, output_dir: str | Path, *, resume: bool = True, command: str | None = None,
         report_to: str | tuple[str, ...] | None = None, hooks: tuple[Hook, ...] = (),
         pairs: ExampleSet | None = None, test_pairs: ExampleSet | None = None) -> dict[str, Any]:
    """Bind the recipe's sides. Writes ``<output>/model`` (the bound model: config, projections, each side's zoo
    folder, card with the retrieval results and the similarity matrix), ``metrics.jsonl``, ``loss_curve.png``,
    ``checkpoints/``, ``train_summary.json`` and, with ``evaluate.test`` (or ``test_pairs``), ``evaluation.json``.
    ``pairs``/``test_pairs``: paired examples made in Python instead of the recipe's data specs."""
    output_dir = Path(output_dir)
    for m, side in recipe.sides.items():
        if side.init and Path(side.init).exists() and Path(side.init).resolve().is_relative_to(output_dir.resolve()):
            raise ValueError(f"bind.sides.{m}.init {side.init} lies inside the run folder {output_dir}: the run would "
                             "overwrite the model it starts from; give another --output")
    trackers = TrackerHook(report_to, output_dir, name=recipe.name, job="bind")
    ctx = setup_run(recipe.train, output_dir)
    built = build_bind(recipe, pairs=pairs)
    test = held_out(recipe, built.pairs, test_pairs)           # checked before any training
    for where, some in (("data.train", built.pairs), ("evaluate.test", test)):
        refuse_absent(some, where, recipe.train.skip_bad)
    cfg = fit_batch(recipe.train, built.pairs, "bind")
    if cfg.batch_size < 2:
        raise ValueError(f"{recipe.name}: InfoNCE needs at least 2 pairs per batch (the others are the negatives)")
    stream = TrainData(*frozen_once(built, skip_bad=cfg.skip_bad), cfg, rank=ctx.info.rank, world=ctx.info.world,
                       pin_memory=ctx.device.type == "cuda")
    result = train(built.pretrainer, stream, cfg, output_dir, resume=resume, desc=recipe.name, ctx=ctx,
                   hooks=(*hooks, trackers), fingerprint=recipe.to_dict(), find_unused_parameters=True)
    summary = {"recipe": recipe.name, "steps": result.steps, "stopped_early": result.stopped_early,
               "resumed_from": result.resumed_from, "wall_seconds": round(result.wall_seconds, 2),
               "final_loss": result.final_loss, "hardware": result.device, "seed": cfg.seed,
               "pairs": len(built.pairs), "skipped": result.skipped, "skipped_visits": result.skipped_visits,
               "skipped_examples": result.skipped_examples[:20],
               "world_size": ctx.info.world, "collapse_alarm": result.collapse, "collapse_signals": result.signals,
               "temperature": built.bound.temperature,
               "trainable_parameters": built.pretrainer.trainable}
    if ctx.info.main:
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if not result.stopped_early:
            _publish(built, recipe, summary, output_dir, command, test, cfg.skip_bad)
    summary["model_dir"] = str(output_dir / "model") if (output_dir / "model").is_dir() else None
    trackers.finish(summary=summary)
    if stopped_by_alarm(result, cfg):
        raise RuntimeError(f"{recipe.name}: " + collapse_stop_message(result.collapse, output_dir,
                                                                       "nothing is published"))
    return summary


def refuse_absent(pairs: ExampleSet | None, where: str, skip_bad: bool) -> None:
    """A pair whose side names an entity the lookup data lacks is known when the pairs load: without ``skip_bad``
    it is refused then, naming the pair and the side, rather than when training or evaluation first meets it."""
    if pairs is None or skip_bad:
        return
    for i, ex in enumerate(pairs.examples):
        for side, value in ex.items():
            if isinstance(value, Absent):
                raise BadExample(pairs.name(i), side, f"{value.why} ({where}; --set train.skip_bad=true skips "
                                 "such pairs and counts them)")


def held_out(recipe: BindRecipe, train: ExampleSet, given: ExampleSet | None) -> ExampleSet | None:
    """The held-out pairs (``test_pairs``, else ``evaluate.test``), refused before training when fewer than 2 or
    when any of them is a training pair (by name): retrieval among training pairs is not held out."""
    test = given if given is not None else (load_pairs(recipe.evaluate["test"], list(recipe.sides))
                                            if "test" in recipe.evaluate else None)
    if test is None:
        return None
    if len(test) < 2:
        raise ValueError(f"{recipe.name}: evaluate.test holds {len(test)} pair(s); retrieval needs at least 2")
    shared = sorted(set(test.names or []) & set(train.names or []))
    if shared:
        raise ValueError(f"{recipe.name}: {len(shared)} of the {len(test)} held-out pairs are training pairs (e.g. "
                         f"{shared[0]}): evaluate.test must hold other pairs (another split)")
    return test


def _publish(built: BuiltBind, recipe: BindRecipe, summary: dict[str, Any], output_dir: Path,
             command: str | None, test: ExampleSet | None, skip_bad: bool) -> None:
    from zoo.hub import non_finite
    from zoo.paths import portable
    bad = non_finite(built.pretrainer.state_dict())
    if bad or summary["final_loss"] is None:
        raise RuntimeError(f"binding diverged (final loss {summary['final_loss']}, non-finite weights in {bad[:5]}): "
                           f"the model is not published; lower train.lr. Checkpoints and metrics are in {output_dir}")
    (output_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    folder = output_dir / "model"
    sides_pretraining = {m: {"recipe": portable(b.recipe.to_dict()), "bound_in": recipe.name,
                             **({"continued_from": str(recipe.sides[m].init)} if recipe.sides[m].init else {})}
                         for m, b in built.sides.items()}
    built.bound.save_pretrained(folder, processors=built.bound.processors,
                                pretraining={"recipe": portable(recipe.to_dict()),
                                             "training": _training_facts(summary, recipe),
                                             "command": command or f"zoo bind {recipe.name}"},
                                sides_pretraining=sides_pretraining)
    report = None
    if test is not None:
        report = evaluate_pairs(built.bound, test, built.pairs if built.pairs.labels is not None else None,
                                png=folder / "similarity.png", title=f"{recipe.name}: held-out pairs",
                                skip_bad=skip_bad)
        (output_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
        summary["evaluation"] = report
    from .bind_card import write_bound_card
    write_bound_card(folder, recipe, summary, report)


def _training_facts(summary: dict[str, Any], recipe: BindRecipe) -> dict[str, Any]:
    return {"pairs": f"{summary['pairs'] - summary['skipped']} trained on ({summary['pairs']} read, "
                     f"{summary['skipped']} skipped)", "steps": summary["steps"],
            "batch size": recipe.train.batch_size, "learning rate": recipe.train.lr,
            "wall time (s)": summary["wall_seconds"], "hardware": summary["hardware"], "seed": summary["seed"],
            "temperature (end)": round(summary["temperature"], 4),
            "sides": {m: f"{s.init or 'random init (' + str(s.recipe) + ')'}, train {s.train}"
                      + (f", own objective x{s.weight:g}" if s.weight else "") for m, s in recipe.sides.items()},
            **collapse_facts(summary.get("collapse_signals"), summary.get("collapse_alarm"))}
