"""Graphs from one's own tables (issue #32): edge lists read as undirected graphs, node classification on one
graph's nodes through the CLI, and the hand-made structural / SGC baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import zoo
from modalities.graph import GraphMAEConfig, GraphMAEEncoder, GraphProcessor, load_data

from .conftest import zoo_main


def _config(**kw):
    return zoo.get_modality("graph").processor.config_class(**kw)


def test_an_undirected_edge_list_listed_once_equals_it_listed_both_ways():
    g = torch.Generator().manual_seed(0)
    n = 40
    pairs = torch.combinations(torch.arange(n))
    once = pairs[torch.rand(len(pairs), generator=g) < 0.1].T                    # u < v, each edge once
    both = torch.cat([once, once.flip(0)], dim=1)[:, torch.randperm(2 * once.shape[1], generator=g)]
    x = torch.rand(n, 5, generator=g)
    p = GraphProcessor().fit([Data(x=x, edge_index=once)])
    a, b = p(Data(x=x, edge_index=once)), p(Data(x=x, edge_index=both))
    assert torch.equal(a["edge_index"], b["edge_index"]) and a["edge_index"].shape[1] == 2 * once.shape[1]
    torch.manual_seed(0)
    for gnn in ("gat", "gin"):
        enc = GraphMAEEncoder(GraphMAEConfig(**p.encoder_config(), gnn=gnn, hidden=8, heads=2)).eval()
        with torch.no_grad():
            assert torch.equal(enc.node_embeddings(p.collate([a])), enc.node_embeddings(p.collate([b])))
    directed = GraphProcessor(_config(directed=True)).fit([Data(x=x, edge_index=once)])
    assert torch.equal(directed(Data(x=x, edge_index=once))["edge_index"], once)


def _sbm_folder(root: Path, n: int = 150, seed: int = 0, split: bool = False) -> Path:
    """One graph as a user hands it over: nodes.csv (id, 6 noisy features that follow the community, the
    community as text) and edges.csv listing each undirected edge once; communities are dense blocks."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    prob = np.where(y[:, None] == y[None, :], 0.12, 0.01)
    src, dst = np.nonzero(np.triu(rng.random((n, n)) < prob, k=1))
    x = rng.random((n, 6)) + np.eye(3)[y].repeat(2, axis=1)                      # non-negative (row-normalised)
    nodes = pd.DataFrame({"id": [f"n{i}" for i in range(n)], **{f"f{j}": x[:, j] for j in range(6)},
                          "community": [f"c{k}" for k in y]})
    if split:
        nodes["split"] = np.where(np.arange(n) < n * 0.7, "train", "test")
    folder = root / "graph"
    folder.mkdir(parents=True)
    nodes.to_csv(folder / "nodes.csv", index=False)
    pd.DataFrame({"source": [f"n{i}" for i in src], "target": [f"n{i}" for i in dst]}).to_csv(
        folder / "edges.csv", index=False)
    return folder


