"""The CI gate's own guard: `qbench check` passes a result exactly at its tolerance and fails one
just beyond it, for a lower-is-better metric (WER) and a higher-is-better one (BLEU), on both
sides of the baseline; the direction comes from the registered Metric; a NaN fails; and the
comparison's mutants (direction flipped, a comparison reversed, the NaN guard or the rounding
slack dropped) are each caught by the same table of cases."""

import ast
import copy
import inspect
import json
import math
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.report import gate
from qbench.report.gate import check, load_baseline, outcome
from qbench.store import record_results
from qbench.tasks.metrics import METRICS, metric
from tests.test_report import row

#: (metric, baseline value, tolerance, result, expected status)
CASES = [
    ("wer", 0.20, 0.02, 0.22, "ok"),  # worse by exactly the tolerance
    ("wer", 0.30, 0.10, 0.40, "ok"),  # the same, where the binary difference overshoots it
    ("wer", 0.20, 0.02, 0.2201, "regression"),  # worse just beyond it
    ("wer", 0.20, 0.02, 0.18, "ok"),  # better by exactly the tolerance (overshooting in binary)
    ("wer", 0.20, 0.02, 0.1799, "improvement"),  # better just beyond it
    ("wer", 0.20, 0.02, 0.01, "improvement"),  # far better: passes
    ("wer", 0.20, 0.02, 0.20, "ok"),
    ("bleu", 30.0, 0.5, 29.5, "ok"),
    ("bleu", 30.1, 0.2, 29.9, "ok"),  # overshooting in binary
    ("bleu", 30.0, 0.5, 29.49, "regression"),
    ("bleu", 30.0, 0.5, 30.5, "ok"),
    ("bleu", 30.0, 0.5, 30.51, "improvement"),
    ("bleu", 30.0, 0.5, 45.0, "improvement"),
    ("bleu", 30.0, 0.5, 30.0, "ok"),
]
PASSES = {"ok": True, "improvement": True, "regression": False}
FLIPPED = {"ok": "ok", "improvement": "regression", "regression": "improvement"}
ARGS = ("name", "base", "tol", "value", "expected")


def index_row(name: str, value: float, seed: int = 0) -> dict:
    task = "asr" if name.startswith("wer") else "mt"
    return row("rand", "w4", value, seed=seed) | {
        "task": task,
        "metric": name,
        "higher_is_better": int(name == "bleu"),
    }


def entry(name: str, base: float, tol: float, **extra) -> dict:
    return {
        "suite": "s",
        "technique": "rand",
        "precision": "w4",
        "metric": name,
        "value": base,
        "tolerance": tol,
        **extra,
    }


def check_one(name: str, base: float, tol: float, value: float, **extra) -> gate.CheckOutcome:
    (o,) = check(pd.DataFrame([index_row(name, value)]), [entry(name, base, tol, **extra)])
    return o


@pytest.mark.parametrize(ARGS, CASES)
def test_check_at_and_beyond_the_tolerance(name, base, tol, value, expected):
    o = check_one(name, base, tol, value)
    assert o.status == expected, o.describe()
    assert o.failing is not PASSES[expected]


@pytest.mark.parametrize(ARGS, CASES)
def test_qbench_check_exits_by_the_tolerance(tmp_path, name, base, tol, value, expected):
    record_results(tmp_path, [index_row(name, value)])
    b = tmp_path / "baseline.json"
    # as `qbench baseline update` writes it: the entry carries the direction for readers
    b.write_text(
        json.dumps({"format": "qbench-baseline/1", "entries": [entry(name, base, tol, train_bits=4)]})
    )
    out = CliRunner().invoke(app, ["check", "--baseline", str(b), "--results", str(tmp_path)])
    assert out.exit_code == (0 if PASSES[expected] else 1), out.output
    assert f"{expected.upper():<11} s/rand (trained w4)@w4 {name}: {value:.4f}" in out.output


@pytest.mark.parametrize(ARGS, CASES)
def test_the_direction_is_the_registered_metrics(monkeypatch, name, base, tol, value, expected):
    """Register WER as higher-is-better and BLEU as lower-is-better: every verdict beyond the
    tolerance turns over, although the index rows and the entries' own `higher_is_better` say
    otherwise. A gate that took its direction from anywhere else, or ignored it, fails here."""
    flipped = replace(METRICS[name], higher_is_better=not METRICS[name].higher_is_better)
    monkeypatch.setitem(METRICS, name, flipped)
    stored = {"higher_is_better": name == "bleu"}
    assert check_one(name, base, tol, value, **stored).status == FLIPPED[expected]


def test_a_long_form_variant_takes_its_direction_from_its_base(monkeypatch):
    df = pd.DataFrame([index_row("wer@x4", 0.2201)])
    e = entry("wer@x4", 0.20, 0.02)
    assert check(df, [e])[0].status == "regression"
    monkeypatch.setitem(METRICS, "wer", replace(METRICS["wer"], higher_is_better=True))
    assert check(df, [e])[0].status == "improvement"


