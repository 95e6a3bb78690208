"""Provenance of published tables: `qbench results` says which commit its runs come from, refuses
to combine runs of several commits unless --allow-mixed-commits (and then says so on the page and
above each table), writes the per-seed CSV beside the page, and rewrites a README's marked block
with the generated table, refusing a file without the markers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.report.provenance import (
    UNKNOWN,
    MixedCommits,
    check_one_commit,
    commits_of,
    describe_commits,
    run_commit,
)
from qbench.report.results_page import PER_SEED_COLUMNS, find_block, per_seed_path, replace_block
from qbench.store import read_results, record_results
from tests.test_report import row

A = "a" * 40
B = "b" * 40
#: (technique, seed) of the runs every test makes
RUNS = [("float", 0), ("rand", 0), ("rand", 1)]
VALUES = {("float", "float"): 0.20, ("float", "w4"): 0.30, ("rand", "float"): 0.21, ("rand", "w4"): 0.23}


def make_runs(root: Path, commits: list[str | dict | None]) -> None:
    """The three RUNS of suite s, WER and CER at float and w4; run i's env.json records
    commits[i] (a dict: that env.json; None: no env.json at all)."""
    rows = []
    for (technique, seed), commit in zip(RUNS, commits, strict=True):
        run_dir = root / "runs" / "s" / f"{technique}-{seed}"
        run_dir.mkdir(parents=True)
        if commit is not None:
            env = commit if isinstance(commit, dict) else {"commit": commit, "python": "3.11"}
            (run_dir / "env.json").write_text(json.dumps(env))
        for precision in ("float", "w4"):
            value = VALUES[(technique, precision)] + 0.01 * seed
            r = row(technique, precision, value, seed=seed) | {"run_dir": str(run_dir)}
            rows += [r, r | {"metric": "cer", "value": value / 2, "headline": 0}]
    record_results(root, rows)


def cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(out) -> str:
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    return lines[0]


# ---------------------------------------------------------------- commits


def test_commits_of_counts_runs_not_rows_and_unknown_is_a_commit(tmp_path):
    make_runs(tmp_path, [A, A, None])
    df = read_results(tmp_path)
    assert len(df) == 12  # 3 runs x 2 precisions x 2 metrics
    assert commits_of(df) == {A: 2, UNKNOWN: 1}
    assert describe_commits(commits_of(df)) == "aaaaaaaaaa (2 runs), unknown (1 run)"


def test_a_run_without_a_commit_or_with_a_dirty_tree_is_unknown(tmp_path):
    for name, env in (("none", {"commit": None}), ("dirty", {"commit": A, "dirty": True}), ("bad", "{")):
        d = tmp_path / name
        d.mkdir()
        (d / "env.json").write_text(env if isinstance(env, str) else json.dumps(env))
        assert run_commit(d) == UNKNOWN, name
    assert run_commit(tmp_path / "missing") == UNKNOWN
    (tmp_path / "none" / "env.json").write_text(json.dumps({"commit": A}))
    assert run_commit(tmp_path / "none") == A


def test_check_one_commit_notes_one_commit_refuses_two_and_notes_them_when_allowed(tmp_path):
    make_runs(tmp_path / "one", [A, A, A])
    assert (
        check_one_commit(read_results(tmp_path / "one"), False)
        == "3 run(s), all from qbench commit aaaaaaaaaa."
    )
    make_runs(tmp_path / "two", [A, B, A])
    df = read_results(tmp_path / "two")
    with pytest.raises(MixedCommits, match=r"2 commits: aaaaaaaaaa \(2 runs\), bbbbbbbbbb \(1 run\)") as err:
        check_one_commit(df, False)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    assert "--allow-mixed-commits" in str(err.value)
    note = check_one_commit(df, True)
    assert note.startswith("**Mixed commits**") and "aaaaaaaaaa (2 runs), bbbbbbbbbb (1 run)" in note
    assert check_one_commit(df.iloc[0:0], False) == ""


def test_a_run_folder_moved_since_indexing_is_found_under_the_results_root(tmp_path):
    make_runs(tmp_path, [A, A, A])
    df = read_results(tmp_path).assign(run_dir="/nowhere")
    assert commits_of(df) == {UNKNOWN: 3}
    assert commits_of(df, tmp_path) == {A: 3}


# ---------------------------------------------------------------- qbench results


def test_results_refuses_runs_of_two_commits_and_writes_nothing(tmp_path):
    make_runs(tmp_path, [A, B, A])
    page = tmp_path / "doc" / "RESULTS.md"
    out = cli("results", "--suite", "s", "--results", tmp_path, "--out", page, "--no-plot")
    assert out.exit_code == 2
    line = one_line(out)
    assert "2 commits: aaaaaaaaaa (2 runs), bbbbbbbbbb (1 run)" in line and "--allow-mixed-commits" in line
    assert not page.exists() and not per_seed_path(page).exists()


def test_results_refuses_a_known_commit_beside_an_unknown_one(tmp_path):
    make_runs(tmp_path, [A, None, A])
    out = cli("results", "--suite", "s", "--results", tmp_path, "--out", tmp_path / "R.md", "--no-plot")
    assert out.exit_code == 2 and "aaaaaaaaaa (2 runs), unknown (1 run)" in one_line(out)


def test_results_with_allow_mixed_commits_says_so_on_the_page_and_above_each_table(tmp_path):
    make_runs(tmp_path, [A, B, A])
    page = tmp_path / "RESULTS.md"
    out = cli(
        "results", "--suite", "s", "--results", tmp_path, "--out", page, "--no-plot", "--allow-mixed-commits"
    )
    assert out.exit_code == 0, out.output
    md = page.read_text()
    assert "--allow-mixed-commits`" in md  # the command that made it
    assert "- Commit: **Mixed commits** (--allow-mixed-commits)" in md
    assert md.count("> **Mixed commits**") == 2  # above the WER table and the CER table
    assert "aaaaaaaaaa (2 runs), bbbbbbbbbb (1 run)" in md


def test_results_of_one_commit_name_it(tmp_path):
    make_runs(tmp_path, [A, A, A])
    page = tmp_path / "RESULTS.md"
    out = cli("results", "--suite", "s", "--results", tmp_path, "--out", page, "--no-plot")
    assert out.exit_code == 0, out.output
    md = page.read_text()
    assert "- Commit: 3 run(s), all from qbench commit aaaaaaaaaa." in md
    assert "Mixed" not in md


def test_results_writes_the_per_seed_csv_beside_the_page(tmp_path):
    make_runs(tmp_path, [A, A, A])
    page = tmp_path / "doc" / "RESULTS.md"
    out = cli("results", "--suite", "s", "--results", tmp_path, "--out", page, "--no-plot")
    assert out.exit_code == 0, out.output
    csv = tmp_path / "doc" / "RESULTS-per-seed.csv"
    assert csv == per_seed_path(page) and csv.is_file()
    assert "[RESULTS-per-seed.csv](RESULTS-per-seed.csv)" in page.read_text()
    t = pd.read_csv(csv)
    assert tuple(t.columns) == PER_SEED_COLUMNS
    assert len(t) == 3 * 2 * 2  # one row per run x precision x metric
    assert set(t.commit) == {A}
    got = t[(t.technique == "rand") & (t.seed == 1) & (t.precision == "w4") & (t.metric == "wer")]
    assert got.value.tolist() == [pytest.approx(0.24)] and got.run_id.tolist() == ["rand-1"]
    # ordered as the leaderboard: float before rand, then seed, precision, metric
    assert t.technique.tolist()[:4] == ["float"] * 4 and t.seed.tolist()[4:8] == [0] * 4
    # --metric narrows the CSV as it narrows the tables
    out = cli("results", "--suite", "s", "--results", tmp_path, "--out", page, "--no-plot", "--metric", "cer")
    assert out.exit_code == 0, out.output
    assert set(pd.read_csv(csv).metric) == {"cer"}


# ---------------------------------------------------------------- README blocks

README = """# Project