def test_node_classification_on_ones_own_graph_through_the_cli(tmp_path):
    data = _sbm_folder(tmp_path)
    pre = zoo_main("pretrain", "graph-graphmae-sbm", "--data", str(data), "--label-column", "community",
                   "--set", "train.steps=3", "--output", str(tmp_path / "pre"))
    assert pre.returncode == 0, pre.stderr
    summary = json.loads((tmp_path / "pre" / "train_summary.json").read_text())
    assert summary["examples"] == 150                              # the nodes; each step sees the whole graph
    ft = zoo_main("finetune", str(tmp_path / "pre" / "model"), "--data", str(data), "--label-column", "community",
                  "--steps", "40", "--batch-size", "32", "--lr", "0.01", "--seed", "0",
                  "--output", str(tmp_path / "ft"))
    assert ft.returncode == 0, ft.stderr
    result = json.loads(ft.stdout[ft.stdout.index("{"):])
    assert result["label_names"] == ["c0", "c1", "c2"] and result["test_accuracy"] >= 0.75, result
    rows = [json.loads(line) for line in (tmp_path / "ft" / "model" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(r["name"].startswith("n") for r in rows)   # a stratified fifth of the nodes
    res = zoo_main("predict", str(tmp_path / "ft" / "model"), str(data), "--json")
    assert res.returncode == 0, res.stderr
    names = [json.loads(line)["input"] for line in res.stdout.splitlines()]
    assert names == [f"n{i}" for i in range(150)]


def test_a_split_column_splits_the_nodes(tmp_path):
    data = _sbm_folder(tmp_path, n=60, split=True)
    train = load_data({"source": "folder", "path": str(data), "label_column": "community"})
    test = load_data({"source": "folder", "path": str(data), "label_column": "community", "split": "test"})
    assert (len(train), len(test)) == (42, 18) and test.names[0] == "n42"
    assert train.examples[0].graph.data.num_nodes == 60            # the test nodes stay in the graph
    p = GraphProcessor().fit(train.examples)
    assert p.config.num_features == 6                               # neither the label nor the split is a feature
    whole = p.collate([p(train.examples[i]) for i in range(4)])
    assert whole["x"].shape[0] == 60 and whole["centre"].tolist() == [0, 1, 2, 3]   # the graph once per batch


def test_node_examples_of_a_large_graph_see_their_sampled_neighbourhood():
    """Above ``whole_graph_nodes`` a node example is its 2-hop neighbourhood: with a fan-out above every degree
    its embedding equals the full graph's (a 2-layer GNN sees 2 hops), and it is the same at every call."""
    from modalities.graph.nodes import NodeExamples, SharedGraph
    graph = load_data({"source": "sbm", "n": 120, "features": 10}).examples[0]
    nodes = NodeExamples(SharedGraph(graph, "sbm"), torch.arange(120))
    small = GraphProcessor(_config(whole_graph_nodes=10, node_fanout=[100, 100])).fit(nodes)
    full = GraphProcessor().fit(nodes)
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(**full.encoder_config(), gnn="gin", hidden=8, layers=2)).eval()
    picked = [nodes[i] for i in (0, 17, 99)]
    with torch.no_grad():
        a = enc(small.collate([small(ex) for ex in picked])).pooled
        b = enc(full.collate([full(ex) for ex in picked])).pooled
    assert small(picked[1])["x"].shape[0] < 120 and torch.allclose(a, b, atol=1e-5)
    capped = GraphProcessor(_config(whole_graph_nodes=10, node_fanout=[2, 2])).fit(nodes)
    assert torch.equal(capped(picked[0])["edge_index"], capped(picked[0])["edge_index"])


def test_structural_baseline_by_hand_on_a_triangle_with_a_pendant():
    from modalities.graph.baselines import DEGREE_BINS, EIGENVALUES, structure_features
    # 0-1-2 a triangle, 3 hangs on 0; listed once
    g = Data(x=torch.tensor([[1.0], [2.0], [3.0], [4.0]]), edge_index=torch.tensor([[0, 1, 2, 0], [1, 2, 0, 3]]))
    p = GraphProcessor().fit([g])
    f = structure_features([g], p)[0].double()
    hist = [0.0, 0.25, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]                # degrees 3, 2, 2, 1
    expected = [np.log1p(4), np.log1p(4), 2.0, 0.5 ** 0.5, np.log1p(3), *hist]
    clust = [1 / 3, 1.0, 1.0, 0.0]                                  # node 0: 1 triangle of 3 pairs
    expected += [np.mean(clust), np.std(clust), 1.0]
    assert f[:len(expected)].tolist() == pytest.approx(expected, abs=1e-6)
    assert len(hist) == len(DEGREE_BINS) + 1
    eig = f[len(expected):len(expected) + EIGENVALUES]
    a = np.array([[0, 1, 1, 1], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], float)
    d = a.sum(1) ** -0.5
    lap = np.eye(4) - d[:, None] * a * d[None, :]
    assert eig.tolist() == pytest.approx([*sorted(np.linalg.eigvalsh(lap))[::-1], 0, 0, 0, 0], abs=1e-5)
    assert float(eig.sum()) == pytest.approx(4.0, abs=1e-5)          # the trace: 4 nodes of degree > 0
    assert f[-2:].tolist() == pytest.approx([2.5, np.std([1, 2, 3, 4])], abs=1e-6)   # feature mean, std
    # node examples: SGC's [x, Âx, Â²x] with Â = D^-1/2 (A + I) D^-1/2; degrees with self-loops 4, 3, 3, 2
    from modalities.graph.nodes import NodeExamples, SharedGraph
    nodes = NodeExamples(SharedGraph(g, "g"), torch.arange(4))
    sgc = structure_features(nodes, p)
    x, deg = np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 3, 2])
    a_hat = (a + np.eye(4)) / np.sqrt(deg[:, None] * deg[None, :])
    assert sgc[:, 0].tolist() == pytest.approx(x.tolist())
    assert sgc[3, 1].item() == pytest.approx(4 / 2 + 1 / np.sqrt(8), abs=1e-6)           # by hand: x3/2 + x0/√8
    assert sgc[:, 2].tolist() == pytest.approx((a_hat @ a_hat @ x).tolist(), abs=1e-5)


def _generated_graph_classes(per_class: int = 60, seed: int = 0) -> tuple[list[Data], list[int]]:
    """3 classes a user might make, with uninformative node features (a constant and noise): a two-block SBM,
    Erdős–Rényi and Barabási–Albert graphs of 20-40 nodes and about the same mean degree."""
    from torch_geometric.utils import barabasi_albert_graph, erdos_renyi_graph, stochastic_blockmodel_graph
    torch.manual_seed(seed)
    graphs, labels = [], []
    for i in range(3 * per_class):
        label, n = i % 3, int(torch.randint(20, 41, (1,)))
        if label == 0:
            ei = stochastic_blockmodel_graph([n // 2, n - n // 2], [[0.35, 0.02], [0.02, 0.35]])
        elif label == 1:
            ei = erdos_renyi_graph(n, 4.0 / n)
        else:
            ei = barabasi_albert_graph(n, 2)
        graphs.append(Data(x=torch.cat([torch.ones(n, 1), 0.1 * torch.randn(n, 2)], dim=1), edge_index=ei))
        labels.append(label)
    return graphs, labels


def test_structural_baseline_separates_generated_graph_classes():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modalities.graph.baselines import structure_features
    graphs, labels = _generated_graph_classes()
    p = GraphProcessor().fit(graphs)
    f = structure_features(graphs, p).numpy()
    y = np.array(labels)
    train, test = np.arange(len(y)) % 4 != 0, np.arange(len(y)) % 4 == 0
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(f[train], y[train])
    assert clf.score(f[test], y[test]) > 0.85
