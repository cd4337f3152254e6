"""Recipe → modality plugin → processor, pretrainer, data → engine → a hub-ready model folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from zoo import get_modality

from .engine import fit, pick_device
from .recipe import TrainConfig

__all__ = ["pretrain", "build_processor"]


def build_processor(modality: Any, recipe: dict[str, Any]) -> Any:
    proc_cls = modality.processor
    return proc_cls(proc_cls.config_class.from_dict(recipe.get("processor"), where="recipe:processor"))


def pretrain(recipe: dict[str, Any], output_dir: str | Path, *, resume: bool = True) -> dict[str, Any]:
    """Pretrain from a loaded recipe. Writes ``<output>/model`` (config, weights, preprocessor, card),
    ``metrics.jsonl``, ``loss_curve.png``, ``checkpoints/`` and ``train_summary.json``."""
    output_dir = Path(output_dir)
    modality = get_modality(recipe["modality"])
    arch = modality.architecture(recipe["architecture"])
    cfg = TrainConfig.from_dict(recipe["train"], where="recipe:train")
    if "train" not in recipe["data"]:
        raise ValueError(f"recipe {recipe['name']!r} has no data.train section")
    data = modality.load_data(recipe["data"]["train"])
    processor = build_processor(modality, recipe).fit(data.examples)
    items, skipped = processor.process(data.examples, skip_bad=cfg.skip_bad, names=data.names)
    if not items:
        raise ValueError("no usable training example (all were skipped)")
    torch.manual_seed(cfg.seed)  # the initial weights are part of what a seed reproduces
    enc_cfg = {**(recipe.get("encoder") or {}), **processor.encoder_config()}
    encoder = arch.encoder(arch.config.from_dict(enc_cfg, where="recipe:encoder"))
    pre_cfg = arch.pretraining.from_dict(recipe.get("pretraining"), where="recipe:pretraining")
    model = arch.pretrainer(encoder, pre_cfg, total_steps=cfg.steps)
    result = fit(model, items, processor.collate, cfg, output_dir, resume=resume, desc=recipe["name"])
    summary = {"recipe": recipe["name"], "steps": result.steps, "stopped_early": result.stopped_early,
               "resumed_from": result.resumed_from, "wall_seconds": round(result.wall_seconds, 2),
               "final_loss": result.final_loss, "hardware": result.device, "seed": cfg.seed,
               "examples": len(items), "skipped": len(skipped), "skipped_examples": skipped[:20],
               "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if int(os.environ.get("RANK", "0")) == 0:
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if not result.stopped_early:
            clean = {k: v for k, v in recipe.items() if not k.startswith("_")}
            encoder.save_pretrained(output_dir / "model", processor=processor,
                                    pretraining={"recipe": clean, "objective": pre_cfg.to_dict(),
                                                 "training": training_facts(summary, cfg)})
            from zoo.cards import write_card
            write_card(output_dir / "model", repo_id=recipe["name"])
    summary["model_dir"] = str(output_dir / "model")
    summary["device"] = str(pick_device(cfg.device))
    return summary


def training_facts(summary: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    return {"data": f"{summary['examples']} examples ({summary['skipped']} skipped)",
            "steps": summary["steps"], "batch size": cfg.batch_size, "learning rate": cfg.lr,
            "wall time (s)": summary["wall_seconds"], "hardware": summary["hardware"], "seed": summary["seed"],
            "processes": summary["world_size"]}
