"""Binding two modalities (issue #34; docs/architecture.md, "Binding"): the CLIP loss and the retrieval measures
against hand-computed values, paired data (a missing side, a corrupt file, an unknown entity named with the pair
and the side), and a bind run of the toy plugin with tables: reload, one side alone, ``zoo search``, a SIGKILLed run
resumed bit for bit, a run made to collapse stopped by the alarm."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo
from pipelines.pairs import PairProcessor, load_pairs, pair_by_label, split_batch
from pipelines.retrieval import chance_metrics, partner_ranks, prototype_accuracy, retrieval_metrics
from zoo import objectives as O

LOG1PE = math.log(1 + math.exp(-1))


def test_clip_loss_is_symmetric_infonce_at_the_learned_temperature():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # inverse temperature exp(0) = 1: each row's logits [1, 0] → -log(e / (e + 1)) both ways
    assert O.clip_loss(a, a, torch.tensor(0.0)).item() == pytest.approx(LOG1PE, abs=1e-6)
    # inverse temperature 2: logits [2, 0] → log(1 + e^-2)
    assert O.clip_loss(a, a, torch.tensor(math.log(2.0))).item() == pytest.approx(math.log(1 + math.exp(-2)),
                                                                                  abs=1e-6)
    scale = torch.tensor(0.5, requires_grad=True)
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    O.clip_loss(a, b, scale).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_partner_ranks_and_recall_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    # q0 → cos with x: [0.995, 1, 0] → partner x0 second; q1 → [0.0995, 0, 1] → partner x1 third;
    # q2 → [0.774, 0.707, 0.707] → partner x2 tied with x1 behind x0: pessimistic rank 3
    assert partner_ranks(q, x).tolist() == [2, 3, 3]
    m = retrieval_metrics(q, x, ("q", "x"), ks=(1, 2))
    assert m["q→x"] == {"R@1": 0.0, "R@2": pytest.approx(1 / 3), "median_rank": 3.0, "mean_rank": pytest.approx(8 / 3)}
    assert partner_ranks(q, q).tolist() == [1, 1, 1]
    assert chance_metrics(4, ks=(1, 5)) == {"R@1": 0.25, "R@5": 1.0, "median_rank": 2.0, "mean_rank": 2.5}


def test_prototype_accuracy_by_hand():
    other = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    query = torch.tensor([[0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    # class 0's prototype points along x, class 1's along y: queries 0 → 0, 1 → 1, 2 → 1
    assert prototype_accuracy(query, [0, 1, 0], other, [0, 0, 1]) == pytest.approx(2 / 3)


@pytest.fixture()
def pair_table(toy_plugin, tmp_path) -> Path:
    """A pairs table: a toy sequence file and a table row (its cells f0, f1 in the same row) per pair, the row's
    numbers following the sequence's class so that the pairs can be learned; a split column."""
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "seqs").mkdir()
    for i in range(48):
        y = i % 3
        t = np.linspace(0, 2 * np.pi * (1 + y), 24, dtype=np.float32)
        seq = np.stack([np.sin(t + k) for k in range(4)], 1) + np.float32(1.5 * y) + rng.normal(0, 0.1, (24, 4))
        np.save(tmp_path / "seqs" / f"{i}.npy", seq.astype(np.float32))
        rows.append({"seq": f"seqs/{i}.npy", "f0": float(y + rng.normal(0, 0.2)), "f1": float(rng.normal()),
                     "label": f"c{y}", "split": "test" if i % 4 == 0 else "train"})
    import pandas as pd
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    return tmp_path / "pairs.csv"


def _spec(table: Path, split: str, **extra) -> dict:
    return {"source": "table", "path": str(table), "columns": {"toyseq": "seq", "tabular": ["f0", "f1"]},
            "split": split, "label_column": "label", **extra}


def _recipe(table: Path, **extra) -> dict:
    return {"name": "toy-bind", "bind": {"dim": 8, "sides": {"toyseq": {"recipe": "toyseq-tiny"},
                                                             "tabular": {"recipe": str(_table_recipe(table))}}},
            "data": {"train": _spec(table, "train")}, "evaluate": {"test": _spec(table, "test")},
            "train": {"steps": 12, "batch_size": 12, "lr": 0.003, "warmup_steps": 2, "checkpoint_every": 4,
                      "keep_checkpoints": 20, "quality_every": 0, "seed": 0, **extra}}


