"""Mini-batch GraphMAE (issue #27): the seeded subgraph sampler (a pure function of seed and index; exactly the
induced edges; the fan-out cap), the loss on seed nodes, layer-wise inference equal to the full-batch forward,
the sparse SBM generator, clear errors for bad settings, and a SIGKILLed mini-batch run that resumes bit for bit."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file
from torch_geometric.data import Data

from modalities.graph import (
    GraphMAEConfig,
    GraphMAEEncoder,
    GraphMAEPretrainer,
    GraphMAEPretrainingConfig,
    GraphProcessor,
    load_data,
)
from modalities.graph.data import _sbm_edges_sparse
from modalities.graph.evaluate import node_embeddings
from modalities.graph.layerwise import layerwise_node_embeddings
from modalities.graph.sampling import InEdges, MinibatchConfig, SubgraphBatches, sample_subgraph, seed_node_mask
from zoo.config import ConfigError

SMALL = {"source": "sbm", "n": 300, "seed": 0}


def _graph(n: int = 300) -> Data:
    return load_data({**SMALL, "n": n}).examples[0]


def test_subgraph_i_is_a_function_of_seed_and_index():
    g = _graph()
    cfg = MinibatchConfig(batch_nodes=40, fanout=[3, 2], passes=3, seed=5)
    a, b = SubgraphBatches(g, cfg), SubgraphBatches(g, cfg)
    assert len(a) == 3 * (300 // 40)
    for i in (0, 4, 13):                       # a fresh sampler (a resumed run) draws the same subgraph
        assert torch.equal(a[i].node_ids, b[i].node_ids) and torch.equal(a[i].edge_index, b[i].edge_index)
        assert torch.equal(a[i].x, g.x[a[i].node_ids])
    assert not torch.equal(a[0].node_ids, a[1].node_ids)             # other steps, other subgraphs
    assert not torch.equal(a[0].node_ids, a[7].node_ids)             # the same block of the next pass differs
    other = SubgraphBatches(g, MinibatchConfig(batch_nodes=40, fanout=[3, 2], passes=3, seed=6))
    assert not torch.equal(a[0].node_ids, other[0].node_ids)
    seeds = torch.cat([a.seeds(i) for i in range(a.blocks)])         # a pass: every node a seed at most once
    assert seeds.unique().numel() == seeds.numel() == 7 * 40
    assert a[2].seed_mask.sum() == 40 and bool(a[2].seed_mask[:40].all())
    assert torch.equal(a[2].node_ids[:40], a.seeds(2))


def test_subgraph_edges_are_exactly_the_induced_edges():
    # 0 ← 1 ← 2 ← 3, 4 → 0, 5 → 4, 6 → 5, plus 1 → 4 and 6 → 2 (directed: message passing runs source → target)
    edges = torch.tensor([[1, 2, 3, 4, 5, 6, 1, 6], [0, 1, 2, 0, 4, 5, 4, 2]])
    csr = InEdges(edges, 7)
    nodes, sub = sample_subgraph(csr, torch.tensor([0]), [10], torch.Generator().manual_seed(0))
    # one hop of in-neighbours of 0: {1, 4}; induced edges among {0, 1, 4}: 1 → 0, 4 → 0, 1 → 4 (by hand)
    assert nodes.tolist() == [0, 1, 4]
    assert sorted((int(nodes[s]), int(nodes[t])) for s, t in sub.T) == [(1, 0), (1, 4), (4, 0)]
    nodes, sub = sample_subgraph(csr, torch.tensor([0]), [10, 10], torch.Generator().manual_seed(0))
    # two hops: + {2, 5}; induced adds 2 → 1, 5 → 4 (6 and 3 are three hops away: their edges stay out)
    assert nodes.tolist() == [0, 1, 4, 2, 5]
    assert sorted((int(nodes[s]), int(nodes[t])) for s, t in sub.T) == [(1, 0), (1, 4), (2, 1), (4, 0), (5, 4)]
    # on a random graph: the edge set equals the graph's edges with both ends in the subgraph
    g = _graph()
    nodes, sub = sample_subgraph(InEdges(g.edge_index, 300), torch.tensor([3, 50, 7]), [4, 2],
                                 torch.Generator().manual_seed(1))
    keep = set(nodes.tolist())
    expected = {(s, t) for s, t in g.edge_index.T.tolist() if s in keep and t in keep}
    got = [(int(nodes[s]), int(nodes[t])) for s, t in sub.T]
    assert len(got) == len(set(got)) and set(got) == expected and nodes.unique().numel() == nodes.numel()


def test_fanout_caps_each_hop():
    star = torch.stack([torch.arange(1, 51), torch.zeros(50, dtype=torch.long)])   # 50 in-neighbours of node 0
    nodes, _ = sample_subgraph(InEdges(star, 51), torch.tensor([0]), [3], torch.Generator().manual_seed(0))
    assert 2 <= nodes.numel() <= 4 and nodes[0] == 0
    draws = {tuple(sample_subgraph(InEdges(star, 51), torch.tensor([0]), [3],
                                   torch.Generator().manual_seed(s))[0].tolist()) for s in range(5)}
    assert len(draws) > 1                                                   # neighbours are drawn, not the first three


def test_seed_mask_and_loss_on_seeds():
    seeds = torch.arange(50) < 20
    m = seed_node_mask(seeds, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert int((m.mask & seeds).sum()) == 10 and int((m.mask & ~seeds).sum()) == 15
    assert not bool((m.noise & ~m.mask).any()) and bool((seeds[m.noise_source] == seeds).all())
    g = _graph()
    sub = SubgraphBatches(g, MinibatchConfig(batch_nodes=30, fanout=[3])).__getitem__(0)
    proc = GraphProcessor().fit([g])
    batch = proc.collate([proc(sub), proc(sub)])
    assert batch["seed_mask"].sum() == 60
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(in_dim=64, hidden=8, heads=2))
    pre = GraphMAEPretrainer(enc, GraphMAEPretrainingConfig())
    out = pre(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    # with a seed mask the loss is taken on the masked seeds only, not on every masked node of the subgraph
    full = pre({k: v for k, v in batch.items() if k != "seed_mask"}, torch.Generator().manual_seed(0)).loss
    assert not torch.isclose(out.loss, full)


@pytest.mark.parametrize("gnn,extra", [("gat", {"heads": 2}), ("gat", {"heads": 1, "residual": True}),
                                       ("gin", {"norm": "batchnorm", "residual": True})])
def test_layerwise_inference_equals_full_batch(gnn, extra):
    g = _graph()
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(in_dim=64, hidden=16, layers=3, gnn=gnn, **extra))
    if gnn == "gin":                                  # eval-mode batch norm with non-trivial statistics
        for bn in enc.gnn.norms:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    enc.eval()
    edges = torch.cat([g.edge_index, torch.tensor([[0, 5, 9], [0, 5, 9]])], dim=1)     # a few self-loops too
    full = enc.node_embeddings({"x": g.x, "edge_index": edges})
    for chunk in (1000, 37):
        assert torch.allclose(layerwise_node_embeddings(enc, g.x, edges, chunk), full, atol=1e-5)
    proc = GraphProcessor().fit([g])
    assert torch.allclose(node_embeddings(enc, proc, g, chunk_nodes=64), node_embeddings(enc, proc, g), atol=1e-5)
    with pytest.raises(RuntimeError, match="encoder.eval"):
        layerwise_node_embeddings(enc.train(), g.x, g.edge_index)


def test_sparse_sbm_generator_and_the_small_graphs_unchanged():
    y = torch.arange(3000) % 3
    src, dst = _sbm_edges_sparse(y, 3, 0.02, 0.002, torch.Generator().manual_seed(0))
    assert bool((src < dst).all())
    assert torch.unique(src * 3000 + dst).numel() == src.numel()                    # no pair twice
    same = y[src] == y[dst]
    within, across = 3 * 1000 * 999 / 2 * 0.02, 3 * 1000 * 1000 * 0.002              # expected counts
    assert abs(int(same.sum()) - within) < 0.05 * within and abs(int((~same).sum()) - across) < 0.05 * across
    big = load_data({"source": "sbm", "n": 30000, "classes": 3, "degree_in": 6, "degree_out": 2,
                     "features": 8}).examples[0]
    assert abs(big.num_edges / 30000 - 8) < 0.3                                     # mean degree 6 + 2
    # the demo's graph (dense path, n <= DENSE_SBM_MAX) is the one it always was
    g = _graph()
    h = hashlib.sha1()
    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        h.update(getattr(g, key).numpy().tobytes())
    assert h.hexdigest() == "0046a19426c5188c363e898acd326e333d2ede05"
    with pytest.raises(ValueError, match="not both"):
        load_data({"source": "sbm", "n": 30, "p_in": 0.1, "degree_in": 3})


def test_bad_minibatch_settings_are_clear_errors():
    cases = [({"fanout": [5, 0]}, ConfigError, "MinibatchConfig.fanout: every hop must sample >= 1"),
             ({"batch_nodes": 0}, ConfigError, "MinibatchConfig.batch_nodes: must be >= 1"),
             ({"fanout": 5}, ConfigError, "data.train.minibatch.fanout: expected a list"),
             ({"batch": 64}, ConfigError, r"data.train.minibatch: unknown field\(s\) \['batch'\]"),
             ({"batch_nodes": 301}, ValueError, "batch_nodes=301 exceeds the graph's 300 nodes")]
    for setting, err, msg in cases:
        with pytest.raises(err, match=msg):
            load_data({**SMALL, "minibatch": setting})
    with pytest.raises(ValueError, match="samples subgraphs of one large graph.*gave 8 graphs"):
        load_data({"source": "motifs", "n": 8, "minibatch": {"batch_nodes": 4}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_data({**SMALL, "minibatch": True})


RECIPE = """name: graph-minibatch-tiny
modality: graph
architecture: graphmae
encoder: {gnn: gat, hidden: 8, layers: 2, heads: 2}
pretraining: {mask_rate: 0.5, replace_rate: 0.05}
processor: {normalize: row}
data:
  train: {source: sbm, n: 400, seed: 0, minibatch: {batch_nodes: 32, fanout: [3, 3], passes: 2}}
train: {steps: 30, batch_size: 1, optimizer: adam, lr: 0.005, warmup_steps: 0, checkpoint_every: 5,
        keep_checkpoints: 50, seed: 0}
"""


def test_sigkilled_minibatch_pretraining_resumes_bit_for_bit(tmp_path):
    """A mini-batch run killed with SIGKILL after its step-10 checkpoint and rerun ends with the weights of a run
    never interrupted: the subgraph of each step comes back from the checkpointed position alone."""
    from .conftest import kill_after_checkpoint, zoo_main
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    ckpts = tmp_path / "killed" / "checkpoints"
    kill_after_checkpoint(["pretrain", str(recipe), "--output", str(tmp_path / "killed")], ckpts, 10, 120)
    done = sorted(p.name for p in ckpts.iterdir() if not p.name.endswith(".tmp"))
    assert done and done[-1] < "step-0000030" and not (tmp_path / "killed" / "model").exists()
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "killed"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["resumed_from"] >= 10
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "straight"))
    assert out.returncode == 0, out.stderr
    a = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
