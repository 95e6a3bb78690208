"""The CI gate: a committed baseline of (suite, technique, precision, metric) values with a
tolerance each, checked against the results index; a regression beyond its tolerance fails.

Format ``qbench-baseline/2`` (what `qbench baseline update` writes)::

    {"format": "qbench-baseline/2", "tolerance_units": "display", "entries": [
      {"suite": "ci", "task": "asr", "technique": "rand", "train_bits": 4, "precision": "w4",
       "metric": "cer", "value": 0.4589, "tolerance": 5.0, "higher_is_better": false,
       "gate": "interval"}, ...]}

`value` is the mean over the seeds in the index, stored as the index stores it (WER/CER as
fractions); `tolerance` is in the units the leaderboard shows (WER/CER in percentage points,
BLEU/chrF in BLEU points: the Metric's display scale), so 5.0 is five points for every metric.
``qbench-baseline/1`` files (and files without a format) stored the tolerance in the stored units
(0.05 = five WER points but 0.05 BLEU): they are read by converting, tolerance x display scale.

`gate`: ``value`` (the default) fails when the mean over seeds is worse than the baseline by more
than the tolerance. ``interval`` fails only when the cell's whole 95 % interval (from the runs'
per-item scores, :func:`qbench.report.intervals.cell_interval`) lies beyond value +- tolerance on
the bad side, and passes when it overlaps: noise does not fail the gate, a real loss does. Runs
without per-item scores fall back to the value rule, and the outcome says so.

A metric's direction comes from its registered :class:`~qbench.tasks.metrics.Metric`; the
`higher_is_better` an entry may carry is written for readers and older qbench versions. A result
or baseline value that is not a number (NaN) fails the check: the gate cannot tell it is not worse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qbench.report.board import precision_key, technique_key
from qbench.tasks.metrics import find_metric, metric

BASELINE_FORMAT = "qbench-baseline/2"
#: the older format: tolerances in stored units, read by converting
BASELINE_FORMAT_1 = "qbench-baseline/1"
TOLERANCE_UNITS = "display"
UNITS_NOTE = (
    "value: as the index stores it (WER/CER fractions, BLEU/chrF 0-100); tolerance: as the leaderboard "
    "shows it (WER/CER percentage points, BLEU/chrF points)"
)
#: a new entry's tolerance, in display units (two WER points, two BLEU points)
DEFAULT_TOLERANCE = 2.0
GATES = ("value", "interval")
KEY_FIELDS = ("suite", "task", "technique", "train_bits", "precision", "metric")
# Tolerances are decimals (2.5): a change equal to one, up to binary rounding, is within it.
_ROUNDING = 1e-9


@dataclass
class CheckOutcome:
    entry: dict  # tolerance in display units (load_baseline converts older files)
    actual: float | None  # stored units
    status: str  # ok | regression | improvement | missing (no result) | unbaselined (no entry)
    note: str = ""  # how an interval-gated entry was decided

    @property
    def failing(self) -> bool:
        return self.status in ("regression", "missing")

    @property
    def name(self) -> str:
        e = self.entry
        trained = e.get("train_bits") is not None and e["technique"] not in ("float", "ptq")
        bits = f" (trained w{e['train_bits']})" if trained else ""
        return f"{e['suite']}/{e['technique']}{bits}@{e['precision']} {e['metric']}"

    def describe(self) -> str:
        """One line, values and tolerance in display units (as the leaderboard shows them)."""
        e = self.entry
        m = metric(e["metric"])
        if self.status == "missing":
            return (
                f"MISSING     {self.name}: no result in the index (baseline {m.format(e['value'])} {m.label})"
            )
        if self.status == "unbaselined":
            assert self.actual is not None
            return (
                f"NO BASELINE {self.name}: {m.format(self.actual)} {m.label} in the index, "
                "no baseline entry (not checked)"
            )
        assert self.actual is not None
        delta = self.actual - e["value"]
        nan = " (not a number)" if math.isnan(delta) else ""
        note = f"; {self.note}" if self.note else ""
        shown = m.format(delta, signed=True)
        shown = shown.replace("-", "+") if not math.isnan(delta) and float(shown) == 0 else shown  # no -0.00
        return (
            f"{self.status.upper():<11} {self.name}: {m.format(self.actual)} vs baseline "
            f"{m.format(e['value'])} {m.label} ({shown}, tolerance "
            f"{_number(e['tolerance'], m.decimals)}{note}){nan}"
        )


def _number(x: float, decimals: int) -> str:
    """`x` with `decimals` decimals, or all it has where that would round it."""
    text = f"{x:.{decimals}f}"
    return text if abs(float(text) - x) < _ROUNDING else f"{x:g}"


def load_baseline(path: Path) -> list[dict]:
    """The entries of a baseline file, checked, each tolerance in display units (a
    qbench-baseline/1 file's converted: tolerance x the metric's display scale)."""
    if not path.is_file():
        raise ValueError(f"{path}: baseline file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected an object with an 'entries' list")
    fmt = data.get("format", BASELINE_FORMAT_1)  # files without one predate the format
    if fmt not in (BASELINE_FORMAT, BASELINE_FORMAT_1):
        raise ValueError(
            f"{path}: unknown baseline format {fmt!r} "
            f"(this qbench reads {BASELINE_FORMAT!r} and {BASELINE_FORMAT_1!r})"
        )
    units = data.get("tolerance_units", TOLERANCE_UNITS)
    if fmt == BASELINE_FORMAT and units != TOLERANCE_UNITS:
        raise ValueError(f"{path}: tolerance_units {units!r}: {BASELINE_FORMAT} tolerances are 'display'")
    needed = {"suite", "technique", "precision", "metric", "value", "tolerance"}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValueError(f"{path}: entries[{i}] is not an object")
        missing = needed - set(e)
        if missing:
            raise ValueError(f"{path}: entries[{i}] lacks {sorted(missing)}")
        for k in ("value", "tolerance"):
            if not isinstance(e[k], int | float) or isinstance(e[k], bool) or (k == "tolerance" and e[k] < 0):
                raise ValueError(f"{path}: entries[{i}].{k}: expected a non-negative number, got {e[k]!r}")
            if not math.isfinite(e[k]):
                raise ValueError(f"{path}: entries[{i}].{k}: expected a finite number, got {e[k]!r}")
        if find_metric(e["metric"]) is None:
            raise ValueError(f"{path}: entries[{i}].metric: unknown metric {e['metric']!r}")
        if e.get("gate", "value") not in GATES:
            raise ValueError(
                f"{path}: entries[{i}].gate: expected one of {', '.join(GATES)}, got {e['gate']!r}"
            )
    return [_in_display_units(e, fmt) for e in entries]


def _in_display_units(e: dict, fmt: str) -> dict:
    if fmt == BASELINE_FORMAT:
        return dict(e)
    # 12 significant digits: 0.07 x 100 is 7.000000000000001 in binary, and means 7
    return {**e, "tolerance": float(f"{e['tolerance'] * metric(e['metric']).scale:.12g}")}


def _matching(df: pd.DataFrame, e: dict) -> pd.DataFrame:
    if df.empty:
        return df
    sub = df[
        (df.suite == e["suite"])
        & (df.technique == e["technique"])
        & (df.precision == e["precision"])
        & (df.metric == e["metric"])
    ]
    if e.get("task") is not None:
        sub = sub[sub.task == e["task"]]
    if e.get("train_bits") is not None:
        sub = sub[sub.train_bits == e["train_bits"]]
    return sub


def outcome(value: float, baseline: float, tolerance: float, higher_is_better: bool) -> str:
    """regression (worse by more than `tolerance`, or either value NaN), improvement (better by
    more) or ok."""
    if math.isnan(value) or math.isnan(baseline):
        return "regression"
    better = value - baseline if higher_is_better else baseline - value
    if better < -(tolerance + _ROUNDING):
        return "regression"
    return "improvement" if better > tolerance + _ROUNDING else "ok"


def interval_outcome(
    low: float, high: float, baseline: float, tolerance: float, higher_is_better: bool
) -> str:
    """The interval gate: regression when the whole interval [low, high] is worse than the
    baseline by more than `tolerance` (or anything is NaN), improvement when the whole of it is
    better by more, ok when it overlaps baseline +- tolerance."""
    if math.isnan(low) or math.isnan(high) or math.isnan(baseline):
        return "regression"
    worst, best = (low - baseline, high - baseline) if higher_is_better else (baseline - high, baseline - low)
    if best < -(tolerance + _ROUNDING):
        return "regression"
    return "improvement" if worst > tolerance + _ROUNDING else "ok"


def _judge(sub: pd.DataFrame, e: dict, actual: float) -> tuple[str, str]:
    """(status, note) of one entry whose rows are `sub`; all in display units."""
    m = metric(e["metric"])
    point = outcome(m.display(actual), m.display(e["value"]), e["tolerance"], m.higher_is_better)
    if e.get("gate", "value") != "interval" or math.isnan(actual):
        return point, ""
    from qbench.report.intervals import cell_interval

    try:
        iv = cell_interval(sub, e["metric"])
    except ValueError:
        iv = None
    if iv is None:
        return point, "interval gate: no per-item scores, decided by the value"
    low, high = m.display(iv.low), m.display(iv.high)
    status = interval_outcome(low, high, m.display(e["value"]), e["tolerance"], m.higher_is_better)
    text = f"interval gate: 95 % interval [{low:.{m.decimals}f}, {high:.{m.decimals}f}]"
    return status, text


def check(df: pd.DataFrame, entries: list[dict]) -> list[CheckOutcome]:
    """One outcome per baseline entry (tolerances in display units, as load_baseline gives
    them), then one `unbaselined` outcome per result of a checked suite and metric that no entry
    covers (a technique or precision added since the baseline)."""
    out = []
    covered: set[Hashable] = set()  # index labels of the rows some entry matched
    for e in entries:
        sub = _matching(df, e)
        if sub.empty:
            out.append(CheckOutcome(e, None, "missing"))
            continue
        covered.update(sub.index)
        actual = float(sub.value.mean(skipna=False))  # one NaN seed makes the result NaN
        status, note = _judge(sub, e, actual)
        out.append(CheckOutcome(e, actual, status, note))
    if not df.empty:
        checked = {(e["suite"], e["metric"]) for e in entries}
        rest = df[
            [(s, m) in checked for s, m in zip(df.suite, df.metric, strict=True)] & ~df.index.isin(covered)
        ]
        g = rest.groupby(["suite", "task", "technique", "train_bits", "precision", "metric"], as_index=False)
        for r in g.agg(value=("value", "mean")).to_dict("records"):
            e = {k: r[k] for k in KEY_FIELDS}
            out.append(
                CheckOutcome({**e, "train_bits": int(r["train_bits"])}, float(r["value"]), "unbaselined")
            )
    return out


def baseline_from(
    df: pd.DataFrame,
    suite: str,
    tolerance: float | None,
    metrics: list[str] | None = None,
    previous: list[dict] | None = None,
    gate: str | None = None,
) -> dict:
    """A qbench-baseline/2 baseline of every (task, technique, training bits, precision, metric)
    of `suite`, the value being the mean over seeds. Entries of other suites in `previous` (as
    load_baseline gives them: tolerances in display units) are kept; a tolerance of None keeps
    each entry's previous tolerance (DEFAULT_TOLERANCE display units for new entries), a gate of
    None its previous gate (the value rule for new entries)."""
    if gate is not None and gate not in GATES:
        raise ValueError(f"--gate {gate!r}: one of {', '.join(GATES)}")
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"--tolerance {tolerance}: expected a non-negative number")
    sub = df[df.suite == suite] if not df.empty else df
    if metrics and not sub.empty:
        sub = sub[sub.metric.isin(metrics)]
    if sub.empty:
        raise ValueError(f"no results for suite {suite!r} in the index")
    g = sub.groupby(["task", "technique", "train_bits", "precision", "metric"], as_index=False).agg(
        value=("value", "mean")
    )
    previous = previous or []

    def old(e: dict) -> dict:
        for p in previous:
            if all(p.get(k) in (None, e[k]) for k in KEY_FIELDS) and p["suite"] == suite:
                return p
        return {}

    entries = []
    for r in g.to_dict("records"):
        e: dict[str, Any] = {
            "suite": suite,
            "task": r["task"],
            "technique": r["technique"],
            "train_bits": int(r["train_bits"]),
            "precision": r["precision"],
            "metric": r["metric"],
            "value": round(float(r["value"]), 4),
        }
        e["tolerance"] = tolerance if tolerance is not None else old(e).get("tolerance", DEFAULT_TOLERANCE)
        e["higher_is_better"] = metric(str(r["metric"])).higher_is_better
        chosen = gate or old(e).get("gate", "value")
        if chosen != "value":  # the default is left out
            e["gate"] = chosen
        entries.append(e)
    others = [p for p in previous if p["suite"] != suite]
    entries.sort(
        key=lambda e: (
            technique_key(e["technique"]),
            e["train_bits"],
            precision_key(e["precision"]),
            e["metric"],
        )
    )
    return {
        "format": BASELINE_FORMAT,
        "tolerance_units": TOLERANCE_UNITS,
        "units": UNITS_NOTE,
        "entries": others + entries,
    }
