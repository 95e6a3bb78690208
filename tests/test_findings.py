"""`qbench findings` on synthetic index rows with known answers: pre-registered contrasts, their
intervals (per-item bootstrap, or Student t over seeds), Holm inside a family and stats.verdict."""

import math
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.report.claims import CLAIMS, Cell, Claim, Diff, Interaction, Site
from qbench.report.findings import (
    findings,
    render_findings,
    seed_difference,
)
from qbench.store import read_results, record_results, write_items

WER = Site("s", "wer", -1, 0.01)  # the claims below expect a lower WER of the system


def _row(technique, precision, value, seed, suite="s", metric="wer", run_dir="x", run_id=None):
    higher = metric == "bleu"
    return {
        "run_id": run_id or f"{technique}-{seed}",
        "suite": suite,
        "task": "mt" if higher else "asr",
        "dataset": "synthetic",
        "technique": technique,
        "train_bits": 4,
        "seed": seed,
        "precision": precision,
        "metric": metric,
        "value": value,
        "higher_is_better": int(higher),
        "headline": int(metric in ("wer", "bleu")),
        "size_bits": 1000,
        "float32_bits": 8000,
        "extra": None,
        "run_dir": run_dir,
        "created": time.time(),
    }


def _claim(system, reference="ref", family=None, site=WER, precision="w4"):
    contrast = Diff(Cell(system, precision), Cell(reference, precision))
    return Claim(system, family or system, f"{system} beats {reference}.", contrast, (site,))


def _seed_cells(root, cells, suite="s", metric="wer"):
    """cells: technique -> per-seed values at w4 (no per-item scores: the per-seed basis)."""
    rows = [
        _row(t, "w4", v, seed, suite, metric) for t, values in cells.items() for seed, v in enumerate(values)
    ]
    record_results(root, rows)
    return read_results(root)


def _by_id(outcomes):
    return {t.claim.id: t for t in outcomes}


# ------------------------------------------------------------------ per-seed basis


def test_large_effects_and_a_null_one_per_seed(tmp_path):
    ref = [0.30, 0.32, 0.31]
    df = _seed_cells(
        tmp_path,
        {
            "ref": ref,
            "better": [r - d for r, d in zip(ref, (0.10, 0.11, 0.09), strict=True)],
            "worse": [r + d for r, d in zip(ref, (0.10, 0.11, 0.09), strict=True)],
            "same": [r + d for r, d in zip(ref, (0.02, -0.03, 0.01), strict=True)],
        },
    )
    got = _by_id(findings(df, claims=[_claim("better"), _claim("worse"), _claim("same")]))
    assert got["better"].verdict == "supported"
    assert got["worse"].verdict == "contradicted"
    assert got["same"].verdict == "inconclusive"
    for t in got.values():
        assert t.basis == "per-seed t, 2 df" and t.n == "3 seeds"
    b = got["better"].difference
    assert b is not None and b.high < 0 and abs(b.estimate + 0.10) < 1e-12
    text = render_findings(list(got.values()))
    assert "| better | s (WER % lower, δ 1.00) | -10.00 [" in text and "**supported**" in text


def test_the_per_seed_interval_is_the_t_interval_computed_by_hand():
    d = [0.02, 0.05, 0.03]
    got = seed_difference(d)
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    se = sd / math.sqrt(3)
    # Student t with 2 degrees of freedom has a closed form: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)),
    # so its 97.5 % point solves t / sqrt(t^2 + 2) = 0.95 and the two-sided p is 1 - |t| / sqrt(t^2 + 2)
    q = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    assert abs(q - 4.302652729749464) < 1e-12
    t = mean / se
    assert got.estimate == pytest.approx(mean, abs=1e-15)
    assert (got.low, got.high) == pytest.approx((mean - q * se, mean + q * se), abs=1e-12)
    assert got.p_value == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), abs=1e-12)
    assert got.n == 3 and got.df == 2
    # the 90 % interval (equivalence) is Student's too: F(t) = 0.95 -> t / sqrt(t^2 + 2) = 0.9
    q90 = math.sqrt(2 * 0.9**2 / (1 - 0.9**2))
    assert got.bounds(0.90) == pytest.approx((mean - q90 * se, mean + q90 * se), abs=1e-12)


