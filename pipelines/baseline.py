"""A hand-made baseline beside every result (docs/architecture.md, "Baselines"): each modality's hand-made
features (``Modality.baselines``: MFCC statistics, frame statistics, FPFH, graph structure, raw columns,
aggregates) with a linear model — logistic regression for classes, ridge for a numeric target — trained on the
same training examples and scored on the same test examples as the model, with the model's own fitted processor.
When the model does not beat the best of them, the verdict says so with the usual remedies: a result shown
without the baseline it loses to is the next worst thing to a wrong one."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from zoo import ExampleSet, Modality, Processor, StreamSet

__all__ = ["baseline_scores", "verdict", "finetune_remedies", "REMEDIES", "EVALUATE_REMEDIES"]

logger = logging.getLogger(__name__)

EVALUATE_REMEDIES = ("pretrain longer (zoo pretrain ... --set train.steps=N), continue from a public checkpoint (zoo "
                     "pretrain RECIPE --init MODEL), or fine-tune the encoder itself (zoo finetune MODEL --data ...)")


def finetune_remedies(mode: str, validated: bool) -> str:
    """What a fine-tuned model below its baseline can try, without what the run did already: ``mode`` full,
    validation (``validated``)."""
    parts = ["train longer (--steps, or pretrain longer)"]
    if mode != "full":
        parts.append("fine-tune the whole encoder (--mode full)"
                     + ("" if validated else " with validation (--eval-every, --patience)"))
    elif not validated:
        parts.append("validate while training (--eval-every, --patience)")
    return ", ".join(parts + ["try another learning rate (--lr)", "or start from a public checkpoint (zoo pretrain "
                              "RECIPE --init MODEL, or fine-tune a converted one)"])


REMEDIES = finetune_remedies("frozen", validated=False)      # all of them: what a run of unknown settings can try


def _fit_score(task: str, tr: torch.Tensor, ytr: Sequence[Any], te: torch.Tensor, yte: Sequence[Any],
               metric: str, num_classes: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .report import task_metrics
    xtr, xte = np.nan_to_num(tr.double().numpy()), np.nan_to_num(te.double().numpy())
    if task == "regression":
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(xtr, np.asarray(ytr, dtype=float))
        return float(task_metrics(task, np.asarray(yte, dtype=float), model.predict(xte), ["target"])[metric])
    y = np.asarray(ytr, dtype=np.int64)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(xtr, y)
    proba = np.zeros((len(xte), num_classes))
    proba[:, model[-1].classes_] = model.predict_proba(xte)
    names = [str(i) for i in range(num_classes)]
    return float(task_metrics(task, np.asarray(yte, dtype=np.int64), proba, names)[metric])


def baseline_scores(modality: Modality, processor: Processor, train: ExampleSet | StreamSet,
                    test: ExampleSet | StreamSet, *, task: str, metric: str, num_classes: int,
                    seed: int = 0) -> dict[str, Any]:
    """``{"scores": {name: value}, "skipped": {name: reason}}``: every hand-made baseline of ``modality`` on the
    given split, scored with ``metric``. A baseline that does not apply to these examples (its function returns
    None) is left out; streamed data has none (the features need every example at hand), said in ``skipped``."""
    out: dict[str, Any] = {"metric": metric, "scores": {}, "skipped": {}}
    if not modality.baselines:
        out["skipped"]["(none)"] = f"modality {modality.name!r} defines no hand-made baseline"
        return out
    if not (isinstance(train, ExampleSet) and isinstance(test, ExampleSet)):
        for name in modality.baselines:
            out["skipped"][name] = "streamed data: a baseline needs map-style data"
        return out
    for name, features in modality.baselines.items():
        try:
            tr, te = (_features(features, d, processor) for d in (train, test))
            if tr is None or te is None:
                continue
            out["scores"][name] = _fit_score(task, tr, list(train.labels), te, list(test.labels), metric,
                                             num_classes, seed)
        except Exception as err:          # a baseline never stops a run, but its failure is said
            out["skipped"][name] = f"{type(err).__name__}: {err}"
            logger.warning("baseline %r could not be computed: %s", name, err)
    return out


def _features(features: Any, data: ExampleSet, processor: Processor) -> Any:
    """A baseline's features of ``data``; a function that takes ``names`` is given the examples' names, so that an
    error names the example as the data set does (``file[row]``, an entity id)."""
    import inspect
    if "names" in inspect.signature(features).parameters:
        return features(data.examples, processor, names=[data.name(i) for i in range(len(data))])
    return features(data.examples, processor)


def verdict(model_value: float, baselines: dict[str, Any], *, what: str, lower_is_better: bool = False,
            remedies: str = REMEDIES) -> dict[str, Any]:
    """The model's figure against the best baseline: ``{"baseline", "baseline_value", "model_value", "reaches",
    "beaten", "tied", "metric", "notice"}``. ``reaches``: at least as good as the baseline; ``beaten``: better than it
    (two new users read ``beaten`` as that, and a tie said ``true``); ``tied``: exactly level, which ``notice`` says;
    below it, ``notice`` is said as a warning, with ``remedies``. Without any baseline score ``baseline``,
    ``reaches`` and ``beaten`` are None and ``notice`` says why."""
    scores = baselines.get("scores", {})
    if not scores:
        return {"baseline": None, "reaches": None, "beaten": None, "model_value": model_value,
                "notice": "no hand-made baseline could be computed on this data (" + "; ".join(
                    f"{k}: {v}" for k, v in baselines.get("skipped", {}).items()) + "): compare the figure yourself"}
    pick = min if lower_is_better else max
    name = pick(scores, key=scores.get)
    best = scores[name]
    reaches = model_value <= best if lower_is_better else model_value >= best
    tied = model_value == best
    metric = baselines.get("metric", "accuracy")
    notice = None
    if tied:
        notice = (f"level with the baseline: {what} {metric} {model_value:.3f} equals the hand-made baseline "
                  f"'{name}' on the same split: it reaches it, it does not beat it")
        logger.info(notice)
    elif not reaches:
        notice = (f"below the baseline: {what} {metric} {model_value:.3f} is {'above' if lower_is_better else 'below'}"
                  f" the hand-made baseline '{name}' ({best:.3f}) on the same split. This encoder does not yet beat "
                  f"ten lines of scikit-learn on this data: {remedies}.")
        logger.warning(notice)
    return {"baseline": name, "baseline_value": best, "model_value": model_value, "reaches": reaches,
            "beaten": reaches and not tied, "tied": tied, "metric": metric, "notice": notice}