def _table_recipe(table: Path) -> Path:
    path = table.parent / "tabular-small.yaml"
    if not path.is_file():
        import yaml

        from pipelines.recipe import load_recipe
        raw = load_recipe("tabular-tjepa-demo", ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2",
                                                 "processor.exclude=[]"]).to_dict()
        raw.pop("evaluate", None)
        path.write_text(yaml.safe_dump(raw))
    return path


def test_paired_table_reads_files_rows_splits_and_labels(pair_table):
    pairs = load_pairs(_spec(pair_table, "train"), ["toyseq", "tabular"])
    assert len(pairs) == 36 and pairs.label_names == ["c0", "c1", "c2"]
    first = pairs.examples[0]
    assert first["toyseq"] == str(pair_table.parent / "seqs" / "1.npy") and set(first["tabular"]) == {"f0", "f1"}
    import pandas as pd
    table = pd.read_csv(pair_table)
    table.loc[(table["split"] == "test") & (table["label"] == "c0"), "label"] = "c1"     # c0 in train only
    table.to_csv(pair_table, index=False)
    train, test = (load_pairs(_spec(pair_table, s), ["toyseq", "tabular"]) for s in ("train", "test"))
    assert train.label_names == test.label_names == ["c0", "c1", "c2"]                  # one id per class
    assert set(test.labels) == {1, 2} and set(train.labels) == {0, 1, 2}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colums'\]"):
        load_pairs({**_spec(pair_table, "train"), "colums": {}}, ["toyseq", "tabular"])
    with pytest.raises(ValueError, match="one column per side"):
        load_pairs({**_spec(pair_table, "train"), "columns": {"toyseq": "seq"}}, ["toyseq", "tabular"])
    with pytest.raises(ValueError, match=r"no column\(s\) \['sequence'\]"):
        load_pairs({**_spec(pair_table, "train"), "columns": {"toyseq": "sequence", "tabular": ["f0"]}},
                   ["toyseq", "tabular"])
    with pytest.raises(ValueError, match=r"no row has split = 'tset'; its values: \['test', 'train'\]"):
        load_pairs(_spec(pair_table, "tset"), ["toyseq", "tabular"])


def test_pairs_are_named_by_an_id_column_and_repeated_names_reported(pair_table, caplog):
    import pandas as pd
    table = pd.read_csv(pair_table)
    table["id"] = [f"item-{i}" for i in range(len(table))]
    table.loc[5, "id"] = "item-1"                                                        # a repeat, in train
    table.to_csv(pair_table, index=False)
    with caplog.at_level("WARNING", logger="pipelines.pairs"):
        pairs = load_pairs(_spec(pair_table, "train"), ["toyseq", "tabular"])
    assert pairs.name(0) == "item-1" and pairs.name(3) == "item-1"
    assert "1 name(s) repeat (e.g. ['item-1'])" in caplog.text


def test_a_bad_side_is_named_with_its_pair(pair_table):
    from pipelines.build import build
    from pipelines.pairs import side_examples
    from pipelines.recipe import load_recipe
    from zoo import BadExample
    pairs = load_pairs(_spec(pair_table, "train"), ["toyseq", "tabular"])
    procs = {"toyseq": build(load_recipe("toyseq-tiny"), data=side_examples(pairs, "toyseq")).processor,
             "tabular": build(load_recipe(str(_table_recipe(pair_table))),
                              data=side_examples(pairs, "tabular")).processor}
    proc = PairProcessor(procs)
    item = proc(pairs.examples[0], name="pair 0")
    batch = proc.collate([item, proc(pairs.examples[1], name="pair 1")])
    parts = split_batch(batch, ["toyseq", "tabular"])
    assert set(parts) == {"toyseq", "tabular"} and all(parts[m] for m in parts)
    (pair_table.parent / "seqs" / "broken.npy").write_bytes(b"not numpy")
    for example, field in (({"toyseq": None, "tabular": pairs.examples[0]["tabular"]}, "toyseq"),
                           ({"toyseq": str(pair_table.parent / "seqs" / "broken.npy"),
                             "tabular": pairs.examples[0]["tabular"]}, "toyseq"),
                           ({"toyseq": str(pair_table.parent / "seqs" / "nowhere.npy"),
                             "tabular": pairs.examples[0]["tabular"]}, "toyseq")):
        with pytest.raises(BadExample, match=rf"example pair 7: field '{field}") as err:
            proc(example, name="pair 7")
        assert err.value.example == "pair 7"


