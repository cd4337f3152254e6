"""Model cards (Hugging Face conventions): YAML metadata with ``model-index`` + training facts + usage."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hub import CARD_NAME, CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME, FormatError
from .registry import get_modality

__all__ = ["template_path", "render_card", "write_card", "existing_results", "weights_fingerprint", "FINGERPRINT_KEY"]

logger = logging.getLogger(__name__)

TEMPLATE = "template.md"
#: the card's YAML key recording the weights it was written for (docs/reliability.md, "a card is its folder's")
FINGERPRINT_KEY = "zoo_weights_sha256"
#: the weight files a card describes: the encoder's, and a fine-tuned classifier's head
_FINGERPRINTED = (WEIGHTS_NAME, "head.safetensors")


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
    fingerprint = weights_fingerprint(folder)
    own = _own_card(folder, fingerprint)          # the current card, only if it was written for these weights
    name = repo_id or (own[0].data.model_name if own else None) or config.get("pretraining", {}).get(
        "recipe", {}).get("name") or folder.name
    if results is None:
        results = _results(own[0]) if own else []
    if comparison is None:
        comparison = _comparison(own[1]) if own else ""
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
                         model_name=name, eval_results=evals or None, **{FINGERPRINT_KEY: fingerprint})
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
        comparison=comparison,
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


def weights_fingerprint(folder: str | Path) -> str:
    """The sha256 of the folder's weight files (``model.safetensors``, and ``head.safetensors`` where there is one):
    what a card records, so that a re-rendering keeps only its own facts (docs/reliability.md)."""
    digest = hashlib.sha256()
    for name in _FINGERPRINTED:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _own_card(folder: Path, fingerprint: str) -> tuple[ModelCard, str] | None:
    """The folder's current card and its text when it records ``fingerprint`` (written for these weights); else
    ``None``, with a log line when a card was there: another model's card (or one without a fingerprint) gives
    nothing to a new one, neither its name nor its results nor its comparison."""
    path = folder / CARD_NAME
    if not path.is_file():
        return None
    card = load_card(path)
    recorded = card.data.to_dict().get(FINGERPRINT_KEY)
    if recorded == fingerprint:
        return card, path.read_text()
    why = "records no weights fingerprint" if recorded is None else "was written for other weights"
    logger.warning("%s %s: its name (%s), results and comparison are not kept; the card is rendered from the "
                   "folder's own config and results", path, why, card.data.model_name)
    return None


COMPARISON_HEADING = "### Compared with baselines"


def _comparison(text: str) -> str:
    """The comparison section of a card's text, to keep on re-rendering."""
    if COMPARISON_HEADING not in text:
        return ""
    return COMPARISON_HEADING + text.split(COMPARISON_HEADING, 1)[1].split("\n## ", 1)[0].rstrip()


def _results(card: ModelCard) -> list[dict[str, Any]]:
    return [{"task": r.task_type, "task_name": r.task_name, "dataset": r.dataset_type,
             "dataset_name": r.dataset_name, "split": r.dataset_split, "metric": r.metric_type,
             "metric_name": r.metric_name, "value": r.metric_value}
            for r in (card.data.eval_results or [])]


def existing_results(folder: str | Path) -> list[dict[str, Any]]:
    """The results recorded in a folder's current card (its ``model-index``), to keep on re-rendering: none when
    the card was not written for the folder's weights."""
    folder = Path(folder)
    if not (folder / CARD_NAME).is_file():
        return []
    own = _own_card(folder, weights_fingerprint(folder))
    return _results(own[0]) if own else []


def write_card(folder: str | Path, **kwargs: Any) -> Path:
    """Render the card and write it as the folder's ``README.md``."""
    card = render_card(folder, **kwargs)
    path = Path(folder) / CARD_NAME
    card.save(str(path))
    return path
