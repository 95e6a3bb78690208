"""Leaderboard pivot and the CI regression check, on index rows written by the store."""

import json
import time

from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import load_suite
from qbench.report.board import leaderboard, render
from qbench.store import read_results, record_results
from tests.conftest import tiny_recipe


def row(technique, precision, value, seed=0, suite="s", bits=4):
    return {
        "run_id": f"{technique}-{seed}",
        "suite": suite,
        "task": "asr",
        "dataset": "synthetic-speech",
        "technique": technique,
        "train_bits": bits,
        "seed": seed,
        "precision": precision,
        "metric": "wer",
        "value": value,
        "higher_is_better": 0,
        "headline": 1,
        "size_bits": {"float": 32000, "w8": 8400, "w4": 4400}[precision],
        "float32_bits": 32000,
        "extra": None,
        "run_dir": "x",
        "created": time.time(),
    }


def fill(root):
    rows = [row("float", p, 0.20) for p in ("float", "w8", "w4")]
    rows += [row("rand", "float", 0.21, seed=s) for s in (0, 1)]
    rows += [row("rand", "w4", v, seed=s) for s, v in ((0, 0.22), (1, 0.24))]
    record_results(root, rows)


def test_leaderboard_pivots_with_mean_std_and_size(tmp_path):
    fill(tmp_path)
    board = leaderboard(read_results(tmp_path))
    assert list(board.table.columns) == ["float", "w8", "w4"]
    assert list(board.table.index) == ["float", "rand", "packed size"]
    assert board.table.loc["rand", "w4"] == "23.00 ± 1.41 (+3.00)"  # delta to float@float of the suite
    assert board.table.loc["float", "float"] == "20.00"  # the reference itself carries no delta
    assert board.table.loc["rand", "w8"] == "–"
    assert board.table.loc["packed size", "w4"].startswith("0.00 MB (7.3x)")
    md = render(board, "markdown")
    assert "| rand" in md and "WER %" in md
    records = json.loads(render(board, "json"))
    assert any(
        r["technique"] == "rand" and r["precision"] == "w4" and r["n"] == 2 and abs(r["mean"] - 0.23) < 1e-9
        for r in records
    )


def baseline(tmp_path, entries):
    p = tmp_path / "baseline.json"
    p.write_text(json.dumps({"entries": entries}))
    return p


def entry(technique, precision, value, tol=0.02):
    return {
        "suite": "s",
        "technique": technique,
        "precision": precision,
        "metric": "wer",
        "value": value,
        "tolerance": tol,
    }


def invoke(tmp_path, entries):
    return CliRunner().invoke(
        app, ["check", "--baseline", str(baseline(tmp_path, entries)), "--results", str(tmp_path)]
    )


def test_check_within_tolerance_passes(tmp_path):
    fill(tmp_path)
    out = invoke(tmp_path, [entry("float", "w4", 0.21), entry("rand", "w4", 0.22)])
    assert out.exit_code == 0, out.output
    assert "2 checked, 0 failing" in out.output


def test_check_regression_fails_naming_it(tmp_path):
    fill(tmp_path)
    out = invoke(tmp_path, [entry("float", "w4", 0.20), entry("rand", "w4", 0.18)])
    assert out.exit_code == 1
    # values and tolerance as the leaderboard shows them; this file has no format: /1, 0.02 = 2 points
    assert "REGRESSION  s/rand@w4 wer: 23.00 vs baseline 18.00 WER % (+5.00, tolerance 2.00)" in out.output


def test_check_improvement_is_reported_not_failed(tmp_path):
    fill(tmp_path)
    out = invoke(tmp_path, [entry("rand", "w4", 0.40)])
    assert out.exit_code == 0 and "IMPROVEMENT" in out.output


def test_check_missing_result_fails(tmp_path):
    fill(tmp_path)
    out = invoke(tmp_path, [entry("pqn", "w4", 0.2)])
    assert out.exit_code == 1 and "MISSING     s/pqn@w4" in out.output


def test_check_bad_baseline_file_exits_2(tmp_path):
    p = tmp_path / "b.json"
    p.write_text("{not json")
    out = CliRunner().invoke(app, ["check", "--baseline", str(p), "--results", str(tmp_path)])
    assert out.exit_code == 2 and "invalid JSON" in out.output