NAN_CASES = [("wer", 0.20, 0.02), ("bleu", 30.0, 0.5)]


@pytest.mark.parametrize(("name", "base", "tol"), NAN_CASES)
def test_a_nan_result_fails(name, base, tol):
    o = check_one(name, base, tol, math.nan)
    assert o.status == "regression" and o.failing
    assert "(not a number)" in o.describe()
    # one NaN seed among finite ones is a NaN result, not left out of the mean
    two = pd.DataFrame([index_row(name, base, seed=0), index_row(name, math.nan, seed=1)])
    assert check(two, [entry(name, base, tol)])[0].failing


@pytest.mark.parametrize(("name", "base", "tol"), NAN_CASES)
def test_a_nan_baseline_value_is_refused(tmp_path, name, base, tol):
    record_results(tmp_path, [index_row(name, base)])
    b = tmp_path / "baseline.json"
    b.write_text(json.dumps({"entries": [entry(name, math.nan, tol)]}))  # json writes NaN
    assert "NaN" in b.read_text()
    out = CliRunner().invoke(app, ["check", "--baseline", str(b), "--results", str(tmp_path)])
    assert out.exit_code == 2, out.output
    assert "entries[0].value: expected a finite number, got nan" in out.output


def test_a_baseline_with_a_nan_tolerance_or_an_unknown_metric_is_rejected(tmp_path):
    b = tmp_path / "baseline.json"
    b.write_text(json.dumps({"entries": [entry("wer", 0.20, math.nan)]}))
    with pytest.raises(ValueError, match=r"entries\[0\].tolerance"):
        load_baseline(b)
    b.write_text(json.dumps({"entries": [entry("accuracy", 0.9, 0.01)]}))
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        load_baseline(b)


def test_the_committed_ci_baseline_reads_and_agrees_with_the_registry():
    entries = load_baseline(Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci.json")
    assert entries
    for e in entries:
        assert e["higher_is_better"] is metric(e["metric"]).higher_is_better, e


# ------------------------------------------------------------------ the cases bite


def _mutants(func) -> list[tuple[str, object]]:
    """(description, function) for each single change of `func`'s comparison logic: a ternary's
    branches swapped (the direction), < and > exchanged, a unary minus dropped, an `if` statement
    removed (the NaN guard), and the rounding slack set to 0."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    sites = [n for n in ast.walk(tree) if isinstance(n, ast.IfExp | ast.Compare | ast.UnaryOp | ast.If)]
    sites += [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "_ROUNDING"]
    out = []
    for i in range(len(sites)):
        mutant = copy.deepcopy(tree)
        site = [n for n in ast.walk(mutant) if isinstance(n, ast.IfExp | ast.Compare | ast.UnaryOp | ast.If)]
        site += [n for n in ast.walk(mutant) if isinstance(n, ast.Name) and n.id == "_ROUNDING"]
        node = site[i]
        if isinstance(node, ast.IfExp):
            node.body, node.orelse = node.orelse, node.body
        elif isinstance(node, ast.Compare):
            swap = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE}
            if not all(type(op) in swap for op in node.ops):
                continue
            node.ops = [swap[type(op)]() for op in node.ops]
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub):
                continue
            _replace(mutant, node, node.operand)
        elif isinstance(node, ast.If):
            node.test = ast.Constant(False)
        else:
            _replace(mutant, node, ast.Constant(0.0))
        ns = dict(vars(gate))
        exec(compile(ast.fix_missing_locations(mutant), "<mutant>", "exec"), ns)
        out.append((f"{type(node).__name__} at line {node.lineno}", ns[func.__name__]))
    return out


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
            elif isinstance(value, list):
                setattr(parent, field, [new if v is old else v for v in value])


def _verdicts(func) -> list[str]:
    out = [func(value, base, tol, metric(name).higher_is_better) for name, base, tol, value, _ in CASES]
    for name, base, tol in NAN_CASES:
        higher = metric(name).higher_is_better
        out += [func(math.nan, base, tol, higher), func(base, math.nan, tol, higher)]
    return out


def test_the_cases_catch_every_mutant_of_the_comparison():
    expected = [e for *_, e in CASES] + ["regression"] * 2 * len(NAN_CASES)
    assert _verdicts(outcome) == expected
    mutants = _mutants(outcome)
    assert len(mutants) >= 6, [d for d, _ in mutants]  # the gate's logic is still where we look
    survivors = []
    for description, mutant in mutants:
        try:
            if _verdicts(mutant) == expected:
                survivors.append(description)
        except Exception:  # noqa: BLE001 - a mutant that crashes is caught too
            pass
    assert not survivors, f"mutants of gate.outcome that the cases do not catch: {survivors}"
