"""The run's hook contract (docs/architecture.md, "Run lifecycle"): what :func:`pipelines.engine.train` calls at
fixed points. Validation, early stopping and the collapse alarm are hooks."""

from __future__ import annotations

from typing import Any

__all__ = ["Hook"]


class Hook:
    """Something a run does at fixed points: :meth:`on_start` once the run is set up (after a resume, before the
    first step), :meth:`on_interval` every ``every`` steps and at the last step (``0``: only at the last step;
    returning ``True`` stops the run there, e.g. early stopping; it may add figures to the step's metrics row with
    ``run.report``), :meth:`on_log` with every row written to ``metrics.jsonl`` (after the step's interval hooks),
    :meth:`on_end` once the loop is over, or :meth:`on_error` instead when it raises (e.g. to close what
    :meth:`on_start` opened; the error goes on); ``run`` is the :class:`pipelines.engine.Loop` (``step``,
    ``last_metrics``, ``log``, ``report``; ``report_start`` from :meth:`on_start`: figures for the trackers' step 0).
What it must remember across a resume goes in :meth:`state` (saved in
    every checkpoint under the hook's ``key``, after the step's hooks ran) and comes back through
    :meth:`load_state`."""

    every: int = 0

    @property
    def key(self) -> str:
        """The name its state is saved under (one hook of a kind per run)."""
        return type(self).__name__

    def on_start(self, run: Any) -> None:
        pass

    def on_log(self, run: Any, row: dict[str, Any]) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def on_interval(self, run: Any, step: int) -> bool:
        return False

    def resume_stopped(self, step: int) -> str | None:
        """Why a run this hook stopped at ``step`` goes on when resumed (the rerun changed what made it stop), or
        ``None``: a stopped run stays stopped."""
        return None

    def on_end(self, run: Any) -> None:
        pass

    def on_error(self, run: Any, error: BaseException) -> None:
        pass
