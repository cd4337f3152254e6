"""The paper's transfer protocol (Pang et al. 2022, following Point-BERT): a linear SVM on the pooled features of the
frozen encoder, trained on the training clouds, accuracy on the test clouds."""

from __future__ import annotations

from typing import Any

from zoo import Encoder, Processor
from zoo.embedding import pooled_features

SVM_PROTOCOLS = ("reference", "standardised")


def linear_svm(encoder: Encoder, processor: Processor, spec: dict[str, Any], protocol: str = "reference",
               c: float | None = None) -> dict[str, float]:
    """``spec`` names ``train`` and ``test`` data specs. ``protocol``: ``reference`` (default) is Point-MAE's and
    Point-BERT's — ``LinearSVC()`` (C = 1) on the raw pooled features; ``standardised`` is ours before — features
    standardised on the training set, C = 0.01. ``c`` overrides either protocol's C."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from .data import load_data
    if protocol not in SVM_PROTOCOLS:
        raise ValueError(f"svm protocol {protocol!r}: must be one of {SVM_PROTOCOLS}")
    train, test = load_data(spec["train"]), load_data(spec["test"])
    xtr, xte = pooled_features(encoder, processor, train), pooled_features(encoder, processor, test)
    if protocol == "standardised":
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    strength = c if c is not None else (1.0 if protocol == "reference" else 0.01)
    svm = LinearSVC(C=strength, max_iter=20000).fit(xtr, list(train.labels))
    return {"accuracy": float(svm.score(xte, list(test.labels)))}
