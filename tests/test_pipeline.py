"""The streaming data path: sharding across ranks and workers, streamed SIGKILL resume, flat memory, length
grouping, bad examples in workers, the generic ``source: hf``, and the probes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from .conftest import zoo_cli


def _toy_parquet(folder: Path, n: int, shards: int, *, bad: int | None = None, seed: int = 0) -> list[str]:
    """``n`` toy sequences (``id``, ``values`` [length, 4], ``label``) in ``shards`` parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        length = int(rng.integers(8, 30))
        t = np.arange(length)[:, None]
        values = np.sin(0.25 * (i % 3 + 1) * t + rng.uniform(0, 6, (1, 4))) + 0.1 * rng.standard_normal((length, 4))
        rows.append({"id": f"ex{i:04d}", "values": [] if i == bad else values.astype(np.float32).tolist(),
                     "label": i % 3})
    files = []
    for s in range(shards):
        part = rows[s::shards]
        path = folder / f"part-{s:02d}.parquet"
        pq.write_table(pa.Table.from_pylist(part), path)
        files.append(str(path))
    return files


def _stream_spec(files: list[str]) -> dict:
    return {"source": "hf", "path": "parquet", "data_files": files, "streaming": True, "name_column": "id",
            "label_column": "label"}


def _processor(toy_plugin):
    from zoo import get_modality
    mod = get_modality("toyseq")
    return mod, mod.processor(mod.processor.config_class.from_dict({"features": 4, "max_len": 48}))


def test_map_style_two_ranks_two_workers_see_every_example_once_per_epoch(toy_plugin):
    from pipelines.data import TrainData
    from pipelines.recipe import TrainConfig
    mod, proc = _processor(toy_plugin)
    data = mod.load_data({"source": "synthetic", "n": 48, "seed": 0})
    cfg = TrainConfig(batch_size=6, num_workers=2, seed=3)
    per_epoch = 48 // (6 * 2)
    seen = []
    for rank in range(2):
        it = TrainData(data, proc, cfg, rank=rank, world=2).batches()
        for _ in range(per_epoch):
            batch = next(it)
            seen += batch["_names"]
            assert batch["labels"].shape == (6,)            # labels travel with the processed examples
        it.close()
    counts = Counter(seen)
    assert len(counts) == 48 and set(counts.values()) == {1}


def test_a_bad_example_met_in_every_epoch_is_counted_once_and_survives_resume(toy_plugin):
    import numpy as np

    from pipelines.data import TrainData
    from pipelines.recipe import TrainConfig
    from zoo import ExampleSet
    mod, proc = _processor(toy_plugin)
    data = mod.load_data({"source": "synthetic", "n": 12, "seed": 0})
    examples = list(data.examples)
    examples[4] = np.zeros((0, 4), dtype=np.float32)                  # zero-length: a bad example
    data = ExampleSet(examples, data.labels, [f"ex{i}" for i in range(12)], data.label_names)
    cfg = TrainConfig(batch_size=4, num_workers=0, seed=0, skip_bad=True)
    train = TrainData(data, proc, cfg)
    it = train.batches()
    for _ in range(9):                                                   # three epochs of three batches
        next(it)
    it.close()
    assert train.skipped == 1 and train.skipped_visits == 3, (train.skipped, train.skipped_visits)
    assert len(train.skipped_examples) == 1 and "ex4" in train.skipped_examples[0]
    again = TrainData(data, proc, cfg)
    it = again.batches(train.state())
    for _ in range(3):
        next(it)
    it.close()
    assert again.skipped == 1 and again.skipped_visits == 4


@pytest.mark.parametrize("shards", [3, 4])   # 4 parts: whole shards per part; 3: every 4th example
def test_streamed_two_ranks_two_workers_see_every_example_once_per_epoch(toy_plugin, tmp_path, shards):
    from pipelines.data import _loader, _StreamBatches
    mod, proc = _processor(toy_plugin)
    stream = mod.load_data(_stream_spec(_toy_parquet(tmp_path, 50, shards)))
    seen, epochs = [], Counter()
    for rank in range(2):
        ds = _StreamBatches(stream, proc, batch=4, seed=1, rank=rank, world=2, buffer=7, skip_bad=False, epochs=1)
        for batch in _loader(ds, workers=2, prefetch=2, pin=False):
            meta = batch["_meta"]
            seen += meta["names"]
            epochs[(rank, meta["position"][1])] += 1
    counts = Counter(seen)
    assert len(counts) == 50 and set(counts.values()) == {1}, counts.most_common(3)
    assert {k[1] for k in epochs} == {0}


