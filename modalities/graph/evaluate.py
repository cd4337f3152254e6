"""Node-level evaluation (GraphMAE's protocol): a linear classifier on frozen node embeddings, trained on a
split's training nodes and scored on its test nodes (the public Planetoid split by default)."""

from __future__ import annotations

from typing import Any

import torch

from zoo import ExampleSet
from zoo.embedding import pooled_features

from .data import load_data
from .layerwise import layerwise_node_embeddings


@torch.no_grad()
def node_embeddings(encoder, processor, data, chunk_nodes: int = 0) -> torch.Tensor:
    """Every node's embedding in eval mode: the full-batch forward or, with ``chunk_nodes``, layer by layer in
    chunks of target nodes (:func:`~modalities.graph.layerwise.layerwise_node_embeddings`: memory bounded by
    the graph's own tensors, for graphs too large for one forward)."""
    encoder.eval()
    item = processor(data)
    if chunk_nodes:                                        # one graph: no collation (no copy of its tensors)
        return layerwise_node_embeddings(encoder, item["x"], item["edge_index"], chunk_nodes)
    batch = processor.collate([item])
    if hasattr(encoder, "node_embeddings"):
        return encoder.node_embeddings(batch)
    # an exported graph (zoo export): traced on node examples it takes every node as a centre; traced on graphs,
    # its one graph's node tokens, unpadded
    if "centre" in getattr(encoder, "inputs", ()):
        return encoder({**batch, "centre": torch.arange(batch["x"].shape[0])}).pooled
    out = encoder(batch)
    return out.tokens[~out.padding_mask]


def node_examples(spec: dict[str, Any]) -> tuple[ExampleSet, ExampleSet]:
    """The node protocol's labelled nodes as examples of one shared graph (:class:`~.nodes.NodeExample`): the
    split's training nodes and its test nodes (what the online k-NN probe and label-efficiency curves read)."""
    from .nodes import NodeExamples, SharedGraph
    data = load_data(spec).examples[0]
    graph = SharedGraph(data, str(spec.get("name", spec.get("source", "graph"))))

    def part(mask: torch.Tensor) -> ExampleSet:
        idx = mask.nonzero().squeeze(1)
        return ExampleSet(NodeExamples(graph, idx), data.y[idx].tolist(), [f"node {int(i)}" for i in idx])
    return part(data.train_mask), part(data.test_mask)


def graph_examples(spec: dict[str, Any], seed: int = 0, test_fraction: float = 0.2) -> tuple[ExampleSet, ExampleSet]:
    """The graph-level protocol's graphs as a seeded, stratified train/test pair (``test_fraction`` held out)."""
    from zoo.data import stratified_indices
    data = load_data(spec)
    if data.labels is None:
        raise ValueError("evaluate.data: graph-level evaluation needs graph labels")
    test = stratified_indices(data.labels, test_fraction, seed)
    held = set(test)
    return data.subset([i for i in range(len(data)) if i not in held]), data.subset(test)


def linear_probe(h: torch.Tensor, data, *, lr: float = 0.01, weight_decay: float = 1e-4, epochs: int = 300,
                 seed: int = 0) -> dict[str, float]:
    """Logistic regression (one linear layer, Adam) on node vectors ``h``, trained on ``data.train_mask``: test
    accuracy at the epoch of best validation accuracy."""
    y = data.y
    torch.manual_seed(seed)
    clf = torch.nn.Linear(h.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, test_at_best = -1.0, 0.0
    for _ in range(epochs):
        clf.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(h[data.train_mask]), y[data.train_mask]).backward()
        opt.step()
        with torch.no_grad():
            pred = clf(h).argmax(dim=1)
            val = float((pred[data.val_mask] == y[data.val_mask]).float().mean())
            if val >= best_val:
                best_val, test_at_best = val, float((pred[data.test_mask] == y[data.test_mask]).float().mean())
    return {"linear_probe": test_at_best, "val": best_val}


def node_probe(encoder, processor, spec: dict[str, Any], *, lr: float = 0.01, weight_decay: float = 1e-4,
               epochs: int = 300, seed: int = 0, chunk_nodes: int = 0) -> dict[str, float]:
    """GraphMAE's node protocol: :func:`linear_probe` on frozen node embeddings (the public Planetoid split by
    default), computed layer-wise in chunks of ``chunk_nodes`` target nodes when given (:func:`node_embeddings`)."""
    data = load_data(spec).examples[0]
    h = node_embeddings(encoder, processor, data, chunk_nodes)
    return linear_probe(h, data, lr=lr, weight_decay=weight_decay, epochs=epochs, seed=seed)


def sgc_probe(processor, spec: dict[str, Any], *, lr: float = 0.01, weight_decay: float = 1e-4, epochs: int = 300,
              seed: int = 0, chunk_nodes: int = 0) -> dict[str, float]:
    """The node protocol's hand-made baseline: :func:`linear_probe` on SGC features ``[x, Â x, Â² x]`` (Wu et al.
    2019) of the processed graph, on the same split."""
    from .baselines import _propagate
    data = load_data(spec).examples[0]
    item = processor(data)
    return linear_probe(_propagate(item["x"], item["edge_index"]), data, lr=lr, weight_decay=weight_decay,
                        epochs=epochs, seed=seed)


def structure_cv(processor, spec: dict[str, Any], *, folds: int = 10, seed: int = 0, scale: bool = False
                 ) -> dict[str, float]:
    """The graph-level protocol's hand-made baseline: :func:`graph_cv`'s SVM on structural features (degrees,
    clustering, the normalised-Laplacian spectrum, feature statistics), standardised."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from .baselines import structure_features
    data = load_data(spec)
    feats = structure_features(data.examples, processor).numpy()
    svm = GridSearchCV(make_pipeline(StandardScaler(), SVC()), {"svc__C": [1e-3, 1e-2, 1e-1, 1, 10]}, cv=5)
    scores = cross_val_score(svm, feats, data.labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"accuracy": float(scores.mean()), "accuracy_std": float(scores.std())}


@torch.no_grad()
def graph_cv(encoder, processor, spec: dict[str, Any], *, folds: int = 10, seed: int = 0,
             scale: bool = False) -> dict[str, float]:
    """GraphMAE's graph-level protocol: pooled embeddings of every graph, an RBF SVM (C chosen by inner 5-fold
    cross-validation) scored by stratified ``folds``-fold cross-validation; mean and std of the fold accuracy.
    ``scale`` standardises the embeddings first (the paper does not)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    data = load_data(spec)
    emb = pooled_features(encoder, processor, data, batch_size=128)
    steps = [StandardScaler()] if scale else []
    svm = GridSearchCV(make_pipeline(*steps, SVC()), {"svc__C": [1e-3, 1e-2, 1e-1, 1, 10]}, cv=5)
    scores = cross_val_score(svm, emb, data.labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"accuracy": float(scores.mean()), "accuracy_std": float(scores.std())}
