"""Graph modality (GraphMAE on PyG): bad input, batching invariance, the re-mask, and pretrain → save →
reload end to end on the generated motif graphs."""

from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GATConv

import zoo
from modalities.graph import (
    GraphMAEConfig,
    GraphMAEEncoder,
    GraphMAEPretrainer,
    GraphMAEPretrainingConfig,
    GraphProcessor,
    load_data,
)
from modalities.graph.evaluate import node_probe
from modalities.graph.model import gat_rows
from zoo.masking import node_mask
from zoo.objectives import scaled_cosine_error

from .conftest import zoo_main


def test_bad_graphs_are_clear_errors():
    p = GraphProcessor().fit([Data(x=torch.ones(3, 4), edge_index=torch.tensor([[0, 1], [1, 2]]))])
    assert p.config.num_features == 4
    cases = [(Data(x=torch.ones(0, 4), edge_index=torch.zeros(2, 0, dtype=torch.long)), "'num_nodes': empty graph"),
             (Data(x=torch.ones(3, 4), edge_index=torch.tensor([[0, 1], [1, 5]])), "'target': edge 1: node id 5"),
             (Data(x=torch.tensor([[float("nan")] * 4] * 3), edge_index=torch.tensor([[0], [1]])), "'x': 12 NaN"),
             (Data(x=torch.ones(3, 5), edge_index=torch.tensor([[0], [1]])), "'x': 5 features per node; the model "
                                                                              "expects 4"),
             ({"x": torch.ones(3, 4)}, "'edge_index': missing")]
    for graph, msg in cases:
        with pytest.raises(zoo.BadExample, match=msg):
            p(graph, name="g7")
    no_x = GraphProcessor(zoo.get_modality("graph").processor.config_class(degree_features=3, directed=True))
    out = no_x({"edge_index": torch.tensor([[0, 0, 0, 1], [1, 2, 3, 0]]), "num_nodes": 4})
    assert out["x"].tolist()[0] == [0, 0, 1] and out["x"].tolist()[2] == [1, 0, 0]   # degrees 3 (clipped), 0
    both = GraphProcessor(zoo.get_modality("graph").processor.config_class(degree_features=3))
    out = both({"edge_index": torch.tensor([[0, 0, 0, 1], [1, 2, 3, 0]]), "num_nodes": 4})
    assert out["x"].tolist()[2] == [0, 1, 0]                                 # undirected (default): degree 1
    row = GraphProcessor(zoo.get_modality("graph").processor.config_class(normalize="row"))
    with pytest.raises(zoo.BadExample, match="'x': negative feature values"):
        row({"x": -torch.ones(2, 2), "edge_index": torch.tensor([[0], [1]])}, name="g3")


def test_row_normalisation_and_self_loops():
    cfg = zoo.get_modality("graph").processor.config_class(normalize="row", self_loops=True)
    p = GraphProcessor(cfg)
    out = p({"x": torch.tensor([[1.0, 3.0], [0.0, 0.0], [0.5, 0.0]]),
             "edge_index": torch.tensor([[0, 1, 2, 2], [1, 0, 2, 0]])})       # one self-loop already (2 → 2)
    # rows divided by their sum when it exceeds 1 (PyG NormalizeFeatures): [.25, .75], zeros kept, [.5, 0] kept
    assert out["x"].tolist() == [[0.25, 0.75], [0.0, 0.0], [0.5, 0.0]]
    # undirected (the default): 2 → 0 brings 0 → 2
    assert sorted(map(tuple, out["edge_index"].T.tolist())) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0),
                                                                (2, 2)]


@pytest.mark.parametrize("heads,concat", [(1, False), (3, False), (2, True)])
def test_gat_rows_equals_pyg_gatconv_at_those_rows(heads, concat):
    torch.manual_seed(0)
    conv = GATConv(16, 40, heads=heads, concat=concat, dropout=0.1).eval()
    x = torch.randn(30, 16)
    edges = torch.cat([torch.randint(0, 30, (2, 90)), torch.tensor([[3, 3], [3, 3]])], dim=1)   # with self-loops
    rows = torch.tensor([0, 5, 7, 29, 3])
    with torch.no_grad():
        assert torch.allclose(gat_rows(conv, x, edges, rows), conv(x, edges)[rows], atol=1e-5)


