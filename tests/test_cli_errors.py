"""The command line's own behaviour around errors: --version, compare naming what exists, file
modes, checkpoint messages, a read-only index, and --force for committed pages (the malformed
inputs themselves are in test_malformed_inputs.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.io import CorruptFile, atomic_torch_save, atomic_write_text, load_checkpoint
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
