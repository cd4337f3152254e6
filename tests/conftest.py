"""Shared fixtures. The out-of-tree ``zoo-toyseq`` plugin is *installed* (pip, into a temporary target)
once per session: the engine, hub and CLI tests use a modality that the repo itself does not register."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRC = ROOT / "tests" / "plugins" / "zoo-toyseq"


@pytest.fixture(scope="session")
def toy_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the plugin package with pip into a fresh folder and put it on the import path."""
    target = tmp_path_factory.mktemp("site")
    src = tmp_path_factory.mktemp("src") / PLUGIN_SRC.name
    shutil.copytree(PLUGIN_SRC, src)  # setuptools builds in-tree: keep the checkout clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True)
    sys.path.insert(0, str(target))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), old]))
    yield target
    sys.path.remove(str(target))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session")
def toy_recipe(toy_plugin: Path) -> dict:
    from pipelines.recipe import load_recipe
    return load_recipe("toyseq-tiny")


@pytest.fixture(scope="session")
def toy_model(toy_recipe: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy model pretrained once for the session (a few steps)."""
    from pipelines.pretrain import pretrain
    out = tmp_path_factory.mktemp("toy-run")
    pretrain(toy_recipe, out)
    return out / "model"


def zoo_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``zoo`` console script."""
    exe = Path(sys.executable).parent / "zoo"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=cwd, timeout=600)


def kill_after_checkpoint(args: list[str], checkpoints: Path, step: int, timeout: float = 300.0) -> None:
    """Start ``zoo ARGS``, wait until its checkpoint of ``step`` is complete, then SIGKILL it (no chance to clean
    up), as a crash or an out-of-memory kill would."""
    import signal
    import time
    exe = Path(sys.executable).parent / "zoo"
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and not (checkpoints / f"step-{step:07d}").is_dir():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def zoo_main(*args: str) -> subprocess.CompletedProcess:
    """The ``zoo`` command line run in this process (``pipelines.cli.main``: the same code as the console script,
    without starting an interpreter); output and exit status as :func:`zoo_cli` gives them."""
    import contextlib
    import io

    from pipelines.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as stop:                      # argparse's usage errors
            code = stop.code if isinstance(stop.code, int) else 2
    return subprocess.CompletedProcess(["zoo", *args], code, out.getvalue(), err.getvalue())


def check_saved_model(run: Path, example: str, tmp_path: Path, *, step: int) -> tuple:
    """The end-to-end promise of every modality: ``zoo embed`` on a file gives exactly the embedding of the folder
    loaded with ``AutoEncoder``/``AutoProcessor`` (an input longer than one window: within 1e-5 of the mean of its
    windows embedded one by one, weighted by their length), and the folder holds the last checkpoint's encoder
    weights. Returns ``(encoder, processor, cli_embeddings)``."""
    import torch
    from safetensors.torch import load_file

    import zoo
    model = run / "model"
    out = zoo_cli("embed", str(model), example, "--output", str(tmp_path / "e.safetensors"))
    assert out.returncode == 0, out.stderr
    cli = load_file(str(tmp_path / "e.safetensors"))["embeddings"]
    enc, proc = zoo.AutoEncoder.from_pretrained(model), zoo.AutoProcessor.from_pretrained(model)
    windows = list(proc.windows(example))
    with torch.no_grad():
        if len(windows) == 1:
            assert torch.equal(enc(proc.collate([proc(example)])).pooled, cli)
        else:
            rows = torch.cat([enc(proc.collate([w.item])).pooled for w in windows]).double()
            weights = torch.tensor([w.weight for w in windows], dtype=torch.float64)[:, None]
            assert torch.allclose(((rows * weights).sum(0) / weights.sum()).float()[None], cli, atol=1e-5, rtol=0)
    ckpt = load_file(str(run / "checkpoints" / f"step-{step:07d}" / "model.safetensors"))
    assert all(torch.equal(ckpt["encoder." + k], v) for k, v in enc.state_dict().items())
    return enc, proc, cli
