"""``zoo embed --output DIR`` at scale (issue #33, pipelines/embed_job.py): under ``torchrun`` the ranks share the
inputs by blocks and ``index.json`` joins their shards into what one process writes (same names, same order, rows
within 1e-5); a killed job resumes without embedding an input twice or missing one; a rerun of another job into
the folder is refused. Both paths: windowed audio (``_embed_windows``) and a table through DataLoader workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.embed_job import JOB_FILE, KILL_AFTER_ENV, shard_file
from pipelines.shards import load_shards

from .conftest import zoo_main

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(conv_layers=[(16, 10, 5), (16, 3, 2), (16, 3, 2)], dim=32, depth=2, heads=2, pos_conv_kernel=8,
            pos_conv_groups=4, dropout=0.0, attn_dropout=0.0, layerdrop=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, as each torchrun rank here has (OMP_NUM_THREADS=1): a tiny model's forward is ~30x
    faster on a shared machine with 2 cores, and both sides of a comparison sum alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clips(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` clips of 0.2 s at 16 kHz (a tone of its own pitch and noise), named in the folder's order."""
    import soundfile as sf
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(3200) / 16000
    paths = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * (100 + 7 * i) * t) + 0.05 * rng.standard_normal(t.size)
        paths.append(str(folder / f"clip{i:05d}.wav"))
        sf.write(paths[-1], wave.astype(np.float32), 16000)
    return paths


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory) -> Path:
    """A tiny random wav2vec 2.0 (windows of 0.25 s: a clip is one window), saved."""
    from modalities.audio import AudioProcessor, AudioProcessorConfig, Wav2Vec2Config, Wav2Vec2Encoder
    torch.manual_seed(0)
    model = tmp_path_factory.mktemp("audio") / "model"
    Wav2Vec2Encoder(Wav2Vec2Config(**TINY)).eval().save_pretrained(
        model, processor=AudioProcessor(AudioProcessorConfig(max_seconds=0.25)))
    return model


@pytest.fixture(scope="module")
def audio(audio_model, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    folder = tmp_path_factory.mktemp("clips") / "clips"
    return audio_model, folder, _clips(folder, 60)


def _table(root: Path, n: int) -> tuple[Path, Path, list[str]]:
    """A tiny random T-JEPA fitted on an ``n``-row table, and the table (one input per row)."""
    import pandas as pd

    from modalities.tabular import TabularProcessor, TJepaConfig, TJepaEncoder
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 90, n).astype(float), "income": rng.normal(50, 10, n),
                       "city": rng.choice(["paris", "rome", "oslo"], n)})
    proc = TabularProcessor().fit(df)
    torch.manual_seed(0)
    TJepaEncoder(TJepaConfig(dim=16, depth=1, heads=2, reg_tokens=1, **proc.encoder_config())).eval() \
        .save_pretrained(root / "model", processor=proc)
    df.to_csv(root / "rows.csv", index=False)
    return root / "model", root / "rows.csv", [f"{root / 'rows.csv'}[{i}]" for i in range(n)]


def _torchrun(*args: str, log: Path, env: dict | None = None, timeout: float = 300) -> tuple[int, str]:
    """``torchrun --nproc_per_node 2 -m pipelines.cli embed ARGS`` with its output in ``log`` (not a pipe: a rank's
    orphaned DataLoader workers would hold a pipe open after a kill)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **(env or {})}
    with open(log, "w") as fh:
        rc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "pipelines.cli", "embed",
                             *args], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout).returncode
    return rc, log.read_text()


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _shards(folder: Path) -> dict[str, tuple[int, int]]:
    """The shard files in ``folder``, each with its inode and modification time (unchanged = not written again)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("embeddings-*.safetensors"))}


def _covered(folder: Path, names: list[str]) -> int:
    """How many inputs the shards ``names`` in ``folder`` cover."""
    from safetensors import safe_open
    total = 0
    for name in names:
        with safe_open(str(folder / name), "pt") as fh:
            total += len(json.loads(fh.metadata()["inputs"]))
    return total


def _embedded(text: str) -> tuple[int, int]:
    """Inputs embedded and shards kept, summed over the ranks' summary lines."""
    import re
    lines = re.findall(r"embedded (\d+) input\(s\) into \d+ new shard\(s\); (\d+) shard\(s\) already written", text)
    return sum(int(a) for a, _ in lines), sum(int(b) for _, b in lines)


def _same(a: Path, b: Path, names: list[str]) -> None:
    """Two jobs' index.json give the same names, in input order, and the same rows (within 1e-5)."""
    ea, la, na = load_shards(a / "index.json")
    eb, lb, nb = load_shards(b / "index.json")
    assert na == nb == names and la is None and lb is None
    assert ea.shape == eb.shape == (len(names), ea.shape[1])
    assert torch.allclose(ea, eb, atol=1e-5, rtol=0), (ea - eb).abs().max()