def test_streamed_run_killed_then_resumed_is_bit_identical(toy_plugin, tmp_path):
    """parquet through ``source: hf`` with ``streaming: true`` and 2 workers, SIGKILLed mid-run and rerun."""
    files = _toy_parquet(tmp_path / "data", 90, 3)
    spec = json.dumps(_stream_spec(files))
    args = ["--set", f"data.train={spec}", "--set", "train.steps=40", "--set", "train.checkpoint_every=3",
            "--set", "train.keep_checkpoints=50", "--set", "train.num_workers=2", "--set", "train.shuffle_buffer=16",
            "--set", "train.batch_size=8"]
    exe = Path(sys.executable).parent / "zoo"
    killed = tmp_path / "killed"
    proc = subprocess.Popen([str(exe), "pretrain", "toyseq-tiny", "--output", str(killed), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (killed / "checkpoints" / "step-0000009").is_dir():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (killed / "checkpoints").iterdir() if not p.name.endswith(".tmp"))
    assert done and done[-1] < "step-0000040" and not (killed / "model").exists()
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(killed), *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["resumed_from"] >= 9
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(tmp_path / "straight"), *args)
    assert out.returncode == 0, out.stderr[-3000:]
    a = load_file(str(killed / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = [json.loads(x)["loss"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert la == lb and len(la) == 40
    state = json.loads((tmp_path / "straight" / "checkpoints" / "step-0000040" / "data-rank0.json").read_text())
    assert state["kind"] == "stream" and state["workers"] == 2 and set(state["positions"]) == {"0", "1"}


def _write_clips(root: Path, n: int, seconds: float, sr: int = 16000) -> None:
    import soundfile as sf
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        clip = 0.3 * np.sin(2 * np.pi * (200 + 40 * (i % 10)) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(root / f"{i % 10}_spk{i % 3}_{i}.wav", clip.astype(np.float32), sr, subtype="PCM_16")


def test_a_run_reports_its_own_peak_memory_not_its_parents():
    """A run started from a process that holds 2 GiB more (a test runner) reports the same peak RSS: Linux's
    ``ru_maxrss`` carries the parent's high-water mark across ``execve`` (CI saw 1987 MiB for every run)."""
    code = "from pipelines.distributed import peak_rss_mib; print(peak_rss_mib()['main'])"

    def child_peak() -> float:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        return float(out.stdout)

    alone = child_peak()
    held = np.ones(256 * 2**20)  # 2 GiB, touched
    beside = child_peak()
    assert abs(beside - alone) < 0.1 * held.nbytes / 2**20, (alone, beside)


def test_pretraining_memory_does_not_grow_with_the_data(tmp_path):
    """The same recipe over N and 8N audio files: peak RSS within 10%. Decoding the 8N clips up front (what
    the pipeline did before) would add more than 10% of the N run's peak, so the test can tell."""
    n, seconds = 200, 2.0
    peaks = {}
    for label, count in (("n", n), ("8n", 8 * n)):
        root = tmp_path / label
        _write_clips(root, count, seconds)
        spec = json.dumps({"source": "fsdd", "root": str(root), "split": "all"})
        out = zoo_cli("pretrain", "audio-wav2vec2-tiny", "--output", str(tmp_path / f"run-{label}"),
                      "--set", f"data.train={spec}", "--set", "train.steps=3", "--set", "train.batch_size=4",
                      "--set", "train.checkpoint_every=3",
                      # the online probe reads a fixed set (train.quality_examples), the same for any data size;
                      # off here, so that the two peaks compare the data pipeline alone
                      "--set", "train.quality_every=0")
        assert out.returncode == 0, out.stderr[-3000:]
        summary = json.loads((tmp_path / f"run-{label}" / "train_summary.json").read_text())
        assert summary["examples"] == count
        peaks[label] = summary["peak_rss_mib"]
    decoded_8n_mib = 8 * n * seconds * 16000 * 4 / 2**20
    assert decoded_8n_mib > 0.10 * peaks["n"], (decoded_8n_mib, peaks)
    assert abs(peaks["8n"] - peaks["n"]) < 0.10 * peaks["n"], peaks


def test_length_grouping_cuts_padding_and_keeps_every_example(toy_plugin):
    from pipelines.data import TrainData, padded_share
    from pipelines.recipe import TrainConfig
    mod, proc = _processor(toy_plugin)
    data = mod.load_data({"source": "synthetic", "n": 96, "seed": 0, "min_len": 4, "max_len": 48})
    shares = {}
    for grouped in (False, True):
        cfg = TrainConfig(batch_size=8, group_by_length=grouped, length_buckets=12)
        it = TrainData(data, proc, cfg).batches()
        names, pads = [], []
        for _ in range(12):
            batch = next(it)
            names += batch["_names"]
            pads.append(padded_share(batch))
        it.close()
        assert len(set(names)) == 96
        shares[grouped] = sum(pads) / len(pads)
    assert shares[True] < 0.5 * shares[False], shares


def test_bad_examples_in_workers_are_counted_or_named(toy_plugin, tmp_path):
    files = _toy_parquet(tmp_path / "data", 24, 2, bad=5)
    spec = json.dumps(_stream_spec(files))
    common = ["--set", f"data.train={spec}", "--set", "train.steps=6", "--set", "train.batch_size=4",
              "--set", "train.num_workers=2", "--set", "train.shuffle_buffer=0"]
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(tmp_path / "skip"), *common,
                  "--set", "train.skip_bad=true")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["skipped"] == 1 and "ex0005" in summary["skipped_examples"][0]
    out = zoo_cli("pretrain", "toyseq-tiny", "--output", str(tmp_path / "stop"), *common)
    assert out.returncode != 0 and "ex0005" in out.stderr and "values" in out.stderr


def test_hf_source_map_style_and_streamed_read_the_same_rows(toy_plugin, tmp_path):
    from zoo import ExampleSet, StreamSet
    mod, _ = _processor(toy_plugin)
    files = _toy_parquet(tmp_path, 12, 2)
    spec = {**_stream_spec(files), "streaming": False}
    table = mod.load_data(spec)
    stream = mod.load_data({**spec, "streaming": True})
    assert isinstance(table, ExampleSet) and isinstance(stream, StreamSet) and len(table) == 12
    by_name = {table.name(i): (np.asarray(table.examples[i]), table.label(i)) for i in range(len(table))}
    for ex, label, name in stream.records(0, 1, 0):
        assert np.array_equal(np.asarray(ex), by_name[name][0]) and label == by_name[name][1]
    with pytest.raises(KeyError, match="label_column 'nope' is not a column"):
        mod.load_data({**spec, "label_column": "nope"})
    with pytest.raises(KeyError, match="unknown key"):
        mod.load_data({**spec, "colums": "x"})


def test_hf_source_string_labels_and_tables(tmp_path):
    import pandas as pd

    from zoo import get_modality
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": ["x", "y", "x", "z"], "y": ["no", "yes", "yes", "no"]}).to_csv(
        path, index=False)
    tab = get_modality("tabular")
    data = tab.load_data({"source": "hf", "path": "csv", "data_files": str(path), "label_column": "y"})
    assert list(data.label_names) == ["no", "yes"] and [data.label(i) for i in range(4)] == [0, 1, 1, 0]
    proc = tab.processor().fit(data.examples)
    assert proc.numerical == ["a"] and proc.categorical == ["b"]           # the label column is not a feature
    out = proc.process_batch(data.examples.select([0, 3]), ["r0", "r3"])
    assert len(out) == 2 and out[1]["num"].shape == (1,)


def test_knn_accuracy_breaks_ties_towards_the_smaller_label():
    from pipelines.evaluate import knn_accuracy
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.1]])
    ty = [1, 0, 2, 2]
    test = torch.tensor([[1.0, 0.9]])
    # the two nearest by cosine are [1, 1] (label 2) and... k=1: label 2; k=3: 2 / 1 / 0 each once → 0
    assert knn_accuracy(train, ty, test, [2], k=1) == 1.0
    assert knn_accuracy(train, ty, test, [0], k=3) == 1.0
    assert knn_accuracy(train, ty, test, [1], k=3) == 0.0
    assert knn_accuracy(train, ty, test, [2], k=99) == 1.0                # k is cut to the train size: 2 votes