def test_one_seed_without_per_item_scores_is_not_testable(tmp_path):
    df = _seed_cells(tmp_path, {"ref": [0.3], "better": [0.1]})
    (t,) = findings(df, claims=[_claim("better")])
    assert t.verdict == "not testable (one seed, no per-item scores)" and t.difference is None


def test_holm_turns_a_borderline_family_inconclusive(tmp_path):
    ref = [0.30, 0.32, 0.31, 0.33]
    gains = (0.05, 0.03, 0.07, 0.02)  # one-sample t: p = 0.031 with 3 degrees of freedom
    df = _seed_cells(
        tmp_path,
        {
            "ref": ref,
            "a": [r - g for r, g in zip(ref, gains, strict=True)],
            "b": [r - g for r, g in zip(ref, gains[::-1], strict=True)],
        },
    )
    alone = _by_id(findings(df, claims=[_claim("a"), _claim("b")]))
    assert {t.verdict for t in alone.values()} == {"supported"}
    assert alone["a"].difference.p_value == pytest.approx(0.031288636, abs=1e-6)
    together = _by_id(findings(df, claims=[_claim("a", family="f"), _claim("b", family="f")]))
    assert {t.verdict for t in together.values()} == {"inconclusive"}
    assert together["a"].p_holm == pytest.approx(2 * alone["a"].difference.p_value)
    assert together["a"].family_size == 2


def test_a_duplicate_cell_is_counted_once(tmp_path):
    rows = []
    for seed, (ref, auto) in enumerate(((0.30, 0.25), (0.32, 0.28), (0.31, 0.24), (0.33, 0.30))):
        rows.append(_row("t", "w4", ref, seed))
        # two automatic maps that chose the same bits: the same value of every metric on every seed
        for name in ("auto-a", "auto-b"):
            rows += [_row("t", name, auto, seed), _row("t", name, auto / 2, seed, metric="cer")]
        # ptq is the float model: float and ptq at float precision agree everywhere
        rows += [_row("float", "float", ref, seed), _row("ptq", "float", ref, seed)]
    record_results(tmp_path, rows)
    df = read_results(tmp_path)
    claims = [
        Claim(f"auto-{m}", "auto", "auto beats w4.", Diff(Cell("t", f"auto-{m}"), Cell("t", "w4")), (WER,))
        for m in "ab"
    ]
    ptq = Claim("ptq", "ptq", "ptq = float", Diff(Cell("ptq", "float"), Cell("float", "float")), (WER,))
    got = _by_id(findings(df, claims=[*claims, ptq]))
    assert got["auto-b"].verdict == "counted once (identical cells: same test as auto-a)"
    assert got["auto-b"].difference is None
    # a family of one: Holm leaves its p alone (a duplicate counted twice would double it)
    assert got["auto-a"].family_size == 1 and got["auto-a"].p_holm == got["auto-a"].difference.p_value
    assert got["ptq"].verdict.startswith("not testable (identical cells")
    # cells that merely share a value on one metric are not the same cell
    rows = [_row("u", "auto-c", v, seed) for seed, v in enumerate((0.25, 0.28, 0.24, 0.30))]
    record_results(tmp_path, rows + [_row("u", "auto-c", 0.9, 0, metric="cer")])
    claims.append(Claim("auto-c", "auto", "u", Diff(Cell("u", "auto-c"), Cell("t", "w4")), (WER,)))
    got = _by_id(findings(read_results(tmp_path), claims=claims))
    assert not got["auto-c"].verdict.startswith("counted once") and got["auto-c"].family_size == 2


