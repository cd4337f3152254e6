"""The conformance suite: every installed modality — built-in or plugin, found through ``zoo.installed()`` — goes
through the user's path on a tiny labelled set of its own kind (``Modality.sample_data``):

own files → ``zoo pretrain RECIPE --data`` → ``zoo finetune MODEL --data`` (full mode, settings other than the
defaults) → held-out accuracy well above chance → the classifier reloaded with ``AutoClassifier`` in eval mode
predicts what the run reported → ``zoo predict`` names the files or entities → the card tells the truth → the
fitted processor answers hostile inputs with ``BadExample``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
import zoo.cards
from tests.conftest import zoo_main
from zoo.plugin import read_examples

MODALITIES = sorted(zoo.installed())


@pytest.fixture(scope="module", params=MODALITIES)
def run(request, tmp_path_factory) -> dict:
    """Pretrain and fine-tune once per modality; the tests below read what the run left."""
    name = request.param
    mod = zoo.get_modality(name)
    assert mod.sample_data is not None, f"modality {name!r} supplies no sample_data (the conformance suite needs it)"
    root = tmp_path_factory.mktemp(f"conf-{name}")
    sample = mod.sample_data(root / "data")
    label = ["--label-column", sample.label_column] if sample.label_column else []
    sets = [a for o in sample.pretrain_overrides for a in ("--set", o)]
    pre = zoo_main("pretrain", sample.recipe, "--data", str(sample.data), *label, *sets,
                   "--output", str(root / "pre"))
    assert pre.returncode == 0, pre.stderr
    ft = zoo_main("finetune", str(root / "pre" / "model"), "--data", str(sample.data), *label, "--mode", "full",
                  "--steps", "30", "--eval-every", "10", "--batch-size", "8", "--seed", "1", *sample.finetune_args,
                  "--output", str(root / "ft"))
    assert ft.returncode == 0, ft.stderr
    result = json.loads(ft.stdout[ft.stdout.index("{"):])
    return {"name": name, "modality": mod, "sample": sample, "root": root, "result": result, "stderr": ft.stderr,
            "model": root / "ft" / "model", "pretrained": root / "pre" / "model"}


def _predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def test_fine_tuned_accuracy_is_well_above_chance(run):
    chance = 1.0 / run["sample"].num_classes
    acc = run["result"]["test_accuracy"]
    rows = _predictions(run["model"])
    assert acc == pytest.approx(np.mean([r["label"] == r["predicted"] for r in rows]))
    assert acc >= chance + 0.35, f"{run['name']}: held-out accuracy {acc:.3f} (chance {chance:.3f}): {rows}"
    assert len({r["predicted"] for r in rows}) > 1, f"{run['name']}: one class predicted for every example"


def test_reloaded_classifier_in_eval_mode_predicts_what_the_run_reported(run):
    """``zoo predict`` over the whole data (the installed path: AutoClassifier in eval mode) gives every held-out
    example the label and probabilities that the run's predictions.jsonl records, under the same name."""
    clf = zoo.AutoClassifier.from_pretrained(run["model"])
    assert not clf.training
    inputs = [str(p) for p in run["sample"].predict_all or [run["sample"].data]]
    res = zoo_main("predict", str(run["model"]), *inputs, "--json", "--top-k", str(run["sample"].num_classes))
    assert res.returncode == 0, res.stderr
    predicted = {}
    for line in res.stdout.splitlines():
        row = json.loads(line)
        predicted[row["input"]] = {p["label"]: p["score"] for p in row["predictions"]}
    reported = _predictions(run["model"])
    missing = [r["name"] for r in reported if r["name"] not in predicted]
    assert not missing, f"held-out names not among zoo predict's: {missing[:3]} vs {sorted(predicted)[:3]}"
    for r in reported:
        got = predicted[r["name"]]
        assert max(got, key=got.get) == r["predicted"], r["name"]
        for label, p in r["probabilities"].items():
            assert got[label] == pytest.approx(p, abs=1e-4), (r["name"], label)


def test_predict_names_the_files_or_entities(run):
    sample = run["sample"]
    if not sample.predict_inputs:
        pytest.skip(f"{run['name']}: no separate inputs to predict (the whole data set is predicted above)")
    res = zoo_main("predict", str(run["model"]), *map(str, sample.predict_inputs), "--json")
    assert res.returncode == 0, res.stderr
    names = sorted(json.loads(line)["input"] for line in res.stdout.splitlines())
    assert names == sorted(sample.predict_names)


def _good_and_broken(run: dict, tmp_path: Path) -> tuple[list[str], Path]:
    """The sample's separate inputs and a corrupt file of the same kind beside them (skips a modality without
    separate inputs)."""
    sample = run["sample"]
    if not sample.predict_inputs:
        pytest.skip(f"{run['name']}: no separate inputs to predict or embed")
    good = [str(p) for p in sample.predict_inputs]
    broken = tmp_path / f"broken{Path(good[0]).suffix}"
    broken.write_bytes(b"\x00\x01 not what it says \xff" * 4)
    return good, broken


