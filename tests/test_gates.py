"""The gates a suite passes before its claims are judged (report/gates), on synthetic indexes
with known answers, and findings' "not testable here"."""

import json
import time

import numpy as np

from qbench.report.claims import Cell, Claim, Diff, Site
from qbench.report.findings import findings, render_findings
from qbench.report.gates import GateResult, convergence, headroom, loss_in_se, regime, suite_gates, untestable
from qbench.report.intervals import cell_difference, items_difference
from qbench.store import read_items, read_results, record_results, write_items

N_UTT = 400
WORDS = np.full(N_UTT, 10)


def _row(root, technique, precision, metric, value, seed=0, task="asr"):
    run_id = f"{technique}-{seed}"
    return {
        "run_id": run_id,
        "suite": "s",
        "task": task,
        "dataset": "synthetic",
        "technique": technique,
        "train_bits": 4,
        "seed": seed,
        "precision": precision,
        "metric": metric,
        "value": value,
        "higher_is_better": int(metric == "bleu"),
        "headline": int(metric in ("wer", "bleu")),
        "size_bits": 1000,
        "float32_bits": 8000,
        "extra": None,
        "run_dir": str(root / "runs" / "s" / run_id),
        "created": time.time(),
    }


def _asr_index(root, float_wer=0.2, ptq_wer=0.3, float_cer=0.05, seeds=(0,), curve=None):
    """float@float and ptq@w4 with per-utterance word errors drawn at the given rates; the float
    run's learning curve `curve` ((step, wer), ...) over 1000 steps when given."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        base = rng.binomial(WORDS, float_wer)
        extra = rng.binomial(WORDS - base, max(0.0, (ptq_wer - float_wer) / (1 - float_wer)))
        for technique, precision, errors in (("float", "float", base), ("ptq", "w4", base + extra)):
            run_dir = root / "runs" / "s" / f"{technique}-{seed}"
            items = [
                {"test_set": "test", "id": f"u{j:04d}", "cluster": f"spk{j % 8}", "word_errors": int(e)}
                | {"ref_words": int(w), "char_errors": int(e), "ref_chars": 50}
                for j, (e, w) in enumerate(zip(errors, WORDS, strict=True))
            ]
            write_items(run_dir, precision, items)
            rows.append(_row(root, technique, precision, "wer", errors.sum() / WORDS.sum(), seed))
            rows.append(_row(root, technique, precision, "cer", float_cer, seed))
            if technique == "float" and curve is not None:
                points = [{"step": s, "minutes": 0, "split": "valid", "wer": v} for s, v in curve]
                (run_dir / "metrics.json").write_text(json.dumps({"steps": 1000, "curve": points}))
    record_results(root, rows)
    return read_results(root)


def test_regime_asr_and_mt(tmp_path):
    good = regime(_asr_index(tmp_path / "a", float_wer=0.2), "asr")
    assert good.passed is True and "float CER % 5.00, WER % " in good.measured
    assert regime(_asr_index(tmp_path / "b", float_wer=0.45), "asr").passed is False  # WER > 30 %
    assert regime(_asr_index(tmp_path / "c", float_cer=0.11), "asr").passed is False  # CER > 10 %
    for bleu, ok in ((15.0, False), (35.0, True), (88.0, False)):
        root = tmp_path / f"mt{bleu}"
        record_results(root, [_row(root, "float", "float", "bleu", bleu, task="mt")])
        assert regime(read_results(root), "mt").passed is ok, bleu
    assert regime(read_results(tmp_path / "mt15.0").iloc[0:0], "mt").passed is None  # no float row


def test_headroom_needs_five_standard_errors(tmp_path):
    big = headroom(_asr_index(tmp_path / "big", 0.2, 0.3), "w4", "wer")
    assert big.passed is True and big.measured.startswith("ptq loses +9.80 WER % (")  # ~10 points
    assert float(big.measured.split("(")[1].split(" se")[0]) > 10
    none = headroom(_asr_index(tmp_path / "none", 0.2, 0.2), "w4", "wer")
    assert none.passed is False  # the same errors: no loss at all
    small = headroom(_asr_index(tmp_path / "small", 0.2, 0.205), "w4", "wer")
    assert small.passed is False  # half a point: about one standard error
    assert headroom(_asr_index(tmp_path / "w8", 0.2, 0.3), "w8", "wer").passed is None  # no ptq@w8


def test_convergence_from_the_learning_curve(tmp_path):
    flat = [(500, 0.30), (850, 0.2005), (1000, 0.2)]  # moved 0.05 points at the end: far below se
    moving = [(500, 0.40), (850, 0.30), (1000, 0.2)]  # still 10 points down over the last 15 %
    assert convergence(_asr_index(tmp_path / "f", curve=flat), tmp_path / "f").passed is True
    got = convergence(_asr_index(tmp_path / "m", curve=moving), tmp_path / "m")
    assert got.passed is False and "moved up to 10.00" in got.measured
    # a coarse curve: the window starts at the last point at or before 85 %, here step 500
    coarse = convergence(_asr_index(tmp_path / "s", curve=[(500, 0.30), (1000, 0.2)]), tmp_path / "s")
    assert coarse.passed is False
    late = [(900, 0.2), (1000, 0.2)]  # no point at or before 85 %: the window is not seen
    assert convergence(_asr_index(tmp_path / "l", curve=late), tmp_path / "l").passed is None
    assert convergence(_asr_index(tmp_path / "n"), tmp_path / "n").passed is None  # no curve
    # several seeds: the seed spread of the curve's last value is the noise
    spread = [(500, 0.30), (850, 0.2003), (1000, 0.2)]
    two = _asr_index(tmp_path / "t", seeds=(0, 1), curve=spread)
    assert "seed spread" in convergence(two, tmp_path / "t").measured


def test_suite_gates_and_untestable(tmp_path):
    df = _asr_index(tmp_path, 0.2, 0.3, curve=[(500, 0.3), (850, 0.2), (1000, 0.2)])
    gates = suite_gates(df, "s", tmp_path, ("float", "w4"))
    assert [g.gate for g in gates] == ["convergence", "regime", "headroom@w4"]
    assert all(g.passed for g in gates) and untestable(gates) is None
    failed = [GateResult("regime", False, "", ""), GateResult("headroom@w4", None, "", "")]
    assert untestable(failed) == "regime failed, headroom@w4 not measured"
    assert suite_gates(df, "other", tmp_path) == []


def test_findings_marks_claims_on_a_failing_suite_not_testable(tmp_path):
    df = _asr_index(tmp_path, 0.2, 0.3)
    claim = Claim(
        "ptq-worse",
        "f",
        "ptq is worse.",
        Diff(Cell("ptq", "w4"), Cell("float", "float")),
        (Site("s", "wer", +1, 0.01),),
    )
    passing = lambda suite, precisions: [GateResult("regime", True, "", "")]  # noqa: E731
    failing = lambda suite, precisions: [GateResult("regime", False, "float WER 45", "")]  # noqa: E731
    (ok,) = findings(df, claims=[claim], gates=passing)
    (bad,) = findings(df, claims=[claim], gates=failing)
    assert ok.verdict == bad.verdict == "supported" and ok.difference is not None
    assert ok.shown_verdict == "**supported**"
    assert bad.shown_verdict == "**not testable here** (regime failed); interval rule: supported"
    text = render_findings([bad])
    assert "not testable here" in text and "| regime | **FAILED** | float WER 45 |" in text
    (ungated,) = findings(df, claims=[claim])
    assert ungated.gated == "" and ungated.gates == ()


def test_items_difference_pairs_two_evaluations_as_cell_difference_pairs_one_seed(tmp_path):
    df = _asr_index(tmp_path, 0.2, 0.3)
    ptq, base = (df[(df.technique == t) & (df.metric == "wer")] for t in ("ptq", "float"))
    cell = cell_difference(ptq, base, "wer")
    items = [
        read_items(tmp_path / "runs" / "s" / run, p).to_dict("records")
        for run, p in (("ptq-0", "w4"), ("float-0", "float"))
    ]
    got = items_difference(items[0], items[1], "wer")
    assert cell is not None and got is not None
    assert (got.estimate, got.low, got.high, got.se) == (cell.estimate, cell.low, cell.high, cell.se)
    assert loss_in_se(got, "wer")[0] == got.estimate > 0.09  # WER: a higher value is a loss
    assert items_difference(items[0], items[1], "wer@x4") is None  # long-form: not from single items
