"""What ``CollapseGuard`` watches and when a signal counts as anomalous: rules, running baselines, alarms.

Pure Python (no Lightning, no tensors): ``Detector.observe`` takes one step's signal values and returns the alarms
of that step, so the decision logic is testable on hand-made sequences. The thresholds and why they were chosen
are in ``docs/collapse.md``.

A rule checks one signal against

* absolute bounds (``below`` / ``above``): fire on their own;
* its running baseline (mean and std of the last ``window`` healthy values, once ``warmup`` of them exist): a
  *drop* counts when the value is under every drop bound given (``drop_to``·mean and mean − ``drop_sigma``·σ),
  a *rise* when it is over every rise bound given (``rise_to``·mean, mean + ``rise_sigma``·σ); σ is floored at
  ``min_std`` so a flat signal does not alarm on noise, and baseline checks are skipped while
  ``|mean| < min_baseline`` (e.g. searches can only "vanish" when the policy used to search).

A value that is not finite always counts as anomalous. ``patience`` consecutive anomalous steps raise the
alarm; the anomaly's start is the first of them. Anomalous values never enter the baseline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

ACTIONS = ("warn", "rollback", "stop")
NONFINITE = "@nonfinite"
"""Pseudo-metric: the number of non-finite metrics of the step whose names start with ``NONFINITE_PREFIXES``."""
NONFINITE_PREFIXES = ("train/", "rollout/", "sft/")


@dataclass
class SignalRule:
    """One watched signal: where it comes from, when it is anomalous, what to do then.

    Attributes:
        metric: logged metric name (``trainer.callback_metrics`` key), several joined by ``+`` (their sum), or
            ``@nonfinite``.
        action: ``warn`` (log only), ``rollback`` (reload the last good checkpoint, lower the lr) or ``stop``.
        below: absolute floor.
        above: absolute ceiling.
        drop_to: drop bound as a fraction of the baseline mean.
        drop_sigma: drop bound in baseline standard deviations.
        rise_to: rise bound as a multiple of the baseline mean.
        rise_sigma: rise bound in baseline standard deviations.
        min_std: floor of the baseline std.
        min_baseline: baseline checks only when ``|baseline mean| >= min_baseline``.
        window: healthy values kept for the baseline.
        warmup: healthy values needed before baseline checks.
        patience: consecutive anomalous steps before the alarm.
    """

    metric: str
    action: str = "warn"
    below: float | None = None
    above: float | None = None
    drop_to: float | None = None
    drop_sigma: float | None = None
    rise_to: float | None = None
    rise_sigma: float | None = None
    min_std: float = 0.0
    min_baseline: float = 0.0
    window: int = 20
    warmup: int = 5
    patience: int = 1

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"SignalRule.action must be one of {ACTIONS}, got {self.action!r} (metric {self.metric})")
        if self.window < 2 or not 2 <= self.warmup <= self.window or self.patience < 1:
            raise ValueError(
                f"SignalRule for {self.metric}: need window >= warmup >= 2 and patience >= 1, got window="
                f"{self.window}, warmup={self.warmup}, patience={self.patience}"
            )

    def anomaly(self, value: float, mean: float | None, std: float | None) -> str | None:
        """Why ``value`` is anomalous against the absolute bounds and the baseline (None: healthy)."""
        if not math.isfinite(value):
            return f"value is {value}"
        if self.below is not None and value < self.below:
            return f"below the floor {self.below:g}"
        if self.above is not None and value > self.above:
            return f"above the ceiling {self.above:g}"
        if mean is None or abs(mean) < self.min_baseline:
            return None
        sigma = max(std, self.min_std)
        drops = [b for b in (_times(self.drop_to, mean), _minus(mean, self.drop_sigma, sigma)) if b is not None]
        if drops and all(value < b for b in drops):
            return f"dropped under {min(drops):.4g} (baseline {mean:.4g} ± {sigma:.3g})"
        rise_sigma = None if self.rise_sigma is None else -self.rise_sigma
        rises = [b for b in (_times(self.rise_to, mean), _minus(mean, rise_sigma, sigma)) if b is not None]
        if rises and all(value > b for b in rises):
            return f"rose over {max(rises):.4g} (baseline {mean:.4g} ± {sigma:.3g})"
        return None


def _times(factor: float | None, mean: float) -> float | None:
    return None if factor is None else factor * mean


def _minus(mean: float, k: float | None, sigma: float) -> float | None:
    return None if k is None else mean - k * sigma


def default_rules() -> dict[str, SignalRule]:
    """The shipped rules (one table with the reasons in ``docs/collapse.md``)."""
    return {
        "nonfinite": SignalRule(NONFINITE, "rollback", above=0.0),
        "entropy_collapse": SignalRule("train/policy/entropy", "rollback", drop_to=0.3, drop_sigma=4.0, min_std=0.01),
        "entropy_explosion": SignalRule("train/policy/entropy", "rollback", rise_to=2.0, rise_sigma=4.0, min_std=0.01),
        "valid_action_drop": SignalRule(
            "rollout/valid_action_ratio", drop_to=0.5, drop_sigma=4.0, min_std=0.02, min_baseline=0.2, patience=2
        ),
        "answered_drop": SignalRule(
            "rollout/answered_ratio", drop_to=0.5, drop_sigma=4.0, min_std=0.02, min_baseline=0.2, patience=2
        ),
        "searches_vanish": SignalRule("rollout/searches_mean", drop_to=0.1, min_baseline=0.2, patience=2),
        "length_blowup": SignalRule(
            "rollout/finish_length+rollout/finish_truncated", rise_to=3.0, rise_sigma=4.0, min_std=0.02, patience=2
        ),
        "kl_ref": SignalRule("train/policy/kl", above=1.0, rise_to=10.0, rise_sigma=6.0, min_std=1e-3, patience=2),
        "grad_norm_spike": SignalRule("train/policy/grad_norm", rise_to=10.0, rise_sigma=6.0, min_std=0.01),
        "mismatch_kl": SignalRule(
            "train/rollout_correction/mismatch_kl", above=0.05, rise_to=10.0, rise_sigma=6.0, min_std=1e-4, patience=2
        ),
        "search_failures": SignalRule("rollout/search_failure_rate", above=0.1),
        "degeneration": SignalRule("search/repetition", rise_to=2.0, rise_sigma=4.0, min_std=0.05, patience=2),
        "never_searched_rise": SignalRule(
            "search/failure_never_searched", rise_to=2.0, rise_sigma=4.0, min_std=0.05, patience=2
        ),
    }


ALARM_HINTS = {
    "search_failures": "searches are failing and the policy is trained on 'Search failed' observations; the first "
    "error is logged above (searchr1.retrieval); fix or restart the retrieval server, or stop the run",
    "degeneration": "the policy repeats its own text (loops in <think>) while the reward may still look fine; read "
    "this step's trajectories (searchr1 report RUN_DIR) and consider a lower lr or rolling back",
    "never_searched_rise": "more questions are answered wrong without any search: the policy is dropping search "
    "(reward hacking by guessing, or a retrieval that stopped helping); read this step's trajectories",
}
"""What to do, printed with an alarm of that signal on the terminal (others point at docs/collapse.md)."""


@dataclass
class Alarm:
    """One rule firing at one step."""

    signal: str
    metric: str
    action: str
    value: float
    baseline_mean: float | None
    baseline_std: float | None
    reason: str
    step: int
    anomaly_start: int


@dataclass
class _Track:
    history: deque = field(default_factory=deque)
    streak: int = 0
    start: int = -1


class Detector:
    """Running baselines and anomaly streaks of a set of rules.

    Args:
        rules: signal name → rule.
    """

    def __init__(self, rules: dict[str, SignalRule]) -> None:
        self.rules = dict(rules)
        self.tracks = {name: _Track(deque(maxlen=rule.window)) for name, rule in self.rules.items()}

    def observe(self, values: dict[str, float | None], step: int) -> list[Alarm]:
        """Feed one step's signal values (None: not logged this step) and return its alarms."""
        alarms = []
        for name, rule in self.rules.items():
            value, track = values.get(name), self.tracks[name]
            if value is None:
                continue
            mean, std = baseline(track.history, rule.warmup)
            reason = rule.anomaly(value, mean, std)
            if reason is None:
                track.history.append(value)
                track.streak = 0
                continue
            track.streak += 1
            if track.streak == 1:
                track.start = step
            if track.streak >= rule.patience:
                alarms.append(Alarm(name, rule.metric, rule.action, value, mean, std, reason, step, track.start))
        return alarms

    def reset_streaks(self) -> None:
        """Forget anomalies in progress (after a rollback); baselines are kept."""
        for track in self.tracks.values():
            track.streak, track.start = 0, -1

    def state_dict(self) -> dict:
        return {
            name: {"history": list(t.history), "streak": t.streak, "start": t.start} for name, t in self.tracks.items()
        }

    def load_state_dict(self, state: dict) -> None:
        for name, saved in state.items():
            if name in self.tracks:
                track = self.tracks[name]
                track.history.clear()
                track.history.extend(saved["history"])
                track.streak, track.start = saved["streak"], saved["start"]