def test_predict_with_skip_bad_says_an_unreadable_input_in_its_place(run, tmp_path):
    """A corrupt input stops ``zoo predict`` naming it; with ``--skip-bad`` every other input is predicted and the
    corrupt one is said in its place."""
    sample = run["sample"]
    good, broken = _good_and_broken(run, tmp_path)
    res = zoo_main("predict", str(run["model"]), str(broken), *good)
    assert res.returncode == 2 and str(broken) in res.stderr and "train.skip_bad" not in res.stderr
    assert "--skip-bad skip" in res.stderr, res.stderr                     # the way on is named
    res = zoo_main("predict", str(run["model"]), str(broken), *good, "--json", "--skip-bad")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0]["input"].startswith(str(broken)) and "skipped" in lines[0]
    assert "train.skip_bad" not in lines[0]["skipped"]                     # predict's own setting, if any
    assert "--skip-bad skips an input" not in lines[0]["skipped"]          # no hint to pass the flag it was given
    assert sorted(x["input"] for x in lines[1:]) == sorted(sample.predict_names)
    assert all("predictions" in x for x in lines[1:]) and "could not be read and were skipped" in res.stderr
    res = zoo_main("predict", str(run["model"]), str(broken), "--skip-bad")     # nothing left: a script sees it
    assert res.returncode == 2 and "none of the 1 inputs could be read" in res.stderr


def test_embed_with_skip_bad_skips_an_unreadable_input_in_its_place_and_resumes(run, tmp_path):
    """A corrupt input stops ``zoo embed`` naming it; with ``--skip-bad`` into a folder every other input is embedded
    as it is alone, the corrupt one is said in its place and counted in ``index.json`` (no rows), and the same
    command again resumes with nothing redone."""
    from safetensors import safe_open

    from pipelines.evaluate import load_shards
    good, broken = _good_and_broken(run, tmp_path)
    model = str(run["pretrained"])
    res = zoo_main("embed", model, *good[:1], str(broken), "--output", str(tmp_path / "stopped"))
    assert res.returncode == 2 and str(broken) in res.stderr and "train.skip_bad" not in res.stderr, res.stderr
    args = ["embed", model, *good[:1], str(broken), *good[1:], "--skip-bad", "--shard-size", "2",
            "--output", str(tmp_path / "job")]
    res = zoo_main(*args)
    assert res.returncode == 0, res.stderr
    said = [ln for ln in res.stdout.splitlines() if "\tskipped: " in ln]
    assert len(said) == 1 and said[0].startswith(str(broken)) and "train.skip_bad" not in said[0], res.stdout
    alone = zoo_main("embed", model, *good, "--output", str(tmp_path / "good.safetensors"))
    assert alone.returncode == 0, alone.stderr
    with safe_open(str(tmp_path / "good.safetensors"), "pt") as fh:
        want, want_names = fh.get_tensor("embeddings"), json.loads(fh.metadata()["names"])
    index = json.loads((tmp_path / "job" / "index.json").read_text())
    assert index["inputs"] == len(want_names) + 1 and index["skipped"] == 1      # a file's rows or entities each
    assert index["skipped_inputs"][0]["input"] == str(broken) and str(broken) in index["skipped_inputs"][0]["why"]
    emb, _, names = load_shards(tmp_path / "job" / "index.json")
    assert names == want_names and torch.allclose(emb, want, atol=1e-5)
    again = zoo_main(*args)
    assert again.returncode == 0 and "embedded 0 input(s)" in again.stdout, again.stdout + again.stderr
    one = zoo_main("embed", model, str(broken), *good, "--skip-bad", "--output", str(tmp_path / "one.safetensors"))
    assert one.returncode == 0 and "skipped (--skip-bad; said above)" in one.stdout, one.stdout + one.stderr
    with safe_open(str(tmp_path / "one.safetensors"), "pt") as fh:                # a single file records them too
        assert [s["input"] for s in json.loads(fh.metadata()["skipped"])] == [str(broken)]


def test_the_cards_tell_the_truth(run):
    """The data actually used (a file or folder name, never a local path) and the command that reproduces it."""
    data = Path(run["sample"].data)
    for folder in (run["pretrained"], run["model"]):
        card = (folder / "README.md").read_text()
        config = (folder / "config.json").read_text()
        assert str(run["root"]) not in card and str(run["root"]) not in config, folder
        assert data.name in card, f"{folder}: the card does not name the data {data.name}"
        assert " object at 0x" not in card and " object at 0x" not in config, f"{folder}: a Python repr"
    classifier = (run["model"] / "classifier.json").read_text()
    assert str(run["root"]) not in classifier and str(data) not in classifier
    pre = (run["pretrained"] / "README.md").read_text()
    assert f"pretrained with ssl-zoo on `{data.name}`" in pre
    assert re.search(rf"--data \S*{re.escape(data.name)}", pre) and run["sample"].pretrain_overrides[0] in pre
    ft = (run["model"] / "README.md").read_text()
    assert "(not recorded)" not in ft and "--mode full" in ft


def test_finetune_prints_and_records_the_baseline_it_must_beat(run):
    """``zoo finetune`` scores the modality's hand-made baselines on the run's own split and shows the best one
    beside the model's figure (stderr, the JSON summary, classifier.json, the card); a model more than 0.05 below
    it is announced as below the baseline — never a number alone."""
    mod, base = run["modality"], run["result"]["baseline"]
    card = (run["model"] / "README.md").read_text()
    recorded = json.loads((run["model"] / "classifier.json").read_text())["finetuning"]["baseline"]
    if not mod.baselines:
        assert base["baseline"] is None and "no hand-made baseline" in base["notice"]
        return
    name, acc = base["baseline"], run["result"]["test_accuracy"]
    assert name in mod.baselines and f"baseline {name}: test accuracy" in run["stderr"], run["stderr"][-2000:]
    assert recorded["scores"][name] == pytest.approx(base["baseline_value"]) and recorded["reaches"] == base["reaches"]
    assert "Against hand-made baselines" in card and name in card
    assert base["reaches"] == (acc >= base["baseline_value"]) and base["beaten"] == (acc > base["baseline_value"])
    if acc < base["baseline_value"] - 0.05 or not base["reaches"]:
        assert "below the baseline" in run["stderr"] and "below the baseline" in card, (acc, base)


