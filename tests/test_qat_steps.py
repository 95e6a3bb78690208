"""`quant.qat_steps`: QAT as fine-tuning of the finished float model. The float run's training is
the QAT runs' start (trained once, reused), the float steps follow float's schedule exactly, and
a run alone gives what it gives after the float run."""

import math

import pytest
import torch

from qbench.config import RecipeError, float_training_key, load_suite, total_steps, training_key
from qbench.io import load_checkpoint
from qbench.run.engine import lr_lambda, run_recipe

CPU = torch.device("cpu")

SUITE = """\
name: tiny-ft
task: asr
seed: 0
data: {source: synthetic-speech, train_utterances: 16, valid_utterances: 4, test_utterances: 6, workers: 1}
model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3}
quant: {technique: float, bits: 4, qat_steps: 3, qat_lr: 1.0e-3}
train: {steps: 5, batch_size: 4, lr: 3.0e-3, warmup: 2, checkpoint_every: 4}
eval: {precisions: [float, w4], batch_size: 4}
grid: {quant.technique: [float, ste, rand]}
"""


def _suite(tmp_path, *sets):
    path = tmp_path / "ft.yaml"
    path.write_text(SUITE)
    return load_suite(path, list(sets)).runs


def test_qat_runs_start_from_the_float_runs_training(tmp_path, results, capsys):
    float_run, ste, rand = _suite(tmp_path)
    assert float_training_key(ste) == float_training_key(rand) == training_key(float_run)
    assert total_steps(ste) == 8 and total_steps(float_run) == 5
    f_float, f_ste = lr_lambda(float_run), lr_lambda(ste)
    assert [f_ste(s) for s in range(5)] == [f_float(s) for s in range(5)]  # float's schedule
    assert math.isclose(f_ste(5), 1.0e-3 / 3.0e-3)  # the QAT restart
    run_recipe(float_run, "tiny-ft", results, CPU, progress=False)
    capsys.readouterr()
    shared = run_recipe(ste, "tiny-ft", results, CPU, progress=False)
    assert "reused shared finished float training (5 steps)" in capsys.readouterr().err
    assert shared["steps"] == 8

    alone = results.parent / "alone"  # no float run before: the QAT run trains the float steps itself
    (alone / "cache").mkdir(parents=True)
    for name in ("synthetic-speech", "features"):
        (alone / "cache" / name).symlink_to((results / "cache" / name).resolve(), target_is_directory=True)
    run_recipe(ste, "tiny-ft", alone, CPU, progress=False)
    weights = [
        load_checkpoint(root / "runs" / "tiny-ft" / ste.run_id / "checkpoint.pt")["model"]
        for root in (results, alone)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (alone / "cache" / "shared" / f"final-{training_key(float_run)}.pt").is_file()  # and shares it


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["quant.qat_lr=null"], "qat_steps needs qat_lr"),
        (["quant.float_warmup_steps=2"], "unset float_warmup_steps"),
    ],
)
def test_qat_steps_settings_that_cannot_work_are_refused(tmp_path, sets, says):
    with pytest.raises(RecipeError, match=says):
        _suite(tmp_path, *sets)


def test_sweep_chooses_qat_lr_and_length_per_estimator_family_on_valid(tmp_path, results):
    import json

    from typer.testing import CliRunner

    from qbench.cli.main import app
    from qbench.store import read_results

    path = tmp_path / "ft.yaml"
    path.write_text(SUITE)
    args = ["sweep", str(path), "--qat-lr", "1e-3", "--qat-lr", "3e-3", "--qat-steps", "2"]
    out = CliRunner().invoke(app, [*args, "--results", str(results), "--no-progress"])
    assert out.exit_code == 0, out.output
    record = json.loads((results / "runs" / "tiny-ft" / "sweep.json").read_text())
    assert record["split"] == "valid" and set(record["families"]) == {"round-ste", "noise"}
    assert record["families"]["round-ste"]["techniques"] == ["ste"]
    assert record["families"]["noise"]["techniques"] == ["rand"]
    for family in record["families"].values():
        values = {c["qat_lr"]: c["value"] for c in family["candidates"]}
        assert family["best"]["qat_lr"] == min(values, key=values.get)  # WER: lower is better
        if family["chosen"] != family["best"]:  # only a setting the valid items cannot tell apart
            (other,) = [c for c in family["candidates"] if c["qat_lr"] == family["chosen"]["qat_lr"]]
            d = other["difference_from_best"]
            assert d is not None and d["low"] <= 0 <= d["high"]
        assert family["overrides"][1] == "quant.qat_steps=2"
    # the float model was trained once: 4 QAT runs, one float training among them
    logs = list((results / "runs" / "tiny-ft-sweep").glob("*/train.log"))
    assert len(logs) == 4
    assert sum("from scratch" in f.read_text() for f in logs) == 1
    assert set(read_results(results).suite) == {"tiny-ft-sweep"}

    bad = CliRunner().invoke(app, [*args, "--set", "quant.qat_steps=0", "--results", str(results)])
    assert bad.exit_code == 2 and "quant.qat_steps" in bad.output


