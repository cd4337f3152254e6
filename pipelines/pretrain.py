"""Recipe → builder (data, processor, pretrainer) → streaming data → engine → a hub-ready model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.paths import portable

from .build import build, build_processor
from .data import TrainData
from .engine import peak_rss_mib, setup_run, train
from .recipe import Recipe, TrainConfig

__all__ = ["pretrain", "build_processor", "training_facts"]


def pretrain(recipe: Recipe, output_dir: str | Path, *, resume: bool = True) -> dict[str, Any]:
    """Pretrain from a parsed recipe. Writes ``<output>/model`` (config, weights, preprocessor, card),
    ``metrics.jsonl``, ``loss_curve.png``, ``checkpoints/`` and ``train_summary.json``."""
    output_dir = Path(output_dir)
    cfg = recipe.train
    ctx = setup_run(cfg, output_dir)
    built = build(recipe)
    data = TrainData(built.data, built.processor, cfg, rank=ctx.info.rank, world=ctx.info.world,
                     pin_memory=ctx.device.type == "cuda")
    result = train(built.pretrainer, data, cfg, output_dir, resume=resume, desc=recipe.name, ctx=ctx,
                   fingerprint=recipe.to_dict())
    rss = peak_rss_mib()
    summary = {"recipe": recipe.name, "steps": result.steps, "stopped_early": result.stopped_early,
               "resumed_from": result.resumed_from, "wall_seconds": round(result.wall_seconds, 2),
               "final_loss": result.final_loss, "hardware": result.device, "seed": cfg.seed,
               "examples": data.size if data.size is not None else "streamed", "skipped": result.skipped,
               "skipped_examples": result.skipped_examples[:20], "world_size": ctx.info.world,
               "num_workers": cfg.num_workers, "data_wait_seconds": round(result.data_wait_seconds, 3),
               "peak_rss_mib": round(rss["main"], 1), "peak_rss_workers_mib": round(rss["workers"], 1)}
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
            built.encoder.save_pretrained(output_dir / "model", processor=built.processor,
                                          pretraining={"recipe": portable(recipe.to_dict()),
                                                       "objective": built.pretraining.to_dict(),
                                                       "training": training_facts(summary, cfg)})
            from zoo.cards import write_card
            write_card(output_dir / "model", repo_id=recipe.name)
    summary["model_dir"] = str(output_dir / "model")
    summary["device"] = str(ctx.device)
    return summary


def training_facts(summary: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    examples = summary["examples"]
    data = f"{examples} examples" if isinstance(examples, int) else "a streamed data set"
    return {"data": f"{data} ({summary['skipped']} skipped)", "steps": summary["steps"],
            "batch size": cfg.batch_size, "learning rate": cfg.lr, "wall time (s)": summary["wall_seconds"],
            "hardware": summary["hardware"], "seed": summary["seed"], "processes": summary["world_size"]}