def test_evaluate_reads_own_data_and_judges_against_the_baseline(run):
    """``zoo evaluate MODEL --data`` takes the same data forms as fine-tuning: probes on a seeded held-out split,
    the random-init encoder and the hand-made baselines beside them, the verdict, and the card keeps its name."""
    sample, mod = run["sample"], run["modality"]
    before = zoo.cards.load_card(run["pretrained"] / "README.md").data.model_name
    label = ["--label-column", sample.label_column] if sample.label_column else []
    res = zoo_main("evaluate", str(run["pretrained"]), "--data", str(sample.data), *label,
                   "--output", str(run["root"] / "eval"), "--label-fractions", "0.5,1", "--seeds", "2",
                   "--set", "evaluate.knn_k=3")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["test_examples"] > 0 and 0 <= report["pretrained"]["linear_probe"] <= 1
    assert report["knn_k"] == 3                                  # --set is read, never silently ignored
    for unread in ("evaluate.bogus_key=1", "train.skip_bad=true"):
        refused = zoo_main("evaluate", str(run["pretrained"]), "--data", str(sample.data), *label, "--set", unread)
        assert refused.returncode == 2 and unread.split("=")[0] in refused.stderr, refused.stderr
    assert "random_init" in report and "verdict" in report
    if mod.baselines:
        assert report["verdict"]["baseline"] in report["baselines"]
        if not report["verdict"]["reaches"]:
            assert "below the baseline" in res.stderr
    assert zoo.cards.load_card(run["pretrained"] / "README.md").data.model_name == before
    # label efficiency (issue #35): every class at half the labels; at all of them, the probe of the report itself
    curves = report["label_efficiency"]
    assert curves["labelled"][1] == report["train_examples"] and curves["labelled"][0] < curves["labelled"][1]
    assert {"pretrained", "random init"} <= set(curves["curves"])
    assert set(report.get("baselines", {})) <= set(curves["curves"])
    assert curves["curves"]["pretrained"]["mean"][1] == pytest.approx(report["pretrained"]["linear_probe"], abs=1e-4)
    assert (run["root"] / "eval" / "label_efficiency.png").is_file()


HOSTILE = [None, 0, 1.5, "", "no/such/file.bin", b"\x00\x01", [], [[]], {}, {"x": 1}, np.zeros(0),
           np.full((8, 3), np.nan), np.full((8, 3), np.inf), np.array(["a", "b"]), np.zeros((2, 2, 2, 2, 2)),
           np.zeros(5, np.complex64), [[1.0, 2.0], [3.0]], np.zeros((10**9, 0)), object(),
           {"x": np.zeros((3, 3)), "edge_index": [[0], [1]], "num_nodes": 10**12},
           {"points": np.zeros((10**6, 3)) + np.nan}, {"array": np.zeros(10), "sampling_rate": -5},
           {"a": float("inf"), "b": "u"}, {"a": "abc", "b": "u"}, {"time": [], "amount": []},
           {"time": [1.0, float("nan")], "amount": [1.0, 2.0]}, {"time": ["2399-01-01"], "amount": [1e300]},
           torch.full((16, 3), float("nan")), np.full((4, 4), 1e300),
           {"x": np.ones((3, 2)), "edge_index": [[0, 1], [1, 2.7]]}, {"x": np.ones((3, 2)), "edge_index": [[0], [-1]]},
           {"x": np.ones((3, 2)), "edge_index": [[0], [3]]}]