def test_gat_pretrainer_loss_is_sce_of_the_decoded_masked_nodes():
    """The loss by hand: mask with the same generator, encode, re-mask, decode with PyG's GATConv on every node,
    SCE on the masked rows only."""
    data = load_data({"source": "sbm", "n": 60, "features": 12})
    p = GraphProcessor().fit(data.examples)
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(**p.encoder_config(), gnn="gat", hidden=8, heads=2))
    pre = GraphMAEPretrainer(enc, GraphMAEPretrainingConfig(mask_rate=0.5, replace_rate=0.2, gamma=2.0)).eval()
    with torch.no_grad():
        pre.mask_token.normal_()
    batch = p.collate([p(data.examples[0])])
    with torch.no_grad():
        loss = pre(batch, torch.Generator().manual_seed(5)).loss
        nm = node_mask(60, 0.5, 0.2, generator=torch.Generator().manual_seed(5))
        assert int(nm.mask.sum()) == 30 and int(nm.noise.sum()) == 6 and int(nm.token.sum()) == 24
        code = pre.to_decoder(enc.node_embeddings(batch, nm.apply(batch["x"], pre.mask_token)))
        code[nm.mask] = 0.0
        recon = pre.decoder(code, batch["edge_index"])
        expected = scaled_cosine_error(recon[nm.mask], batch["x"][nm.mask], 2.0)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_node_probe_reads_the_split_and_beats_chance_on_sbm():
    spec = {"source": "sbm", "n": 300, "seed": 0}
    data = load_data(spec).examples[0]
    assert (int(data.train_mask.sum()), int(data.val_mask.sum()), int(data.test_mask.sum())) == (30, 60, 210)
    assert not (data.train_mask & data.test_mask).any() and not (data.val_mask & data.test_mask).any()
    p = GraphProcessor().fit([data])
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(**p.encoder_config(), gnn="gat", hidden=16, heads=2))
    result = node_probe(enc, p, spec, epochs=100)
    assert result["linear_probe"] > 0.5 and 0 <= result["val"] <= 1          # 3 classes: chance is 1/3


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
    out = zoo_main("pretrain", "graph-graphmae-motifs", "--output", str(tmp_path / "run"), "--set", "train.steps=3")
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
    report = json.loads(zoo_main("evaluate", str(model)).stdout)
    assert 0 <= report["pretrained"]["linear_probe"] <= 1


def test_end_to_end_node_level_gat_on_sbm(tmp_path):
    out = zoo_main("pretrain", "graph-graphmae-sbm", "--output", str(tmp_path / "run"), "--set", "train.steps=4")
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model"
    enc, proc = zoo.AutoEncoder.from_pretrained(model), zoo.AutoProcessor.from_pretrained(model)
    assert proc.config.normalize == "row" and enc.config.gnn == "gat"
    batch = proc.collate([proc(load_data({"source": "sbm", "n": 300}).examples[0])])
    with torch.no_grad():
        a = enc.node_embeddings(batch)
        b = zoo.AutoEncoder.from_pretrained(model).node_embeddings(batch)
    assert a.shape == (300, 32) and torch.equal(a, b)
    report = json.loads(zoo_main("evaluate", str(model), "--no-baseline").stdout)
    assert report["protocol"] == "node" and 0 <= report["pretrained"]["linear_probe"] <= 1
    # with baselines (issue #32: graphs had none): SGC features through the same probe, the verdict, the card
    report = json.loads(zoo_main("evaluate", str(model)).stdout)
    sgc = report["baselines"]["SGC features (x, Âx, Â²x)"]["linear_probe"]
    assert 0.5 < sgc <= 1 and report["verdict"]["baseline_value"] == sgc
    assert report["verdict"]["reaches"] == (report["pretrained"]["linear_probe"] >= sgc)
    assert "SGC features" in (model / "README.md").read_text()


