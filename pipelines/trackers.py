"""Experiment trackers (docs/command-line.md, "Experiment trackers"): ``--report-to tensorboard,wandb,mlflow,trackio``
(``none``: the default; ``all``: every one installed) sends a run to TensorBoard, Weights & Biases, MLflow and
trackio through each one's own library, an optional extra imported only when named. ``metrics.jsonl`` is always
written; the trackers get the same rows.

What a recipe uses (``zoo pretrain``, ``zoo finetune``, and any later recipe that runs the engine's loop):

- :func:`add_report_to` puts the flag on a subcommand's parser; :func:`tracker_names` checks a setting (an
  unknown name, or a named tracker whose library is missing, is an error naming the extra to install) — called
  first thing, before any loading or training;
- :class:`TrackerHook`, a :class:`~pipelines.hooks.Hook` given to :func:`pipelines.engine.train`: it opens the
  trackers when the run starts (main rank only) with the run's settings as hyper-parameters, logs every finite
  numeric scalar of every ``metrics.jsonl`` row at its step, and :meth:`TrackerHook.finish` (which the recipe
  calls once its card is written) adds the card's figures and the run's summary and closes them. A run that
  raises closes them as failed (:meth:`TrackerHook.on_error`); one that stops the interpreter some other way, at
  exit;
- :func:`log_evaluation` for ``zoo evaluate``: the metrics to every tracker, and the test embeddings with their
  labels to TensorBoard's projector.

Where each writes: TensorBoard ``<output>/runs/<date>_<host>/`` (Hugging Face Trainer's convention); wandb the
project ``WANDB_PROJECT`` (``ssl-zoo``), files under ``<output>/wandb/`` (``WANDB_MODE=offline`` works without an
account); MLflow ``MLFLOW_TRACKING_URI``, else a file store ``<output>/mlruns``, experiment
``MLFLOW_EXPERIMENT_NAME`` (``ssl-zoo``); trackio its local store (``TRACKIO_DIR``), project ``TRACKIO_PROJECT``
(``ssl-zoo``). The tracker runs of a run folder are named in ``<output>/trackers.json``: a resumed run continues
them (wandb's ``resume="allow"`` with the same id, the same MLflow run, the same trackio run, TensorBoard's
``purge_step``), and the steps the killed run had already sent are not sent twice.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import logging
import math
import numbers
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo.config import flatten

from .hooks import Hook

logger = logging.getLogger(__name__)

__all__ = ["TRACKERS", "tracker_names", "installed_trackers", "add_report_to", "TrackerHook", "log_evaluation",
           "card_figures", "scalars", "flatten", "STATE_FILE"]

STATE_FILE = "trackers.json"                  # in the run folder: the tracker runs a resume continues


# --- which trackers ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    extra: str                     # pip install 'ssl-zoo[<extra>]'
    modules: tuple[str, ...]       # imported, in order, to use it


_SPECS: dict[str, _Spec] = {
    "tensorboard": _Spec("tensorboard", ("tensorboard", "torch.utils.tensorboard")),
    "wandb": _Spec("wandb", ("wandb",)),
    "mlflow": _Spec("mlflow", ("mlflow",)),
    "trackio": _Spec("trackio", ("trackio",)),
}
TRACKERS: tuple[str, ...] = tuple(_SPECS)


def _importable(name: str) -> str | None:
    """``None`` when the tracker's library imports, else why not."""
    import importlib
    for module in _SPECS[name].modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            return str(err) or type(err).__name__
    return None


def installed_trackers() -> tuple[str, ...]:
    """The trackers whose library is installed (what ``all`` means)."""
    return tuple(name for name in TRACKERS if _importable(name) is None)


