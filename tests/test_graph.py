"""Graph modality (GraphMAE on PyG): bad input, batching invariance, the re-mask, and pretrain → save →
reload end to end on the generated motif graphs."""

from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.data import Data

import zoo
from modalities.graph import (
    GraphMAEConfig,
    GraphMAEEncoder,
    GraphMAEPretrainer,
    GraphMAEPretrainingConfig,
    GraphProcessor,
    load_data,
)

from .conftest import zoo_cli


def test_bad_graphs_are_clear_errors():
    p = GraphProcessor().fit([Data(x=torch.ones(3, 4), edge_index=torch.tensor([[0, 1], [1, 2]]))])
    assert p.config.num_features == 4
    cases = [(Data(x=torch.ones(0, 4), edge_index=torch.zeros(2, 0, dtype=torch.long)), "'num_nodes': empty graph"),
             (Data(x=torch.ones(3, 4), edge_index=torch.tensor([[0, 1], [1, 5]])), "'edge_index': node index out of"),
             (Data(x=torch.tensor([[float("nan")] * 4] * 3), edge_index=torch.tensor([[0], [1]])), "'x': 12 NaN"),
             (Data(x=torch.ones(3, 5), edge_index=torch.tensor([[0], [1]])), "'x': 5 features per node; the model "
                                                                              "expects 4"),
             ({"x": torch.ones(3, 4)}, "'edge_index': missing")]
    for graph, msg in cases:
        with pytest.raises(zoo.BadExample, match=msg):
            p(graph, name="g7")
    no_x = GraphProcessor(zoo.get_modality("graph").processor.config_class(degree_features=3))
    out = no_x({"edge_index": torch.tensor([[0, 0, 0, 1], [1, 2, 3, 0]]), "num_nodes": 4})
    assert out["x"].tolist()[0] == [0, 0, 1] and out["x"].tolist()[2] == [1, 0, 0]   # degrees 3 (clipped), 0


@pytest.mark.parametrize("gnn", ["gat", "gin"])
def test_batched_graphs_equal_graphs_one_by_one(gnn):
    data = load_data({"source": "motifs", "n": 6})
    p = GraphProcessor().fit(data.examples)
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(**p.encoder_config(), gnn=gnn, hidden=16, heads=2)).eval()
    items = [p(g) for g in data.examples]
    with torch.no_grad():
        out = enc(p.collate(items))
        for i, it in enumerate(items):
            one = enc(p.collate([it]))
            n = it["x"].shape[0]
            assert torch.allclose(out.tokens[i, :n], one.tokens[0], atol=1e-5)
            assert out.padding_mask[i, n:].all() and not out.padding_mask[i, :n].any()
            assert torch.allclose(out.pooled[i], one.pooled[0], atol=1e-5)


def test_remask_zeroes_the_masked_codes_and_loss_is_on_masked_nodes():
    data = load_data({"source": "motifs", "n": 4})
    p = GraphProcessor().fit(data.examples)
    enc = GraphMAEEncoder(GraphMAEConfig(**p.encoder_config(), gnn="gin", hidden=8))
    pre = GraphMAEPretrainer(enc, GraphMAEPretrainingConfig(mask_rate=0.5, replace_rate=0.25, decoder="gin"))
    batch = p.collate([p(g) for g in data.examples])
    seen = {}

    def keep_code(module, args):
        seen["code"] = args[0].detach()
    pre.decoder.register_forward_pre_hook(keep_code)
    out = pre(batch, torch.Generator().manual_seed(0))
    n = batch["x"].shape[0]
    zero_rows = (seen["code"].abs().sum(dim=1) == 0)
    assert int(zero_rows.sum()) == round(0.5 * n) == out.metrics["masked_nodes"]
    out.loss.backward()
    assert pre.mask_token.grad is not None and torch.isfinite(out.loss)


def test_end_to_end_cli_pretrain_save_reload_same_embeddings(tmp_path):
    out = zoo_cli("pretrain", "graph-graphmae-motifs", "--output", str(tmp_path / "run"), "--set", "train.steps=3")
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model"
    enc, proc = zoo.AutoEncoder.from_pretrained(model), zoo.AutoProcessor.from_pretrained(model)
    assert isinstance(enc, GraphMAEEncoder) and proc.config.num_features == 4
    data = load_data({"source": "motifs", "n": 5, "seed": 3})
    with torch.no_grad():
        a = enc(proc.collate([proc(g) for g in data.examples])).pooled
        enc2 = zoo.AutoEncoder.from_pretrained(model)
        b = enc2(proc.collate([proc(g) for g in data.examples])).pooled
    assert torch.equal(a, b)
    report = json.loads(zoo_cli("evaluate", str(model)).stdout)
    assert 0 <= report["pretrained"]["linear_probe"] <= 1
