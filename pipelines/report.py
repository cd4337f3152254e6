"""Reporting shared by fine-tuning and evaluation: predictions of a labelled set (one batch loop), metrics
(accuracy, macro-F1, confusion matrix; MAE, RMSE, R²), the confusion-matrix and predicted-vs-true plots,
``predictions.jsonl`` and the fine-tuned model's card."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import BadExample, Classifier, ExampleSet, Processor, StreamSet
from zoo.cards import COMPARISON_HEADING
from zoo.cards import write_card as write_card_file

from .data import iter_batches, iter_records, label_tensor, readable

__all__ = ["classification_metrics", "regression_metrics", "task_metrics", "predict_set", "confusion_png",
           "scatter_png", "embedding_map",
           "baseline_markdown", "write_predictions", "finetune_card", "record_evaluation",
           "protocol_markdown", "comparison_markdown", "LOWER_IS_BETTER"]


def classification_metrics(y: np.ndarray, pred: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, the confusion matrix (rows: true, columns: predicted) and per-class precision,
    recall, F1 and support."""
    c = len(label_names)
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(c), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(c), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(c), where=precision + recall > 0)
    present = cm.sum(1) > 0
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "macro_f1": float(f1[present].mean()) if present.any()
            else 0.0, "confusion_matrix": cm.tolist(),
            "per_class": {n: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                              "support": int(cm[i].sum())} for i, n in enumerate(label_names)}}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Mean absolute error, root mean squared error and R² (1 − SSE / the target's sum of squares)."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    err = pred - y
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": 1.0 - float((err ** 2).sum()) / total if total > 0 else 0.0}


LOWER_IS_BETTER = {"rmse", "mae"}


@torch.no_grad()
def predict_set(clf: Classifier, processor: Processor, data: ExampleSet | StreamSet, *, num_workers: int = 0,
                device: str | torch.device = "cpu", skip_bad: bool = False, skipped: list[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(true labels, probabilities [N, C] or values [N], names)`` of a labelled set, read through the
    DataLoader workers; a processor that ``pools_windows`` (audio) sees every example whole, window by window, as
    ``Classifier.predict`` does (docs/architecture.md, "Long inputs"). ``skip_bad``: an example that cannot be read
    is left out, its message appended to ``skipped``."""
    clf.eval().to(device)
    said = skipped if skipped is not None else []
    if processor.pools_windows():
        return _predict_windows(clf, data, device, skip_bad, said)
    ys, probs, names = [], [], []
    for batch in iter_batches(data, processor, batch_size=64, num_workers=num_workers, skip_bad=skip_bad,
                              on_skip=lambda messages, _: said.extend(messages)):
        labels = batch.pop("labels")
        names += list(batch.pop("_names"))
        batch.pop("_skipped", None)
        probs.append(clf.outputs({k: v.to(device) for k, v in batch.items()}).cpu())
        ys.append(labels)
    if not ys:
        raise ValueError("nothing to evaluate: the set holds no examples")
    return torch.cat(ys).numpy(), torch.cat(probs).numpy(), names


def _predict_windows(clf: Classifier, data: ExampleSet | StreamSet, device: str | torch.device,
                     skip_bad: bool = False, said: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`predict_set` with every example seen whole (``Classifier.example_outputs``): 64 examples at a time,
    their windows 16 at a time; with ``skip_bad`` a chunk holding an example that cannot be read is read again
    without it."""
    def outputs(records: list[Any]) -> torch.Tensor:
        return clf.example_outputs([r[0] for r in records], names=[r[2] for r in records], batch_size=16,
                                   device=device)
    ys, probs, names = [], [], []
    for chunk in iter_records(data, 64):
        try:
            out = outputs(chunk)
        except BadExample:
            if not skip_bad:
                raise
            kept, messages = readable(clf.processor, chunk)
            chunk = [chunk[i] for i in kept]
            (said if said is not None else []).extend(messages)
            if not chunk:
                continue
            out = outputs(chunk)
        probs.append(out)
        ys.append(label_tensor([r[1] for r in chunk]))
        names += [r[2] for r in chunk]
    if not ys:
        raise ValueError("nothing to evaluate: the set holds no examples")
    return torch.cat(ys).numpy(), torch.cat(probs).numpy(), names


def task_metrics(task: str, y: np.ndarray, out: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """The metrics of a task: classification from probabilities ``[N, C]``, regression from values ``[N]``."""
    if task == "regression":
        return regression_metrics(y, out)
    return classification_metrics(y, out.argmax(1), label_names)


def write_predictions(path: Path, task: str, names: list[str], y: np.ndarray, out: np.ndarray,
                      label_names: list[str]) -> None:
    """``predictions.jsonl``: one row per example, named, with its label and prediction (and probabilities)."""
    with open(path, "w") as fh:
        for name, t, row in zip(names, y, out):
            if task == "regression":
                fh.write(json.dumps({"name": name, "label": float(t), "predicted": float(row)}) + "\n")
                continue
            fh.write(json.dumps({"name": name, "label": label_names[int(t)],
                                 "predicted": label_names[int(row.argmax())],
                                 "probabilities": {n: round(float(v), 6) for n, v in zip(label_names, row)}}) + "\n")


def confusion_png(cm: list[list[int]], label_names: list[str], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = np.asarray(cm)
    size = max(5.0, 0.45 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=90 if len(label_names) > 6 else 0)
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(label_names) <= 20:
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scatter_png(y: np.ndarray, pred: np.ndarray, path: Path, title: str) -> Path:
    """Predicted against true values, with the diagonal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, pred, s=6, alpha=0.5)
    lo, hi = float(min(np.min(y), np.min(pred))), float(max(np.max(y), np.max(pred)))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finetune_card(folder: Path, repo_id: str, modality: Any, metrics: dict[str, Any], label_names: list[str],
          facts: dict[str, Any], dataset: str) -> None:
    checked = (f" (best validation at step {facts['best_step']}"
               + (f", stopped early at {facts['stopped_early_at']}" if facts["stopped_early_at"] else "") + ")"
               if facts.get("validation") else " (no validation)")
    head = (f"Mode `{facts['mode']}`, {facts['steps']} steps{checked}; {facts['test_examples']} test examples. "
            f"Reproduce with `{facts['command']}`.")
    if facts["task"] == "regression":
        task, shown = "tabular-regression", (("mae", "MAE"), ("rmse", "RMSE"))
        comparison = (f"### Fine-tuning\n\nTarget: `{label_names[0]}` (regression). {head}\n\n| MAE | RMSE | R² |\n"
                      f"| ---: | ---: | ---: |\n| {metrics['mae']:.4g} | {metrics['rmse']:.4g} | {metrics['r2']:.3f} |"
                      "\n\n![predicted against true](predicted_vs_true.png)")
    else:
        task = modality.task if modality.task != "feature-extraction" else "classification"
        shown = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
        rows = "\n".join(f"| {n} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                         for n, r in metrics["per_class"].items())
        comparison = (f"### Fine-tuning\n\nLabels ({len(label_names)}): {', '.join(label_names)}. {head}\n\n"
                      "| label | precision | recall | F1 | support |\n| --- | ---: | ---: | ---: | ---: |\n" + rows
                      + "\n\n![confusion matrix](confusion_matrix.png)")
    comparison += baseline_markdown(facts.get("baseline"), "the fine-tuned model", metrics)
    kind = "regressor" if facts["task"] == "regression" else "classifier"
    results = [{"task": task, "task_name": f"fine-tuned {kind}",
                "dataset": str(dataset), "dataset_name": str(dataset), "split": "test", "metric": m,
                "metric_name": name, "value": round(metrics[m], 4)} for m, name in shown]
    write_card_file(folder, repo_id=repo_id, results=results, comparison=comparison)


def _note(notice: str | None) -> list[str]:
    """A card's lines for a verdict's notice (none when the model beats its baselines)."""
    return ["", f"**Note — {notice}**"] if notice else []


def baseline_markdown(compared: dict[str, Any] | None, what: str, metrics: dict[str, Any]) -> str:
    """The card's lines on the hand-made baselines (pipelines/baseline.py): each one's figure beside the model's,
    and the notice when the model does not beat them."""
    if not compared:
        return ""
    metric = compared.get("metric", "accuracy")
    lines = ["", "", f"#### Against hand-made baselines (same split, {metric})", "", f"| features | {metric} |",
             "| --- | ---: |", f"| {what} | {float(metrics[metric]):.3f} |"]
    lines += [f"| {name} + linear model | {value:.3f} |" for name, value in compared.get("scores", {}).items()]
    lines += [f"| {name} | not computed: {why} |" for name, why in compared.get("skipped", {}).items()]
    lines += _note(compared.get("notice"))
    return "\n".join(lines)


def embedding_map(x: torch.Tensor, y: Sequence[int], png: str | Path, *, title: str = "",
                  label_names: Sequence[str] | None = None) -> Path:
    """A 2-D PCA map of the embeddings coloured by label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xc = x.float() - x.float().mean(dim=0)
    _, _, v = torch.linalg.svd(xc, full_matrices=False)
    xy = (xc @ v[:2].T).numpy()
    y = np.asarray(y)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for lab in np.unique(y):
        name = label_names[lab] if label_names is not None else str(lab)
        ax.scatter(xy[y == lab, 0], xy[y == lab, 1], s=8, label=name, alpha=0.7)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(title or "embeddings (PCA)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)


def record_evaluation(model: str | Path, name: str, spec: dict[str, Any], report: dict[str, Any], out: Path,
                      write_card: bool, *, task: str, task_name: str, dataset: str, metrics: list[tuple[str, float]],
                      comparison: str | None = None, metric: str = "accuracy") -> None:
    """Write ``eval_results.json`` and, for a local folder, the card with the metrics in its model-index."""
    (out / "eval_results.json").write_text(json.dumps(report, indent=2) + "\n")
    if write_card and Path(model).is_dir():
        dataset = spec.get("dataset", dataset)
        results = [{"task": spec.get("task", task), "task_name": task_name, "dataset": dataset,
                    "dataset_name": spec.get("dataset_name", dataset), "split": "test", "metric": metric,
                    "metric_name": name, "value": round(value, 4)} for name, value in metrics]
        # the card keeps the model's own name (never the recipe's or the data's)
        write_card_file(model, results=results, comparison=comparison)


def protocol_markdown(report: dict[str, Any]) -> str:
    """A protocol report (e.g. node classification) as Markdown: each metric, pretrained vs random init."""
    rows = [("this encoder (frozen)", report["pretrained"])]
    if "random_init" in report:
        rows.append(("same architecture, random init", report["random_init"]))
    rows += [(name, r) for name, r in report.get("baselines", {}).items()]
    keys = [k for k in report["pretrained"] if not k.endswith("_std")]
    lines = [f"Protocol `{report['protocol']}`:", "", "| features | " + " | ".join(k.replace("_", " ") for k in keys)
             + " |", "| --- |" + " ---: |" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{r[k]:.3f}" if k in r else "—" for k in keys) + " |" for name, r in rows]
    lines += _note(report.get("verdict", {}).get("notice"))
    return "\n".join(lines)


def comparison_markdown(report: dict[str, Any]) -> str:
    """The probe table of a report (pretrained vs random init vs baselines, per-layer) as Markdown."""
    rows = [("this encoder (frozen)", report["pretrained"])]
    if "random_init" in report:
        rows.append(("same architecture, random init", report["random_init"]))
    rows += [(name, r) for name, r in report.get("baselines", {}).items()]
    lines = [COMPARISON_HEADING, "",
             f"Held-out test set of {report.get('test_examples', '?')} examples, probes trained on "
             f"{report.get('train_examples', '?')}.", "",
             "| features | linear probe | k-NN |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {r['linear_probe']:.3f} | {r['knn']:.3f} |" for name, r in rows]
    lines += _note(report.get("verdict", {}).get("notice"))
    lines += _note(report.get("random_init_ahead"))
    if "layers" in report:
        lines += ["", "Linear probe per layer (0 = Transformer input): " + ", ".join(
            f"{i}: {a:.3f}" for i, a in enumerate(report["layers"]))]
    return "\n".join(lines)