def tracker_names(report_to: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--report-to``'s value (a comma list, or a list of names) as tracker names, checked: ``none`` (or
    nothing) is none, ``all`` every installed one; an unknown name is an error listing the known ones, a tracker
    whose library does not import an error naming the extra to install (a :class:`ValueError`)."""
    if report_to is None:
        return ()
    parts = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [p.strip().lower() for p in parts if p and p.strip()]
    if not names or names == ["none"]:
        return ()
    if names == ["all"]:
        return installed_trackers()
    if "none" in names or "all" in names:
        raise ValueError(f"--report-to {','.join(names)}: 'none' and 'all' stand alone (known trackers: "
                         f"{', '.join(TRACKERS)})")
    unknown = [n for n in names if n not in _SPECS]
    if unknown:
        import difflib
        close = [m for n in unknown for m in difflib.get_close_matches(n, TRACKERS, n=1)]
        raise ValueError(f"--report-to: unknown tracker {', '.join(map(repr, unknown))}"
                         + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + f"; known: {', '.join(TRACKERS)}, none, all")
    out = tuple(dict.fromkeys(names))
    for name in out:
        why = _importable(name)
        if why is not None:
            raise ValueError(f"--report-to {name}: its library is not installed ({why}): "
                             f"pip install 'ssl-zoo[{_SPECS[name].extra}]' (or 'ssl-zoo[trackers]' for all four)")
    return out


def _report_to_arg(value: str) -> tuple[str, ...]:
    try:
        return tracker_names(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--report-to: ")) from None


def add_report_to(parser: argparse.ArgumentParser) -> None:
    """The ``--report-to`` flag (checked as it is parsed: before any work)."""
    parser.add_argument("--report-to", type=_report_to_arg, default=(), metavar="TRACKERS",
                        help=f"experiment trackers to log to, a comma list of {', '.join(TRACKERS)}, or all (every "
                             "installed one) or none (the default); metrics.jsonl is always written")


# --- values ------------------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """A finite real number (Python's or NumPy's) as a float, else ``None`` (bools, text, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def scalars(row: dict[str, Any], sep: str = "/", *, lists: bool = True) -> dict[str, float]:
    """Every finite numeric value of a metrics row (or a nested report, flattened with ``sep``; ``lists``:
    indexed, else left out) but ``step``."""
    out = {}
    for k, v in flatten(row, sep, lists=lists).items():
        x = _number(v)
        if k != "step" and x is not None:
            out[k] = x
    return out


def _plain(value: Any) -> str | int | float | bool:
    """A hyper-parameter as TensorBoard and MLflow take it: a number, text or bool (anything else as JSON)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def card_figures(output_dir: str | Path) -> list[Path]:
    """The figures of a run folder's card: ``loss_curve.png``, then every PNG the recipe wrote into ``model/``."""
    output_dir = Path(output_dir)
    first = [output_dir / "loss_curve.png"] if (output_dir / "loss_curve.png").is_file() else []
    return first + sorted((output_dir / "model").glob("*.png"))


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    """A library that prints its banners on stdout (trackio) while ``zoo`` prints its JSON summary there."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# --- one tracker --------------------------------------------------------------------------------------------------
@dataclass
class _RunInfo:
    output_dir: Path
    name: str
    job: str                                   # pretrain | finetune | evaluate | ...
    settings: dict[str, Any]
    resumed_at: int | None = None              # the checkpoint's step a resumed run goes on from
    state: dict[str, Any] = field(default_factory=dict)   # what this tracker saved for the run folder


class _Tracker:
    """One tracker's run: opened, given scalars, figures and a summary, closed."""

    name = ""
    rewrites = False        # on resume it drops what came after the checkpoint itself (TensorBoard's purge_step)

    def open(self, info: _RunInfo) -> dict[str, Any]:
        """Start (or, with ``info.resumed_at`` and ``info.state``, continue) the run; returns what a resume
        needs to find it again."""
        raise NotImplementedError

    def where(self) -> str:
        raise NotImplementedError

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def images(self, figures: Sequence[Path], step: int) -> None:
        raise NotImplementedError

    def summary(self, values: dict[str, float], raw: dict[str, Any], step: int) -> None:
        self.log({f"summary/{k}": v for k, v in values.items()}, step)

    def embedding(self, matrix: Any, metadata: list[list[str]], header: list[str], tag: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def stored_step(self) -> int | None:
        """The last step the tracker's own store holds for this run, where it can say (a tracker that sends from a
        buffer may have lost the last steps handed to it when the process was killed); ``None``: unknown."""
        return None

    def close(self, failed: bool = False) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        """Another tracker of the run could not start: close this one, removing what it made where it can."""
        self.close(True)


def _png(path: Path) -> Any:
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class _TensorBoard(_Tracker):
    name = "tensorboard"
    rewrites = True

    def open(self, info: _RunInfo) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
        folder = info.state.get("log_dir") if info.resumed_at is not None else None
        if folder is None:          # Hugging Face Trainer's default: <output>/runs/<Mon DD_HH-MM-SS>_<host>
            folder = str(Path("runs") / f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}")
            if info.job == "evaluate":
                folder += "_evaluate"
        self.dir, self.resumed = info.output_dir / folder, info.resumed_at is not None
        self.writer = SummaryWriter(str(self.dir), purge_step=info.resumed_at + 1 if info.resumed_at else None)
        params = {k: _plain(v) for k, v in flatten(info.settings).items() if v is not None}
        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("settings", "    " + json.dumps(info.settings, indent=2, default=str)
                             .replace("\n", "\n    "))
        return {"log_dir": folder}

    def where(self) -> str:
        return f"tensorboard: {self.dir} (tensorboard --logdir {self.dir.parent})"

    def log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def images(self, figures: Sequence[Path], step: int) -> None:
        for path in figures:
            self.writer.add_image(f"figures/{path.stem}", _png(path), step, dataformats="HWC")

    def summary(self, values: dict[str, float], raw: dict[str, Any], step: int) -> None:
        super().summary(values, raw, step)
        self.writer.add_text("summary", "    " + json.dumps(raw, indent=2, default=str).replace("\n", "\n    "),
                             step)

    def embedding(self, matrix: Any, metadata: list[list[str]], header: list[str], tag: str) -> None:
        self.writer.add_embedding(matrix, metadata=metadata, metadata_header=header, tag=tag, global_step=0)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        self.writer.close()

    def discard(self) -> None:
        self.writer.close()
        if not self.resumed:                  # a run folder of its own that holds nothing yet
            shutil.rmtree(self.dir, ignore_errors=True)


class _Wandb(_Tracker):
    name = "wandb"

    def open(self, info: _RunInfo) -> dict[str, Any]:
        import wandb
        run_id = info.state.get("id") if info.resumed_at is not None else None
        run_id = run_id or uuid.uuid4().hex[:8]
        settings = None if "WANDB_SILENT" in os.environ else wandb.Settings(silent=True)   # the CLI stays quiet
        self.project = os.environ.get("WANDB_PROJECT") or "ssl-zoo"
        self.run = wandb.init(project=self.project, name=info.name, id=run_id,
                              resume="allow" if info.resumed_at is not None else None,
                              dir=str(info.output_dir), config=info.settings, job_type=info.job,
                              reinit="create_new", settings=settings)
        self.offline = self.run.settings.mode in ("offline", "dryrun")
        return {"id": self.run.id}

    def where(self) -> str:
        if self.offline:
            return f"wandb: {self.project}/{self.run.id}, offline in {self.run.settings.sync_dir} (wandb sync)"
        return f"wandb: {self.project}/{self.run.id} {getattr(self.run, 'url', '') or ''}".rstrip()

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def images(self, figures: Sequence[Path], step: int) -> None:
        import wandb
        if figures:
            self.run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in figures}, step=step)

    def summary(self, values: dict[str, float], raw: dict[str, Any], step: int) -> None:
        self.run.summary.update({f"summary/{k}": v for k, v in values.items()})

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_MLFLOW_KEY = re.compile(r"[^\w.\- /]")
_MLFLOW_VALUE_MAX = 6000            # MLflow's longest parameter value