def test_baseline_written_from_index_round_trips(tmp_path):
    fill(tmp_path)
    out_file = tmp_path / "new.json"
    r = CliRunner().invoke(
        app,
        [
            "baseline",
            "update",
            "s",
            "--out",
            str(out_file),
            "--tolerance",
            "0.01",
            "--results",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    out = CliRunner().invoke(app, ["check", "--baseline", str(out_file), "--results", str(tmp_path)])
    assert out.exit_code == 0 and "5 checked, 0 failing" in out.output


def test_a_changed_recipe_supersedes_older_runs_instead_of_counting_as_seeds(tmp_path):
    old = [row("rand", p, 0.50) for p in ("float", "w4")]
    record_results(tmp_path, old)
    new = [
        {**row("rand", p, 0.10), "run_id": "rand-0-new", "created": time.time() + 10} for p in ("float", "w4")
    ]
    record_results(tmp_path, new)
    latest = read_results(tmp_path)
    assert set(latest.run_id) == {"rand-0-new"} and list(latest.value) == [0.10, 0.10]
    assert len(read_results(tmp_path, latest_only=False)) == 4
    board = leaderboard(latest[latest.headline == 1])
    assert board.table.loc["rand", "w4"].startswith("10.00")


def test_a_suite_over_two_models_gives_each_its_own_rows_and_baseline(tmp_path):
    """A grid over model.arch (CTC beside a transducer): same technique and seed, two models. Both
    stay (neither supersedes the other) and each is compared with its own float model."""
    rows = []
    for model, base, rand in (("conformer-ctc", 0.30, 0.32), ("conformer-transducer", 0.50, 0.56)):
        for technique, value in (("float", base), ("rand", rand)):
            r = row(technique, "w4", value) | {"run_id": f"{technique}-{model}", "model": model}
            rows += [r, r | {"precision": "float", "value": base}]
    record_results(tmp_path, rows)
    df = read_results(tmp_path)
    assert len(df) == 8 and set(df.model) == {"conformer-ctc", "conformer-transducer"}
    board = leaderboard(df)
    assert board.table.loc["s [conformer-ctc]: rand", "w4"] == "32.00 (+2.00)"
    assert board.table.loc["s [conformer-transducer]: rand", "w4"] == "56.00 (+6.00)"


def test_an_index_written_before_the_model_column_opens_and_reads(tmp_path):
    import sqlite3

    def sql_type(value):
        return {float: "REAL", int: "INTEGER"}.get(type(value), "TEXT")

    columns = ", ".join(f"{c} {sql_type(v)}" for c, v in row("float", "w4", 0.2).items())
    old_schema = f"CREATE TABLE results ({columns}, PRIMARY KEY (run_id, suite, precision, metric))"
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        con.execute(old_schema)
        r = row("float", "w4", 0.2)
        con.execute(f"INSERT INTO results VALUES ({','.join('?' * len(r))})", tuple(r.values()))
    record_results(tmp_path, [row("rand", "w4", 0.25) | {"model": "conformer-ctc"}])
    df = read_results(tmp_path)
    assert sorted(df.model) == ["", "conformer-ctc"]
    # an older row is not a second model: one section, rows labelled as before
    assert list(leaderboard(df).table.index) == ["float", "rand", "packed size"]


def test_a_grid_over_another_key_keeps_its_points_apart(tmp_path):
    """A grid over train.lr gives runs of the same technique, bits and seed: the index keeps them
    all and the leaderboard shows one section per grid point, never their average."""
    recipe = tmp_path / "r.yaml"
    tiny_recipe(recipe)
    recipe.write_text(
        recipe.read_text() + "grid: {train.lr: [0.001, 0.003], quant.technique: [float, rand]}\n"
    )
    suite = load_suite(recipe)
    assert [r.variant for r in suite.runs] == ["train.lr=0.001"] * 2 + ["train.lr=0.003"] * 2
    rows = []
    for r, value in zip(suite.runs, (0.20, 0.30, 0.40, 0.50), strict=True):
        rows.append({**row(r.quant.technique, "float", value), "run_id": r.run_id, "variant": r.variant})
    record_results(tmp_path, rows)
    df = read_results(tmp_path)
    assert len(df) == 4
    board = leaderboard(df)
    assert board.values.suite.nunique() == 2
    assert sorted(board.values["mean"]) == [0.20, 0.30, 0.40, 0.50]
    assert "s [train.lr=0.003]" in set(board.values.suite)


def test_check_shows_an_mt_metric_in_bleu_points_and_an_asr_one_in_wer_points(tmp_path):
    """The same tolerance number means the same thing for both tasks in a qbench-baseline/2
    file: 1.5 points of WER, 1.5 points of BLEU."""
    mt = {**row("rand", "w4", 27.0, suite="t"), "task": "mt", "metric": "bleu", "higher_is_better": 1}
    record_results(tmp_path, [row("rand", "w4", 0.215), mt])
    entries = [
        entry("rand", "w4", 0.20, tol=1.5),
        {**entry("rand", "w4", 28.0, tol=1.5), "suite": "t", "metric": "bleu"},
    ]
    p = tmp_path / "b2.json"
    p.write_text(
        json.dumps({"format": "qbench-baseline/2", "tolerance_units": "display", "entries": entries})
    )
    out = CliRunner().invoke(app, ["check", "--baseline", str(p), "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "OK          s/rand@w4 wer: 21.50 vs baseline 20.00 WER % (+1.50, tolerance 1.50)" in out.output
    assert "OK          t/rand@w4 bleu: 27.00 vs baseline 28.00 BLEU (-1.00, tolerance 1.50)" in out.output
