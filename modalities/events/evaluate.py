"""The CoLES paper's downstream protocol (Babaev et al. 2022, §4.2): gradient boosting on the frozen
embeddings of each entity's whole history, on hand-crafted aggregates, and on both together."""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo import Encoder, Processor
from zoo.embedding import pooled_features

from .baselines import aggregate_features


def boosting_scores(train: dict[str, np.ndarray], test: dict[str, np.ndarray], ytr: list[int], yte: list[int], *,
                    seed: int = 0, max_iter: int = 200) -> dict[str, float]:
    """Accuracy of scikit-learn's ``HistGradientBoostingClassifier`` on each named feature set."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    scores = {}
    for name in train:
        clf = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.05, random_state=seed)
        clf.fit(train[name], ytr)
        scores[name] = float(clf.score(test[name], yte))
    return scores


def boosting(encoder: Encoder, processor: Processor, spec: dict[str, Any], seed: int = 0,
             max_iter: int = 200) -> dict[str, float]:
    """``spec`` names ``train`` and ``test`` data; accuracy of boosting on embeddings, aggregates and both."""
    from .data import load_data
    train, test = load_data(spec["train"]), load_data(spec["test"])
    emb = {"tr": pooled_features(encoder, processor, train), "te": pooled_features(encoder, processor, test)}
    agg = {"tr": aggregate_features(train.examples, processor).numpy(),
           "te": aggregate_features(test.examples, processor).numpy()}
    feats = {s: {"embeddings": emb[s], "aggregates": agg[s], "both": np.concatenate([emb[s], agg[s]], 1)}
             for s in ("tr", "te")}
    return boosting_scores(feats["tr"], feats["te"], list(train.labels), list(test.labels), seed=seed,
                           max_iter=max_iter)