def hostile_files(root: Path) -> list[str]:
    """Files that broke a promise in the hardening probes: cut, lying or out-of-range content of every kind."""
    import soundfile as sf
    root.mkdir(parents=True, exist_ok=True)
    head = ("ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
            "end_header\n")
    files = {"notes.txt": "not data\n",
             "inf.ply": head.format(n=40) + "0 0 0\n" * 9 + "inf 0 0\n" + "1 2 3\n" * 30,
             "cut.ply": head.format(n=40) + "0 0 0\n" * 12,
             "huge.ply": head.format(n=10**8) + "0 0 0\n" * 100,
             "faces.ply": head.format(n=3).replace("end_header", "element face 1\nproperty list uchar int "
                                                                 "vertex_indices\nend_header")
                          + "0 0 0\n1 0 0\n0 1 0\n",
             "faces_lie.ply": head.format(n=3).replace("end_header", "element face 30000000\nproperty list uchar "
                                                                     "int vertex_indices\nend_header")
                              + "0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
             "header_only.csv": "client,time,shop,amount,income,age,plan\n",
             "empty_labels.csv": "client,time,shop,amount,income,age,plan,label\nc1,2026-01-01,food,1,5,30,basic,\n"
                                 "c2,2026-01-02,food,2,6,31,basic,\n",
             "edges_header_only.csv": "source,target\n",
             "far_future.csv": "client,time,shop,amount\nc1,2026-01-01,food,1\nc1,2399-01-01,food,2\n",
             "huge_number.csv": "income,age,plan\n1e300,30,basic\n",
             "complex.csv": "income,age,plan\n1+2j,30,basic\n",
             "duplicate.csv": "income,income,plan\n1,2,basic\n",
             "ragged.csv": "income,age\n1,2\n3,4,5\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    sf.write(root / "silence.wav", np.zeros(0, np.float32), 16000)
    (root / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(40))
    return [str(root / n) for n in [*files, "silence.wav", "cut.mp4"]]


def test_the_fitted_processor_answers_hostile_inputs(run, tmp_path):
    """Every hostile input gets ``BadExample`` naming the example, or — where the processor accepts it — finite
    tensors: objects of every kind, and files of every kind (cut, lying, out of range, of another modality)."""
    proc = zoo.AutoProcessor.from_pretrained(run["pretrained"])
    hostile = [*HOSTILE, *hostile_files(tmp_path)]
    failures = []
    for i, bad in enumerate(hostile):
        try:
            if isinstance(bad, str) and Path(bad).is_file():          # a file: as zoo embed/predict read it
                out = {}
                for _, ex in read_examples(proc, bad):
                    out.update({f"{k}{len(out)}": v for k, v in proc(ex, name=f"hostile-{i}").items()})
            else:
                out = proc(bad, name=f"hostile-{i}")
        except zoo.BadExample as err:
            if f"hostile-{i}" not in str(err) and not (isinstance(bad, str) and bad in str(err)):
                failures.append(f"#{i}: names neither the example nor the file: {err}")
        except Exception as err:  # noqa: BLE001 - the point: nothing but BadExample
            failures.append(f"#{i} {bad!r:.60}: {type(err).__name__}: {str(err)[:160]}")
        else:
            bad_out = [k for k, v in out.items() if torch.is_tensor(v) and v.is_floating_point()
                       and not torch.isfinite(v).all()]
            if bad_out:
                failures.append(f"#{i} {bad!r:.60}: accepted with non-finite {bad_out}")
    assert not failures, f"{run['name']}:\n" + "\n".join(failures)


MEMORY_LIMIT_GIB = 6          # the address space a processor gets below: a small file never asks for more


@pytest.fixture(scope="session")
def big_frames_mp4(tmp_path_factory) -> Path:
    """A 200 KB mp4 of two black 8192x8192 frames (decoded as they are: 12.9 GB asked for), written in a
    subprocess so that this process's memory stays small."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    code = ("import torch; from torchcodec.encoders import VideoEncoder; "
            "VideoEncoder(torch.zeros(2, 3, 8192, 8192, dtype=torch.uint8), frame_rate=2)"
            f".to_file({str(path)!r}, crf=40, preset='ultrafast')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return path


def test_small_hostile_files_never_ask_for_much_memory(run, tmp_path, big_frames_mp4):
    """Under an address-space limit of MEMORY_LIMIT_GIB, every file of the fuzz and the big-frame mp4 get a
    BadExample or a result: an allocation beyond the bound would fail the process (MemoryError/RuntimeError)."""
    files = [*hostile_files(tmp_path), str(big_frames_mp4)]
    code = f"""
import resource, sys
limit = {MEMORY_LIMIT_GIB} * 2 ** 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import zoo
from zoo.plugin import read_examples
proc = zoo.AutoProcessor.from_pretrained({str(run["pretrained"])!r})
for path in {files!r}:
    try:
        for name, ex in read_examples(proc, path):
            proc(ex, name=name)
    except zoo.BadExample:
        pass
print("peak MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{run['name']}: {res.stderr[-2000:]}"


def test_an_installed_plugin_gets_the_conformance_suite(toy_plugin):
    """The suite is parametrised over ``zoo.installed()``: a plugin installed with pip (the out-of-tree toyseq
    package here) is collected and must pass it like the built-ins — its export to ONNX Runtime and to a torch.export
    program and its bind with another installed modality included, with no export or binding code of its own."""
    res = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:warnings", "-k",
                          "toyseq and not plugin"], capture_output=True, text=True, timeout=900,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stdout[-3000:]
    assert "18 passed" in res.stdout, res.stdout[-500:]


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Equal within 1e-4 of the larger of 1 and the output's largest value (the export's own tolerance)."""
    assert a.shape == b.shape, (what, a.shape, b.shape)
    if a.dtype == torch.bool:
        assert torch.equal(a, b), what
        return
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    assert float((a.float() - b.float()).abs().max()) <= 1e-4 * scale, (what, float((a - b).abs().max()), scale)


def _padded_and_single(processor, examples: list, names: list) -> list[dict]:
    """The model inputs of a padded batch of the first five examples (several sizes) and of a batch of one."""
    items = [processor(ex, name=n) for ex, n in zip(examples[:5], names[:5])]
    return [{k: v for k, v in b.items() if torch.is_tensor(v) and k != "labels"}
            for b in (processor.collate(items), processor.collate(items[-1:]))]


def _same_as_eager(exported, eager, run: dict, what: str, *, logits: bool = False) -> None:
    """An exported classifier's encoder outputs (and, with ``logits``, its graph's logits) on a padded batch and a
    batch of one, and its probabilities on the sample data, within 1e-4 of the eager classifier's."""
    from pipelines.data_spec import named_inputs
    named = named_inputs(eager.processor, run["sample"].data)
    examples, names = [ex for _, ex in named], [n for n, _ in named]
    for batch in _padded_and_single(eager.processor, examples, names):
        with torch.no_grad():
            got, want = exported.encoder(batch), eager.encoder(batch)
            for key in ("pooled", "tokens", "padding_mask"):
                _close(getattr(got, key), getattr(want, key), f"{run['name']} {what}{key}")
            if logits:
                _close(exported.encoder.run(batch)["logits"], eager.head(want.pooled), f"{run['name']} logits")
    _close(exported.predict_proba(examples, names=names), eager.predict_proba(examples, names=names), "probabilities")