def test_tables_source_reads_node_and_edge_tables_through_datasets(tmp_path):
    import datasets
    nodes = datasets.Dataset.from_dict({"id": ["a", "b", "c", "d", "e"], "graph": [0, 0, 0, 1, 1],
                                        "f1": [1.0, 0.0, 2.0, 1.0, 1.0], "f2": [0.5, 0.5, 0.0, 3.0, 1.0],
                                        "label": [1, 1, 1, 0, 0]})
    edges = datasets.Dataset.from_dict({"source": ["a", "b", "d"], "target": ["b", "c", "e"], "graph": [0, 0, 1]})
    nodes.to_csv(tmp_path / "nodes.csv")
    edges.to_csv(tmp_path / "edges.csv")
    spec = {"source": "tables", "nodes": str(tmp_path / "nodes.csv"), "edges": str(tmp_path / "edges.csv"),
            "features": ["f1", "f2"], "graph_column": "graph", "label_column": "label"}
    data = load_data(spec)
    assert len(data) == 2 and data.labels == [1, 0] and data.names == ["0", "1"]
    g0, g1 = data.examples
    assert g0.x.tolist() == [[1.0, 0.5], [0.0, 0.5], [2.0, 0.0]] and g0.edge_index.tolist() == [[0, 1], [1, 2]]
    assert g1.edge_index.tolist() == [[0], [1]]
    one = load_data({"source": "tables", "nodes": nodes, "edges": edges, "features": ["f1", "f2"]})
    # without graph_column: one graph, each node an example (node-level data)
    assert len(one) == 5 and one.names == ["a", "b", "c", "d", "e"] and one.labels is None
    assert one.examples[0].graph.data.edge_index.tolist() == [[0, 1, 3], [1, 2, 4]]
    with pytest.raises(KeyError, match=r"nodes table: unknown column\(s\) \['f3'\]"):
        load_data({**spec, "features": ["f1", "f3"]})
    bad = datasets.Dataset.from_dict({"source": ["a", "d"], "target": ["z", "e"], "graph": [0, 1]})
    broken = load_data({**spec, "edges": bad})                   # graph 0 alone cannot be read, in its place
    assert isinstance(broken.examples[0], zoo.Unreadable) and broken.examples[1].edge_index.tolist() == [[0], [1]]
    with pytest.raises(zoo.BadExample, match="'target'.*graph 0.*node id 'z' is not in the nodes table"):
        GraphProcessor().fit([g1])(broken.examples[0])


def test_pyg_dataset_source():
    graphs = load_data({"source": "motifs", "n": 4}).examples
    for i, g in enumerate(graphs):
        g.y = torch.tensor([i % 2])
    data = load_data({"source": "pyg", "dataset": graphs})
    assert len(data) == 4 and data.labels == [0, 1, 0, 1] and data.names[0] == "list[0]"


def test_gat_layers_start_from_graphmae_init():
    """Xavier-normal with the ReLU gain: std = sqrt(2) * sqrt(2 / (fan_in + fan_out))."""
    torch.manual_seed(0)
    enc = GraphMAEEncoder(GraphMAEConfig(in_dim=1000, hidden=512, heads=4, layers=2))
    conv = enc.gnn.convs[0]
    assert conv.lin.weight.std().item() == pytest.approx(2 ** 0.5 * (2 / (1000 + 512)) ** 0.5, rel=0.02)
    assert conv.att_src.std().item() == pytest.approx(2 ** 0.5 * (2 / (512 + 128)) ** 0.5, rel=0.1)
    assert conv.bias.abs().sum() == 0
    pyg = GraphMAEEncoder(GraphMAEConfig(in_dim=1000, hidden=512, heads=4, layers=2, init="pyg"))
    bound = (6 / (1000 + 512)) ** 0.5                                        # glorot uniform
    assert pyg.gnn.convs[0].lin.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.02)


def test_demo_publishes_the_node_level_model_and_reloads_it_by_hub_id(tmp_path, capsys):
    from pipelines.demo import run
    out = run("graph-graphmae-sbm", tmp_path, overrides=["train.steps=3"])
    assert out["repo_id"] == "ssl-zoo/graph-graphmae-sbm" and out["report"]["protocol"] == "node"
    printed = capsys.readouterr().out
    assert "Protocol `node`" in printed and "identical to the saved folder: True" in printed
    assert (tmp_path / "hub").is_dir()


def test_card_usage_example_runs_on_a_row_normalising_processor():
    cfg = zoo.get_modality("graph").processor.config_class(num_features=6, normalize="row", self_loops=True)
    processor = GraphProcessor(cfg)
    encoder = GraphMAEEncoder(GraphMAEConfig(in_dim=6, hidden=8, heads=2)).eval()
    scope = {"processor": processor}
    exec(zoo.get_modality("graph").usage_example, scope)
    with torch.no_grad():
        out = encoder(processor.collate([processor(scope["example"])]))
    assert out.pooled.shape == (1, 8) and out.tokens.shape == (1, 5, 8)


