"""Recipe → builder (data, processor, pretrainer) → streaming data → engine → a hub-ready model folder."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from zoo import get_modality
from zoo.paths import portable

from .build import build, build_processor
from .checkpoint import data_fingerprint
from .collapse import collapse_facts, collapse_stop_message, stopped_by_alarm
from .data import TrainData, fit_batch
from .data_spec import READING_KEYS, command_arg, data_spec, describe_data
from .distributed import peak_rss_mib
from .engine import setup_run, train
from .hooks import Hook
from .init import init_label
from .quality import QualityHook, plot_quality, quality_facts, quality_probe
from .recipe import Recipe, TrainConfig, parse_recipe
from .trackers import TrackerHook

logger = logging.getLogger(__name__)

__all__ = ["pretrain", "build_processor", "training_facts", "with_own_data"]


def with_own_data(recipe: Recipe, data: str, *, label_column: str | None = None, split: str | None = None,
                  exclude: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The recipe pretraining on ``--data`` instead of its own data (the spec from :func:`data_spec`, as
    fine-tuning reads it). A ``label_column`` and the ``exclude`` columns (ids) are left out of the inputs (a
    processor's ``exclude``)."""
    modality = get_modality(recipe.modality)
    proc_fields = {f.name: f for f in fields(modality.processor.config_class)}
    entity = recipe.processor.get("entity_column", getattr(proc_fields.get("entity_column"), "default", None))
    raw = recipe.to_dict()
    raw["data"] = {"train": data_spec(modality, data, label_column=label_column, split=split, entity_column=entity)}
    for key in READING_KEYS:                     # how the recipe reads its data applies to --data too
        value = (recipe.data.get("train") or {}).get(key)
        if value is not None:
            raw["data"]["train"][key] = value
            logger.info("--data %s: read with the recipe's data.train.%s = %s (--set data.train.%s=null: without "
                        "it)", describe_data(data), key, json.dumps(value), key)
    left_out = [c for c in (label_column, *exclude) if c]
    if exclude and "exclude" not in proc_fields:
        raise ValueError(f"the {modality.name} processor reads no named columns: --exclude does not apply")
    if left_out and "exclude" in proc_fields:
        raw["processor"] = {**raw.get("processor", {}),
                            "exclude": sorted({*raw.get("processor", {}).get("exclude", []), *left_out})}
    raw.pop("evaluate", None)                    # the recipe's evaluation data is not the user's
    raw["description"] = ""
    return parse_recipe(raw, recipe.path or recipe.name)


def _fingerprint(recipe: Recipe, init: dict[str, Any], data: Any) -> dict[str, Any]:
    """What a resume must match: the recipe, the ``--init`` model and the training examples
    (:func:`~.checkpoint.data_fingerprint`, where they are listed)."""
    record = data_fingerprint(data)
    return {**recipe.to_dict(), **init, **({"examples": record} if record is not None else {})}