def _exported(run: dict) -> Path:
    """The fine-tuned classifier exported by ``zoo export`` once per modality (the tests below read it)."""
    if "exported" not in run:
        out = run["root"] / "exported"
        res = zoo_main("export", str(run["model"]), str(out))
        assert res.returncode == 0, res.stderr
        assert "exported the classifier" in res.stdout and "parity" in res.stdout
        run["exported"] = out
    return run["exported"]


def test_exported_classifier_runs_through_onnx_runtime_as_eager(run, tmp_path):
    """``zoo export`` of the fine-tuned classifier (docs/command-line.md, "Export"): loaded back through
    ``AutoClassifier`` it runs ONNX Runtime, and its encoder's outputs equal the eager model's within 1e-4 on a padded
    batch of examples of several sizes and on a batch of one; its graph's ``logits`` equal the eager head's; predictions
    of every example agree; ``--runtime torch`` reads the weights beside the graph; nothing in the folder names a local
    path."""
    from zoo.onnx_runtime import OnnxEncoder
    out = _exported(run)
    block = json.loads((out / "config.json").read_text())["export"]
    assert block["outputs"][0] == "logits" and len(block["checks"]) >= 2
    onnx_clf, eager = zoo.AutoClassifier.from_pretrained(out), zoo.AutoClassifier.from_pretrained(run["model"])
    assert isinstance(onnx_clf.encoder, OnnxEncoder) and onnx_clf.encoder.dim == eager.encoder.dim
    assert not isinstance(zoo.AutoClassifier.from_pretrained(out, runtime="torch").encoder, OnnxEncoder)
    _same_as_eager(onnx_clf, eager, run, "", logits=True)
    repo = str(Path(__file__).resolve().parents[1])
    for path in out.iterdir():                # the graph too: exporters record stack traces with local paths
        data = path.read_bytes()
        for local in (str(tmp_path), str(run["root"]), repo, "site-packages"):
            assert local.encode() not in data, (path.name, local)


@pytest.mark.slow
def test_exported_model_embeds_as_eager(run, tmp_path):
    """The exported classifier's folder as an encoder: ``zoo embed --runtime onnx`` gives ``--runtime torch``'s
    embeddings within 1e-4 (slow: the encoder outputs are compared in the test above)."""
    from safetensors.torch import load_file
    out = _exported(run)
    inputs = [str(p) for p in run["sample"].predict_inputs] or [str(run["sample"].data)]
    embedded = {}
    for runtime in ("onnx", "torch"):
        target = tmp_path / f"{runtime}.safetensors"
        res = zoo_main("embed", str(out), *inputs, "--runtime", runtime, "--output", str(target))
        assert res.returncode == 0, res.stderr
        embedded[runtime] = load_file(str(target))["embeddings"]
    _close(embedded["onnx"], embedded["torch"], f"{run['name']} zoo embed")


def test_an_exported_folder_that_does_not_fit_is_refused(run, tmp_path, caplog):
    """A preprocessor.json that is not the exported one (either runtime), a graph whose bytes changed after export
    and an opset that is not the recorded one are refused, naming the file."""
    import shutil
    out = _exported(run)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    pre = json.loads((bad / "preprocessor.json").read_text())
    (bad / "preprocessor.json").write_text(json.dumps({**pre, "fit_examples": pre.get("fit_examples", 1000) + 1}))
    with pytest.raises(zoo.FormatError, match="preprocessor.json"):
        zoo.AutoEncoder.from_pretrained(bad)
    with pytest.raises(zoo.FormatError, match="preprocessor.json"):      # the weights beside it: the same check
        zoo.AutoClassifier.from_pretrained(bad, runtime="torch")
    shutil.copy2(out / "preprocessor.json", bad / "preprocessor.json")
    graph = bytearray((out / "model.onnx").read_bytes())
    middle = len(graph) // 2
    graph[middle:middle + 64] = bytes(255 - b for b in graph[middle:middle + 64])   # weights flipped, still parses
    (bad / "model.onnx").write_bytes(bytes(graph))
    with pytest.raises(zoo.FormatError, match="model.onnx: the graph is not the one exported"):
        zoo.AutoEncoder.from_pretrained(bad)
    shutil.copy2(out / "model.onnx", bad / "model.onnx")
    config = json.loads((bad / "config.json").read_text())
    config["export"]["opset"] += 1
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.FormatError, match="model.onnx.*opset"):
        zoo.AutoEncoder.from_pretrained(bad)
    config["export"]["opset"] -= 1
    del config["export"]["graph_sha256"]                                  # an export older than the hashes
    (bad / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="zoo"):
        zoo.AutoEncoder.from_pretrained(bad)
    assert "records no graph_sha256" in caplog.text and "loaded unchecked" in caplog.text


