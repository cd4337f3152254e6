"""The paper's transfer protocol (Pang et al. 2022, following Point-BERT): a linear SVM on the pooled features of the
frozen encoder, trained on the training clouds, accuracy on the test clouds."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zoo import Encoder, ExampleSet, Processor


@torch.no_grad()
def pooled_features(encoder: Encoder, processor: Processor, data: ExampleSet, batch_size: int = 32) -> np.ndarray:
    """``[N, 2D]`` pooled features of every example, in order (the encoder in eval mode)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for lo in range(0, len(data), batch_size):
        items = [processor(data.examples[i], name=data.name(i)) for i in range(lo, min(lo + batch_size, len(data)))]
        batch = {k: v.to(device) for k, v in processor.collate(items).items()}
        out.append(encoder(batch).pooled.float().cpu())
    return torch.cat(out).numpy()


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