class _MLflow(_Tracker):
    name = "mlflow"

    def open(self, info: _RunInfo) -> dict[str, Any]:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or (info.output_dir / "mlruns").resolve().as_uri()
        if self.uri.startswith("file:") or "://" not in self.uri:
            # MLflow 3 keeps its file store in maintenance mode and asks for this to use it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = client = MlflowClient(tracking_uri=self.uri)
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "ssl-zoo"
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(self.experiment)
            except MlflowException:          # made meanwhile by another run
                exp_id = client.get_experiment_by_name(self.experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        self.run_id, logged = info.state.get("run_id") if info.resumed_at is not None else None, {}
        if self.run_id:
            try:
                logged = client.get_run(self.run_id).data.params
                client.update_run(self.run_id, status="RUNNING")
            except MlflowException:          # another tracking store now: a new run
                self.run_id = None
        if not self.run_id:
            self.run_id = client.create_run(exp_id, run_name=info.name,
                                            tags={"ssl-zoo.job": info.job,
                                                  "ssl-zoo.output": str(info.output_dir.resolve())}).info.run_id
        params, changed = {}, {}
        for k, v in flatten(info.settings).items():
            key, value = _MLFLOW_KEY.sub("_", k)[:250], str(_plain(v))[:_MLFLOW_VALUE_MAX]
            if key not in logged:
                params[key] = value
            elif logged[key] != value:     # a logged parameter cannot change (a resume may change train.steps)
                changed[key] = value
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i:i + 100])
        if changed:
            client.set_tag(self.run_id, "ssl-zoo.changed_on_resume", json.dumps(changed)[:5000])
        return {"run_id": self.run_id}

    def where(self) -> str:
        return f"mlflow: run {self.run_id} of experiment {self.experiment} at {self.uri}"

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        items = [Metric(_MLFLOW_KEY.sub("_", k)[:250], v, now, step) for k, v in values.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def images(self, figures: Sequence[Path], step: int) -> None:
        for path in figures:
            self.client.log_artifact(self.run_id, str(path), "figures")

    def summary(self, values: dict[str, float], raw: dict[str, Any], step: int) -> None:
        super().summary(values, raw, step)
        self.client.log_text(self.run_id, json.dumps(raw, indent=2, default=str) + "\n", "summary.json")

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class _Trackio(_Tracker):
    name = "trackio"

    def open(self, info: _RunInfo) -> dict[str, Any]:
        import trackio
        # trackio resumes a run by its name: the run folder's own (the recipe's name and a short id)
        name = info.state.get("name") if info.resumed_at is not None else None
        name = name or f"{info.name}-{uuid.uuid4().hex[:6]}"
        self.project = os.environ.get("TRACKIO_PROJECT") or "ssl-zoo"
        with _quiet_stdout():
            self.run = trackio.init(project=self.project, name=name, config=info.settings, embed=False,
                                    resume="allow" if info.resumed_at is not None else "never")
        from trackio.utils import TRACKIO_DIR
        self.store = TRACKIO_DIR
        return {"name": self.run.name}

    def where(self) -> str:
        return f"trackio: run {self.run.name} of project {self.project} in {self.store} " \
               f"(trackio show --project {self.project})"

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def stored_step(self) -> int | None:
        from trackio.sqlite_storage import SQLiteStorage
        try:
            return SQLiteStorage.get_max_step_for_run(self.project, run=self.run.name)
        except Exception:                      # an unreadable store: what trackers.json says
            return None

    def images(self, figures: Sequence[Path], step: int) -> None:
        import trackio
        if figures:
            self.run.log({f"figures/{p.stem}": trackio.Image(str(p)) for p in figures}, step=step)

    def close(self, failed: bool = False) -> None:
        import trackio
        with _quiet_stdout():
            trackio.finish()               # the current run, ours: also forgets it (else finished again at exit)


_CLASSES: dict[str, type[_Tracker]] = {"tensorboard": _TensorBoard, "wandb": _Wandb, "mlflow": _MLflow,
                                       "trackio": _Trackio}


def _open_all(names: Sequence[str], info: _RunInfo, saved: dict[str, Any]) -> tuple[list[_Tracker], dict]:
    """Each named tracker opened; one that fails closes those already open and stops the run with its error."""
    opened: list[_Tracker] = []
    states: dict[str, Any] = {}
    for name in names:
        tracker = _CLASSES[name]()
        try:
            states[name] = tracker.open(_RunInfo(info.output_dir, info.name, info.job, info.settings,
                                                 info.resumed_at, dict(saved.get(name) or {})))
        except Exception as err:
            for t in opened:
                _safely(t.discard)
            hint = " (without an account: WANDB_MODE=offline)" if name == "wandb" else ""
            raise RuntimeError(f"--report-to {name}: the tracker could not start: {err}{hint}") from err
        opened.append(tracker)
    return opened, states


def _safely(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
        return True
    except Exception as err:        # a tracker never breaks the run it reports on
        logger.warning("%s: %s", getattr(fn, "__qualname__", fn), err)
        return False


# --- the hook ----------------------------------------------------------------------------------------------------
class TrackerHook(Hook):
    """The trackers of one run of the engine's loop (see the module's docstring). ``report_to``: as
    :func:`tracker_names` takes it (checked here: make the hook before any work); ``name``: the run's name in
    the trackers (the recipe's); ``job``: what the run is (``pretrain``, ``finetune``); ``settings``: its
    hyper-parameters (default: the run's fingerprint, the settings the loop checks a resume against)."""

    def __init__(self, report_to: str | Sequence[str] | None, output_dir: str | Path, *, name: str,
                 job: str = "pretrain", settings: dict[str, Any] | None = None) -> None:
        self.names = tracker_names(report_to)
        self.output_dir, self.name, self.job, self.settings = Path(output_dir), name, job, settings
        self.trackers: list[_Tracker] = []
        self.logged: dict[str, int] = {}          # per tracker: the last step it holds
        self.states: dict[str, Any] = {}
        self.step = 0

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def on_start(self, run: Any) -> None:
        if not self.names or not run.ctx.info.main or self.trackers:
            return
        resumed = run.step if run.step > 0 else None
        saved: dict[str, Any] = {}
        if resumed is not None and self.state_path.is_file():
            with contextlib.suppress(ValueError, OSError):
                saved = json.loads(self.state_path.read_text())
        settings = self.settings if self.settings is not None else dict(run.fingerprint or {})
        info = _RunInfo(self.output_dir, self.name, self.job, settings, resumed)
        self.trackers, states = _open_all(self.names, info, saved)
        self.step = run.step
        for t in self.trackers:
            held = int((saved.get(t.name) or {}).get("step", 0)) if resumed is not None else 0
            stored = t.stored_step() if resumed is not None else None
            if stored is not None:            # handed over but never stored (killed while buffered): sent again
                held = min(held, stored)
            # what came after the checkpoint was sent already (the same values, the run being deterministic);
            # TensorBoard drops it itself (purge_step) and takes it again
            self.logged[t.name] = run.step if t.rewrites else max(held, run.step)
            self.states[t.name] = {**states[t.name], "step": self.logged[t.name]}
        start = scalars(run.start_row or {}) if resumed is None else {}
        for t in list(self.trackers):        # a fresh run's step 0: what hooks before this one measured at init
            if start and not _safely(t.log, start, 0):
                self._drop(t)
        self._save()
        atexit.register(self._at_exit)
        logger.info("\n".join(f"reporting to {t.where()}" for t in self.trackers))     # one message, one bar redraw

    def on_log(self, run: Any, row: dict[str, Any]) -> None:
        if not self.trackers:
            return
        step = int(row["step"])
        values = scalars(row)
        for t in list(self.trackers):
            if step > self.logged[t.name] and values:
                if not _safely(t.log, values, step):
                    self._drop(t)
                    continue
                self.logged[t.name] = self.states[t.name]["step"] = step
        self.step = max(self.step, step)
        self._save()

    def on_end(self, run: Any) -> None:
        self.step = max(self.step, run.step)
        for t in self.trackers:
            _safely(t.flush)

    def on_error(self, run: Any, error: BaseException) -> None:
        self.close(failed=True)

    def finish(self, figures: Iterable[str | Path] | None = None, summary: dict[str, Any] | None = None) -> None:
        """After the recipe wrote its card: ``figures`` (default: :func:`card_figures` of the run folder) as
        images at the last step, the finite numbers of ``summary`` (as ``summary/<key>``; wandb's run summary;
        MLflow also keeps it whole as ``summary.json``), then the trackers closed. Idempotent."""
        if not self.trackers:
            return
        paths = [Path(p) for p in (card_figures(self.output_dir) if figures is None else figures)]
        paths = [p for p in paths if p.is_file()]
        for t in self.trackers:
            step = max(self.step, self.logged.get(t.name, 0))
            if paths:
                _safely(t.images, paths, step)
            if summary:
                _safely(t.summary, scalars(summary, lists=False), summary, step)     # not histories
        self.close()

    def close(self, failed: bool = False) -> None:
        """Close every tracker (``failed``: the run raised; wandb and MLflow mark it so)."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            _safely(t.close, failed)
        if trackers:
            atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        self.close(failed=True)

    def _drop(self, tracker: _Tracker) -> None:
        logger.warning("--report-to %s: it failed (above); the run goes on without it", tracker.name)
        self.trackers.remove(tracker)
        _safely(tracker.close, True)

    def _save(self) -> None:
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(self.states, indent=1) + "\n")
            os.replace(tmp, self.state_path)
        except OSError as err:
            logger.warning("%s: %s", self.state_path, err)


# --- zoo evaluate ------------------------------------------------------------------------------------------------
def log_evaluation(report_to: str | Sequence[str] | None, output_dir: str | Path, name: str,
                   report: dict[str, Any], *, settings: dict[str, Any] | None = None,
                   embeddings: str | Path | None = None, label_names: Sequence[str] | None = None,
                   figures: Iterable[str | Path] | None = None) -> None:
    """``zoo evaluate --report-to``: a run per tracker (named ``<name>-evaluate``) with the report's finite
    numbers as scalars at step 0, ``figures`` (default: the embedding map and the label-efficiency curve) as
    images and, for TensorBoard, the embeddings of ``embeddings`` (an ``index.json`` of
    :func:`pipelines.evaluate.embed_shards`) with their labels (named by ``label_names``) and example names in the
    projector."""
    names = tracker_names(report_to)
    if not names:
        return
    output_dir = Path(output_dir)
    info = _RunInfo(output_dir, f"{name}-evaluate", "evaluate", dict(settings or {}))
    trackers, _ = _open_all(names, info, {})
    logger.info("\n".join(f"reporting to {t.where()}" for t in trackers))
    values = scalars(report)
    paths = [Path(p) for p in (figures if figures is not None else
                               [output_dir / "embedding_map.png", output_dir / "label_efficiency.png"])]
    paths = [p for p in paths if p.is_file()]
    projector = None
    if embeddings is not None and Path(embeddings).is_file() and any(t.name == "tensorboard" for t in trackers):
        projector = _projector_rows(Path(embeddings), label_names)
    for t in trackers:
        ok = _safely(t.log, values, 0) and (not paths or _safely(t.images, paths, 0))
        if projector is not None and t.name == "tensorboard":
            ok = _safely(t.embedding, *projector, "test") and ok
        _safely(t.close, not ok)


def _projector_rows(index: Path, label_names: Sequence[str] | None) -> tuple[Any, list[list[str]], list[str]]:
    from .shards import load_shards
    emb, labels, names = load_shards(index)

    def clean(text: str) -> str:
        return re.sub(r"[\t\r\n]", " ", text)
    if labels is None:
        return emb, [[clean(n)] for n in names], ["example"]
    shown = [label_names[int(y)] if label_names and 0 <= int(y) < len(label_names) else str(int(y))
             for y in labels.tolist()]
    return emb, [[clean(str(y)), clean(n)] for y, n in zip(shown, names)], ["label", "example"]
