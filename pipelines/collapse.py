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

__all__ = ["CollapseHook", "collapse_rules", "final_signals", "collapse_facts"]


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
    """Counts, per rule, the consecutive logged steps past the warmup on which it held."""

    def __init__(self, rules: tuple[CollapseRule, ...], *, every: int, patience: int, after: int, stop: bool) -> None:
        self.rules, self.every, self.patience, self.after, self.stop = rules, every, patience, after, stop
        self.streak = [0] * len(rules)
        self.alarm: dict[str, Any] | None = None      # the first alarm: step, signal, value

    def state(self) -> dict[str, Any]:
        return {"streak": self.streak, "alarm": self.alarm}

    def load_state(self, state: dict[str, Any]) -> None:
        self.streak = list(state.get("streak", self.streak))
        self.alarm = state.get("alarm")

    def on_interval(self, run: Any, step: int) -> bool:
        metrics = run.last_metrics
        if self.patience <= 0 or metrics.get("step") != step or step <= self.after:
            return False
        for i, rule in enumerate(self.rules):
            self.streak[i] = self.streak[i] + 1 if rule.crossed(metrics) else 0
            if self.streak[i] >= self.patience and self.alarm is None:
                value = float(metrics[rule.signal])
                self.alarm = {"step": step, "signal": rule.signal, "value": value}
                what = "stopping (stop_on_collapse)" if self.stop else \
                    "training goes on (stop_on_collapse=true stops it)"
                logger.warning("%s: collapse alarm at step %d: %s for %d logged steps in a row. Usual remedies: %s. "
                               "%s; the signals are in %s", run.desc, step, rule.describe(value), self.patience,
                               rule.remedy, what, run.log.path)
                return self.stop
        return False