def baseline(history: deque, warmup: int) -> tuple[float | None, float | None]:
    """Mean and (population) std of ``history``, or ``(None, None)`` with fewer than ``warmup`` values."""
    if len(history) < warmup:
        return None, None
    mean = sum(history) / len(history)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in history) / len(history))


def signal_values(rules: dict[str, SignalRule], metrics: dict[str, float]) -> dict[str, float | None]:
    """Each rule's value from a step's logged metrics (None when one of its metrics is missing)."""
    nonfinite = sum(1 for k, v in metrics.items() if k.startswith(NONFINITE_PREFIXES) and not math.isfinite(float(v)))
    out: dict[str, float | None] = {}
    for name, rule in rules.items():
        if rule.metric == NONFINITE:
            out[name] = float(nonfinite)
            continue
        parts = [metrics.get(key.strip()) for key in rule.metric.split("+")]
        out[name] = None if any(p is None for p in parts) else float(sum(float(p) for p in parts))
    return out


def alarm_line(alarm: Alarm, decision: str) -> str:
    """One terminal line for ``alarm`` and the decision taken on it."""
    hint = ALARM_HINTS.get(alarm.signal, "see docs/collapse.md")
    return (
        f"searchr1: alarm {alarm.signal} at step {alarm.step}: {alarm.metric} = {alarm.value:.4g}, {alarm.reason} "
        f"-> {decision}; {hint}"
    )


def alarm_record(alarm: Alarm, **extra) -> dict:
    """A JSON-ready dict of ``alarm`` plus ``extra`` fields."""
    return {**asdict(alarm), **extra}