def test_linear_probe_hand_cases():
    from pipelines.evaluate import linear_probe
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    assert linear_probe(x, [0, 0, 1, 1], torch.tensor([[-3.0], [3.0]]), [0, 1]) == 1.0
    assert linear_probe(x, [0, 0, 1, 1], torch.tensor([[-3.0], [3.0]]), [1, 0]) == 0.0
    assert linear_probe(x, [0, 0, 1, 1], torch.tensor([[-3.0], [0.5], [3.0], [-0.5]]), [0, 1, 1, 1]) == 0.75


def test_embed_writes_shards_equal_to_one_file(toy_model, tmp_path):
    from pipelines.evaluate import load_shards
    rng = np.random.default_rng(0)
    files = []
    for i in range(5):
        np.save(tmp_path / f"x{i}.npy", rng.standard_normal((10 + i, 4)).astype(np.float32))
        files.append(str(tmp_path / f"x{i}.npy"))
    out = zoo_cli("embed", str(toy_model), *files, "--output", str(tmp_path / "shards"), "--shard-size", "2",
                  "--num-workers", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert [s["rows"] for s in index["shards"]] == [2, 2, 1] and index["rows"] == 5
    emb, labels, names = load_shards(tmp_path / "shards" / "index.json")
    assert labels is None and sorted(names) == sorted(files)
    out = zoo_cli("embed", str(toy_model), *files, "--output", str(tmp_path / "one.safetensors"))
    assert out.returncode == 0, out.stderr[-3000:]
    one = load_file(str(tmp_path / "one.safetensors"))["embeddings"]
    order = [files.index(n) for n in names]
    assert torch.allclose(emb, one[order], atol=1e-6)


def test_unanticipated_input_errors_are_bad_examples_and_skippable():
    """#15 class 7: an input a processor did not anticipate (a sample rate of "abc", a ragged array) raises inside it
    a ValueError/TypeError; the pipeline turns it into BadExample naming the example, so skip_bad skips it."""
    import numpy as np

    from modalities.audio import AudioProcessor
    from pipelines.data import process_records
    proc = AudioProcessor()
    good = (np.zeros(8000, np.float32) + 0.1 * np.sin(np.arange(8000)), 16000)
    examples = [good, (good[0], "abc"), [[0.1, 0.2], [0.3]], good]
    names = ["ok-1", "rate-abc", "ragged", "ok-2"]
    batch = process_records(proc, examples, [0, 1, 0, 1], names, skip_bad=True)
    meta = batch["_meta"]
    assert meta["names"] == ["ok-1", "ok-2"] and batch["input_values"].shape[0] == 2
    assert len(meta["skipped"]) == 2 and "rate-abc" in meta["skipped"][0] and "'sampling_rate'" in meta["skipped"][0]
    assert "ragged" in meta["skipped"][1]

    class Fragile(AudioProcessor):         # a processor that lets a raw error escape: the pipeline catches it
        def __call__(self, example, *, name=None):
            if isinstance(example, dict):
                return {"input_values": example["missing-key"]}
            return super().__call__(example, name=name)

    odd = [good, {"array": 1}, good]
    batch = process_records(Fragile(), odd, [0, 1, 0], ["ok-1", "odd", "ok-2"], skip_bad=True)
    assert batch["_meta"]["names"] == ["ok-1", "ok-2"] and "'input'" in batch["_meta"]["skipped"][0]
    stopped = process_records(Fragile(), odd, [0, 1, 0], ["ok-1", "odd", "ok-2"], skip_bad=False)["_meta"]
    assert stopped["bad"][0] == "odd" and stopped["bad"][1] == "input" and "KeyError" in stopped["bad"][2]
