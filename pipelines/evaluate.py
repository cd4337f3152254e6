"""The evaluation harness shared by every modality: frozen-encoder linear probe and k-NN, plus an
embedding map coloured by label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo import Encoder, ExampleSet, Processor

__all__ = ["embed", "linear_probe", "knn_accuracy", "embedding_map", "probe_report", "layer_probes",
           "evaluate_model"]


@torch.no_grad()
def embed(encoder: Encoder, processor: Processor, examples: Sequence[Any], *, batch_size: int = 64,
          names: Sequence[str] | None = None, layers: bool = False,
          device: torch.device | str = "cpu") -> torch.Tensor | list[torch.Tensor]:
    """Pooled embeddings ``[N, D]`` of raw examples (with ``layers``: one ``[N, D]`` per layer, mean-pooled
    over the non-padding tokens of every hidden state)."""
    from zoo.layers import masked_mean
    encoder = encoder.to(device).eval()
    pooled: list[torch.Tensor] = []
    per_layer: list[list[torch.Tensor]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        chunk_names = names[start:start + batch_size] if names is not None else [
            str(i) for i in range(start, start + len(chunk))]
        batch = processor.collate([processor(ex, name=n) for ex, n in zip(chunk, chunk_names)])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = encoder(batch, return_hidden=layers)
        pooled.append(out.pooled.float().cpu())
        if layers:
            hs = [masked_mean(h, out.padding_mask).float().cpu() for h in out.hidden]
            per_layer = [a + [h] for a, h in zip(per_layer, hs)] if per_layer else [[h] for h in hs]
    if layers:
        return [torch.cat(x) for x in per_layer]
    return torch.cat(pooled)


def linear_probe(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor,
                 test_y: Sequence[int], *, seed: int = 0) -> float:
    """Accuracy of a logistic regression on standardised frozen embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(train_x.numpy(), np.asarray(train_y))
    return float(clf.score(test_x.numpy(), np.asarray(test_y)))


def knn_accuracy(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor,
                 test_y: Sequence[int], k: int = 20) -> float:
    """Cosine k-NN accuracy with a majority vote (ties → the smaller label)."""
    a = F.normalize(train_x.float(), dim=1)
    b = F.normalize(test_x.float(), dim=1)
    ty = torch.as_tensor(list(train_y))
    k = min(k, a.shape[0])
    idx = (b @ a.T).topk(k, dim=1).indices
    votes = F.one_hot(ty[idx], int(ty.max()) + 1).sum(dim=1)
    pred = votes.argmax(dim=1)
    return float((pred == torch.as_tensor(list(test_y))).float().mean())


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


def probe_report(encoder: Encoder, processor: Processor, train: ExampleSet, test: ExampleSet, *,
                 knn_k: int = 20, png: str | Path | None = None, title: str = "",
                 batch_size: int = 64, device: str = "cpu") -> dict[str, float]:
    """Linear-probe and k-NN accuracy of a frozen encoder on a labelled train/test pair."""
    if train.labels is None or test.labels is None:
        raise ValueError("evaluation needs labelled train and test data")
    tr = embed(encoder, processor, train.examples, names=train.names, batch_size=batch_size, device=device)
    te = embed(encoder, processor, test.examples, names=test.names, batch_size=batch_size, device=device)
    report = {"linear_probe": linear_probe(tr, train.labels, te, test.labels),
              "knn": knn_accuracy(tr, train.labels, te, test.labels, knn_k)}
    if png is not None:
        embedding_map(te, test.labels, png, title=title, label_names=test.label_names)
    return report


def layer_probes(encoder: Encoder, processor: Processor, train: ExampleSet, test: ExampleSet, *,
                 device: str = "cpu") -> list[float]:
    """Linear-probe accuracy of every hidden state (0 = the Transformer's input), mean-pooled."""
    tr = embed(encoder, processor, train.examples, names=train.names, layers=True, device=device)
    te = embed(encoder, processor, test.examples, names=test.names, layers=True, device=device)
    return [linear_probe(a, train.labels, b, test.labels) for a, b in zip(tr, te)]


