"""Model cards (Hugging Face conventions): YAML metadata with ``model-index`` + training facts + usage."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hub import CARD_NAME, CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME, FormatError
from .registry import get_modality

__all__ = ["template_path", "render_card", "write_card", "existing_results"]

TEMPLATE = "template.md"


def template_path() -> Path:
    """The card template: ``model_cards/`` of a source checkout, else the copy installed as data."""
    for base in (Path(__file__).resolve().parents[1] / "model_cards",
                 Path(sys.prefix) / "share" / "ssl-zoo" / "model_cards"):
        if (base / TEMPLATE).is_file():
            return base / TEMPLATE
    raise FileNotFoundError("model card template not found (model_cards/template.md)")


def _count_parameters(folder: Path) -> str:
    from safetensors import safe_open
    with safe_open(str(folder / WEIGHTS_NAME), "pt") as fh:
        n = sum(_prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def _prod(shape: list[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def render_card(folder: str | Path, *, repo_id: str | None = None, results: list[dict[str, Any]] | None = None,
                training: dict[str, Any] | None = None, datasets: list[str] | None = None,
                license: str = "apache-2.0", summary: str = "", method: str = "", limits: str = "",
                tags: list[str] | None = None, comparison: str | None = None) -> ModelCard:
    """Render the card of a zoo folder.

    ``results``: dicts with ``task``, ``dataset``, ``metric``, ``value`` and optionally ``split``,
    ``task_name``, ``dataset_name``; they become ``model-index`` entries and the results table.
    """
    folder = Path(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    name = repo_id or _existing_name(folder) or config.get("pretraining", {}).get("recipe", {}).get(
        "name") or folder.name
    if results is None:
        results = existing_results(folder)
    pretraining = config.get("pretraining", {})
    finetuning = _finetuning(folder)
    training = training or finetuning.get("training") or pretraining.get("training", {})
    evals = [EvalResult(task_type=r["task"], task_name=r.get("task_name", r["task"]),
                        dataset_type=r["dataset"], dataset_name=r.get("dataset_name", r["dataset"]),
                        dataset_split=r.get("split"), metric_type=r["metric"],
                        metric_name=r.get("metric_name", r["metric"]), metric_value=r["value"])
             for r in results]
    data = ModelCardData(library_name="ssl-zoo", license=license, datasets=datasets or None,
                         tags=["ssl-zoo", "self-supervised", config["modality"], config["architecture"],
                               *(tags or [])],
                         model_name=name, eval_results=evals or None)
    rows = "\n".join(f"| {r.get('task_name', r['task'])} | {r.get('dataset_name', r['dataset'])} "
                     f"| {r.get('split', '')} | {r.get('metric_name', r['metric'])} | {r['value']} |"
                     for r in results)
    table = ("| task | dataset | split | metric | value |\n| --- | --- | --- | --- | --- |\n" + rows
             if rows else "No evaluation has been recorded for this model yet.")
    try:
        example = get_modality(config["modality"]).usage_example
    except Exception:
        example = ""
    example = example or "example = ...  # one raw input of this modality"
    if (folder / "classifier.json").is_file():          # a fine-tuned classifier (zoo finetune)
        usage = (f"import zoo\n\nclassifier = zoo.AutoClassifier.from_pretrained({name!r})\n"
                 f"processor = classifier.processor\n{example}\n"
                 + ("print(classifier.predict([example]))  # [[{'label': target, 'value': ...}]]"
                    if json.loads((folder / "classifier.json").read_text()).get("task") == "regression"
                    else "print(classifier.predict([example], top_k=3))  # [[{'label': ..., 'score': ...}, ...]]"))
    else:
        usage = (f"import zoo\n\nencoder = zoo.AutoEncoder.from_pretrained({name!r})\n"
                 f"processor = zoo.AutoProcessor.from_pretrained({name!r})\n{example}\n"
                 "out = encoder(processor.collate([processor(example)]))\n"
                 "print(out.pooled.shape)  # also out.tokens [B, N, D] and out.padding_mask [B, N]")
    training_table = "\n".join(f"| {k} | {v} |" for k, v in training.items()) or "| (not recorded) | |"
    recorded = pretraining.get("recipe", {})
    recipe = recorded.get("name", "(not recorded)")
    reproduce = finetuning.get("command") or pretraining.get("command") or f"zoo pretrain {recipe}"
    own = finetuning.get("data") or pretraining.get("data")
    if own and not summary:                       # the recipe's own description names the recipe's data
        verb = "fine-tuned" if finetuning else "pretrained"
        article = "An" if config["modality"][:1] in "aeiou" else "A"
        summary = (f"{article} {config['modality']} {'classifier' if finetuning else 'encoder'} "
                   f"(`{config['architecture']}`) {verb} with ssl-zoo on `{own}`, from the recipe `{recipe}`.")
    if not method:
        try:
            method = get_modality(config["modality"]).description
        except Exception:
            method = config["architecture"]
    summary = summary or recorded.get("description", "")
    return ModelCard.from_template(
        data, template_path=str(template_path()), model_name=name, modality=config["modality"],
        architecture=config["architecture"], parameters=_count_parameters(folder),
        summary=summary or f"A self-supervised {config['modality']} encoder trained with ssl-zoo.",
        method=method, usage=usage, results_table=table,
        training_table=training_table, recipe=recipe, reproduce=reproduce,
        comparison=comparison if comparison is not None else _existing_comparison(folder),
        limits=(limits or "Trained on the data named above only; check the results on your own data.")
        + _long_inputs(folder, config["modality"]))


def _long_inputs(folder: Path, modality: str) -> str:
    """The sentence saying what the model sees of a long input (``Processor.long_inputs``, from the folder's
    ``preprocessor.json``; docs/architecture.md, "Long inputs"), or ``""``."""
    path = folder / PREPROCESSOR_NAME
    if not path.is_file():
        return ""
    try:
        said = get_modality(modality).processor.from_dict(json.loads(path.read_text())).long_inputs()
    except Exception:            # noqa: BLE001 - a processor this install cannot load: the card says nothing
        return ""
    return f"\n\nLong inputs: {said}." if said else ""


def _finetuning(folder: Path) -> dict[str, Any]:
    """What ``classifier.json`` records of the fine-tuning run (empty for an encoder folder)."""
    path = folder / "classifier.json"
    return json.loads(path.read_text()).get("finetuning", {}) if path.is_file() else {}


def load_card(path: str | Path) -> ModelCard:
    """A model card, or a FormatError naming the file when its YAML front matter does not parse."""
    try:
        return ModelCard.load(str(path))
    except Exception as err:        # yaml.YAMLError, ValueError: huggingface_hub wraps both loosely
        raise FormatError(f"{path}: the card's YAML metadata does not parse ({str(err).splitlines()[0]})") from None


def _existing_name(folder: Path) -> str | None:
    path = folder / CARD_NAME
    return load_card(path).data.model_name if path.is_file() else None


COMPARISON_HEADING = "### Compared with baselines"


def _existing_comparison(folder: Path) -> str:
    """Keep the comparison section of the current card when re-rendering."""
    path = folder / CARD_NAME
    if not path.is_file():
        return ""
    text = path.read_text()
    if COMPARISON_HEADING not in text:
        return ""
    return COMPARISON_HEADING + text.split(COMPARISON_HEADING, 1)[1].split("\n## ", 1)[0].rstrip()


def existing_results(folder: str | Path) -> list[dict[str, Any]]:
    """The results recorded in a folder's current card (its ``model-index``), to keep on re-rendering."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return []
    card = load_card(path)
    return [{"task": r.task_type, "task_name": r.task_name, "dataset": r.dataset_type,
             "dataset_name": r.dataset_name, "split": r.dataset_split, "metric": r.metric_type,
             "metric_name": r.metric_name, "value": r.metric_value}
            for r in (card.data.eval_results or [])]


def write_card(folder: str | Path, **kwargs: Any) -> Path:
    """Render the card and write it as the folder's ``README.md``."""
    card = render_card(folder, **kwargs)
    path = Path(folder) / CARD_NAME
    card.save(str(path))
    return path