def test_bleu_claims_read_higher_as_better(tmp_path):
    ref = [30.0, 31.0, 29.5]
    df = _seed_cells(
        tmp_path,
        {"ref": ref, "better": [r + d for r, d in zip(ref, (5.0, 6.0, 5.5), strict=True)]},
        metric="bleu",
    )
    (t,) = findings(df, claims=[_claim("better", site=Site("s", "bleu", +1, 1.0))])
    assert t.verdict == "supported"
    (t,) = findings(df, claims=[_claim("better", site=Site("s", "bleu", -1, 1.0))])
    assert t.verdict == "contradicted"


# ------------------------------------------------------------------ per-item basis

N = 400
WORDS = np.random.default_rng(7).integers(3, 12, N)


def _item_runs(root, rates):
    """technique -> WER; two seeds each, per-item scores written as a run writes them."""
    rows = []
    for i, (technique, rate) in enumerate(rates.items()):
        for seed in (0, 1):
            rng = np.random.default_rng(100 * i + seed)
            errors = rng.binomial(WORDS, rate)
            run_dir = root / "runs" / "s" / f"{technique}-{seed}"
            write_items(
                run_dir,
                "w4",
                [
                    {"test_set": "test", "id": f"u{j:04d}", "cluster": f"spk{j % 8}", "word_errors": int(e)}
                    | {"ref_words": int(w)}
                    for j, (e, w) in enumerate(zip(errors, WORDS, strict=True))
                ],
            )
            rows.append(_row(technique, "w4", errors.sum() / WORDS.sum(), seed, run_dir=str(run_dir)))
    record_results(root, rows)
    return read_results(root)


def test_large_effects_and_a_null_one_per_item(tmp_path):
    df = _item_runs(tmp_path, {"ref": 0.30, "better": 0.15, "worse": 0.45, "same": 0.30, "c": 0.2, "d": 0.2})
    inter = Claim(
        "inter",
        "inter",
        "better's gain exceeds c's over d",
        Interaction(Diff(Cell("better", "w4"), Cell("ref", "w4")), Diff(Cell("c", "w4"), Cell("d", "w4"))),
        (WER,),
    )
    got = _by_id(findings(df, claims=[_claim("better"), _claim("worse"), _claim("same"), inter]))
    assert got["better"].verdict == "supported"
    assert got["worse"].verdict == "contradicted"
    assert got["same"].verdict == "inconclusive"
    assert got["better"].basis == "per-item, paired" and got["better"].n == f"{2 * N} items, 2 seed(s)"
    assert "p: paired bootstrap" in got["better"].detail
    assert got["inter"].verdict == "supported" and got["inter"].basis == "per-item, joint bootstrap"
    d = got["inter"].difference
    assert d.low < d.estimate < d.high < 0 and abs(d.estimate + 0.15) < 0.03


# ------------------------------------------------------------------ the declared claims, end to end

PAPER = {  # w4 WER of each rand-paper cell, seed 1 (seeds 0 and 2 jitter around it)
    "pqn-sg": 0.60,
    "pqn": 0.30,
    "absmax-sg+round-ste": 0.31,
    "ste": 0.29,
    "learned+noise": 0.40,
    "pact+noise": 0.33,
    "mse-clip+noise": 0.35,
    "rand": 0.25,
    "rand-ste": 0.28,
    "lsq": 0.20,
    "pact": 0.30,
    "clip": 0.29,
    "rand(k=1,p=8)": 0.27,
    "rand(k=4,p=8)": 0.252,
    "rand(k=8,p=8)": 0.30,
    "rand(k=2,p=2)": 0.31,
    "rand(k=2,p=4)": 0.30,
    "rand(k=2,p=16)": 0.26,
}


def _paper_index(root):
    rows = []
    for i, (tech, v) in enumerate(PAPER.items()):
        for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
            rows.append(_row(tech, "w4", v + jitter * (1 + (i % 3) / 2), seed, suite="rand-paper"))
    rows.append(_row("float", "float", 0.2, 0, suite="demo"))
    record_results(root, rows)


