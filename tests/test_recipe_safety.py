"""Malformed recipes and --set values: each is refused before anything runs, with exit code 2, one
line naming the file and line (or the --set), no traceback, and nothing written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import load_suite

CI = (Path(__file__).resolve().parent.parent / "recipes" / "ci.yaml").read_text()

ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

ALIAS_CHAIN = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 60))

CASES = {
    # name: (recipe text, --set values, what the one line must contain)
    "duplicate section": (CI + "train:\n  steps: 5\n", [], "train: given twice (first at line"),
    "duplicate key": (
        CI.replace("  steps: 600\n", "  steps: 600\n  steps: 700\n"),
        [],
        "train.steps: given twice",
    ),
    "alias bomb": (ALIAS_BOMB + "name: x\n", [], "expands to more than 100000 values"),
    "alias chain": (ALIAS_CHAIN + "name: x\n", [], "expands to deeper than 50 levels"),
    "deep nesting": ("name: x\nk: " + "[" * 5000 + "]" * 5000 + "\n", [], "nested more than"),
    "seed true": (CI.replace("seed: 0", "seed: true"), [], "seed: Input should be a valid integer"),
    "bits true": (CI, ["quant.bits=true"], "--set quant.bits=true: quant.bits:"),
    "steps 1e30": (CI, ["train.steps=" + "1" + "0" * 30], "train.steps: Input should be less than or equal"),
    "batch 1e12": (CI, ["train.batch_size=1000000000000"], "train.batch_size: Input should be less than"),
    "eval batch 1e12": (CI, ["eval.batch_size=1000000000000"], "eval.batch_size: Input should be less than"),
    "unparsable set": (CI, ["train.steps=[1"], "--set train.steps=[1: not a YAML value"),
    "set on a grid key, invalid": (
        CI,
        ["quant.technique=bogus"],
        "--set quant.technique=bogus: quant.technique",
    ),
    "deep set": (CI, ["train.steps=" + "[" * 100 + "]" * 100], "--set train.steps="),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_recipe_exits_2_with_one_line_and_writes_nothing(tmp_path, name):
    text, sets, expected = CASES[name]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    results = tmp_path / "results"
    args = ["run", str(recipe), "--results", str(results), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    started = time.monotonic()
    out = CliRunner().invoke(app, args)
    assert time.monotonic() - started < 5
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.output
    assert "Traceback" not in out.output
    assert not results.exists()


def test_alias_bomb_fails_in_under_a_second(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(ALIAS_BOMB + "name: x\n")
    started = time.monotonic()
    with pytest.raises(Exception, match="expands to more than 100000 values"):
        load_suite(recipe)
    assert time.monotonic() - started < 1


def test_set_of_a_grid_key_replaces_that_axis(tmp_path):
    recipe = tmp_path / "ci.yaml"
    recipe.write_text(CI)
    assert [r.quant.technique for r in load_suite(recipe).runs] == ["float", "ptq", "rand"]
    assert [r.quant.technique for r in load_suite(recipe, ["quant.technique=rand"]).runs] == ["rand"]
    grid = load_suite(recipe, ["grid.quant.technique=[float,ste]"]).runs
    assert [r.quant.technique for r in grid] == ["float", "ste"]


@pytest.mark.parametrize("name", ["../../evil", "a/b", ".hidden", "x" * 65])
def test_a_precision_name_that_would_leave_the_run_folder_is_refused(tmp_path, name):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CI + f"precisions:\n  {name!r}: {{'*': 8}}\n")
    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert out.exit_code == 2, out.output
    assert "becomes a file name" in out.output and len(out.output.strip().splitlines()) == 1
    assert not results.exists()


def test_a_suite_name_of_300_characters_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(CI.replace("name: ci", "name: " + "n" * 300))
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(tmp_path / "results")])
    assert out.exit_code == 2 and "name: String should have at most 100 characters" in out.output


def test_unusable_data_stops_the_suite_before_anything_is_written(tmp_path):
    manifest = tmp_path / "train.tsv"
    manifest.write_text("missing.wav\thello\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: m\ntask: asr\n"
        f"data: {{source: manifest, train: {manifest}, valid: {manifest}, test: {manifest}}}\n"
        "model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3}\ntrain: {steps: 2}\n"
    )
    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert out.exit_code == 2, out.output
    assert "missing.wav" in out.output and "Traceback" not in out.output
    assert not (results / "runs").exists()
