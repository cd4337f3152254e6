"""Event-sequence modality (CoLES): grouping and time order, slices, the loss by hand, unit norm, batch
independence, bad input, streaming, aggregates, and pretrain → save → reload from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from modalities.events import (
    CoLESConfig,
    CoLESEncoder,
    CoLESPretrainer,
    CoLESPretrainingConfig,
    EventProcessor,
    EventProcessorConfig,
    group_events,
    load_data,
    make_cardholders,
)
from modalities.events.baselines import history_aggregates
from modalities.events.model import slice_batch
from tests.conftest import zoo_main
from zoo.masking import subsequence_slices
from zoo.objectives import margin_contrastive

LOG = pd.DataFrame({
    "user": ["b", "a", "b", "a", "a", "b", "c"],
    "time": [30.0, 20.0, 10.0, 5.0, 20.0, 20.0, 1.0],
    "kind": ["x", "y", "z", "x", "x", "y", "z"],
    "amount": [3.0, 2.0, 1.0, 4.0, 5.0, 6.0, 7.0],
})


def fitted(**cfg) -> EventProcessor:
    return EventProcessor(EventProcessorConfig(entity_column="user", **cfg)).fit(group_events(LOG, "user"))


def test_grouping_and_time_order_with_stable_ties_and_most_recent_kept():
    h = group_events(LOG, "user")
    assert h.entities == ["b", "a", "c"] and list(h.lengths()) == [3, 3, 1]
    assert list(h[1]["amount"]) == [2.0, 4.0, 5.0]                      # table order inside an entity
    proc = fitted()
    assert proc.schema.numerical == ["amount"] and proc.schema.categorical == ["kind"]
    amount = lambda out: (out["num"][:, 0] * proc.schema.std[0] + proc.schema.mean[0]).tolist()  # noqa: E731
    a = proc(h[1], name="a")
    assert amount(a) == pytest.approx([4.0, 2.0, 5.0])                  # sorted by time; the tie 20/20 stable
    assert a["dt"].tolist() == pytest.approx([0.0, np.log1p(15 / 3600), 0.0])
    b = proc(h[0], name="b")
    assert amount(b) == pytest.approx([1.0, 6.0, 3.0])
    last2 = fitted(max_events=2)(h[0], name="b")                         # the two most recent events
    assert (last2["num"] == b["num"][1:]).all() and last2["dt"][1] == b["dt"][2]
    vocab = proc.schema.vocab["kind"]
    assert [vocab[i - 2] for i in b["cat"][:, 0].tolist()] == ["z", "y", "x"]


def test_timestamps_numbers_datetimes_and_strings_agree():
    proc = fitted()
    hist = {"time": [0.0, 90.0, 3690.0], "kind": ["x", "y", "x"], "amount": [1.0, 2.0, 3.0]}
    base = proc(hist, name="n")["dt"]
    stamps = pd.to_datetime([0, 90, 3690], unit="s")
    as_dt = proc({**hist, "time": stamps.to_numpy()}, name="d")["dt"]
    as_str = proc({**hist, "time": [s.isoformat() for s in stamps]}, name="s")["dt"]
    in_ms = EventProcessor(EventProcessorConfig(entity_column="user", time_unit="ms")).fit(
        group_events(LOG, "user"))({**hist, "time": [0, 90_000, 3_690_000]}, name="ms")["dt"]
    assert torch.allclose(base, as_dt) and torch.allclose(base, as_str) and torch.allclose(base, in_ms)
    assert base.tolist() == pytest.approx([0.0, np.log1p(90 / 3600), np.log1p(1.0)])


@pytest.mark.parametrize("history, field, reason", [
    ({"kind": ["x"], "amount": [1.0]}, "time", "no time column 'time'"),
    ({"time": [1.0, "soon"], "kind": ["x", "y"], "amount": [1.0, 2.0]}, "time",
     "event 2 of 2 as listed: unparseable timestamp 'soon'"),
    ({"time": ["2026-01-01", None], "kind": ["x", "y"], "amount": [1.0, 2.0]}, "time",
     "event 2 of 2 as listed: missing timestamp"),
    ({"time": [1.0, float("nan")], "kind": ["x", "y"], "amount": [1.0, 2.0]}, "time",
     "event 2 of 2 as listed: timestamp nan"),
    ({"time": [], "kind": [], "amount": []}, "time", "the entity has no events"),
    ({"time": [1.0, 2.0], "kind": ["x", "y"], "amount": [1.0, float("nan")]}, "amount", "missing value nan"),
    ({"time": [1.0, 2.0], "kind": ["x", "y"], "amount": [1.0, float("inf")]}, "amount", "infinite value"),
    ({"time": [1.0, 2.0], "kind": ["x", "y"]}, "amount", "missing event field(s) ['amount']"),
    ({"time": [1.0], "user": ["a"], "kind": ["x", "y"], "amount": [1.0]}, "history", "columns of different lengths"),
    ({"time": [1.0, 2.0], "user": ["a", "b"], "kind": ["x", "y"], "amount": [1.0, 2.0]}, "user", "several entities"),
    ([1, 2, 3], "history", "expected a mapping of columns"),
])
def test_bad_histories_name_the_entity_and_the_field(history, field, reason):
    with pytest.raises(zoo.BadExample) as err:
        fitted()(history, name="user42")
    assert err.value.field == field and "user42" in str(err.value) and reason in str(err.value)


def test_missing_values_policy_and_unknown_categories():
    proc = fitted(missing_values="missing")
    out = proc({"time": [1.0, 2.0], "kind": ["x", "never seen"], "amount": [1.0, None]}, name="u")
    assert out["num_missing"][:, 0].tolist() == [False, True] and out["num"][1, 0] == 0
    assert out["cat"][1, 0] == 1                                          # the unknown bucket
    with pytest.raises(zoo.BadExample, match="unseen category 'never seen'"):
        fitted(unknown_category="error")({"time": [1.0], "kind": ["never seen"], "amount": [1.0]}, name="u")
    with pytest.raises(KeyError, match="no entity column 'person'"):
        group_events(LOG, "person")


def test_slices_stay_within_the_documented_bounds_and_copy_the_events():
    lengths = torch.tensor([3, 12, 50, 300])
    g = torch.Generator().manual_seed(0)
    starts, view = subsequence_slices(lengths.repeat(200), 5, 10, 40, generator=g)
    L = lengths.repeat(200)[:, None]
    assert (view >= L.clamp(max=10)).all() and (view <= L.clamp(max=40)).all()
    assert (starts >= 0).all() and (starts + view <= L).all()
    assert set(view[3::4].flatten().tolist()) == set(range(10, 41))       # every length in [cnt_min, cnt_max]
    assert (view[0::4] == 3).all()                                        # shorter than cnt_min: the whole history
    # slice_batch copies events starts..starts+len-1 and starts each view at Δt 0
    t = torch.arange(12.0)
    batch = {"cat": torch.arange(24).reshape(1, 12, 2), "num": t.reshape(1, 12, 1),
             "num_missing": torch.zeros(1, 12, 1, dtype=torch.bool), "dt": t[None] + 1,
             "padding_mask": torch.zeros(1, 12, dtype=torch.bool)}
    views = slice_batch(batch, torch.tensor([[2, 7]]), torch.tensor([[3, 5]]))
    assert views["num"][:, :, 0].tolist() == [[2, 3, 4, 0, 0], [7, 8, 9, 10, 11]]
    assert views["dt"].tolist() == [[0, 4, 5, 0, 0], [0, 9, 10, 11, 12]]
    assert views["padding_mask"].tolist() == [[False] * 3 + [True] * 2, [False] * 5]
    assert views["cat"][0, :3].tolist() == [[4, 5], [6, 7], [8, 9]] and (views["cat"][0, 3:] == 0).all()


def test_margin_loss_by_hand_on_a_tiny_batch():
    # two entities, two views each, on the unit circle: a0=(1,0) a1=(0.8,0.6) b0=(0,1) b1=(-0.6,0.8)
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    y = torch.tensor([0, 0, 1, 1])
    d = lambda i, j: float((z[i] - z[j]).norm())  # noqa: E731
    # positives (a0,a1), (b0,b1): d² = 0.4 each. Margin 1.5; each anchor's one hardest negative:
    # a0→b0 (√2), a1→b0 (√0.8), b0→a1 (√0.8), b1→a1 (√1.96=1.4)
    hard = [(1.5 - d(0, 2)) ** 2, (1.5 - d(1, 2)) ** 2, (1.5 - d(2, 1)) ** 2, (1.5 - d(3, 1)) ** 2]
    expected = (0.4 + 0.4 + sum(hard)) / 6
    assert margin_contrastive(z, y, margin=1.5, hard_negatives=1).item() == pytest.approx(expected, rel=1e-6)
    # every negative pair once (i < j): a0b0 a0b1 a1b0 a1b1, hinged at margin 1.5
    neg = [(1.5 - d(i, j)) ** 2 if d(i, j) < 1.5 else 0.0 for i, j in [(0, 2), (0, 3), (1, 2), (1, 3)]]
    assert margin_contrastive(z, y, margin=1.5).item() == pytest.approx((0.8 + sum(neg)) / 6, rel=1e-6)
    # margin 0.5 (the paper's): every negative here is farther than 0.5 → only the positives cost
    assert margin_contrastive(z, y, margin=0.5, hard_negatives=5).item() == pytest.approx(0.8 / 6, rel=1e-6)


def _encoder(backbone: str, proc: EventProcessor) -> CoLESEncoder:
    torch.manual_seed(0)
    return CoLESEncoder(CoLESConfig(hidden=16, embed_dim=4, backbone=backbone, heads=2,
                                    **proc.encoder_config())).eval()


@pytest.mark.parametrize("backbone", ["gru", "transformer"])
def test_unit_norm_and_an_entity_independent_of_its_batch(backbone):
    table, _ = make_cardholders(12, seed=1, min_events=5, max_events=60)
    h = group_events(table, "entity")
    proc = EventProcessor().fit(h)
    enc = _encoder(backbone, proc)
    items = [proc(h[i], name=h.entities[i]) for i in range(len(h))]
    with torch.no_grad():
        together = enc(proc.collate(items)).pooled
        alone = torch.cat([enc(proc.collate([it])).pooled for it in items])
        reordered = enc(proc.collate(items[::-1])).pooled.flip(0)
    assert torch.allclose(together.norm(dim=1), torch.ones(len(h)), atol=1e-6)
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(together, reordered, atol=1e-5)


def test_pretrainer_slices_each_entity_and_trains():
    table, _ = make_cardholders(16, seed=2, min_events=20, max_events=80)
    h = group_events(table, "entity")
    proc = EventProcessor().fit(h)
    enc = _encoder("gru", proc).train()
    pre = CoLESPretrainer(enc, CoLESPretrainingConfig(split_count=3, cnt_min=5, cnt_max=15))
    batch = proc.collate([proc(h[i]) for i in range(8)])
    out = pre(batch, torch.Generator().manual_seed(0))
    assert out.loss.requires_grad and 5 <= out.metrics["view_events"] <= 15
    out.loss.backward()
    assert all(p.grad is not None for p in enc.rnn.parameters())
    again = pre(batch, torch.Generator().manual_seed(0))
    assert again.loss.item() == pytest.approx(out.loss.item())              # the generator decides every slice


def test_aggregates_by_hand():
    proc = fitted()
    item = proc({"time": [1.0, 2.0, 3.0], "kind": ["x", "x", "y"], "amount": [1.0, 3.0, 8.0]}, name="u")
    f = history_aggregates(item, proc.schema.cardinalities)
    z = item["num"][:, 0]
    assert f[0] == 3 and f[2] == pytest.approx(float(z.sum())) and f[3] == pytest.approx(float(z.mean()))
    x, y = proc.schema.vocab["kind"].index("x") + 2, proc.schema.vocab["kind"].index("y") + 2
    shares = f[9: 9 + proc.schema.cardinalities[0]]
    assert shares[x] == pytest.approx(2 / 3) and shares[y] == pytest.approx(1 / 3)
    means = f[9 + proc.schema.cardinalities[0]:]
    assert means[x] == pytest.approx(float(z[:2].mean())) and means[y] == pytest.approx(float(z[2]))


def test_stream_source_reads_clustered_parquet_one_history_at_a_time(tmp_path):
    table, seg = make_cardholders(20, seed=3, min_events=3, max_events=40)
    df = pd.DataFrame(table).sort_values("entity", kind="stable")
    df["segment"] = [["commuter", "family", "traveller", "student"][seg[int(e[6:])]] for e in df["entity"]]
    df.to_parquet(tmp_path / "a.parquet", row_group_size=50)
    stream = load_data({"source": "stream", "path": str(tmp_path), "label_column": "segment",
                        "label_names": ["commuter", "family", "student", "traveller"], "read_batch": 17})
    recs = list(stream.records(0, 1, 0))
    grouped = group_events(df, "entity")
    assert [r[2].split(":")[-1] for r in recs] == grouped.entities
    assert all((r[0]["amount"] == grouped[i]["amount"]).all() for i, r in enumerate(recs))
    parts = [[r[2] for r in stream.records(p, 3, 0)] for p in range(3)]
    assert sorted(sum(parts, [])) == sorted(r[2] for r in recs) and not set(parts[0]) & set(parts[1])
    df.sample(frac=1, random_state=0).to_parquet(tmp_path / "a.parquet")   # not clustered by entity
    with pytest.raises(ValueError, match="clustered by entity"):
        list(stream.records(0, 1, 0))


@pytest.mark.slow   # the conformance suite runs this path (zoo pretrain --data, reload, identical outputs)
def test_end_to_end_cli_pretrain_save_reload_same_embeddings(tmp_path):
    table, seg = make_cardholders(60, seed=4, min_events=10, max_events=60)
    df = pd.DataFrame(table)
    df["segment"] = [seg[int(e[6:])] for e in df["entity"]]
    df.to_csv(tmp_path / "log.csv", index=False)
    recipe = tmp_path / "r.yaml"
    data = {"source": "table", "path": str(tmp_path / "log.csv"), "entity_column": "entity", "label_column": "segment"}
    recipe.write_text(json.dumps({
        "name": "events-e2e", "modality": "events", "architecture": "coles",
        "encoder": {"hidden": 16, "embed_dim": 4}, "pretraining": {"split_count": 3, "cnt_min": 5, "cnt_max": 20},
        "processor": {"exclude": ["segment"]},
        "data": {"train": {**data, "split": "train"}},
        "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 3},
        "evaluate": {"protocol": "boosting", "train": {**data, "split": "train"}, "test": {**data, "split": "test"},
                     "boosting": {"max_iter": 5}}}))
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model"
    enc, proc = zoo.AutoEncoder.from_pretrained(model), zoo.AutoProcessor.from_pretrained(model)
    assert type(enc).__name__ == "CoLESEncoder" and proc.schema.categorical == ["mcc", "channel"]
    hist = group_events(df[df["entity"].isin(["holder00003", "holder00007"])], "entity")
    with torch.no_grad():
        direct = enc(proc.collate([proc(hist[i], name=hist.entities[i]) for i in range(2)])).pooled
    df[df["entity"].isin(["holder00003", "holder00007"])].to_csv(tmp_path / "two.csv", index=False)
    out = zoo_main("embed", str(model), str(tmp_path / "two.csv"), "--output", str(tmp_path / "e.safetensors"))
    assert out.returncode == 0, out.stderr
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(tmp_path / "e.safetensors"))["embeddings"], direct)
    df.drop(columns="time").head(30).to_csv(tmp_path / "no_time.csv", index=False)   # documented: an error
    out = zoo_main("embed", str(model), str(tmp_path / "no_time.csv"))
    assert out.returncode == 2 and "field 'time': no time column 'time'" in out.stderr, out.stderr
    out = zoo_main("evaluate", str(model))
    assert out.returncode == 0, out.stderr
    report = json.loads((model / "eval_results.json").read_text())
    assert set(report["pretrained"]) == {"embeddings", "aggregates", "both"}


def test_a_label_that_varies_within_an_entity_names_the_entity(caplog):
    from modalities.events.data import entity_labels, group_events
    log = {"entity": np.array(["a", "a", "b", "b", "b"]), "time": np.arange(5.0),
           "segment": np.array(["x", "x", "y", "z", "z"], dtype=object)}
    with caplog.at_level("INFO", logger="modalities.events.data"):
        labels, names = entity_labels(group_events(log, "entity"), "segment")
    assert names == ["x", "z"] and labels == [0, 1]                      # b takes its most frequent value
    assert "varies within 1 entities (b)" in caplog.text
