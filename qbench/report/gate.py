"""The CI gate: a committed baseline of (suite, technique, precision, metric) values with a
tolerance each, checked against the results index; a regression beyond its tolerance fails.

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

BASELINE_FORMAT = "qbench-baseline/1"
KEY_FIELDS = ("suite", "task", "technique", "train_bits", "precision", "metric")
# Tolerances are decimals (0.02): a change equal to one, up to binary rounding, is within it.
_ROUNDING = 1e-9


@dataclass
class CheckOutcome:
    entry: dict
    actual: float | None
    status: str  # ok | regression | improvement | missing (no result) | unbaselined (no entry)

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
        e = self.entry
        if self.status == "missing":
            return f"MISSING     {self.name}: no result in the index (baseline {e['value']:.4f})"
        if self.status == "unbaselined":
            return f"NO BASELINE {self.name}: {self.actual:.4f} in the index, no baseline entry (not checked)"
        delta = self.actual - e["value"]
        nan = " (not a number)" if math.isnan(delta) else ""
        return (
            f"{self.status.upper():<11} {self.name}: {self.actual:.4f} vs baseline {e['value']:.4f} "
            f"({delta:+.4f}, tolerance {e['tolerance']:.4f}){nan}"
        )


def load_baseline(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path}: baseline file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected an object with an 'entries' list")
    fmt = data.get("format", BASELINE_FORMAT)
    if fmt != BASELINE_FORMAT:
        raise ValueError(f"{path}: unknown baseline format {fmt!r} (this qbench reads {BASELINE_FORMAT!r})")
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
    return entries


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


def check(df: pd.DataFrame, entries: list[dict]) -> list[CheckOutcome]:
    """One outcome per baseline entry, then one `unbaselined` outcome per result of a checked
    suite and metric that no entry covers (a technique or precision added since the baseline)."""
    out = []
    covered: set[Hashable] = set()  # index labels of the rows some entry matched
    for e in entries:
        sub = _matching(df, e)
        if sub.empty:
            out.append(CheckOutcome(e, None, "missing"))
            continue
        covered.update(sub.index)
        actual = float(sub.value.mean(skipna=False))  # one NaN seed makes the result NaN
        higher = metric(e["metric"]).higher_is_better
        out.append(CheckOutcome(e, actual, outcome(actual, e["value"], e["tolerance"], higher)))
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
) -> dict:
    """A baseline of every (task, technique, training bits, precision, metric) of `suite`, the value
    being the mean over seeds. Entries of other suites in `previous` are kept; a tolerance of None
    keeps each entry's previous tolerance (0.05 for new entries)."""
    sub = df[df.suite == suite] if not df.empty else df
    if metrics and not sub.empty:
        sub = sub[sub.metric.isin(metrics)]
    if sub.empty:
        raise ValueError(f"no results for suite {suite!r} in the index")
    g = sub.groupby(["task", "technique", "train_bits", "precision", "metric"], as_index=False).agg(
        value=("value", "mean")
    )
    previous = previous or []

    def old_tolerance(e: dict) -> float | None:
        for p in previous:
            if all(p.get(k) in (None, e[k]) for k in KEY_FIELDS) and p["suite"] == suite:
                return p["tolerance"]
        return None

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
        tol = tolerance if tolerance is not None else old_tolerance(e)
        e["tolerance"] = 0.05 if tol is None else tol
        e["higher_is_better"] = metric(str(r["metric"])).higher_is_better
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
    return {"format": BASELINE_FORMAT, "entries": others + entries}