def test_incomplete_planetoid_copy_names_the_missing_files(tmp_path, monkeypatch):
    raw = tmp_path / "planetoid" / "PubMed" / "raw"
    raw.mkdir(parents=True)
    for part in ("x", "tx", "y", "ty", "ally", "graph", "test.index"):
        (raw / f"ind.pubmed.{part}").write_bytes(b"")
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"planetoid/PubMed is incomplete .*missing ind\.pubmed\.allx$"):
        load_data({"source": "planetoid", "name": "PubMed"})


def test_one_node_feature_is_refused_for_pretraining_and_degrees_can_be_appended():
    """GraphMAE's cosine loss on one feature is only a sign: a new user's one-feature graphs gave losses 4k/n and
    a pretrained encoder equal to random init, with no word said."""
    g = Data(x=torch.tensor([[0.5], [1.5], [2.5]]), edge_index=torch.tensor([[0, 1], [1, 2]]))
    plain = GraphProcessor().fit([g])
    with pytest.raises(ValueError, match="one node feature.*processor.append_degrees=true"):
        GraphMAEPretrainer(GraphMAEEncoder(GraphMAEConfig(**plain.encoder_config())), GraphMAEPretrainingConfig())
    cfg = zoo.get_modality("graph").processor.config_class(degree_features=3, append_degrees=True)
    both = GraphProcessor(cfg).fit([g])
    x = both(g)["x"]
    assert both.config.num_features == 4 and x.shape == (3, 4)
    assert torch.equal(x[:, 0], g.x[:, 0]) and x[:, 1:].tolist() == [[0, 1, 0], [0, 0, 1], [0, 1, 0]]   # undirected
    GraphMAEPretrainer(GraphMAEEncoder(GraphMAEConfig(**both.encoder_config())), GraphMAEPretrainingConfig())
    with pytest.raises(Exception, match="append_degrees"):
        zoo.get_modality("graph").processor.config_class(append_degrees=True).validate()


def test_one_graph_with_an_edge_to_a_missing_node_is_named_before_training_or_skipped_alone(tmp_path):
    """A new user's graph folder with one bad edge could not be used at all, skip_bad or not: the table was refused
    whole. Now that graph alone is unreadable: named before the first step, or skipped and counted."""
    import pandas as pd
    folder = tmp_path / "graphs"
    folder.mkdir()
    nodes, edges = [], []
    for g in range(12):
        kind = "ring" if g % 2 else "clique"
        for i in range(5):
            nodes.append({"graph": f"{kind}{g}", "id": i, "shape": kind, "f1": float(i), "f2": float(g % 3)})
        pairs = [(i, (i + 1) % 5) for i in range(5)] if kind == "ring" else \
            [(i, j) for i in range(5) for j in range(i + 1, 5)]
        edges += [{"graph": f"{kind}{g}", "source": a, "target": b} for a, b in pairs]
    edges.append({"graph": "ring3", "source": 0, "target": 99})
    pd.DataFrame(nodes).to_csv(folder / "nodes.csv", index=False)
    pd.DataFrame(edges).to_csv(folder / "edges.csv", index=False)
    args = ["pretrain", "graph-graphmae-motifs", "--data", str(folder), "--label-column", "shape",
            "--set", "train.steps=2", "--set", "train.batch_size=4"]
    res = zoo_main(*args, "--output", str(tmp_path / "a"))
    assert res.returncode == 2 and "(graph 'ring3'): node id 99 is not in the nodes table" in res.stderr
    assert "1 of 12 examples cannot be read; --set train.skip_bad=true skips" in res.stderr
    assert not (tmp_path / "a" / "checkpoints").exists()
    res = zoo_main(*args, "--set", "train.skip_bad=true", "--output", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert "1 of 12 examples cannot be read and are skipped (train.skip_bad)" in res.stderr
    res = zoo_main("finetune", str(tmp_path / "b" / "model"), "--data", str(folder), "--label-column", "shape",
                   "--steps", "1", "--output", str(tmp_path / "c"))
    assert res.returncode == 2 and "--set finetune.skip_bad=true skips" in res.stderr