def test_a_missing_entity_is_named(toy_plugin, tmp_path):
    """A pairs table whose id column looks up a modality's own data: an id with no entity is refused naming the pair
    and the side (skipped and counted with skip_bad)."""
    import pandas as pd

    from zoo import BadExample
    events = tmp_path / "events.csv"
    pd.DataFrame({"entity": ["a", "a", "b", "b"], "time": [1, 2, 1, 3], "amount": [1.0, 2.0, 3.0, 4.0]}).to_csv(
        events, index=False)
    pd.DataFrame({"id": ["a", "zz"], "f0": [1.0, 2.0]}).to_csv(tmp_path / "pairs.csv", index=False)
    pairs = load_pairs({"source": "table", "path": str(tmp_path / "pairs.csv"), "name_column": "id",
                        "columns": {"events": "id", "tabular": ["f0"]},
                        "lookup": {"events": {"source": "table", "path": str(events), "entity_column": "entity"}}},
                       ["events", "tabular"])
    assert pairs.names == ["a", "zz"] and pairs.examples[0]["events"] is not None

    class Echo(zoo.Processor):
        def __call__(self, example, *, name=None):
            return {"x": torch.zeros(1)}

        def collate(self, items):
            return {"x": torch.stack([i["x"] for i in items])}
    proc = PairProcessor({"events": Echo(), "tabular": Echo()})
    proc(pairs.examples[0], name="a")
    with pytest.raises(BadExample, match=r"example zz: field 'events': no entity 'zz' in the events data"):
        proc(pairs.examples[1], name="zz")
    from pipelines.bind import refuse_absent
    with pytest.raises(BadExample, match=r"example zz: field 'events': no entity 'zz' .*evaluate.test; --set "
                                         r"train.skip_bad=true skips"):
        refuse_absent(pairs, "evaluate.test", skip_bad=False)          # when the pairs load, before any training
    refuse_absent(pairs, "evaluate.test", skip_bad=True)