def evaluate_model(model: str | Path, recipe: dict[str, Any] | None = None, *, output_dir: str | Path | None = None,
                   device: str = "cpu", baseline: bool = True, write_card: bool = True) -> dict[str, Any]:
    """Probe a zoo model on its recipe's ``evaluate`` data; with ``baseline`` also a randomly initialised
    encoder of the same configuration. A local folder's card gets the results in its ``model-index``."""
    from zoo import AutoEncoder, AutoProcessor, get_modality
    from zoo.hub import load_config
    encoder = AutoEncoder.from_pretrained(model)
    processor = AutoProcessor.from_pretrained(model)
    if recipe is None:
        recipe = load_config(model).get("pretraining", {}).get("recipe")
        if not recipe:
            raise ValueError(f"{model} records no recipe: pass one with --recipe")
    spec = recipe.get("evaluate") or {}
    modality = get_modality(encoder.modality)
    out = Path(output_dir) if output_dir is not None else (Path(model) if Path(model).is_dir() else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    if "protocol" in spec:
        return _protocol_report(model, encoder, processor, modality, recipe, spec, out, baseline, write_card)
    if "train" not in spec or "test" not in spec:
        raise ValueError(f"recipe {recipe.get('name')!r} has no evaluate.train / evaluate.test data")
    train, test = modality.load_data(spec["train"]), modality.load_data(spec["test"])
    k = int(spec.get("knn_k", 20))
    report: dict[str, Any] = {"pretrained": probe_report(encoder, processor, train, test, knn_k=k,
                                                          png=out / "embedding_map.png", device=device,
                                                          title=f"{recipe.get('name', '')} (pretrained)")}
    if baseline:
        torch.manual_seed(0)
        random_enc = type(encoder)(encoder.config)
        report["random_init"] = probe_report(random_enc, processor, train, test, knn_k=k, device=device)
        for name, features in modality.baselines.items():
            tr, te = features(train.examples), features(test.examples)
            report.setdefault("baselines", {})[name] = {
                "linear_probe": linear_probe(tr, train.labels, te, test.labels),
                "knn": knn_accuracy(tr, train.labels, te, test.labels, k)}
    if spec.get("layers", False):
        report["layers"] = layer_probes(encoder, processor, train, test, device=device)
    report["train_examples"], report["test_examples"] = len(train), len(test)
    metrics = [("linear probe accuracy", report["pretrained"]["linear_probe"]),
               (f"{k}-NN accuracy", report["pretrained"]["knn"])]
    _record(model, recipe, spec, report, out, write_card, task="feature-extraction",
            task_name="frozen-encoder probe", dataset="synthetic", metrics=metrics,
            comparison=comparison_markdown(report))
    return report


def _protocol_report(model, encoder, processor, modality, recipe, spec, out, baseline, write_card) -> dict[str, Any]:
    """A modality's own evaluation protocol (e.g. node classification on one graph)."""
    name = spec["protocol"]
    if name not in modality.evaluators:
        raise ValueError(f"modality {modality.name!r} has no evaluation protocol {name!r}; "
                         f"it has {sorted(modality.evaluators)}")
    fn = modality.evaluators[name]
    report: dict[str, Any] = {"protocol": name, "pretrained": fn(encoder, processor, spec)}
    if baseline:
        torch.manual_seed(0)
        report["random_init"] = fn(type(encoder)(encoder.config), processor, spec)
    metrics = [(k.replace("_", " "), v) for k, v in report["pretrained"].items() if k not in ("val", "accuracy_std")]
    _record(model, recipe, spec, report, out, write_card, task="node-classification", task_name=f"{name} protocol",
            dataset="unknown", metrics=metrics)
    return report


def _record(model, recipe, spec, report, out, write_card, *, task: str, task_name: str, dataset: str,
            metrics: list[tuple[str, float]], comparison: str | None = None) -> None:
    """Write ``eval_results.json`` and, for a local folder, the card with the metrics in its model-index."""
    import json
    (out / "eval_results.json").write_text(json.dumps(report, indent=2) + "\n")
    if write_card and Path(model).is_dir():
        from zoo.cards import write_card as write
        dataset = spec.get("dataset", dataset)
        results = [{"task": spec.get("task", task), "task_name": task_name, "dataset": dataset,
                    "dataset_name": spec.get("dataset_name", dataset), "split": "test", "metric": "accuracy",
                    "metric_name": name, "value": round(value, 4)} for name, value in metrics]
        write(model, repo_id=recipe.get("name"), results=results, comparison=comparison)


def protocol_markdown(report: dict[str, Any]) -> str:
    """A protocol report (e.g. node classification) as Markdown: each metric, pretrained vs random init."""
    rows = [("this encoder (frozen)", report["pretrained"])]
    if "random_init" in report:
        rows.append(("same architecture, random init", report["random_init"]))
    keys = [k for k in report["pretrained"] if not k.endswith("_std")]
    lines = [f"Protocol `{report['protocol']}`:", "", "| features | " + " | ".join(k.replace("_", " ") for k in keys)
             + " |", "| --- |" + " ---: |" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for name, r in rows]
    return "\n".join(lines)


def comparison_markdown(report: dict[str, Any]) -> str:
    """The probe table of a report (pretrained vs random init vs baselines, per-layer) as Markdown."""
    from zoo.cards import COMPARISON_HEADING
    rows = [("this encoder (frozen)", report["pretrained"])]
    if "random_init" in report:
        rows.append(("same architecture, random init", report["random_init"]))
    rows += [(name, r) for name, r in report.get("baselines", {}).items()]
    lines = [COMPARISON_HEADING, "",
             f"Held-out test set of {report.get('test_examples', '?')} examples, probes trained on "
             f"{report.get('train_examples', '?')}.", "",
             "| features | linear probe | k-NN |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {r['linear_probe']:.3f} | {r['knn']:.3f} |" for name, r in rows]
    if "layers" in report:
        lines += ["", "Linear probe per layer (0 = Transformer input): " + ", ".join(
            f"{i}: {a:.3f}" for i, a in enumerate(report["layers"]))]
    return "\n".join(lines)