def test_two_ranks_write_what_one_process_writes_and_a_lost_shard_is_embedded_again(audio, tmp_path,
                                                                                     monkeypatch):
    """Audio (windowed): torchrun with 2 ranks = one process (names, order, rows); blocks of 7 shared out
    (rank 0 blocks 0, 2, …); deleting shards and rerunning embeds exactly their inputs, nothing else."""
    model, folder, paths = audio
    one = zoo_main("embed", str(model), str(folder), "--output", str(tmp_path / "one"), "--shard-size", "7")
    assert one.returncode == 0, one.stderr
    assert "wrote 60 embeddings in 9 shard(s)" in one.stdout
    rc, log = _torchrun(str(model), str(folder), "--output", str(tmp_path / "two"), "--shard-size", "7",
                        log=tmp_path / "two.log")
    assert rc == 0, log[-3000:]
    assert "rank 0/2: embedded 32 input(s) into 5 new shard(s)" in log        # blocks 0, 2, 4, 6, 8 (the last: 4)
    assert "rank 1/2: embedded 28 input(s) into 4 new shard(s)" in log        # blocks 1, 3, 5, 7
    index = json.loads((tmp_path / "two" / "index.json").read_text())
    assert [s["rows"] for s in index["shards"]] == [7] * 8 + [4] and index["inputs"] == 60
    _same(tmp_path / "one", tmp_path / "two", paths)
    # two shards lost (and a killed write's temporary file left): the rerun embeds their 7 + 4 inputs, no other
    two = tmp_path / "two"
    (two / shard_file(3)).unlink()
    (two / shard_file(8)).unlink()
    (two / ".embeddings-00003.safetensors.tmp-12345").write_bytes(b"cut short")
    before = _shards(two)
    import zoo.embedding
    seen: list[str] = []
    real = zoo.embedding.embed_long
    monkeypatch.setattr(zoo.embedding, "embed_long", lambda *a, name=None, **k: seen.append(name) or real(
        *a, name=name, **k))
    again = zoo_main("embed", str(model), str(folder), "--output", str(two), "--shard-size", "7")
    assert again.returncode == 0, again.stderr
    assert seen == paths[21:28] + paths[56:]
    assert "embedded 11 input(s) into 2 new shard(s); 7 shard(s) already written were kept" in again.stdout
    assert {k: v for k, v in _shards(two).items() if k in before} == before
    assert not list(two.glob(".*.tmp-*"))
    _same(tmp_path / "one", two, paths)


def test_a_job_killed_under_torchrun_resumes_through_dataloader_workers(tmp_path):
    """A table (DataLoader workers): rank 0 SIGKILLed after its third shard (a crash, no clean-up; torchrun then
    stops rank 1); the same command in one process with 2 workers embeds only the inputs of the blocks that are
    missing, and the result is an uninterrupted run's."""
    model, rows, names = _table(tmp_path, 60)
    one = zoo_main("embed", str(model), str(rows), "--output", str(tmp_path / "one"), "--shard-size", "7")
    assert one.returncode == 0, one.stderr
    out = tmp_path / "killed"
    args = [str(model), str(rows), "--output", str(out), "--shard-size", "7", "--num-workers", "1"]
    rc, log = _torchrun(*args, "--batch-size", "4", log=tmp_path / "killed.log", env={KILL_AFTER_ENV: "3@0"})
    assert rc != 0, log[-3000:]
    kept = _shards(out)
    blocks = {int(name[11:16]) for name in kept}
    assert {0, 2, 4} <= blocks <= {0, 2, 4, 1, 3, 5, 7}, log[-3000:]      # rank 0's blocks: the even ones
    assert not (out / "index.json").exists()
    resumed = zoo_main("embed", *args[:-1], "2")
    assert resumed.returncode == 0, resumed.stderr
    embedded, found = _embedded(resumed.stdout)
    assert found == len(kept) and embedded == 60 - _covered(out, list(kept))       # none twice, none missed
    assert {k: v for k, v in _shards(out).items() if k in kept} == kept
    _same(tmp_path / "one", out, names)
    # the finished job run again: nothing embedded, the same index
    again = zoo_main("embed", *args[:-1], "2")
    assert again.returncode == 0 and _embedded(again.stdout) == (0, 9), again.stdout
    _same(tmp_path / "one", out, names)


