"""`qbench findings` on a synthetic index whose numbers decide each claim."""

import time

import pandas as pd
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.report.findings import Finding, findings, render_findings
from qbench.store import read_results, record_results


def _row(suite, technique, precision, value, seed, metric="wer"):
    return {
        "run_id": f"{technique}-{seed}",
        "suite": suite,
        "task": "asr",
        "dataset": "synthetic-speech",
        "technique": technique,
        "train_bits": 4,
        "seed": seed,
        "precision": precision,
        "metric": metric,
        "value": value,
        "higher_is_better": 0,
        "headline": int(metric == "wer"),
        "size_bits": 1000,
        "float32_bits": 8000,
        "extra": None,
        "run_dir": "x",
        "created": time.time(),
    }


# w4 WER of each cell: noise needs the scale gradient (pqn-sg 0.60 vs pqn 0.30); RAND beats
# learned/pact/clip under noise but loses to lsq under round-STE; RAND's gain over absmax is
# 0.05 with noise and 0.01 with STE.
PAPER = {
    "pqn-sg": 0.60,
    "absmax-sg+round-ste": 0.31,
    "pqn": 0.30,
    "ste": 0.29,
    "learned+noise": 0.40,
    "lsq": 0.26,
    "pact+noise": 0.33,
    "pact": 0.30,
    "mse-clip+noise": 0.35,
    "clip": 0.29,
    "rand": 0.25,
    "rand-ste": 0.28,
    "rand(k=1,p=8)": 0.27,
    "rand(k=4,p=8)": 0.252,
    "rand(k=2,p=4)": 0.30,
}


def _index(root):
    rows = []
    for seed, jitter in ((0, -0.01), (1, 0.0), (2, 0.01)):
        for tech, v in PAPER.items():
            rows.append(_row("rand-paper", tech, "w4", v + jitter, seed))
            rows.append(_row("rand-paper", tech, "float", 0.2 + jitter, seed))
        rows.append(_row("rand-paper", "float", "float", 0.2 + jitter, seed))
        # one model, many precisions: rand stays close to its best, lsq does not
        for tech, spread in (("rand", 0.01), ("pqn", 0.02), ("lsq", 0.10), ("pact", 0.08)):
            base = 0.30 + jitter
            for p, k in (("float", 0), ("w8", 0), ("w4", 2), ("mix-a", 1), ("mix-b", 1), ("hand5", 1)):
                rows.append(_row("asr-precisions", tech, p, base + k * spread, seed))
            rows.append(_row("asr-precisions", tech, "auto5", base + 0.5 * spread, seed))
            rows.append(_row("asr-precisions", tech, "w4", base + 2 * spread + 0.05, seed, "wer@x8"))
        # long form: ste loses 0.10 at x8, rand 0.05 (set above: rand +0.05, others +0.05 too)
        rows.append(_row("asr-precisions", "ste", "w4", 0.33 + jitter, seed))
        rows.append(_row("asr-precisions", "ste", "w4", 0.43 + jitter, seed, "wer@x8"))
    record_results(root, rows)


def test_findings_decide_each_claim(tmp_path):
    _index(tmp_path)
    df = read_results(tmp_path)
    got = {f.key: f for f in findings(df, ["rand-paper", "asr-precisions"])}
    assert got["noise-needs-scale-grad"].verdict == "held"
    assert "30.00 better" in got["noise-needs-scale-grad"].detail
    assert got["rand-beats-learned-and-clip"].verdict == "partly held"  # loses to lsq under STE
    assert "RAND better in 5 of 6" in got["rand-beats-learned-and-clip"].detail
    assert got["rand-helps-noise-most"].verdict == "held"
    assert got["noise-model-many-precisions"].verdict == "held"
    assert got["noise-model-many-precisions"].suites == ["asr-precisions"]
    assert got["long-form"].verdict == "held"  # rand +0.07 vs ste +0.10 at x8
    assert got["auto-precision"].verdict == "held"
    assert got["rand-default-kp"].verdict == "held"
    # rows carry mean ± std over 3 seeds
    pqn_sg = next(r for r in got["noise-needs-scale-grad"].rows if r.technique == "pqn-sg")
    assert pqn_sg.n == 3 and abs(pqn_sg.mean - 0.60) < 1e-9 and abs(pqn_sg.std - 0.01) < 1e-9
    text = render_findings(list(got.values()), ["rand-paper", "asr-precisions"])
    assert "| rand-paper | pqn-sg | w4 | wer | 60.00 ± 1.00 (n=3) |" in text
    assert "qbench findings --suite rand-paper --suite asr-precisions" in text
    assert "rows: `qbench compare --suite rand-paper`." in text
    two = Finding("k", "A claim.", "RAND", "held", "detail", suites=["a", "b"])
    assert "rows: `qbench compare --suite a`, `qbench compare --suite b`." in render_findings(
        [two], ["a", "b"]
    )


def test_findings_say_what_is_not_tested_and_what_failed(tmp_path):
    rows = []
    for seed in (0, 1):
        rows += [_row("s", "pqn-sg", "w4", 0.20, seed), _row("s", "pqn", "w4", 0.30 + 0.1 * seed, seed)]
        # RAND worse than absmax under both estimators, less so under noise: it helps neither
        rows += [_row("s", "rand", "w4", 0.40, seed), _row("s", "ste", "w4", 0.30, seed)]
        rows += [_row("s", "rand-ste", "w4", 0.45, seed)]
    record_results(tmp_path, rows)
    got = {f.key: f for f in findings(read_results(tmp_path), ["s"])}
    assert got["noise-needs-scale-grad"].verdict == "did not hold"
    assert got["rand-helps-noise-most"].verdict == "did not hold"
    assert "RAND helps neither" in got["rand-helps-noise-most"].detail
    assert got["auto-precision"].verdict == "not tested"
    assert "not tested" in render_findings(list(got.values()), ["s"])


def test_findings_cli_writes_its_section_into_results_md(tmp_path):
    _index(tmp_path)
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nboards\n")
    args = ["findings", "--suite", "rand-paper", "--results", str(tmp_path), "--out", str(md)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    first = md.read_text()
    assert first.startswith("# Results\n\nboards\n") and "## Findings" in first
    CliRunner().invoke(app, args)  # again: replaced, not appended twice
    assert md.read_text().count("## Findings") == 1


def test_rand_default_kp_without_a_w4_default_row_is_not_tested():
    """rand has results, but none at w4: the claim cannot be judged (not a KeyError)."""
    rows = []
    for seed in (0, 1):
        rows.append(_row("s", "rand", "float", 0.2, seed))
        for technique, value in (("rand(k=1,p=8)", 0.27), ("rand(k=4,p=8)", 0.25)):
            rows.append(_row("s", technique, "w4", value, seed))
    (claim,) = [f for f in findings(pd.DataFrame(rows), ["s"]) if f.key == "rand-default-kp"]
    assert claim.verdict == "not tested"