def pretrain(recipe: Recipe, output_dir: str | Path, *, resume: bool = True, command: str | None = None,
             data: str | None = None, init: str | None = None, refit: bool = False,
             report_to: str | tuple[str, ...] | None = None, hooks: tuple[Hook, ...] = (),
             examples: Any = None) -> dict[str, Any]:
    """Pretrain from a parsed recipe. Writes ``<output>/model`` (config, weights, preprocessor, card),
    ``metrics.jsonl``, ``loss_curve.png``, ``checkpoints/`` and ``train_summary.json``. ``data``: the ``--data``
    the recipe was pointed at (:func:`with_own_data`), named on the card; ``command``: what reproduces the run.
    ``init``: continue pretraining from that model (:mod:`.init`; ``refit``: fit the processor anew), recorded on
    the card. ``report_to``: experiment trackers (:mod:`.trackers`). ``hooks``: more of the loop's hooks, after the
    online quality probe's (e.g. a benchmark's snapshots). ``examples``: the training examples made in Python (an
    :class:`~zoo.ExampleSet`, e.g. one side of paired data) instead of the recipe's ``data.train``."""
    output_dir = Path(output_dir)
    if init and Path(init).exists() and Path(init).resolve().is_relative_to(output_dir.resolve()):
        raise ValueError(f"--init {init} lies inside the run folder {output_dir}: the run would overwrite the "
                         "model it continues from; give another --output")
    trackers = TrackerHook(report_to, output_dir, name=recipe.name)     # a missing tracker stops here, before work
    ctx = setup_run(recipe.train, output_dir)
    built = build(recipe, data=examples, init=init, refit=refit)
    recipe = built.recipe                         # with --init: the model's encoder and processor settings
    origin = init_label(init) if init else None
    cfg = fit_batch(recipe.train, built.data, "pretrain")
    stream = TrainData(built.data, built.processor, cfg, rank=ctx.info.rank, world=ctx.info.world,
                       pin_memory=ctx.device.type == "cuda")
    quality = _quality_hook(built, cfg)
    result = train(built.pretrainer, stream, cfg, output_dir, resume=resume, desc=recipe.name, ctx=ctx,
                   hooks=((quality,) if quality else ()) + tuple(hooks) + (trackers,),
                   fingerprint=_fingerprint(recipe, {"init": origin, "refit": refit} if init else {}, built.data))
    summary = _run_summary(recipe, result, cfg, stream, ctx.info.world, quality,
                           {"continued_from": origin, "refit": refit} if init else {})
    if ctx.info.main:
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if not result.stopped_early:
            from zoo.hub import non_finite
            bad = non_finite(built.encoder.state_dict())
            if bad or result.final_loss is None:
                raise RuntimeError(f"training diverged (final loss {result.final_loss}, non-finite weights in "
                                   f"{bad[:5]}): the model is not published; lower train.lr or check the data. "
                                   f"Checkpoints and metrics are in {output_dir}")
            # config.json (published) records the recipe with portable paths; the run folder keeps it as run
            (output_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
            own = describe_data(data) if data else None
            curve = "quality_curve.png" if quality and len(quality.history) > 1 else None
            built.encoder.save_pretrained(output_dir / "model", processor=built.processor,
                                          pretraining={"recipe": portable(recipe.to_dict()),
                                                       "training": training_facts(summary, cfg, own,
                                                                                  recipe.data.get("train"), curve),
                                                       **({"continued_from": origin} if init else {}),
                                                       "command": command or f"zoo pretrain {recipe.name}",
                                                       **({"data": own} if own else {})})
            if curve:
                plot_quality(quality.history, output_dir / "model" / curve, title=f"{recipe.name}: online quality")
            from zoo.cards import write_card
            write_card(output_dir / "model", repo_id=recipe.name if not own else command_arg(output_dir / "model"))
    summary["model_dir"] = str(output_dir / "model") if (output_dir / "model").is_dir() else None
    summary["device"] = str(ctx.device)
    trackers.finish(summary=summary)             # the card's figures, then the trackers closed
    if stopped_by_alarm(result, cfg):
        raise RuntimeError(f"{recipe.name}: " + collapse_stop_message(result.collapse, output_dir,
                                                                       "nothing is published"))
    return summary


def _run_summary(recipe: Recipe, result: Any, cfg: TrainConfig, stream: TrainData, world: int,
                 quality: QualityHook | None, continued: dict[str, Any]) -> dict[str, Any]:
    """``train_summary.json``: what ran, what it read and skipped, its memory, collapse signals and online quality."""
    rss = peak_rss_mib()
    return {"recipe": recipe.name, "steps": result.steps, "stopped_early": result.stopped_early,
            "resumed_from": result.resumed_from, "wall_seconds": round(result.wall_seconds, 2),
            "final_loss": result.final_loss, "hardware": result.device, "seed": cfg.seed,
            "examples": stream.size if stream.size is not None else "streamed", "skipped": result.skipped,
            "skipped_visits": result.skipped_visits,
            "skipped_examples": result.skipped_examples[:20], "world_size": world,
            "num_workers": cfg.num_workers, "data_wait_seconds": round(result.data_wait_seconds, 3),
            "peak_rss_mib": round(rss["main"], 1), "peak_rss_workers_mib": round(rss["workers"], 1),
            "collapse_alarm": result.collapse, "collapse_signals": result.signals,
            **({"quality": {"history": quality.history, "on": quality.probe.source}} if quality else {}),
            **continued}


def _quality_hook(built: Any, cfg: TrainConfig) -> QualityHook | None:
    """The run's online quality probe (:mod:`.quality`), or ``None`` with ``train.quality_every=0``. Evaluation
    data that cannot be read leaves RankMe on the training data, with a warning."""
    if not cfg.quality_every:
        return None
    spec = built.recipe.evaluate
    try:
        probe = quality_probe(built.modality, built.processor, built.data, spec, cfg.quality_examples, cfg.seed,
                              skip_bad=cfg.skip_bad)
    except (OSError, ValueError, KeyError) as err:
        logger.warning("%s: the online k-NN probe is off (its evaluation data: %s); RankMe reads the training data",
                       built.recipe.name, err)
        probe = quality_probe(built.modality, built.processor, built.data, {}, cfg.quality_examples, cfg.seed,
                              skip_bad=cfg.skip_bad)
    return QualityHook(probe, built.encoder, cfg.quality_every)


def training_facts(summary: dict[str, Any], cfg: TrainConfig, data_name: str | None = None,
                   spec: dict[str, Any] | None = None, quality_curve: str | None = None) -> dict[str, Any]:
    """The card's training table: what ran, the data read as ``spec`` (the recipe's ``data.train``) says."""
    examples = summary["examples"]
    data = f"{examples} examples" if isinstance(examples, int) else "a streamed data set"
    if data_name:
        data = f"{data_name}: {data}"
    return {"data": f"{data} ({summary['skipped']} skipped)", "steps": summary["steps"],
            "batch size": cfg.batch_size, "learning rate": cfg.lr, "wall time (s)": summary["wall_seconds"],
            "hardware": summary["hardware"], "seed": summary["seed"], "processes": summary["world_size"],
            **{f"data.train.{k}": json.dumps(v) for k, v in (spec or {}).items() if k in READING_KEYS and v},
            **({"continued from": summary["continued_from"] + (" (processor refitted)" if summary["refit"] else
                                                               " (its processor)")}
               if summary.get("continued_from") else {}),
            **collapse_facts(summary.get("collapse_signals"), summary.get("collapse_alarm")),
            **(quality_facts(summary["quality"]["history"], summary["quality"]["on"], quality_curve)
               if summary.get("quality") else {})}