def test_from_sweep_gives_each_family_its_chosen_budget(tmp_path, results):
    """`qbench run --from-sweep`: every QAT run takes its estimator family's chosen budget from
    the sweep's record; float and ptq keep theirs; without a record the run is refused."""
    from typer.testing import CliRunner

    from qbench.cli.main import app
    from qbench.run.sweep import with_budgets
    from qbench.store import write_suite_record

    runs = _suite(tmp_path)
    record = {
        "families": {
            "round-ste": {"chosen": {"qat_lr": 2e-4, "qat_steps": 2}},
            "noise": {"chosen": {"qat_lr": 5e-4, "qat_steps": 1}},
        }
    }
    got = {r.quant.technique: r for r in with_budgets(runs, record)}
    assert (got["ste"].quant.qat_lr, got["ste"].quant.qat_steps) == (2e-4, 2)
    assert (got["rand"].quant.qat_lr, got["rand"].quant.qat_steps) == (5e-4, 1)
    assert got["float"].run_id == runs[0].run_id
    assert got["ste"].run_id != runs[1].run_id
    with pytest.raises(ValueError, match="no noise budget"):
        with_budgets(runs, {"families": {"round-ste": record["families"]["round-ste"]}})

    path = tmp_path / "ft.yaml"
    refused = CliRunner().invoke(app, ["run", str(path), "--from-sweep", "--results", str(results)])
    assert refused.exit_code == 2 and "qbench sweep" in refused.output
    assert not (results / "runs" / "tiny-ft").exists() or not any((results / "runs" / "tiny-ft").iterdir())
    write_suite_record(results, "tiny-ft", "sweep", {"families": {"noise": record["families"]["noise"]}})
    partial = CliRunner().invoke(app, ["run", str(path), "--from-sweep", "--results", str(results)])
    assert partial.exit_code == 2 and "no round-ste budget" in partial.output


def test_a_suite_run_from_its_sweep_says_so_on_its_results_page(tmp_path, results):
    """sweep, then `run --from-sweep`: the QAT runs take the chosen budget and reuse the float
    training; the results page shows the sweep's choice and the fine-tuning schedule."""
    from typer.testing import CliRunner

    from qbench.cli.main import app
    from qbench.store import read_suite_record

    path = tmp_path / "ft.yaml"
    path.write_text(SUITE)
    common = ["--results", str(results), "--no-progress"]
    sweep = ["sweep", str(path), "--qat-lr", "1e-3", "--qat-lr", "3e-3", "--qat-steps", "2", *common]
    assert CliRunner().invoke(app, sweep).exit_code == 0
    chosen = {
        f: rec["chosen"]
        for f, rec in (read_suite_record(results, "tiny-ft", "sweep") or {})["families"].items()
    }
    out = CliRunner().invoke(app, ["run", str(path), "--from-sweep", *common])
    assert out.exit_code == 0, out.output
    configs = {
        d.name.split("-")[0]: load_suite(d / "config.yaml").runs[0]
        for d in (results / "runs" / "tiny-ft").iterdir()
        if (d / "config.yaml").is_file()
    }
    assert (configs["ste"].quant.qat_lr, configs["ste"].quant.qat_steps) == (
        chosen["round-ste"]["qat_lr"],
        chosen["round-ste"]["qat_steps"],
    )
    assert configs["rand"].quant.qat_lr == chosen["noise"]["qat_lr"]
    logs = [p.read_text() for p in (results / "runs" / "tiny-ft").glob("*/train.log")]
    assert not any("from scratch" in text for text in logs)  # the sweep's float training, reused
    page = tmp_path / "page.md"
    made = CliRunner().invoke(
        app, ["results", "--suite", "tiny-ft", "--out", str(page), "--no-plot", *common[:2]]
    )
    assert made.exit_code == 0, made.output
    text = page.read_text()
    assert "QAT budget (`qbench sweep`, valid split" in text
    assert "float trained once, then QAT fine-tunes it (2 steps from lr " in text
