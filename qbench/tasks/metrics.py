"""Metrics as objects, in a registry the task modules fill when qbench.tasks is imported.

A :class:`Metric` says everything the reports need about a score: its direction, how it is shown
(error rates are stored as fractions and shown as percentages; BLEU and chrF are already 0-100)
and what it measures. Stored results keep naming a metric by its string name; :func:`metric`
turns the name back into the object. A task registers its metrics with :func:`register`, and
families of derived names (``wer@x4``, ``wer_greedy``) with a rule (:func:`register_rule`), a
function from a name to a Metric, or None for names it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Metric:
    name: str  # as stored in the index, metrics.json and baselines
    higher_is_better: bool
    unit: str = ""  # shown beside the name: "%" for error rates
    scale: float = 1.0  # stored value * scale = shown value
    decimals: int = 2
    description: str = ""
    base: str = ""  # long-form variants: the metric on single utterances ("wer" for "wer@x4"); else name
    joined: int = 1  # long-form variants: test utterances joined into one recording

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.name)

    def __str__(self) -> str:
        return self.name

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    @property
    def label(self) -> str:
        """The name as a column header: "WER %", "BLEU"."""
        return self.name.upper() + (f" {self.unit}" if self.unit else "")

    @property
    def legend(self) -> str:
        return f"{self.label}, {self.direction} is better"

    def display(self, value: float) -> float:
        """A stored value in display units."""
        return self.scale * value

    def format(self, value: float, signed: bool = False) -> str:
        """A stored value (or a difference of two) in display units, as text."""
        return f"{self.display(value):{'+' if signed else ''}.{self.decimals}f}"

    def better(self, a: float, b: float) -> float:
        """How much better stored value a is than b, in stored units (positive: a is better)."""
        return a - b if self.higher_is_better else b - a

    def best(self, items: Iterable[T], key: Callable[[T], float]) -> T:
        """The item of `items` whose value (`key`) is best: the largest or the smallest by
        direction, the first of equals."""
        return (max if self.higher_is_better else min)(items, key=key)


#: name -> Metric, in registration order (qbench.tasks imports asr, then mt)
METRICS: dict[str, Metric] = {}
#: functions name -> Metric | None for families of derived names, asked in order
METRIC_RULES: list[Callable[[str], Metric | None]] = []


def register(m: Metric) -> Metric:
    """Add `m` to the registry (a task module does this at import) and return it."""
    if m.name in METRICS and METRICS[m.name] != m:
        raise ValueError(f"metric {m.name!r} is already registered differently")
    METRICS[m.name] = m
    return m


def register_rule(rule: Callable[[str], Metric | None]) -> Callable[[str], Metric | None]:
    if rule not in METRIC_RULES:
        METRIC_RULES.append(rule)
    return rule


def find_metric(name: str) -> Metric | None:
    """The registered metric `name`, or the one a rule derives for it, or None."""
    if name in METRICS:
        return METRICS[name]
    for rule in METRIC_RULES:
        m = rule(name)
        if m is not None:
            return m
    return None


def metric(name: str) -> Metric:
    """The Metric of a stored metric name ("wer", "wer@x4", "bleu"); ValueError if unknown."""
    m = find_metric(name)
    if m is None:
        known = ", ".join(METRICS) or "none"
        raise ValueError(f"unknown metric {name!r} (registered: {known}, and their variants)")
    return m


#: every task: the process's peak resident memory during an evaluation (qbench eval)
PEAK_RSS = register(
    Metric(
        "peak_rss_mb",
        higher_is_better=False,
        unit="MB",
        decimals=0,
        description="peak resident memory of the evaluating process (Linux VmHWM, reset after warm-up)",
    )
)
