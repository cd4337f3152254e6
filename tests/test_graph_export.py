"""The GraphMAE encoder as a pure tensor program: its GAT layer equals PyG's GATConv (self-loops and duplicate
edges in the input included), and the encoder exported once to ONNX (dynamic node, edge and graph counts) gives
eager's outputs under ONNX Runtime on batches of other sizes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GATConv

from modalities.graph import GraphMAEConfig, GraphMAEEncoder, GraphProcessor
from modalities.graph.model import gat_conv
from modalities.graph.nodes import NodeExamples, SharedGraph


def _random_edges(n: int, e: int, generator: torch.Generator) -> torch.Tensor:
    """Random directed edges, with duplicates and self-loops among them (some twice)."""
    edges = torch.randint(0, n, (2, e), generator=generator)
    loops = torch.tensor([[0, 0, 3], [0, 0, 3]])
    return torch.cat([edges, edges[:, :5], loops], dim=1)


@pytest.mark.parametrize("heads,concat,loops", [(1, False, True), (3, False, True), (2, True, True),
                                                (2, True, False)])
def test_gat_conv_equals_pyg_gatconv(heads, concat, loops):
    g = torch.Generator().manual_seed(heads)
    torch.manual_seed(heads)
    conv = GATConv(16, 8, heads=heads, concat=concat, dropout=0.3, add_self_loops=loops).eval()
    for n, e in [(30, 90), (7, 3), (50, 400)]:                     # (7, 3): isolated nodes
        x, edges = torch.randn(n, 16, generator=g), _random_edges(n, e, g)
        with torch.no_grad():
            torch.testing.assert_close(gat_conv(conv, x, edges), conv(x, edges), atol=1e-5, rtol=1e-5)


def test_gat_conv_trains_with_attention_dropout():
    """Train mode: dropout on the attention (outputs differ between draws, average out to eval's), gradients
    reach every parameter and equal PyG's without dropout."""
    torch.manual_seed(0)
    conv = GATConv(6, 4, heads=2, dropout=0.5)
    x, edges = torch.randn(20, 6), _random_edges(20, 60, torch.Generator().manual_seed(0))
    a, b = gat_conv(conv, x, edges), gat_conv(conv, x, edges)
    assert not torch.allclose(a, b)
    mean = torch.stack([gat_conv(conv, x, edges) for _ in range(2000)]).mean(0)
    with torch.no_grad():
        torch.testing.assert_close(mean, gat_conv(conv.eval(), x, edges), atol=0.05, rtol=0)
    conv.dropout = 0.0
    conv.train()
    ours = torch.autograd.grad(gat_conv(conv, x, edges).square().sum(), list(conv.parameters()))
    pyg = torch.autograd.grad(conv(x, edges).square().sum(), list(conv.parameters()))
    for o, p in zip(ours, pyg):
        torch.testing.assert_close(o, p, atol=1e-5, rtol=1e-4)


def _graph(n: int, e: int, seed: int, loops: bool = False, isolated: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n - isolated, (2, e), generator=g)         # the last `isolated` nodes: no edges
    if loops:
        edges = torch.cat([edges, torch.tensor([[0, 1, 1], [0, 1, 1]])], dim=1)
    return Data(x=torch.rand(n, 5, generator=g), edge_index=edges)


class Wrap(torch.nn.Module):
    def __init__(self, enc, keys):
        super().__init__()
        self.enc, self.keys = enc, keys

    def forward(self, *xs):
        out = self.enc(dict(zip(self.keys, xs)))
        return out.pooled, out.tokens, out.padding_mask


def _export(enc, batch, path):
    keys = [k for k in batch if k != "labels" and not k.startswith("_")]
    args = tuple(batch[k] for k in keys)
    wrap = Wrap(enc, keys).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrap, args, dynamo=True, verbose=False,
                                    dynamic_shapes=(tuple({i: torch.export.Dim.AUTO for i in range(a.dim())}
                                                          for a in args),))
    program.save(str(path))
    return keys, wrap


def _check(sess, keys, wrap, batch):
    args = tuple(batch[k] for k in keys)
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    with torch.no_grad():
        want = wrap(*args)
    for g, w in zip(got[:2], want[:2]):
        assert g.shape == tuple(w.shape)
        assert float(abs(torch.from_numpy(g) - w).max()) <= 1e-4
    assert (torch.from_numpy(got[2]) == want[2]).all()


def _encoder(p, gnn, pooling):
    torch.manual_seed(0)
    extra = {"norm": "batchnorm"} if gnn == "gin" else {}
    enc = GraphMAEEncoder(GraphMAEConfig(**p.encoder_config(), gnn=gnn, hidden=16, heads=2, pooling=pooling,
                                         **extra))
    if gnn == "gin":                           # batchnorm's running statistics other than the initial ones
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return enc.eval()


@pytest.mark.parametrize("gnn", ["gat", "gin"])
@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_encoder_exports_to_onnx_with_dynamic_graph_sizes(gnn, pooling, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    p = GraphProcessor(GraphProcessor.config_class(directed=True)).fit([_graph(4, 6, 0)])
    enc = _encoder(p, gnn, pooling)
    keys, wrap = _export(enc, p.collate([p(_graph(n, 2 * n, n)) for n in (6, 9, 7)]), tmp_path / "enc.onnx")
    sess = ort.InferenceSession(str(tmp_path / "enc.onnx"))
    batches = [[_graph(n, 3 * n, 10 + n) for n in (4, 13, 8)],                              # other node counts
               [_graph(11, 20, 3)],                                                        # one graph
               [_graph(5, 4, 1, loops=True, isolated=2), _graph(9, 12, 2, loops=True), _graph(3, 0, 4)],
               [_graph(n, n, n) for n in (2, 3, 30, 4, 6)]]
    for graphs in batches:
        _check(sess, keys, wrap, p.collate([p(g) for g in graphs]))


@pytest.mark.parametrize("gnn", ["gat", "gin"])
def test_node_example_encoder_exports_to_onnx(gnn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    big, small = SharedGraph(_graph(40, 100, 0, loops=True, isolated=3), "big"), SharedGraph(_graph(9, 15, 1), "s")
    p = GraphProcessor().fit([big.data])
    enc = _encoder(p, gnn, "mean")
    batch = p.collate([p(ex) for ex in NodeExamples(big, torch.tensor([0, 5, 39, 12]))])
    assert "centre" in batch
    keys, wrap = _export(enc, batch, tmp_path / "enc.onnx")
    sess = ort.InferenceSession(str(tmp_path / "enc.onnx"))
    for examples in [list(NodeExamples(big, torch.tensor([1, 2]))) + list(NodeExamples(small, torch.tensor([8]))),
                     list(NodeExamples(small, torch.tensor([3]))),
                     list(NodeExamples(big, torch.arange(40)))]:
        _check(sess, keys, wrap, p.collate([p(ex) for ex in examples]))
