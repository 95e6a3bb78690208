"""`qbench pilot`: the candidate settings, and the command end to end on a tiny suite."""

import json

from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.run.pilot import candidates
from qbench.store import read_suite_record
from tests.conftest import tiny_recipe


def test_candidates_mildest_first_with_the_overrides_that_run_them():
    got = candidates(4, "per-channel")
    assert [c.label for c in got] == ["w4", "w4 per-tensor", "w3", "w2"]
    assert got[0].overrides == ()
    assert got[1].overrides == ("quant.granularity=per-tensor",)
    assert got[2].overrides == ("quant.bits=3", "eval.precisions=[float,w8,w3]")
    # a per-tensor recipe: w4 per-tensor is its own setting, listed once
    assert [c.label for c in candidates(4, "per-tensor")] == [
        "w4 per-tensor",
        "w3 per-tensor",
        "w2 per-tensor",
    ]
    group = candidates(4, "per-group-32")
    assert group[1].overrides == ("quant.granularity=per-tensor", "quant.group_size=null")


def test_pilot_trains_the_float_run_once_and_records_its_choice(tmp_path, results):
    recipe = tiny_recipe(tmp_path / "tiny.yaml", technique="float")
    args = ["pilot", str(recipe), "--results", str(results), "--no-progress"]
    out = CliRunner().invoke(app, args)
    record = read_suite_record(results, "tiny", "pilot")
    assert record is not None, out.output
    assert [c["setting"] for c in record["candidates"]] == ["w4", "w4 per-tensor", "w3", "w2"]
    assert record["split"] == "valid" and record["metric"] == "wer"
    first = next((c["setting"] for c in record["candidates"] if c["loss_se"] >= 5), None)
    assert record["chosen"] == first  # the mildest setting with 5 standard errors of loss
    assert out.exit_code == (0 if first else 1), out.output
    assert ("chosen: " in out.output) == bool(first)
    # the float run is the suite's own: qbench run skips it
    again = CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert again.exit_code == 0 and "done, skipped" in again.output
    assert json.loads((results / "runs" / "tiny" / "pilot.json").read_text()) == record
    # the suite's results page says what the pilot measured and chose
    page = tmp_path / "page.md"
    made = CliRunner().invoke(
        app, ["results", "--suite", "tiny", "--out", str(page), "--no-plot", "--results", str(results)]
    )
    assert made.exit_code == 0, made.output
    text = page.read_text()
    assert (
        "Pilot (`qbench pilot`, valid split" in text and f"chosen: {first or 'none (no headroom)'}." in text
    )
    assert "### Gates" in text and "| headroom@w4 |" in text


def test_pilot_needs_a_float_run(tmp_path, results):
    recipe = tiny_recipe(tmp_path / "tiny.yaml", technique="ste")
    out = CliRunner().invoke(app, ["pilot", str(recipe), "--results", str(results)])
    assert out.exit_code == 2 and "has no float run to pilot on" in out.output
    assert not (results / "runs").exists()
