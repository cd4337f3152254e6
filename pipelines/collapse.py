"""The collapse alarm (docs/architecture.md, "Run lifecycle"): a :class:`~pipelines.engine.Hook` that reads the
family's collapse signals (:mod:`zoo.collapse`, ``model.collapse_rules``) in each logged step's metrics, warns once
when a rule holds for ``train.collapse_patience`` consecutive logs after the warmup, and with
``train.stop_on_collapse`` stops the run there (its checkpoint kept, nothing published)."""

from __future__ import annotations

import logging
from typing import Any

from zoo.collapse import SIGNALS, CollapseRule

from .hooks import Hook

logger = logging.getLogger(__name__)

__all__ = ["CollapseHook", "collapse_rules", "final_signals", "collapse_facts", "collapse_stop_message",
           "stopped_by_alarm"]


def collapse_rules(model: Any) -> tuple[CollapseRule, ...]:
    return tuple(getattr(model, "collapse_rules", ()))


def final_signals(model: Any, metrics: dict[str, float] | None) -> dict[str, float]:
    """The last logged values of the collapse signals (its rules' and the others of :data:`zoo.collapse.SIGNALS`
    it logs), for the summary and the card."""
    names = {r.signal for r in collapse_rules(model)} | set(SIGNALS)
    return {k: float(f"{float(v):.4g}") for k, v in (metrics or {}).items() if k in names}


def collapse_facts(signals: dict[str, float] | None, alarm: dict[str, Any] | None) -> dict[str, str]:
    """The card's line on the collapse signals (docs/reliability.md, "Collapse alarms")."""
    if not signals and not alarm:
        return {}
    line = ", ".join(f"{k} {v:.4g}" for k, v in (signals or {}).items()) or "none logged"
    if alarm:
        line += f" (alarm at step {alarm['step']}: {alarm['signal']} {alarm['value']:.4g})"
    return {"collapse signals (last log)": line}


class CollapseHook(Hook):
    """Counts, per rule, the consecutive logged steps past the warmup and the rule's ``settle_steps`` on which it
    held. ``settings``: the run's
    ``train.stop_on_collapse``, ``train.collapse_patience`` and ``train.steps``; a run this alarm stopped goes on
    when a rerun changes one of them (:meth:`resume_stopped`; docs/reliability.md)."""

    def __init__(self, rules: tuple[CollapseRule, ...], *, every: int, patience: int, after: int, stop: bool,
                 settings: dict[str, Any] | None = None) -> None:
        self.rules, self.every, self.patience, self.after, self.stop = rules, every, patience, after, stop
        self.settings = dict(settings or {})
        self.streak = [0] * len(rules)
        self.alarm: dict[str, Any] | None = None      # the first alarm: step, signal, value
        self.stopped_under: dict[str, Any] | None = None  # the settings under which the alarm stopped the run

    def state(self) -> dict[str, Any]:
        return {"streak": self.streak, "alarm": self.alarm, "stopped_under": self.stopped_under}

    def load_state(self, state: dict[str, Any]) -> None:
        self.streak = list(state.get("streak", self.streak))
        self.alarm = state.get("alarm")
        self.stopped_under = state.get("stopped_under")

    def resume_stopped(self, step: int) -> str | None:
        """Why a run stopped at ``step`` goes on: it was this alarm that stopped it and the rerun changed the
        alarm's settings or the step count (each change named), else ``None``. The alarm stays recorded (it went
        off) and does not stop the run again."""
        if self.alarm is None or self.alarm.get("step") != step or not self.stopped_under:
            return None
        changed = [f"train.{k} {self.stopped_under[k]} → {v}" for k, v in self.settings.items()
                   if k in self.stopped_under and self.stopped_under[k] != v]
        if not changed:
            return None
        self.stopped_under = None
        return ", ".join(changed)

    def on_interval(self, run: Any, step: int) -> bool:
        metrics = run.last_metrics
        if self.patience <= 0 or metrics.get("step") != step or step <= self.after:
            return False
        for i, rule in enumerate(self.rules):
            if step <= rule.settle_steps:
                continue
            self.streak[i] = self.streak[i] + 1 if rule.crossed(metrics) else 0
            if self.streak[i] >= self.patience and self.alarm is None:
                value = float(metrics[rule.signal])
                self.alarm = {"step": step, "signal": rule.signal, "value": value}
                what = "stopping (stop_on_collapse)" if self.stop else \
                    "training goes on (stop_on_collapse=true stops it)"
                logger.warning("%s: collapse alarm at step %d: %s for %d logged steps in a row. Usual remedies: %s. "
                               "%s; the signals are in %s", run.desc, step, rule.describe(value), self.patience,
                               rule.remedy, what, run.log.path)
                if self.stop:
                    self.stopped_under = dict(self.settings)
                return self.stop
        return False


def stopped_by_alarm(result: Any, cfg: Any) -> bool:
    """Whether the collapse alarm stopped this run where it ended (``train.stop_on_collapse``): not a run that went
    on after an earlier alarm, nor one stopped for another reason."""
    return bool(cfg.stop_on_collapse and result.stopped_early and result.collapse
                and result.collapse["step"] == result.steps)


def collapse_stop_message(alarm: dict[str, Any], output_dir: Any, published: str) -> str:
    """What a run stopped by the collapse alarm says: the signal, what is kept, and how to go on from it."""
    return (f"stopped by the collapse alarm at step {alarm['step']} ({alarm['signal']} = {alarm['value']:.4g}): "
            f"{published}; the checkpoints and metrics are in {output_dir}. To go on from the checkpoint, rerun "
            "with train.stop_on_collapse=false (or another train.collapse_patience, or more train.steps); "
            "--no-resume starts over")