Some text.

<!-- DEMO-BOARD -->
| technique | float |
|:--|:--|
| typed | by hand |
<!-- /DEMO-BOARD -->

More text, kept.
"""


def test_the_readme_block_is_rewritten_with_the_table_and_its_commands(tmp_path, monkeypatch):
    make_runs(tmp_path, [A, A, A])
    readme = tmp_path / "README.md"
    readme.write_text(README)
    monkeypatch.chdir(tmp_path)  # a default --out would land here, not in the repository
    args = ("results", "--suite", "s", "--results", tmp_path, "--readme", readme, "--marker", "DEMO-BOARD")
    out = cli(*args)
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "results").exists()  # with --readme and no --out, no page is written
    text = readme.read_text()
    before, rest = text.split("<!-- DEMO-BOARD -->\n")
    block, after = rest.split("<!-- /DEMO-BOARD -->\n")
    assert before == README.split("<!-- DEMO-BOARD -->")[0] and after == "\nMore text, kept.\n"
    assert "typed" not in block
    assert f"qbench results --suite s --readme {readme} --marker DEMO-BOARD" in block
    assert "`qbench compare --suite s --metric wer --format markdown`" in block
    assert "3 run(s), all from one qbench commit (each run's env.json names it)." in block
    board = cli("compare", "--results", tmp_path, "--suite", "s", "--metric", "wer", "-f", "markdown")
    assert board.stdout.strip() in block  # exactly what `qbench compare --format markdown` prints
    assert cli(*args).exit_code == 0 and readme.read_text() == text  # a rerun changes nothing


def test_a_readme_without_the_markers_is_refused_and_left_alone(tmp_path, monkeypatch):
    make_runs(tmp_path, [A, A, A])
    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    cases = {
        "no markers": "# Project\n",
        "no end": "<!-- DEMO-BOARD -->\nx\n",
        "end first": "<!-- /DEMO-BOARD -->\nx\n<!-- DEMO-BOARD -->\n",
        "twice": README + README,
        "other name": README.replace("DEMO-BOARD", "OTHER"),
    }
    for name, content in cases.items():
        readme.write_text(content)
        out = cli(
            "results", "--suite", "s", "--results", tmp_path, "--readme", readme, "--marker", "DEMO-BOARD"
        )
        assert out.exit_code == 2, (name, out.output)
        assert "<!-- DEMO-BOARD -->" in one_line(out) and "nothing written" in one_line(out), name
        assert readme.read_text() == content, name
    out = cli(
        "results", "--suite", "s", "--results", tmp_path, "--readme", tmp_path / "none.md", "--marker", "X"
    )
    assert out.exit_code == 2 and "none.md" in one_line(out)
    out = cli("results", "--suite", "s", "--results", tmp_path, "--readme", readme)
    assert out.exit_code == 2 and "--marker" in one_line(out)
    out = cli("results", "--suite", "s", "--results", tmp_path, "--readme", readme, "--marker", "a -->")
    assert out.exit_code == 2 and "--marker" in one_line(out)
    assert not (tmp_path / "results").exists()


def test_the_readme_block_refuses_mixed_commits_too(tmp_path):
    make_runs(tmp_path, [A, B, B])
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["results", "--suite", "s", "--results", tmp_path, "--readme", readme, "--marker", "DEMO-BOARD"]
    out = cli(*args)
    assert out.exit_code == 2 and "bbbbbbbbbb (2 runs), aaaaaaaaaa (1 run)" in one_line(out)
    assert readme.read_text() == README
    assert cli(*args, "--allow-mixed-commits").exit_code == 0
    assert "**Mixed commits**" in readme.read_text()


def test_the_repositorys_readme_block_is_found_in_its_marker_style():
    """README.md's demo board is delimited as this rewrites it (read here, never written)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = find_block(text, "DEMO-BOARD")
    assert start < end
    rewritten = replace_block(text, "DEMO-BOARD", "| new |")
    lines = rewritten.splitlines()
    assert lines[start] == "<!-- DEMO-BOARD -->" and lines[start + 1 : start + 3] == [
        "| new |",
        "<!-- /DEMO-BOARD -->",
    ]
    assert rewritten.splitlines()[: start + 1] == text.splitlines()[: start + 1]
