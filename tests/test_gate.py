"""The CI gate's own guard: `qbench check` passes a result exactly at its tolerance and fails one
just beyond it, for a lower-is-better metric (WER) and a higher-is-better one (BLEU), on both
sides of the baseline; tolerances are in the units the leaderboard shows (WER points, BLEU
points), and qbench-baseline/1 files (tolerances as stored fractions) read converted; the
direction comes from the registered Metric; a NaN fails; the interval gate passes a drift inside
the noise that the value rule fails and fails a real loss; and the comparisons' mutants
(direction flipped, a comparison reversed, the NaN guard or the rounding slack dropped) are each
caught by the same tables of cases."""

import ast
import copy
import inspect
import json
import math
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.report import gate
from qbench.report.gate import check, interval_outcome, load_baseline, outcome
from qbench.store import record_results, write_items
from qbench.tasks.metrics import METRICS, metric
from tests.test_report import row

#: (metric, baseline value as stored, tolerance in display units, result as stored, expected status)
CASES = [
    ("wer", 0.20, 2.0, 0.22, "ok"),  # worse by exactly the tolerance (two WER points)
    ("wer", 0.29, 1.0, 0.30, "ok"),  # the same, where the binary difference overshoots it
    ("wer", 0.20, 2.0, 0.2201, "regression"),  # worse just beyond it
    ("wer", 0.20, 2.0, 0.18, "ok"),  # better by exactly the tolerance
    ("wer", 0.30, 1.0, 0.29, "ok"),  # the same, overshooting in binary
    ("wer", 0.20, 2.0, 0.1799, "improvement"),  # better just beyond it
    ("wer", 0.20, 2.0, 0.01, "improvement"),  # far better: passes
    ("wer", 0.20, 2.0, 0.20, "ok"),
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
    e = entry(name, base, tol, train_bits=4)
    b.write_text(json.dumps({"format": "qbench-baseline/2", "tolerance_units": "display", "entries": [e]}))
    out = CliRunner().invoke(app, ["check", "--baseline", str(b), "--results", str(tmp_path)])
    assert out.exit_code == (0 if PASSES[expected] else 1), out.output
    m = metric(name)  # values and tolerance in display units, as the leaderboard shows them
    shown = f"{expected.upper():<11} s/rand (trained w4)@w4 {name}: {m.format(value)} vs baseline {m.format(base)}"
    assert shown in out.output and f"tolerance {tol:.2f})" in out.output


@pytest.mark.parametrize(ARGS, CASES)
def test_a_version_1_file_gives_the_same_verdicts(tmp_path, name, base, tol, value, expected):
    """The same cases in a qbench-baseline/1 file, whose tolerance is in stored units (a WER
    fraction, BLEU points): read converted, the verdicts do not change."""
    record_results(tmp_path, [index_row(name, value)])
    b = tmp_path / "baseline.json"
    stored = tol / metric(name).scale
    b.write_text(json.dumps({"format": "qbench-baseline/1", "entries": [entry(name, base, stored)]}))
    (e,) = load_baseline(b)
    assert e["tolerance"] == tol
    out = CliRunner().invoke(app, ["check", "--baseline", str(b), "--results", str(tmp_path)])
    assert out.exit_code == (0 if PASSES[expected] else 1), out.output
    assert out.output.startswith(expected.upper())


def test_version_1_tolerances_convert_by_the_display_scale(tmp_path):
    b = tmp_path / "baseline.json"
    old = [
        entry("cer", 0.46, 0.05),
        entry("wer", 0.30, 0.07),
        entry("bleu", 21.5, 2.0),
        entry("chrf", 40.0, 0.5),
    ]
    for fmt in ({"format": "qbench-baseline/1"}, {}):  # a file without a format is a /1 file
        b.write_text(json.dumps({**fmt, "entries": old}))
        assert [e["tolerance"] for e in load_baseline(b)] == [5.0, 7.0, 2.0, 0.5]
        assert [e["value"] for e in load_baseline(b)] == [0.46, 0.30, 21.5, 40.0]  # values are kept
    b.write_text(json.dumps({"format": "qbench-baseline/2", "entries": old}))  # /2: taken as written
    assert [e["tolerance"] for e in load_baseline(b)] == [0.05, 0.07, 2.0, 0.5]
    b.write_text(json.dumps({"format": "qbench-baseline/2", "tolerance_units": "stored", "entries": old}))
    with pytest.raises(ValueError, match="tolerance_units 'stored'"):
        load_baseline(b)
    b.write_text(json.dumps({"format": "qbench-baseline/3", "entries": old}))
    with pytest.raises(ValueError, match="unknown baseline format 'qbench-baseline/3'"):
        load_baseline(b)


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
    e = entry("wer@x4", 0.20, 2.0)
    assert check(df, [e])[0].status == "regression"
    monkeypatch.setitem(METRICS, "wer", replace(METRICS["wer"], higher_is_better=True))
    assert check(df, [e])[0].status == "improvement"


NAN_CASES = [("wer", 0.20, 2.0), ("bleu", 30.0, 0.5)]


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


@pytest.mark.parametrize("fmt", ["qbench-baseline/1", "qbench-baseline/2"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["value", "tolerance"])
def test_a_baseline_value_or_tolerance_not_finite_is_refused_in_both_formats(tmp_path, fmt, bad, key):
    b = tmp_path / "baseline.json"
    e = {**entry("wer", 0.20, 2.0), key: bad}
    b.write_text(json.dumps({"format": fmt, "entries": [e]}))
    with pytest.raises(ValueError, match=rf"entries\[0\].{key}: expected a"):
        load_baseline(b)


def test_a_baseline_with_a_nan_tolerance_or_an_unknown_metric_is_rejected(tmp_path):
    b = tmp_path / "baseline.json"
    b.write_text(json.dumps({"entries": [entry("wer", 0.20, math.nan)]}))
    with pytest.raises(ValueError, match=r"entries\[0\].tolerance"):
        load_baseline(b)
    b.write_text(json.dumps({"entries": [entry("accuracy", 0.9, 0.01)]}))
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        load_baseline(b)


def test_the_committed_ci_baseline_reads_and_agrees_with_the_registry():
    path = Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci.json"
    data = json.loads(path.read_text())
    assert data["format"] == "qbench-baseline/2" and data["tolerance_units"] == "display"
    entries = load_baseline(path)
    assert entries
    for e in entries:
        assert e["higher_is_better"] is metric(e["metric"]).higher_is_better, e
    # the tolerances of the /1 file it replaced (0.05 CER as a fraction, 2.0 BLEU), in display units
    assert {(e["metric"], e["tolerance"]) for e in entries} == {("cer", 5.0), ("bleu", 2.0)}


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
    """`func` (gate.outcome) on CASES in display units, as gate.check calls it."""
    out = []
    for name, base, tol, value, _ in CASES:
        m = metric(name)
        out.append(func(m.display(value), m.display(base), tol, m.higher_is_better))
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


# ------------------------------------------------------------------ the interval gate

N_ITEMS = 400
WORDS = np.random.default_rng(7).integers(3, 12, N_ITEMS)  # one test set for every run


def runs_at(root: Path, error_rate: float, seeds=(0, 1), with_items: bool = True) -> pd.DataFrame:
    """Index rows of rand@w4 runs whose per-utterance word errors (stored as a run stores them)
    are binomial at `error_rate`, one run per seed; their WER is the pooled rate."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        errors = rng.binomial(WORDS, error_rate)
        run_dir = root / "runs" / "s" / f"rand-{seed}"
        items = [
            {
                "test_set": "test",
                "id": f"u{i:04d}",
                "cluster": f"spk{i % 8}",
                "word_errors": int(e),
                "ref_words": int(w),
                "char_errors": int(e),
                "ref_chars": int(w) * 5,
            }
            for i, (e, w) in enumerate(zip(errors, WORDS, strict=True))
        ]
        if with_items:
            write_items(run_dir, "w4", items)
        wer = errors.sum() / WORDS.sum()
        rows.append(
            index_row("wer", float(wer), seed=seed) | {"run_id": f"rand-{seed}", "run_dir": str(run_dir)}
        )
    return pd.DataFrame(rows)


def gated(df: pd.DataFrame, base: float, tol: float, gate_rule: str) -> gate.CheckOutcome:
    (o,) = check(df, [entry("wer", base, tol, gate=gate_rule)])
    return o


def test_a_drift_inside_the_noise_fails_the_value_rule_but_passes_the_interval_gate(tmp_path):
    df = runs_at(tmp_path, 0.21)  # one WER point above a baseline of 20 %, two seeds of 400 utterances
    assert 0.20 < df.value.mean() < 0.22  # worse than the baseline, by 1.6 points
    assert gated(df, 0.20, 0.0, "value").status == "regression"
    o = gated(df, 0.20, 0.0, "interval")
    assert o.status == "ok", o.describe()
    assert "interval gate: 95 % interval [" in o.describe()
    low, high = (float(x) for x in o.note.split("[")[1].rstrip("]").split(", "))
    assert low < 20.0 < high  # the interval overlaps the baseline: noise, not a loss


def test_a_real_loss_fails_both_rules_and_a_real_gain_is_an_improvement(tmp_path):
    loss = runs_at(tmp_path / "loss", 0.35)
    for rule in ("value", "interval"):
        assert gated(loss, 0.20, 2.0, rule).status == "regression", rule
    o = gated(loss, 0.20, 2.0, "interval")
    low = float(o.note.split("[")[1].split(",")[0])
    assert low > 22.0  # the whole interval is beyond baseline + tolerance
    gain = runs_at(tmp_path / "gain", 0.10)
    assert gated(gain, 0.20, 2.0, "interval").status == "improvement"
    # the tolerance still counts: a loss of 15 points within a tolerance of 20 is not a regression
    assert gated(loss, 0.20, 20.0, "interval").status == "ok"


def test_the_interval_gate_without_per_item_scores_falls_back_to_the_value_and_says_so(tmp_path):
    df = runs_at(tmp_path, 0.21, with_items=False)
    o = gated(df, 0.20, 0.0, "interval")
    assert o.status == "regression" and "no per-item scores, decided by the value" in o.describe()
    nan = df.assign(value=math.nan)  # a NaN result fails, whatever the rule
    assert gated(nan, 0.20, 5.0, "interval").status == "regression"


def test_qbench_check_reads_the_gate_and_refuses_an_unknown_one(tmp_path):
    record_results(tmp_path, runs_at(tmp_path, 0.21).to_dict("records"))
    b = tmp_path / "baseline.json"
    for rule, code in (("value", 1), ("interval", 0)):
        e = entry("wer", 0.20, 0.0, gate=rule)
        b.write_text(
            json.dumps({"format": "qbench-baseline/2", "tolerance_units": "display", "entries": [e]})
        )
        out = CliRunner().invoke(app, ["check", "--baseline", str(b), "--results", str(tmp_path)])
        assert out.exit_code == code, out.output
    b.write_text(json.dumps({"format": "qbench-baseline/2", "entries": [entry("wer", 0.2, 0.0, gate="ci")]}))
    out = CliRunner().invoke(app, ["check", "--baseline", str(b), "--results", str(tmp_path)])
    assert out.exit_code == 2 and "entries[0].gate: expected one of value, interval" in out.output


#: (interval low, high, baseline, tolerance, higher is better, expected): display units
INTERVAL_CASES = [
    (19.0, 23.0, 20.0, 0.0, False, "ok"),  # overlaps the baseline
    (22.0, 25.0, 20.0, 2.0, False, "ok"),  # touches baseline + tolerance
    (22.01, 25.0, 20.0, 2.0, False, "regression"),  # wholly beyond it
    (15.0, 18.0, 20.0, 2.0, False, "ok"),  # touches baseline - tolerance
    (15.0, 17.99, 20.0, 2.0, False, "improvement"),
    (28.0, 32.0, 30.0, 0.5, True, "ok"),
    (27.0, 29.5, 30.0, 0.5, True, "ok"),
    (27.0, 29.49, 30.0, 0.5, True, "regression"),
    (30.5, 33.0, 30.0, 0.5, True, "ok"),
    (30.51, 33.0, 30.0, 0.5, True, "improvement"),
    (29.0, 30.0, 30.1, 0.1, True, "ok"),  # 30.1 - 30.0 overshoots 0.1 in binary
    (20.6, 22.0, 20.3, 0.3, True, "ok"),  # 20.6 - 20.3 overshoots 0.3 in binary
]


def _interval_verdicts(func) -> list[str]:
    out = [func(lo, hi, base, tol, higher) for lo, hi, base, tol, higher, _ in INTERVAL_CASES]
    for higher in (False, True):
        out += [func(math.nan, 1.0, 0.5, 0.1, higher), func(0.0, math.nan, 0.5, 0.1, higher)]
        out += [func(0.4, 0.6, math.nan, 0.1, higher)]
    return out


def test_the_interval_cases_catch_every_mutant_of_the_interval_rule():
    expected = [e for *_, e in INTERVAL_CASES] + ["regression"] * 6
    assert _interval_verdicts(interval_outcome) == expected
    mutants = _mutants(interval_outcome)
    assert len(mutants) >= 6, [d for d, _ in mutants]
    survivors = []
    for description, mutant in mutants:
        try:
            if _interval_verdicts(mutant) == expected:
                survivors.append(description)
        except Exception:  # noqa: BLE001 - a mutant that crashes is caught too
            pass
    assert not survivors, f"mutants of gate.interval_outcome that the cases do not catch: {survivors}"


# ------------------------------------------------------------------ baseline update writes /2


def test_baseline_update_writes_version_2_from_a_version_1_file(tmp_path):
    record_results(tmp_path, [index_row("wer", 0.21), {**index_row("wer", 0.30), "precision": "float"}])
    b = tmp_path / "baseline.json"
    old = [
        {**entry("wer", 0.20, 0.07), "train_bits": 4, "gate": "interval"},
        {**entry("bleu", 20.0, 1.5), "suite": "o"},
    ]
    b.write_text(json.dumps({"format": "qbench-baseline/1", "entries": old}))
    out = CliRunner().invoke(app, ["baseline", "update", "s", "--out", str(b), "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    data = json.loads(b.read_text())
    assert data["format"] == "qbench-baseline/2" and data["tolerance_units"] == "display"
    by = {(e["suite"], e["precision"]): e for e in data["entries"]}
    assert by[("o", "w4")]["tolerance"] == 1.5  # another suite's BLEU entry, unchanged in points
    assert by[("s", "w4")]["tolerance"] == 7.0 and by[("s", "w4")]["gate"] == "interval"  # 0.07 -> 7 points
    assert by[("s", "w4")]["value"] == 0.21  # values stay stored units
    assert by[("s", "float")]["tolerance"] == gate.DEFAULT_TOLERANCE and "gate" not in by[("s", "float")]
    args = ["baseline", "update", "s", "--out", str(b), "--tolerance", "0.5", "--gate", "value"]
    out = CliRunner().invoke(app, [*args, "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    entries = [e for e in json.loads(b.read_text())["entries"] if e["suite"] == "s"]
    assert all(e["tolerance"] == 0.5 and "gate" not in e for e in entries)
    for bad in (["--gate", "ci"], ["--tolerance", "nan"], ["--tolerance", "-1"]):
        out = CliRunner().invoke(
            app, ["baseline", "update", "s", "--out", str(b), *bad, "--results", str(tmp_path)]
        )
        assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