@pytest.mark.slow
def test_exported_encoder_runs_through_onnx_runtime_as_eager(run, tmp_path):
    """The pretrained encoder (no head) exported: its export checks passed (padded batch, batch of one, other sizes)
    and ``AutoEncoder`` through ONNX Runtime embeds the sample data as eager does (slow: the classifier's export
    above covers the same graph with a head)."""
    out = tmp_path / "exported"
    res = zoo_main("export", str(run["pretrained"]), str(out))
    assert res.returncode == 0 and "exported the encoder" in res.stdout, res.stderr
    from pipelines.data_spec import named_inputs
    onnx_enc, eager = zoo.AutoEncoder.from_pretrained(out), zoo.AutoEncoder.from_pretrained(run["pretrained"])
    processor = zoo.AutoProcessor.from_pretrained(out)
    items = [processor(ex, name=n) for n, ex in named_inputs(processor, run["sample"].data)[:5]]
    for batch in (processor.collate(items), processor.collate(items[:1])):
        batch = {k: v for k, v in batch.items() if torch.is_tensor(v) and k != "labels"}
        with torch.no_grad():
            got, want = onnx_enc(batch), eager(batch)
        for key in ("pooled", "tokens", "padding_mask"):
            _close(getattr(got, key), getattr(want, key), f"{run['name']} encoder {key}")


def test_exported_program_runs_as_eager(run, tmp_path):
    """``zoo export --format exported-program`` of the fine-tuned classifier: ``model.pt2`` holds no pickle, and
    loaded back through ``AutoClassifier`` its encoder's outputs equal eager's within 1e-4 on a padded batch of
    examples of several sizes and on a batch of one, and the predictions agree; a recurrent encoder is refused naming
    the reason and the ONNX format instead."""
    import zipfile

    from zoo.exported_program import ProgramEncoder
    out = tmp_path / "program"
    res = zoo_main("export", str(run["model"]), str(out), "--format", "exported-program")
    eager = zoo.AutoClassifier.from_pretrained(run["model"])
    if getattr(eager.encoder, "onnx_exporter", "dynamo") != "dynamo":
        assert res.returncode != 0 and "recurrent" in res.stderr and "--format onnx" in res.stderr, res.stderr
        assert not out.exists()
        return
    assert res.returncode == 0 and "torch.export program" in res.stdout, res.stderr
    with zipfile.ZipFile(out / "model.pt2") as archive:
        assert not any(i.file_size for i in archive.infolist() if "/sample_inputs/" in i.filename)
    clf = zoo.AutoClassifier.from_pretrained(out)
    assert isinstance(clf.encoder, ProgramEncoder) and not clf.encoder.training
    _same_as_eager(clf, eager, run, "program ")
    data = (out / "model.pt2").read_bytes()                 # stack traces stripped: no local path in the program
    for local in (str(tmp_path), str(run["root"]), str(Path(__file__).resolve().parents[1]), "site-packages"):
        assert local.encode() not in data, local
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    head = bytearray((bad / "head.safetensors").read_bytes())
    head[-4:] = bytes(255 - b for b in head[-4:])           # a changed head beside the program
    (bad / "head.safetensors").write_bytes(bytes(head))
    for runtime in (None, "torch"):
        with pytest.raises(zoo.FormatError, match="head.safetensors is not the one exported"):
            zoo.AutoClassifier.from_pretrained(bad, runtime=runtime)


@pytest.mark.slow
def test_compiled_encoder_matches_eager(run):
    """``torch.compile`` (inductor, CPU) of the pretrained encoder gives eager's outputs within 1e-4 on a padded batch
    of examples of several sizes and on a batch of one, in one graph with no break (slow: inductor compiles C++ per
    shape; recurrent encoders need ``torch._dynamo.config.allow_rnn``).
    Static shapes, a compilation per batch shape: with ``dynamic=True`` inductor's symbolic shape reasoning stalls on
    the audio feature encoder's stack of strided convolutions (over 15 minutes on 2 cores; docs/benchmarks.md)."""
    from pipelines.data_spec import named_inputs
    eager = zoo.AutoEncoder.from_pretrained(run["pretrained"]).eval()
    processor = zoo.AutoProcessor.from_pretrained(run["pretrained"])
    compiled = torch.compile(eager, dynamic=False)
    named = named_inputs(processor, run["sample"].data)[:5]
    torch._dynamo.reset()
    for batch in _padded_and_single(processor, [ex for _, ex in named], [n for n, _ in named]):
        # nn.GRU/LSTM: without allow_rnn dynamo gives up on the whole forward ("step_unsupported") and runs it eagerly,
        # silently: no graph break is counted, so the reasons are checked too
        with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=True):
            got, want = compiled(batch), eager(batch)
            explained = torch._dynamo.explain(eager)(batch)
        reasons = [str(b.reason) for b in explained.break_reasons]
        assert explained.graph_count == 1 and explained.graph_break_count == 0 and not reasons, (run["name"], reasons)
        for key in ("pooled", "tokens", "padding_mask"):
            _close(getattr(got, key), getattr(want, key), f"{run['name']} compiled {key}")


def test_int8_is_refused_where_not_offered(run, tmp_path):
    """``zoo export --quantize int8`` for a family where bench.export measured the probe moving by more than one
    point (not in ``pipelines.export.INT8_FAMILIES``) refuses before any work, saying why."""
    from pipelines.export import INT8_FAMILIES
    if run["name"] in INT8_FAMILIES:
        pytest.skip(f"int8 is offered for {run['name']} (test_int8_is_exported_where_offered, slow)")
    res = zoo_main("export", str(run["model"]), str(tmp_path / "int8"), "--quantize", "int8")
    assert res.returncode != 0 and "not offered" in res.stderr and "fp32" in res.stderr, res.stderr
    assert "lowered the demo row's probe" in res.stderr or "not measured" in res.stderr     # which of the two
    assert not (tmp_path / "int8").exists()