def test_pairs_without_a_label_are_bound_and_left_out_of_zero_shot_only(pair_table, tmp_path):
    import pandas as pd
    table = pd.read_csv(pair_table)
    table.loc[[1, 4, 8], "label"] = None                                 # a train pair and two held-out ones
    table.to_csv(pair_table, index=False)
    _bind(_recipe(pair_table), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert report["pairs"] == 12 and report["zero_shot"]["labelled_pairs"] == 10
    assert 0 <= report["zero_shot"]["toyseq→tabular prototypes"] <= 1


def _bind(recipe: dict, out: Path, **kwargs):
    from pipelines.bind import bind, parse_bind_recipe
    return bind(parse_bind_recipe(recipe), out, **kwargs)


def test_bind_run_reloads_searches_and_each_side_loads_alone(pair_table, tmp_path):
    summary = _bind(_recipe(pair_table), tmp_path / "run")
    folder = tmp_path / "run" / "model"
    assert summary["steps"] == 12 and summary["evaluation"]["pairs"] == 12
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(report["retrieval"]) == {"toyseq→tabular", "tabular→toyseq"}
    assert report["chance"]["R@1"] == pytest.approx(1 / 12)
    assert report["zero_shot"]["majority_class"] == pytest.approx(4 / 12)      # 12 held out, 4 per class
    card = (folder / "README.md").read_text()
    assert "always naming the commonest class scores 0.333" in card
    assert "toyseq inputs by the nearest tabular class prototype" in card        # which side is the query
    assert "cross-modal-retrieval" in card and "similarity.png" in card and (folder / "similarity.png").is_file()
    model = zoo.AutoEncoder.from_pretrained(folder)
    assert model.sides == ["toyseq", "tabular"] and not model.training
    pairs = load_pairs(_spec(pair_table, "test"), ["toyseq", "tabular"])
    seqs = [p["toyseq"] for p in pairs.examples]
    z = model.embed("toyseq", seqs)
    assert z.shape == (12, 8) and torch.allclose(z.norm(dim=1), torch.ones(12), atol=1e-5)
    rows = [p["tabular"] for p in pairs.examples]
    import pandas as pd
    frame = pd.DataFrame(rows, index=[f"r{i}" for i in range(12)])          # its rows, not its column names
    assert torch.equal(model.embed("tabular", frame), model.embed("tabular", rows))
    alone = zoo.AutoEncoder.from_pretrained(folder, modality="toyseq")
    proc = zoo.AutoProcessor.from_pretrained(folder, modality="toyseq")
    with torch.no_grad():
        pooled = alone(proc.collate([proc(s) for s in seqs])).pooled
    assert torch.allclose(model.project("toyseq", pooled), z, atol=1e-6)
    saved, live = load_file(str(folder / "toyseq" / "model.safetensors")), alone.state_dict()
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in saved)
    from zoo.hub import publish_to_cache, repo_files
    assert "toyseq/model.safetensors" in repo_files(folder) and "similarity.png" in repo_files(folder)
    publish_to_cache(folder, "org/toy-bind", tmp_path / "hub")            # a local folder acting as the Hub
    by_id = zoo.AutoEncoder.from_pretrained("org/toy-bind", cache_dir=tmp_path / "hub", local_files_only=True)
    assert torch.equal(by_id.embed("toyseq", seqs), z)
    side = zoo.AutoEncoder.from_pretrained("org/toy-bind", cache_dir=tmp_path / "hub", local_files_only=True,
                                           modality="tabular")
    assert side.modality == "tabular"
    from pipelines.cli_bind import search
    found = search(model, [seqs[0]], [str(pair_table)], query_modality="toyseq", index_modality="tabular", top_k=3)
    assert len(found) == 1 and len(found[0]["results"]) == 3
    named = search(model, [seqs[0]], [str(pair_table)], query_modality="toyseq", index_modality="tabular", top_k=3,
                   name_column="f0")                                   # rows named by a column, not FILE[ROW]
    f0 = {str(v) for v in pd.read_csv(pair_table)["f0"]}
    assert {r["match"] for r in named[0]["results"]} <= f0
    back = search(model, [str(pair_table)], [seqs[0]], query_modality="tabular", index_modality="toyseq", top_k=1,
                  query_name_column="f0")                              # and the query rows too
    assert [r["query"] for r in back] == [str(v) for v in pd.read_csv(pair_table)["f0"]]


def test_sigkilled_bind_run_resumes_bit_for_bit(pair_table, tmp_path):
    """A real SIGKILL after the step-4 checkpoint; the same command resumes and ends with the weights of a run that
    was never interrupted (every side and the projections)."""
    import yaml

    from .conftest import kill_after_checkpoint, zoo_cli
    recipe = tmp_path / "bind.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(pair_table)))
    args = ["bind", str(recipe)]
    kill_after_checkpoint([*args, "--output", str(tmp_path / "killed")], tmp_path / "killed" / "checkpoints", 4, 120)
    assert not (tmp_path / "killed" / "model").exists()
    for out in ("killed", "straight"):
        res = zoo_cli(*args, "--output", str(tmp_path / out))
        assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "killed" / "train_summary.json").read_text())["resumed_from"] >= 4
    for part in ("model.safetensors", "toyseq/model.safetensors", "tabular/model.safetensors"):
        a = load_file(str(tmp_path / "killed" / "model" / part))
        b = load_file(str(tmp_path / "straight" / "model" / part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_a_bind_run_made_to_collapse_is_stopped_by_the_alarm(pair_table, tmp_path):
    """Every pair's table side the same row: that side's embeddings cannot differ, every pair is as similar as any
    other, and ``train.stop_on_collapse`` stops the run with nothing published."""
    import pandas as pd
    table = pd.read_csv(pair_table)
    table["f0"], table["f1"] = 1.0, 2.0
    table.to_csv(pair_table, index=False)
    recipe = _recipe(pair_table, stop_on_collapse=True, collapse_patience=2, warmup_steps=0)
    with pytest.raises(RuntimeError, match=r"stopped by the collapse alarm at step \d+ .*nothing is published"):
        _bind(recipe, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["collapse_alarm"]["signal"] == "embedding_std" and not (tmp_path / "run" / "model").exists()


def test_pair_by_label_pairs_within_classes():
    from zoo import ExampleSet
    a = ExampleSet(list(range(6)), [0, 0, 1, 1, 2, 2], [f"a{i}" for i in range(6)])
    b = ExampleSet(list(range(10, 15)), [0, 1, 1, 2, 3], [f"b{i}" for i in range(5)])
    pairs = pair_by_label(a, b, ("x", "y"))
    assert len(pairs) == 4 and sorted(pairs.labels) == [0, 1, 1, 2]
    for ex, y in zip(pairs.examples, pairs.labels):
        assert a.labels[ex["x"]] == y and b.labels[ex["y"] - 10] == y


def test_a_pair_whose_video_has_no_audio_track_is_named(tmp_path):
    """An mp4 without a soundtrack on the audio side: the pair and the side are named, and the reason says so."""
    import shutil
    import subprocess

    from zoo import BadExample
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package ffmpeg) is not installed")
    silent = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=8", "-t", "1",
                    "-pix_fmt", "yuv420p", str(silent)], check=True)
    proc = PairProcessor({"audio": zoo.get_modality("audio").processor()})
    with pytest.raises(BadExample, match=r"example clip 3: field 'audio: path': cannot decode audio: no audio track"):
        proc({"audio": str(silent)}, name="clip 3")


