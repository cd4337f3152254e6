"""Hub format: local round trip, strict safetensors-only loading, clear errors, offline cache, a real
Hub-compatible loopback server (olah) and push_to_hub against a recording server."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo.hub import FormatError

from .hub_server import RecordingHub

TEST_DIR = Path(__file__).parent


def _batch(processor, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(int(torch.randint(5, 20, (1,), generator=g)), 4, generator=g).numpy() for _ in range(n)]
    return processor.collate([processor(x) for x in xs])


def test_local_round_trip_identical_outputs(toy_model, tmp_path):
    enc = zoo.AutoEncoder.from_pretrained(toy_model)
    proc = zoo.AutoProcessor.from_pretrained(toy_model)
    enc.save_pretrained(tmp_path / "copy", processor=proc)
    enc2 = zoo.AutoEncoder.from_pretrained(tmp_path / "copy")
    proc2 = zoo.AutoProcessor.from_pretrained(tmp_path / "copy")
    assert type(enc2).__name__ == "ToyEncoder" and not enc2.training
    assert torch.equal(proc.mean, proc2.mean)
    b = _batch(proc)
    with torch.no_grad():
        o1, o2 = enc(b), enc2(_batch(proc2))
    assert torch.equal(o1.pooled, o2.pooled) and torch.equal(o1.tokens, o2.tokens)
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert config["zoo_format"] == 1 and config["modality"] == "toyseq"
    assert config["architecture"] == "toyseq-mae" and config["encoder"]["dim"] == 32


def test_concrete_class_refuses_other_architecture(toy_model, tmp_path):
    enc = zoo.AutoEncoder.from_pretrained(toy_model)
    cls = type(enc)
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "other-arch"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match="other-arch"):
        cls.from_pretrained(folder)
    with pytest.raises(KeyError, match="has no architecture 'other-arch'"):
        zoo.AutoEncoder.from_pretrained(folder)


def test_unknown_modality_lists_installed_and_provider(toy_model, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    config = json.loads((folder / "config.json").read_text())
    # every built-in modality is installed here: hide one (as if its extra were not installed) to see the hint
    from zoo import registry
    shown_eps = registry._entry_points
    monkeypatch.setattr(registry, "_entry_points", lambda: {k: v for k, v in shown_eps().items() if k != "events"})
    monkeypatch.delitem(registry._loaded, "events", raising=False)
    absent = ["events"]
    config["modality"] = absent[0]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.UnknownModality) as err:
        zoo.AutoEncoder.from_pretrained(folder)
    msg = str(err.value)
    assert f"'{absent[0]}' is not installed" in msg and "toyseq" in msg and "audio" in msg
    assert f"ssl-zoo[{absent[0]}]" in msg


def test_missing_files_and_bad_config(toy_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        zoo.AutoEncoder.from_pretrained(folder)
    shutil.copy(toy_model / "config.json", folder / "config.json")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        zoo.AutoEncoder.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        zoo.AutoEncoder.from_pretrained(tmp_path / "does-not-exist")
    shutil.copy(toy_model / "model.safetensors", folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["dimm"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ConfigError, match="unknown field.*dimm"):
        zoo.AutoEncoder.from_pretrained(folder)
    config["encoder"] = {"dim": "wide"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ConfigError, match="encoder.dim: expected an integer"):
        zoo.AutoEncoder.from_pretrained(folder)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_checkpoints_are_refused_never_unpickled(toy_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"w": Boom()}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pickle checkpoint\(s\) \['pytorch_model.bin'\]"):
        zoo.AutoEncoder.from_pretrained(folder)
    # a pickle disguised under the safetensors name
    (folder / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(FormatError, match="refusing to unpickle"):
        zoo.AutoEncoder.from_pretrained(folder)
    shutil.move(folder / "pytorch_model.bin", folder / "model.safetensors")  # torch.save zip format
    with pytest.raises(FormatError, match="refusing to unpickle"):
        zoo.AutoEncoder.from_pretrained(folder)
    assert not (tmp_path / "PWNED").exists()


def test_safetensors_whose_header_length_starts_with_0x80_load(tmp_path):
    """A safetensors file starts with its header length: 128 mod 256 gives a first byte 0x80, as a pickle's."""
    from safetensors.torch import save_file

    from zoo.hub import load_weights
    state = {"w": torch.arange(6.0).view(2, 3)}
    for pad in range(0, 512):
        save_file(state, str(tmp_path / "a.safetensors"), metadata={"pad": "x" * pad})
        if (tmp_path / "a.safetensors").read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length of 128 mod 256")
    assert torch.equal(load_weights(tmp_path / "a.safetensors")["w"], state["w"])
    (tmp_path / "b.safetensors").write_bytes(b"\x80" + bytes(20))
    with pytest.raises(FormatError, match="refusing to unpickle"):
        load_weights(tmp_path / "b.safetensors")
    (tmp_path / "c.safetensors").write_bytes(b"hello world, not a model")
    with pytest.raises(FormatError, match="not a valid safetensors file"):
        load_weights(tmp_path / "c.safetensors")


