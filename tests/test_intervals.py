"""Leaderboard cells with intervals and paired differences, from per-item scores written as a
run writes them (store.write_items): a clear difference is marked, a null one is not, and a run
without per-item scores still shows, without an interval."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import sacrebleu
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.report.board import leaderboard, render
from qbench.store import read_results, record_results, write_items
from tests.test_report import row

N = 400  # utterances


WORDS = np.random.default_rng(7).integers(3, 12, N)  # one test set: the same references in every run


def asr_items(rng: np.random.Generator, error_rate: float) -> list[dict]:
    words = WORDS
    errors = rng.binomial(words, error_rate)
    return [
        {
            "test_set": "test",
            "id": f"u{i:04d}",
            "cluster": f"spk{i % 8}",
            "word_errors": int(e),
            "ref_words": int(w),
            "char_errors": int(e) * 3,
            "ref_chars": int(w) * 5,
        }
        for i, (e, w) in enumerate(zip(errors, words, strict=True))
    ]


def add_run(root, technique: str, seed: int, rates: dict[str, float], with_items: bool = True) -> list[dict]:
    rng = np.random.default_rng(1000 * seed + len(technique))
    run_dir = root / "runs" / "s" / f"{technique}-{seed}"
    rows = []
    for precision, rate in rates.items():
        items = asr_items(rng, rate)
        if with_items:
            write_items(run_dir, precision, items)
        wer = sum(i["word_errors"] for i in items) / sum(i["ref_words"] for i in items)
        r = row(technique, precision, wer, seed=seed)
        rows.append({**r, "run_id": f"{technique}-{seed}", "run_dir": str(run_dir)})
    return rows


def fill(root, old_run: bool = False) -> None:
    rows = []
    for seed in (0, 1):
        rows += add_run(root, "float", seed, {"float": 0.20, "w8": 0.20, "w4": 0.35})
        rows += add_run(root, "rand", seed, {"float": 0.20, "w8": 0.20, "w4": 0.21}, with_items=not old_run)
    record_results(root, rows)


def test_cells_carry_intervals_and_paired_differences(tmp_path):
    fill(tmp_path)
    board = leaderboard(read_results(tmp_path), ci=True, against="float")
    v = board.values.set_index(["technique", "precision"])
    # every interval contains its cell's value
    assert ((v.ci_low <= v["mean"]) & (v["mean"] <= v.ci_high)).all()
    # float at w4 (35 % vs 20 %) is clearly worse than float in float; rand at w8 is not
    assert v.loc[("float", "w4"), "significant"] and v.loc[("float", "w4"), "diff_low"] > 0.10
    assert v.loc[("float", "w4"), "p_value"] < 0.01  # the bootstrap p: at least 2 / 1001
    assert not v.loc[("rand", "w8"), "significant"] and v.loc[("rand", "w8"), "p_value"] > 0.05
    # the reference itself has no difference
    assert np.isnan(v.loc[("float", "float"), "diff"])
    assert "*" in board.table.loc["float", "w4"] and "*" not in board.table.loc["rand", "w8"]
    # JSON carries the same columns and the per-seed values
    records = json.loads(render(board, "json"))
    cell = next(r for r in records if r["technique"] == "float" and r["precision"] == "w4")
    assert set(cell["per_seed"]) == {"0", "1"} and {"ci_low", "diff", "p_value"} <= set(cell)
    assert "ci_low" in render(board, "csv").splitlines()[0]


def test_the_same_table_twice_is_identical(tmp_path):
    fill(tmp_path)
    first = leaderboard(read_results(tmp_path), ci=True, against="float").values
    second = leaderboard(read_results(tmp_path), ci=True, against="float").values
    pd.testing.assert_frame_equal(first, second)


def test_runs_without_per_item_scores_show_without_intervals(tmp_path):
    fill(tmp_path, old_run=True)
    board = leaderboard(read_results(tmp_path), ci=True, against="float")
    v = board.values.set_index(["technique", "precision"])
    assert np.isnan(v.loc[("rand", "w4"), "ci_low"]) and np.isnan(v.loc[("rand", "w4"), "diff"])
    assert "[–]" in board.table.loc["rand", "w4"]
    assert not np.isnan(v.loc[("float", "w4"), "ci_low"])


def test_bleu_cells_use_sacrebleu_on_the_stored_hypotheses(tmp_path):
    refs = [f"a small test sentence number {i} about dogs" for i in range(60)]
    good = list(refs)
    bad = [" ".join(r.split()[:4]) for r in refs]
    rows = []
    for technique, hyps in (("float", good), ("ptq", bad)):
        run_dir = tmp_path / "runs" / "s" / technique
        items = [
            {"test_set": "test", "id": str(i), "reference": r, "hypothesis": h}
            for i, (r, h) in enumerate(zip(refs, hyps, strict=True))
        ]
        write_items(run_dir, "float", items)
        value = sacrebleu.corpus_bleu(hyps, [refs]).score
        r = {**row(technique, "float", value), "metric": "bleu", "higher_is_better": 1, "task": "mt"}
        rows.append({**r, "run_id": technique, "run_dir": str(run_dir)})
    record_results(tmp_path, rows)
    board = leaderboard(read_results(tmp_path), ci=True, against="float")
    v = board.values.set_index("technique")
    assert v.loc["ptq", "diff"] < -30 and v.loc["ptq", "significant"]
    assert v.loc["float", "ci_low"] <= v.loc["float", "mean"] <= v.loc["float", "ci_high"]


def test_compare_ci_against_at_the_command_line(tmp_path):
    fill(tmp_path)
    out = CliRunner().invoke(
        app, ["compare", "--ci", "--against", "float", "--format", "markdown", "--results", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    assert "paired difference from the float model in float" in out.output and "p=" in out.output
    out = CliRunner().invoke(app, ["compare", "--against", "nope", "--results", str(tmp_path)])
    assert out.exit_code == 1 and "--against nope: no such technique" in out.output