@pytest.mark.slow
def test_int8_is_exported_where_offered(run, tmp_path):
    """For a family in ``INT8_FAMILIES`` the quantised classifier runs through ONNX Runtime and agrees with eager on
    most examples' top-1."""
    from pipelines.data_spec import named_inputs
    from pipelines.export import INT8_FAMILIES
    if run["name"] not in INT8_FAMILIES:
        pytest.skip(f"int8 is not offered for {run['name']}")
    out = tmp_path / "int8"
    res = zoo_main("export", str(run["model"]), str(out), "--quantize", "int8")
    assert res.returncode == 0 and "pre-processing" not in res.stderr, res.stderr    # the quantizer's advice: quiet
    block = json.loads((out / "config.json").read_text())["export"]
    assert block["quantize"] == "int8" and all("pooled_cosine" in c and "top1_agreement" in c for c in block["checks"])
    card = (out / "README.md").read_text()          # what int8 was held to, not fp32's tolerance
    assert "no fp32 tolerance applies" in card and "top-1 label agrees" in card and "ONNX Runtime\nint8" in card
    int8, eager = zoo.AutoClassifier.from_pretrained(out), zoo.AutoClassifier.from_pretrained(run["model"])
    named = named_inputs(eager.processor, run["sample"].data)
    examples, names = [ex for _, ex in named], [n for n, _ in named]
    top = [clf.predict_proba(examples, names=names).argmax(1) for clf in (int8, eager)]
    agree = float((top[0] == top[1]).float().mean())
    assert agree >= 0.9, f"{run['name']}: int8 agrees with eager on {agree:.2f} of the examples"