def test_mismatched_weight_keys_are_errors(toy_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    state = load_file(str(folder / "model.safetensors"))
    extra = dict(state, **{"head.weight": torch.zeros(2)})
    save_file(extra, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match=r"unexpected keys \['head.weight'\]"):
        zoo.AutoEncoder.from_pretrained(folder)
    missing = {k: v for k, v in state.items() if k != "mask_token"}
    save_file(missing, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match=r"missing keys \['mask_token'\]"):
        zoo.AutoEncoder.from_pretrained(folder)
    wrong = dict(state, mask_token=torch.zeros(5))
    save_file(wrong, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match="does not match model.safetensors .*mask_token: config \\(32,\\) vs "
                                          "weights \\(5,\\)"):
        zoo.AutoEncoder.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(FormatError, match="not a valid safetensors"):
        zoo.AutoEncoder.from_pretrained(folder)


def _embed_code(repo: str) -> str:
    return ("import torch, zoo\n"
            f"e = zoo.AutoEncoder.from_pretrained({repo!r}); p = zoo.AutoProcessor.from_pretrained({repo!r})\n"
            "g = torch.Generator().manual_seed(0)\n"
            "x = torch.randn(12, 4, generator=g).numpy()\n"
            "print(e(p.collate([p(x)])).pooled.sum().item())\n")


def _local_embedding(folder: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _embed_code(str(folder))], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.split()[-1])


def test_hub_id_resolves_offline_from_hf_home_cache(toy_model, tmp_path):
    from zoo.hub import publish_to_cache
    publish_to_cache(toy_model, "acme/toy-offline", tmp_path / "hf" / "hub")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _embed_code("acme/toy-offline")], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) == _local_embedding(toy_model)
    out = subprocess.run([sys.executable, "-c", _embed_code("acme/not-cached")], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "config.json not found in the Hub repo acme/not-cached" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_id_through_olah_loopback_server(toy_model, tmp_path):
    repo = tmp_path / "mirrors" / "models" / "acme" / "toy"
    shutil.copytree(toy_model, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "model"], check=True)
    port = _free_port()
    (tmp_path / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{tmp_path / "repos"}"\n'
        f'mirrors-path = ["{tmp_path / "mirrors"}"]\nmirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\n\n[accessibility]\noffline = true\n')
    server = subprocess.Popen([sys.executable, "-m", "olah.server", "-c", str(tmp_path / "olah.toml"),
                               "--log-path", str(tmp_path / "logs")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf")}
        env.pop("HF_HUB_OFFLINE", None)
        out = subprocess.run([sys.executable, "-c", _embed_code("acme/toy")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert float(out.stdout.split()[-1]) == _local_embedding(toy_model)
        assert list((tmp_path / "hf" / "hub").glob("models--acme--toy/snapshots/*/model.safetensors"))
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_push_to_hub_commits_exactly_the_repo_files(toy_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(toy_model, folder)
    (folder / "scratch.txt").write_text("not part of the model")
    with RecordingHub() as hub:
        zoo.push_to_hub(folder, "acme/toy", token="hf_test", endpoint=hub.url)
        enc = zoo.AutoEncoder.from_pretrained(folder)
        zoo.push_to_hub(enc, "acme/toy2", processor=zoo.AutoProcessor.from_pretrained(folder), token="hf_test",
                        endpoint=hub.url)
    assert hub.unknown == []
    assert [c["name"] for c in hub.created] == ["toy", "toy2"]
    first, second = hub.commits
    assert first["repo"] == "acme/toy" and first["revision"] == "main"
    assert sorted(first["files"]) == ["README.md", "config.json", "model.safetensors", "preprocessor.json",
                                      "quality_curve.png"]
    for name, data in first["files"].items():
        assert data == (folder / name).read_bytes()
    # an encoder object carries no figures: the same files but the run's curve
    assert sorted(second["files"]) == sorted(set(first["files"]) - {"quality_curve.png"})
    assert "library_name: ssl-zoo" in hub.validated[0]["content"]
    assert b"zoo.AutoEncoder.from_pretrained('acme/toy2')" in second["files"]["README.md"]


def test_the_same_weights_are_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes its metadata in hash-map order, which differs between processes: the same weights saved
    twice were two files with two SHA-256 (the card then said it "was written for other weights"). ``save_weights``
    writes the header sorted: five processes, one file, and safetensors reads it back whole."""
    code = ("import sys, torch; from zoo.hub import save_weights; save_weights({'b': torch.ones(3), "
            "'a': torch.arange(6.).reshape(2, 3)}, sys.argv[1], metadata={'format': 'pt', 'zoo_format': '1', "
            "'x': 'y', 'w': 'v'})")
    files = [tmp_path / f"w{i}.safetensors" for i in range(5)]
    for f in files:
        subprocess.run([sys.executable, "-c", code, str(f)], check=True, timeout=120)
    assert len({f.read_bytes() for f in files}) == 1
    from safetensors import safe_open
    with safe_open(str(files[0]), "pt") as fh:
        assert fh.metadata() == {"format": "pt", "zoo_format": "1", "x": "y", "w": "v"}
        assert torch.equal(fh.get_tensor("a"), torch.arange(6.).reshape(2, 3)) and torch.equal(fh.get_tensor("b"),
                                                                                               torch.ones(3))