def test_another_job_into_the_folder_is_refused_naming_what_differs(audio_model, tmp_path):
    """The job record (model digest, inputs, settings) guards the folder: another shard size, model or input list
    is refused; --no-resume starts over; inputs that changed under the same arguments are caught by the shards'
    own record; a folder in use by another job is refused at once."""
    model, folder = audio_model, tmp_path / "clips"
    paths = _clips(folder, 10)
    out = tmp_path / "out"
    base = ("embed", str(model), str(folder), "--output", str(out))
    assert zoo_main(*base, "--shard-size", "3").returncode == 0
    record = json.loads((out / JOB_FILE).read_text())
    assert record["settings"]["shard_size"] == 3 and record["inputs"] == [str(folder.resolve())]
    res = zoo_main(*base)                                                 # no --shard-size: the job's own
    assert res.returncode == 0 and "0 input(s) into 0 new shard(s); 4 shard(s) already written" in res.stdout
    res = zoo_main(*base, "--shard-size", "4")
    assert res.returncode == 2 and "another embedding job" in res.stderr and "--shard-size (3 then, 4 now)" in \
        res.stderr and "--no-resume" in res.stderr, res.stderr
    res = zoo_main("embed", str(model), paths[0], "--output", str(out), "--shard-size", "3")
    assert res.returncode == 2 and "the inputs" in res.stderr, res.stderr
    other = tmp_path / "other-model"
    import shutil
    shutil.copytree(model, other)
    res = zoo_main("embed", str(other), str(folder), "--output", str(out), "--shard-size", "3")
    assert res.returncode == 2 and "the model " in res.stderr, res.stderr
    assert len(load_shards(out / "index.json")[2]) == 10                  # refused before touching anything
    assert zoo_main("embed", str(other), str(folder), "--output", str(tmp_path / "o2"), "--shard-size", "3"
                    ).returncode == 0
    cfg = json.loads((other / "preprocessor.json").read_text())           # the same folder, the model changed
    cfg["config"]["normalize"] = not cfg["config"]["normalize"]
    (other / "preprocessor.json").write_text(json.dumps(cfg))
    res = zoo_main("embed", str(other), str(folder), "--output", str(tmp_path / "o2"), "--shard-size", "3")
    assert res.returncode == 2 and "the model's files differ" in res.stderr, res.stderr
    res = zoo_main(*base, "--shard-size", "4", "--no-resume")
    assert res.returncode == 0 and len(_shards(out)) == 3, res.stderr
    # a file taken out of the middle of the folder: same arguments, other inputs; the shards say so
    Path(paths[1]).unlink()
    (out / shard_file(1)).unlink()
    res = zoo_main(*base, "--shard-size", "4")
    assert res.returncode == 2 and "the inputs changed" in res.stderr and "clip00001.wav" in res.stderr, res.stderr
    # a second job while one holds the folder's lock
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = zoo_main(*base, "--shard-size", "4", "--no-resume")
        assert res.returncode == 2 and "in use by" in res.stderr, res.stderr
    finally:
        holder.kill()
        holder.wait()


def test_several_processes_need_a_folder(audio_model, tmp_path, monkeypatch):
    res = zoo_main("embed", str(audio_model), "x.wav", "--output", str(tmp_path / "e.safetensors"), "--no-resume")
    assert res.returncode == 2 and "--no-resume" in res.stderr and "--output FOLDER" in res.stderr, res.stderr
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    res = zoo_main("embed", str(audio_model), "x.wav", "--output", str(tmp_path / "e.safetensors"))
    assert res.returncode == 2 and "--output must be a folder" in res.stderr, res.stderr
    monkeypatch.setenv("RANK", "2")
    res = zoo_main("embed", str(audio_model), "x.wav", "--output", str(tmp_path / "e"))
    assert res.returncode == 2 and "RANK=2" in res.stderr, res.stderr
    assert not (tmp_path / "e").exists()