@pytest.fixture(scope="session")
def sample_sets(tmp_path_factory) -> dict:
    """Each installed modality's sample data, written once when a test first asks for it: ``name → (SampleData,
    its labelled ExampleSet, the path of a recipe file that trains on it from random init)``."""
    import yaml

    from pipelines.pretrain import with_own_data
    from pipelines.recipe import load_recipe
    made: dict = {}

    def get(name: str):
        if name not in made:
            mod = zoo.get_modality(name)
            root = tmp_path_factory.mktemp(f"bind-{name}")
            sample = mod.sample_data(root / "data")
            recipe = with_own_data(load_recipe(sample.recipe, sample.pretrain_overrides), str(sample.data),
                                   label_column=sample.label_column)
            (root / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
            data = mod.load_data(recipe.data["train"])          # the spec --data makes, labelled
            made[name] = (sample, data, root / "recipe.yaml")
        return made[name]
    return get


def test_binds_with_another_installed_modality(run, sample_sets, tmp_path):
    """The modality's pretrained encoder bound with another installed modality's (the next in ``zoo.installed()``,
    from random init) on pairs made by class from the two sample sets (``pair_by_label``): a short ``zoo bind``
    runs through the loop with no code beyond the plugins, evaluates held-out pairs both ways, and the bound model
    reloads — its ``embed`` of raw inputs gives what the evaluation embedded, and the side loaded alone with its
    processor gives the same vectors through the projection."""
    from pipelines.bind import bind, embed_pairs, parse_bind_recipe
    from pipelines.pairs import pair_by_label
    name = run["name"]
    others = [m for m in MODALITIES if m != name]
    partner = others[MODALITIES.index(name) % len(others)]
    _, own_data, _ = sample_sets(name)
    _, other_data, other_recipe = sample_sets(partner)
    pairs = pair_by_label(own_data, other_data, (name, partner))
    assert len(pairs) >= 8, f"{name} + {partner}: only {len(pairs)} pairs by class"
    test_idx = list(range(0, len(pairs), 4))
    train = pairs.subset([i for i in range(len(pairs)) if i % 4])
    test = pairs.subset(test_idx)
    recipe = parse_bind_recipe({
        "name": f"bind-{name}-{partner}",
        "bind": {"dim": 8, "sides": {name: {"init": str(run["pretrained"])}, partner: {"recipe": str(other_recipe)}}},
        "train": {"steps": 3, "batch_size": 6, "lr": 0.001, "warmup_steps": 1, "checkpoint_every": 3,
                  "quality_every": 0, "num_workers": 0}})
    summary = bind(recipe, tmp_path / "bind", pairs=train, test_pairs=test)
    report = summary["evaluation"]
    assert report["pairs"] == len(test) and report["skipped"] == 0, report
    assert set(report["retrieval"]) == {f"{name}→{partner}", f"{partner}→{name}"}
    assert all(math.isfinite(v) for r in report["retrieval"].values() for v in r.values())
    folder = tmp_path / "bind" / "model"
    model = zoo.AutoEncoder.from_pretrained(folder)
    assert model.sides == [name, partner]
    z, _, skipped = embed_pairs(model, test)
    assert not skipped
    for side in (name, partner):
        raw = [ex[side] for ex in test.examples]
        _close(model.embed(side, raw, names=[f"{n} [{side}]" for n in test.names]), z[side], f"{side} embed")
        alone = zoo.AutoEncoder.from_pretrained(folder, modality=side)
        proc = zoo.AutoProcessor.from_pretrained(folder, modality=side)
        assert alone.modality == side and not alone.training
        with torch.no_grad():
            pooled = alone(proc.collate([proc(x, name=f"example {i}") for i, x in enumerate(raw)])).pooled
            _close(model.project(side, pooled), z[side], f"{side} alone")


def _one_less(data: Path) -> None:
    """The user's data with one thing fewer: a folder's last file (its largest table, where it holds tables: the
    table's last line), a table's last line."""
    files = sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else [data]
    tables = [p for p in files if p.suffix == ".csv"]
    if tables:
        table = max(tables, key=lambda p: p.stat().st_size)
        lines = table.read_text().splitlines(keepends=True)
        table.write_text("".join(lines[:-1]))
    else:
        files[-1].unlink()


def test_a_rerun_on_changed_data_is_refused_instead_of_resumed(run, tmp_path):
    """A finished run's command again after the data changed (a file or row fewer) is refused naming the data,
    where it used to finish at once with the old weights under a card counting the new data; ``--no-resume``
    starts over."""
    import shutil
    sample = run["sample"]
    data = tmp_path / Path(sample.data).name
    (shutil.copytree if Path(sample.data).is_dir() else shutil.copy)(sample.data, data)
    label = ["--label-column", sample.label_column] if sample.label_column else []
    sets = [a for o in [*sample.pretrain_overrides, "train.steps=2", "train.quality_every=0"] for a in ("--set", o)]
    args = ["pretrain", sample.recipe, "--data", str(data), *label, *sets, "--output", str(tmp_path / "pre")]
    tune = ["finetune", str(run["pretrained"]), "--data", str(data), *label, "--steps", "2", "--batch-size", "8",
            "--no-baseline", "--output", str(tmp_path / "ft")]
    assert zoo_main(*args).returncode == 0 and zoo_main(*tune).returncode == 0
    again = zoo_main(*args)                                      # nothing changed: the finished run, as it was
    assert again.returncode == 0 and '"resumed_from": 2' in again.stdout, again.stderr
    _one_less(data)
    for command in (args, tune):
        changed = zoo_main(*command)
        assert changed.returncode == 2 and "written by a run on other data" in changed.stderr, changed.stderr
        assert "--no-resume" in changed.stderr
    assert zoo_main(*args, "--no-resume").returncode == 0


def test_fine_tuning_with_skip_bad_leaves_unreadable_files_out_of_every_pass(run, tmp_path):
    """A folder of files with a corrupt one in every class folder, fine-tuned in full mode with validation and
    ``finetune.skip_bad``: training, the BatchNorm pass, validation, the test and the baselines all leave them out
    and the card counts them (a Point-MAE run used to train to the end, then stop on the BatchNorm pass and keep
    nothing); pretraining with ``train.skip_bad`` keeps its online quality probe on, without them."""
    import shutil
    sample = run["sample"]
    if not Path(sample.data).is_dir() or any(Path(sample.data).rglob("*.csv")):
        pytest.skip(f"{run['name']}: not a folder of files (tables are checked before training)")
    data = tmp_path / Path(sample.data).name
    shutil.copytree(sample.data, data)
    folders = sorted({p.parent for p in data.rglob("*") if p.is_file()})
    for i, folder in enumerate(folders):
        suffix = next(p.suffix for p in folder.iterdir() if p.is_file())
        for j in range(3):
            (folder / f"zz-broken-{i}-{j}{suffix}").write_bytes(b"\x00\x01 not what it says \xff" * 4)
    args = ["finetune", str(run["pretrained"]), "--data", str(data), "--mode", "full", "--steps", "6",
            "--eval-every", "3", "--batch-size", "8"]
    stopped = zoo_main(*args, "--output", str(tmp_path / "stopped"))         # without it: named, and the way on
    assert stopped.returncode == 2 and "zz-broken" in stopped.stderr, stopped.stderr[-2000:]
    assert "--set finetune.skip_bad=true skips" in stopped.stderr, stopped.stderr[-2000:]
    res = zoo_main(*args, "--set", "finetune.skip_bad=true", "--output", str(tmp_path / "ft"))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _predictions(tmp_path / "ft" / "model")
    assert rows and not any("zz-broken" in r["name"] for r in rows)
    card = (tmp_path / "ft" / "model" / "README.md").read_text()
    assert "unreadable left out" in card and "zz-broken" in res.stderr, res.stderr[-2000:]
    if run["modality"].baselines:                                      # the baselines read the model's split
        assert "no hand-made baseline could be computed" not in card, card
    # pretraining on the same folder with train.skip_bad: the online quality probe leaves them out too (it used to
    # be turned off for the whole run by the first one it met)
    sets = [a for o in [*sample.pretrain_overrides, "train.steps=2", "train.skip_bad=true"] for a in ("--set", o)]
    pre = zoo_main("pretrain", sample.recipe, "--data", str(data), *sets, "--output", str(tmp_path / "pre"))
    assert pre.returncode == 0 and "online quality is off" not in pre.stderr, pre.stderr[-2000:]
    quality = json.loads((tmp_path / "pre" / "train_summary.json").read_text())["quality"]
    assert [h["step"] for h in quality["history"]] == [0, 2] and "unreadable left out" in quality["on"], quality


def test_fine_tuning_a_folder_without_class_subfolders_says_the_labels_are_missing(run, tmp_path):
    """A flat folder of files (no class subfolders) names what is missing: labels, and the layouts that give them
    (it used to speak of streamed data and --test-split)."""
    import shutil
    files = [Path(p) for p in run["sample"].predict_inputs or [] if Path(p).suffix != ".csv"]
    if not files or not Path(run["sample"].data).is_dir():
        pytest.skip(f"{run['name']}: its own data is not a folder of files")
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, f in enumerate(files * 4):
        shutil.copy(f, flat / f"{i}{f.suffix}")
    for command in ("finetune", "evaluate"):
        res = zoo_main(command, str(run["pretrained"]), "--data", str(flat), "--output", str(tmp_path / command))
        assert res.returncode == 2 and "holds no labels" in res.stderr and "one subfolder per class" in res.stderr, \
            res.stderr
