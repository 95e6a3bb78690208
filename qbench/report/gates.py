"""Gates a suite must pass before a claim on it is judged: the float model converged, it works
in a regime where errors are meaningful, and quantization hurts enough for QAT to have something
to recover. Computed from the results index and the runs' learning curves, printed on top of a
suite's results and checked by `qbench findings` (a claim on a suite that fails one is "not
testable here").

- convergence: over the last 15 % of float training the float model's learning-curve metric
  (`train.eval_every` on `train.curve_split`) moved less than the noise between seeds: the
  standard deviation of the curve's last value over seeds, or, with one seed, the standard error
  of the float model's test metric from the bootstrap over test items. Unmeasured without a curve.
- regime: at float, ASR greedy CER <= 10 % and greedy WER <= 30 %; MT BLEU within [20, 70] (below:
  most output is wrong; above: near the ceiling of the data).
- headroom at a precision: post-training rounding (ptq) loses at least five standard errors of
  its paired difference from the float model (report/intervals.cell_difference), so a QAT
  technique can be told apart from it.

Every number here is in the metric's stored units; `render` shows display units.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qbench.io import read_json
from qbench.report.intervals import cell_difference, cell_interval
from qbench.report.stats import Difference
from qbench.store import run_folder
from qbench.tasks.metrics import metric

__all__ = [
    "CONVERGENCE_WINDOW",
    "HEADROOM_SE",
    "REGIME",
    "GateResult",
    "loss_in_se",
    "render",
    "suite_gates",
    "trained_bits",
    "untestable",
]

CONVERGENCE_WINDOW = 0.15  # the last fraction of float training the curve must be flat over
HEADROOM_SE = 5.0  # ptq's loss, in standard errors of its paired difference from float
#: task -> ((metric, low, high), ...) at float, stored units; the first of a metric's names that
#: the index holds is used (greedy decoding is `wer_greedy` beside a lexicon decoder, else `wer`)
REGIME: dict[str, tuple[tuple[tuple[str, ...], float, float], ...]] = {
    "asr": ((("cer_greedy", "cer"), 0.0, 0.10), (("wer_greedy", "wer"), 0.0, 0.30)),
    "mt": ((("bleu",), 20.0, 70.0),),
}


@dataclass(frozen=True)
class GateResult:
    """One gate on one suite: passed (True), failed (False) or not measurable (None), with what
    was measured and the rule it was held to, in words."""

    gate: str
    passed: bool | None
    measured: str
    rule: str

    @property
    def status(self) -> str:
        return {True: "passed", False: "FAILED", None: "not measured"}[self.passed]


def _float_cell(rows: pd.DataFrame, metric_name: str) -> pd.DataFrame:
    return rows[(rows.technique == "float") & (rows.precision == "float") & (rows.metric == metric_name)]


def _curve_movement(run_dir: Path) -> tuple[str, float, float] | None:
    """(metric, last value, |last - value at the start of the window|) of a run's learning curve,
    the window being the last CONVERGENCE_WINDOW of its steps; None without two points spanning it."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    m = read_json(path, "delete it and status.json to evaluate the run again")
    curve, steps = m.get("curve") or [], int(m.get("steps") or 0)
    names = [k for k in (curve[0] if curve else {}) if k not in ("step", "minutes", "split")]
    if not names or steps <= 0:
        return None
    name = names[0]
    start_step = steps * (1 - CONVERGENCE_WINDOW)
    before = [p for p in curve if p["step"] <= start_step]
    last = curve[-1]
    if not before or last["step"] <= before[-1]["step"] or last["step"] < steps:
        return None
    return name, float(last[name]), abs(float(last[name]) - float(before[-1][name]))


def convergence(rows: pd.DataFrame, results: Path | None) -> GateResult:
    rule = (
        f"the float learning curve moved less than the seed spread over the last "
        f"{CONVERGENCE_WINDOW:.0%} of training"
    )
    floats = rows[(rows.technique == "float") & (rows.precision == "float")].drop_duplicates("run_id")
    curves = {}
    for r in floats.itertuples():
        got = _curve_movement(run_folder(results, r.run_dir, r.suite, r.run_id))
        if got is None:
            return GateResult("convergence", None, f"no learning curve in seed {r.seed}'s float run", rule)
        curves[r.seed] = got
    if not curves:
        return GateResult("convergence", None, "no float run", rule)
    name = next(iter(curves.values()))[0]
    fmt = metric(name).format
    moved = max(m for _, _, m in curves.values())
    if len(curves) >= 2:
        noise, what = float(np.std([v for _, v, _ in curves.values()], ddof=1)), "seed spread (std)"
    else:  # one seed: the sampling error of the float model's test metric stands in for it
        iv = cell_interval(_float_cell(rows, name), name)
        if iv is None:
            return GateResult(
                "convergence", None, f"{name} moved {fmt(moved)}; one seed, no per-item scores", rule
            )
        noise, what = iv.se, "test-set standard error (one seed)"
    return GateResult(
        "convergence",
        moved < noise,
        f"{name} moved up to {fmt(moved)} over {len(curves)} seed(s); {what} {fmt(noise)}",
        rule,
    )


