"""Bad input and bad state at the command line: one plain line naming what and where, a clear exit
code, no traceback, nothing written."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.io import CorruptFile, atomic_torch_save, atomic_write_text, load_checkpoint
from tests.conftest import tiny_recipe
from tests.test_report import fill


def cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_error_line(out) -> str:
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.output
    assert "Traceback" not in out.output
    return lines[0]


def test_version():
    out = cli("--version")
    assert out.exit_code == 0 and out.output.startswith("qbench ")


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--device", "tpu9"], {}, "--device tpu9: expected auto, cpu, cuda or cuda:N"),
        (["--device", "mps"], {}, "--device mps: qbench trains on cpu or cuda"),
        ([], {"QBENCH_THREADS": "abc"}, "QBENCH_THREADS='abc': expected a whole number"),
        ([], {"QBENCH_THREADS": "0"}, "QBENCH_THREADS='0'"),
    ],
)
def test_bad_device_or_threads_exit_2_before_anything_is_written(tmp_path, args, env, expected):
    recipe = tiny_recipe(tmp_path / "r.yaml")
    results = tmp_path / "results"
    out = cli("run", recipe, "--results", results, *args, env=env)
    assert out.exit_code == 2
    assert expected in one_error_line(out)
    assert not (results / "runs").exists()


def test_an_error_naming_a_path_with_brackets_prints_it_as_it_is(tmp_path):
    odd = tmp_path / "[/x]" / "[red]r.yaml"
    out = cli("run", odd, "--results", tmp_path / "results")
    assert out.exit_code == 2
    assert f"{odd}: recipe file not found" in one_error_line(out)


def test_compare_names_the_suites_and_metrics_that_exist(tmp_path):
    fill(tmp_path)  # suite "s", metric wer
    out = cli("compare", "--suite", "ss", "--results", tmp_path)
    assert out.exit_code == 1
    assert "no suite 'ss' in the results (suites: s); did you mean 's'?" in one_error_line(out)
    out = cli("compare", "--suite", "s", "--metric", "bleu", "--results", tmp_path)
    assert out.exit_code == 1
    assert "suite 's' has no metric 'bleu' (metrics: wer)" in one_error_line(out)
    out = cli("compare", "--results", tmp_path / "empty")
    assert out.exit_code == 1 and "no results yet: run a recipe first" in one_error_line(out)


def test_result_files_get_the_mode_of_files_written_with_open(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    atomic_torch_save(tmp_path / "c.pt", {"x": torch.zeros(1)})
    with open(tmp_path / "log.txt", "w") as f:
        f.write("x")
    expected = stat.S_IMODE(os.stat(tmp_path / "log.txt").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == expected
    assert stat.S_IMODE(os.stat(tmp_path / "c.pt").st_mode) == expected


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_a_corrupt_checkpoint_names_the_file_and_what_to_do(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CorruptFile) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: unreadable checkpoint") and "delete it" in message
    assert "weights_only" not in message


def test_a_checkpoint_that_is_not_a_dict_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save([1, 2], path)
    with pytest.raises(CorruptFile, match="not a qbench checkpoint"):
        load_checkpoint(Path(path))


def test_compare_reads_the_index_without_changing_it(tmp_path):
    fill(tmp_path)
    index = tmp_path / "index.sqlite"
    before = index.read_bytes()
    assert cli("compare", "--results", tmp_path).exit_code == 0
    assert index.read_bytes() == before


@pytest.mark.parametrize("content", [b"garbage that is not sqlite" * 100, b""])
def test_a_corrupt_or_foreign_index_is_one_line_and_exit_2(tmp_path, content):
    index = tmp_path / "index.sqlite"
    if content:
        index.write_bytes(content)
    else:  # a SQLite database of something else
        con = sqlite3.connect(index)
        con.execute("CREATE TABLE other (x)")
        con.commit()
        con.close()
    before = index.read_bytes()
    out = cli("compare", "--results", tmp_path)
    assert out.exit_code == 2
    assert "index.sqlite: not a readable qbench results index" in one_error_line(out)
    assert index.read_bytes() == before


def test_a_results_path_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    recipe = tiny_recipe(tmp_path / "r.yaml")
    results = tmp_path / "results"
    results.write_text("not a folder")
    out = cli("run", recipe, "--results", results, "--no-progress")
    assert out.exit_code == 2
    assert str(results) in one_error_line(out)


def test_results_refuses_to_overwrite_a_committed_page_without_force(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    page = tmp_path / "RESULTS.md"
    page.write_text("committed\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "RESULTS.md"], check=True)
    fill(tmp_path)
    out = cli("results", "--suite", "s", "--out", page, "--no-plot", "--results", tmp_path)
    assert out.exit_code == 2 and "--force" in one_error_line(out)
    assert page.read_text() == "committed\n"
    out = cli("results", "--suite", "s", "--out", page, "--no-plot", "--force", "--results", tmp_path)
    assert out.exit_code == 0, out.output
    assert page.read_text() != "committed\n"


def test_a_truncated_status_file_is_one_line_and_exit_2(tmp_path):
    name = "status.json"
    recipe = tiny_recipe(tmp_path / "r.yaml", steps=2, warmup=1)
    results = tmp_path / "results"
    assert cli("run", recipe, "--results", results, "--no-progress").exit_code == 0
    (run_dir,) = (results / "runs" / "tiny").glob("rand-*")
    (run_dir / name).write_text('{"state": "do')
    out = cli("run", recipe, "--results", results, "--no-progress")
    assert out.exit_code == 2 and "Traceback" not in out.output
    last = out.output.strip().splitlines()[-1]
    assert last.startswith(f"error: {run_dir / name}: unreadable (JSONDecodeError); delete it"), out.output


def test_an_unparsable_launcher_option_is_one_line_and_exit_2(tmp_path):
    recipe = tiny_recipe(tmp_path / "r.yaml")
    out = cli(
        "run", recipe, "--results", tmp_path / "results", "--launcher", "local", "--launcher-option", "x=[1"
    )
    assert out.exit_code == 2
    assert "--launcher-option 'x=[1': not a YAML value" in one_error_line(out)