def test_every_declared_claim_on_its_suite(tmp_path):
    _paper_index(tmp_path)
    out = [t for t in findings(read_results(tmp_path)) if t.site.suite == "rand-paper"]
    assert {t.claim.id for t in out} == {
        c.id for c in CLAIMS if any(s.suite == "rand-paper" for s in c.sites)
    }
    allowed = {"supported", "contradicted", "inconclusive", "equivalent"}
    assert all(t.verdict in allowed and t.basis == "per-seed t, 2 df" for t in out)
    got = _by_id(out)
    assert got["noise-needs-scale-grad"].verdict == "supported"  # +0.28 interaction, expected > 0
    assert got["rand-beats-learned+noise"].verdict == "supported"
    assert got["rand-beats-lsq"].verdict == "contradicted"  # rand-ste 0.28 vs lsq 0.20
    assert got["rand-beats-lsq"].family_size == 6  # 6 contrasts, on the one suite with rows
    # the claims on suites absent from the index say so
    assert {t.verdict for t in findings(read_results(tmp_path)) if t.site.suite == "asr-precisions"} == {
        "not tested (suite not in the index)"
    }


def test_findings_cli_prints_every_claim_and_writes_its_section(tmp_path):
    _paper_index(tmp_path)
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nboards\n")
    args = ["findings", "--suite", "rand-paper", "--results", str(tmp_path), "--out", str(md)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "rand-paper (WER" in line]
    assert len(rows) == sum(any(s.suite == "rand-paper" for s in c.sites) for c in CLAIMS)
    for line in rows:
        claim, suite, effect, p, holm, n, basis, verdict = (x.strip() for x in line.strip("|").split("|"))
        assert effect.count("[") == 1 and float(p.lstrip("<")) >= 0 and float(holm.lstrip("<")) >= 0
        assert n == "3 seeds" and basis == "per-seed t, 2 df"
        # a per-seed index without float rows, curves or per-item scores cannot pass its gates
        gated, rule = verdict.split("; interval rule: ")
        assert gated.startswith("**not testable here** (convergence not measured, regime not measured")
        assert rule in {"supported", "contradicted", "inconclusive", "equivalent"}
    everything = CliRunner().invoke(app, ["findings", "--results", str(tmp_path)])
    assert everything.exit_code == 0 and "no claim is declared on demo" in everything.output
    assert (
        "Not tested on estimators-asr, estimators-fsdd, rand-paper-gpu, rand-paper-fsdd, rand-paper-mt: not in the index."
        in everything.stdout
    )
    first = md.read_text()
    assert first.startswith("# Results\n\nboards\n") and "## Findings" in first
    CliRunner().invoke(app, args)  # again: replaced, not appended twice
    assert md.read_text().count("## Findings") == 1
    bad = CliRunner().invoke(app, ["findings", "--suite", "demo", "--results", str(tmp_path)])
    assert bad.exit_code == 2 and "no claim is tested on demo" in bad.output


def test_a_suite_at_a_stress_setting_is_tested_at_its_trained_bits(tmp_path):
    """A suite whose techniques all trained at 3 bits (qbench pilot's stress setting) tests a
    claim stated at w4 on its w3 cells; the rendered cells say w3. A suite at 4 bits is unchanged."""
    ref, better = [0.30, 0.32, 0.31], [0.20, 0.21, 0.22]
    rows = [
        {**_row(t, p, v + (0.0 if p == "w3" else 0.5), seed), "train_bits": 3}
        for t, values in {"ref": ref, "better": better}.items()
        for seed, v in enumerate(values)
        for p in ("w3", "w8")
    ]
    record_results(tmp_path, rows)
    claim = _claim("better")
    (t,) = findings(read_results(tmp_path), claims=[claim])
    assert t.claim is claim and t.verdict == "supported"
    assert t.difference is not None and abs(t.difference.estimate + 0.10) < 1e-12
    assert set(t.cells) == {"better@w3", "ref@w3"}
    at4 = _seed_cells(tmp_path / "four", {"ref": ref, "better": better})
    (u,) = findings(at4, claims=[claim])
    assert set(u.cells) == {"better@w4", "ref@w4"} and u.verdict == "supported"