def _first_metric(rows: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((n for n in names if not _float_cell(rows, n).empty), None)


def regime(rows: pd.DataFrame, task: str) -> GateResult:
    checks = REGIME.get(task, ())
    parts, ok, rules = [], True, []
    for names, low, high in checks:
        name = _first_metric(rows, names)
        m = metric(names[0] if name is None else name)
        rules.append(f"{m.label} in [{m.format(low)}, {m.format(high)}]")
        if name is None:
            return GateResult(
                "regime", None, f"no float {' or '.join(names)} row", "float " + ", ".join(rules)
            )
        value = float(_float_cell(rows, name).groupby("seed").value.mean().mean())
        ok = ok and low <= value <= high
        parts.append(f"{m.label} {m.format(value)}")
    rule = "float " + ", ".join(rules)
    if not checks:
        return GateResult("regime", None, f"no regime declared for task {task!r}", rule)
    return GateResult("regime", ok, "float " + ", ".join(parts), rule)


def loss_in_se(d: Difference, metric_name: str) -> tuple[float, float]:
    """(loss, loss / standard error) of a paired difference quantized - float: the loss in stored
    units, positive when quantizing made the metric worse."""
    loss = -metric(metric_name).better(d.estimate, 0.0) + 0.0  # + 0.0: no "-0.00"
    z = loss / d.se if d.se > 0 else (float("inf") if loss > 0 else 0.0)  # se 0: every item alike
    return loss, z


def headroom(rows: pd.DataFrame, precision: str, metric_name: str) -> GateResult:
    gate, rule = f"headroom@{precision}", f"ptq@{precision} loses >= {HEADROOM_SE:g} standard errors vs float"
    m = metric(metric_name)
    ptq = rows[(rows.technique == "ptq") & (rows.precision == precision) & (rows.metric == metric_name)]
    if ptq.empty:
        return GateResult(gate, None, f"no ptq@{precision} {metric_name} rows", rule)
    d = cell_difference(ptq, _float_cell(rows, metric_name), metric_name)
    if d is None:
        return GateResult(gate, None, "no per-item scores to pair ptq with float", rule)
    loss, z = loss_in_se(d, metric_name)
    return GateResult(
        gate, z >= HEADROOM_SE, f"ptq loses {m.format(loss, signed=True)} {m.label} ({z:.1f} se)", rule
    )


def trained_bits(rows: pd.DataFrame, default: int = 4) -> int:
    """The bits a suite's techniques trained at, where they all trained at one (a stress setting
    chosen by qbench pilot: 3, 2); else `default`. The float model's bits only name its run."""
    trained = set(rows[rows.technique != "float"].train_bits) if "train_bits" in rows else set()
    return int(trained.pop()) if len(trained) == 1 else default


def suite_gates(
    df: pd.DataFrame, suite: str, results: Path | None, precisions: Iterable[str] | None = None
) -> list[GateResult]:
    """The gates of one suite's rows in the index: convergence, regime and headroom at each of
    `precisions` (in the suite's headline metric; default: the bits its techniques trained at)."""
    rows = df[df.suite == suite]
    if rows.empty:
        return []
    if precisions is None:
        precisions = (f"w{trained_bits(rows)}",)
    task = str(rows.task.iloc[0])
    headline = rows[rows.headline == 1].metric if "headline" in rows else rows.metric
    name = str(headline.iloc[0]) if len(headline) else str(rows.metric.iloc[0])
    out = [convergence(rows, results), regime(rows, task)]
    out += [headroom(rows, p, name) for p in dict.fromkeys(p for p in precisions if p != "float")]
    return out


def untestable(gates: Sequence[GateResult]) -> str | None:
    """Why a claim on these gates is "not testable here" (the gates not passed), or None."""
    bad = [f"{g.gate} {g.status.lower()}" for g in gates if g.passed is not True]
    return ", ".join(bad) if bad else None


def render(gates: Sequence[GateResult]) -> list[str]:
    """Markdown lines: a table of the gates, failed and unmeasured ones first."""
    if not gates:
        return []
    order = sorted(gates, key=lambda g: {False: 0, None: 1, True: 2}[g.passed])
    lines = ["| gate | status | measured | rule |", "|---|---|---|---|"]
    lines += [f"| {g.gate} | **{g.status}** | {g.measured} | {g.rule} |" for g in order]
    return lines