def test_a_streamed_dataset_is_embedded_as_its_files_and_resumes(audio, tmp_path, monkeypatch):
    """A Hugging Face dataset id as input (streamed, ``load_dataset`` stood in for by a local one): rows named
    ``ID[k]``, the embeddings of the files it holds; a lost shard is embedded again from the stream."""
    import datasets
    model, _, paths = audio
    files = paths[:12]
    calls = []

    def load_dataset(path, split="train", streaming=False, **kwargs):
        calls.append((path, split, streaming))
        ds = datasets.Dataset.from_dict({"audio": files}).cast_column("audio", datasets.Audio(decode=False))
        return ds.to_iterable_dataset(num_shards=3)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    out = tmp_path / "stream"
    res = zoo_main("embed", str(model), files[0], "--split", "test")
    assert res.returncode == 2 and "--split" in res.stderr and not calls, res.stderr
    res = zoo_main("embed", str(model), "me/clips", "--split", "test", "--output", str(out), "--shard-size", "5")
    assert res.returncode == 0, res.stderr
    assert calls == [("me/clips", "test", True)]
    ref = zoo_main("embed", str(model), *files, "--output", str(tmp_path / "files"), "--shard-size", "5")
    assert ref.returncode == 0, ref.stderr
    emb, _, names = load_shards(out / "index.json")
    assert names == [f"me/clips[{k}]" for k in range(12)]
    assert torch.equal(emb, load_shards(tmp_path / "files" / "index.json")[0])
    (out / shard_file(1)).unlink()
    res = zoo_main("embed", str(model), "me/clips", "--split", "test", "--output", str(out), "--shard-size", "5")
    assert res.returncode == 0 and "embedded 5 input(s) into 1 new shard(s); 2 shard(s)" in res.stdout, res.stderr
    assert torch.equal(load_shards(out / "index.json")[0], emb)


@pytest.mark.slow
def test_two_thousand_rows_through_workers_under_two_ranks_are_one_process(tmp_path):
    """The DataLoader-workers path shared out by torchrun in full (2 ranks, 2 workers each): one process's rows,
    names and order."""
    model, rows, names = _table(tmp_path, 2000)
    one = zoo_main("embed", str(model), str(rows), "--output", str(tmp_path / "one"), "--shard-size", "64")
    assert one.returncode == 0, one.stderr
    rc, log = _torchrun(str(model), str(rows), "--output", str(tmp_path / "two"), "--shard-size", "64",
                        "--num-workers", "2", "--batch-size", "16", log=tmp_path / "two.log")
    assert rc == 0, log[-3000:]
    assert _embedded(log) == (2000, 0)
    _same(tmp_path / "one", tmp_path / "two", names)


@pytest.mark.slow
def test_two_thousand_clips_two_ranks_killed_and_resumed(audio_model, tmp_path):
    """2,000 clips: torchrun with 2 ranks = one process; the same job SIGKILLed from outside (torchrun, its ranks)
    once a third of its shards exist, then rerun under torchrun, embeds each clip exactly once and ends with the
    uninterrupted rows."""
    folder = tmp_path / "clips"
    paths = _clips(folder, 2000)
    t0 = time.monotonic()
    one = zoo_main("embed", str(audio_model), str(folder), "--output", str(tmp_path / "one"), "--shard-size", "50")
    assert one.returncode == 0, one.stderr
    t1 = time.monotonic()
    rc, log = _torchrun(str(audio_model), str(folder), "--output", str(tmp_path / "two"), "--shard-size", "50",
                        log=tmp_path / "two.log", timeout=600)
    assert rc == 0, log[-3000:]
    t2 = time.monotonic()
    print(f"2,000 clips: one process {t1 - t0:.1f} s, torchrun x2 {t2 - t1:.1f} s")
    _same(tmp_path / "one", tmp_path / "two", paths)
    # killed from outside once 14 of the 40 shards exist
    out = tmp_path / "killed"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(tmp_path / "killed.log", "w") as fh:
        proc = subprocess.Popen([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "pipelines.cli",
                                 "embed", str(audio_model), str(folder), "--output", str(out), "--shard-size", "50"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 300
        while len(_shards(out) if out.is_dir() else {}) < 14 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in _tree(proc.pid):                      # torchrun, its ranks and their workers at once
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    kept = _shards(out)
    assert 14 <= len(kept) < 40 and not (out / "index.json").exists(), (tmp_path / "killed.log").read_text()[-2000:]
    rc, log = _torchrun(str(audio_model), str(folder), "--output", str(out), "--shard-size", "50",
                        log=tmp_path / "resumed.log", timeout=600)
    assert rc == 0, log[-3000:]
    embedded, found = _embedded(log)
    assert found == len(kept) and embedded == 2000 - _covered(out, list(kept)), log[-3000:]
    assert {k: v for k, v in _shards(out).items() if k in kept} == kept
    _same(tmp_path / "one", out, paths)


def test_the_progress_bar_names_how_many_inputs_were_skipped(tmp_path, monkeypatch):
    import torch

    from pipelines.embed_job import EmbedJob
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with EmbedJob(tmp_path / "out", shard_size=4, progress=True) as job:
        job.open({"job": "test"})
        job.add(0, torch.zeros(1, 3), ["a"], "a")
        job.add(1, torch.zeros(0, 3), [], "b", skipped="not a WAV file")
        job.add(2, torch.zeros(1, 3), ["c"], "c")
        assert job._bar.n == 3 and job._bar.postfix == "skipped=1"
        assert job.embedded == 2
