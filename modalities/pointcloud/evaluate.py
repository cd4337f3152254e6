"""The paper's transfer protocol (Pang et al. 2022, following Point-BERT): a linear SVM on the pooled features of the
frozen encoder, trained on the training clouds, accuracy on the test clouds."""

from __future__ import annotations

from typing import Any

from zoo import Encoder, Processor
from zoo.embedding import pooled_features


def linear_svm(encoder: Encoder, processor: Processor, spec: dict[str, Any], c: float = 0.01) -> dict[str, float]:
    """``spec`` names ``train`` and ``test`` data specs; features are standardised on the training set; ``C`` as in
    Point-BERT's SVM evaluation."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from .data import load_data
    train, test = load_data(spec["train"]), load_data(spec["test"])
    xtr, xte = pooled_features(encoder, processor, train), pooled_features(encoder, processor, test)
    scaler = StandardScaler().fit(xtr)
    svm = LinearSVC(C=c, max_iter=20000).fit(scaler.transform(xtr), list(train.labels))
    return {"accuracy": float(svm.score(scaler.transform(xte), list(test.labels)))}