def test_frozen_sides_are_embedded_once_and_train_as_before(pair_table, tmp_path):
    """A frozen side's embeddings are computed once before training (eval-mode view) and fed as vectors: the run
    trains the same projections as one that runs the frozen encoder at every step (the toy processor has no
    augmentation: the same inputs), and its skipped pairs are counted the same."""
    from pipelines import bind as bind_module
    recipe = _recipe(pair_table)
    recipe["bind"]["sides"]["toyseq"]["train"] = "frozen"
    once = _bind(recipe, tmp_path / "once")
    original = bind_module.frozen_once
    bind_module.frozen_once = lambda built, **_: (built.pairs, built.processor)   # the encoder at every step
    try:
        every = _bind(recipe, tmp_path / "every")
    finally:
        bind_module.frozen_once = original
    a = load_file(str(tmp_path / "once" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "every" / "model" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), {k: float((a[k] - b[k]).abs().max()) for k in a}
    assert once["trainable_parameters"]["toyseq"] == 0 and once["skipped"] == every["skipped"] == 0


def test_search_refuses_vectors_of_another_side_or_model_and_overlapping_splits(pair_table, tmp_path):
    """Stored vectors carry their side and the bound model's signature: ``zoo search`` refuses the other side's
    vectors and another model's, which would rank without meaning; held-out pairs that are training pairs are
    refused before any training."""
    from pipelines.cli_bind import search

    from .conftest import zoo_main
    recipe = _recipe(pair_table)
    recipe["train"]["steps"] = 2
    _bind(recipe, tmp_path / "a")
    recipe["train"]["seed"] = 1
    _bind(recipe, tmp_path / "b")
    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    seqs = [str(p) for p in sorted((pair_table.parent / "seqs").glob("*.npy"))[:6]]
    for model, side, out in ((a, "toyseq", "a-seq"), (a, "tabular", "a-tab"), (b, "tabular", "b-tab")):
        inputs = seqs if side == "toyseq" else [str(pair_table)]
        res = zoo_main("embed", str(model), *inputs, "--modality", side, "--output",
                       str(tmp_path / f"{out}.safetensors"))
        assert res.returncode == 0, res.stderr
    model = zoo.AutoEncoder.from_pretrained(a)
    found = search(model, seqs[:1], [str(tmp_path / "a-tab.safetensors")], query_modality="toyseq",
                   index_modality="tabular", top_k=2)
    assert len(found[0]["results"]) == 2
    with pytest.raises(ValueError, match="these are toyseq vectors, not tabular"):
        search(model, seqs[:1], [str(tmp_path / "a-seq.safetensors")], query_modality="toyseq",
               index_modality="tabular")
    with pytest.raises(ValueError, match="written with another bound model"):
        search(model, seqs[:1], [str(tmp_path / "b-tab.safetensors")], query_modality="toyseq",
               index_modality="tabular")
    leak = _recipe(pair_table)
    leak["evaluate"]["test"]["split"] = "train"
    with pytest.raises(ValueError, match=r"36 of the 36 held-out pairs are training pairs"):
        _bind(leak, tmp_path / "leak")
    assert not (tmp_path / "leak" / "checkpoints").exists()
