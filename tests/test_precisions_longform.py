"""One model at many precisions (relative-to-best board, auto maps), long-form WER, cell labels."""

import json
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import RecipeError, load_suite
from qbench.quant.labels import cell, technique_label, topk_options
from qbench.report.board import by_length, leaderboard
from qbench.run.engine import run_recipe
from qbench.store import read_results, record_results

CPU = torch.device("cpu")


def _row(technique, precision, value, metric="wer", seed=0):
    return {
        "run_id": f"{technique}-{seed}",
        "suite": "s",
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


def test_relative_to_best_measures_each_row_from_its_own_best(tmp_path):
    rows = [_row("float", p, v) for p, v in (("float", 0.20), ("w8", 0.21), ("w4", 0.30))]
    rows += [_row("rand", p, v) for p, v in (("float", 0.26), ("w8", 0.25), ("w4", 0.27), ("mix", 0.255))]
    record_results(tmp_path, rows)
    board = leaderboard(read_results(tmp_path), relative_to_best=True)
    t = board.table
    assert t.loc["rand", "w8"] == "25.00 (best)"
    assert t.loc["rand", "w4"] == "27.00 (+2.00)"
    assert t.loc["rand", "mix"] == "25.50 (+0.50)"
    assert t.loc["float", "float"] == "20.00 (best)" and t.loc["float", "w4"] == "30.00 (+10.00)"
    out = CliRunner().invoke(
        app, ["compare", "--results", str(tmp_path), "--relative-to-best", "--format", "markdown"]
    )
    assert out.exit_code == 0, out.output
    assert "25.00 (best)" in out.output and "best precision of the same row" in out.output


def test_by_length_puts_long_form_wer_in_columns(tmp_path):
    rows = []
    for tech, base in (("float", 0.10), ("rand", 0.12)):
        rows += [
            _row(tech, "w4", base),
            _row(tech, "w4", base + 0.05, "wer@x4"),
            _row(tech, "w4", base + 0.1, "wer@x8"),
        ]
        rows += [_row(tech, "w4", 0.5, "cer"), _row(tech, "float", base - 0.01)]
    record_results(tmp_path, rows)
    view = by_length(read_results(tmp_path), "w4")
    board = leaderboard(view)
    assert list(board.table.columns) == ["w4 x1", "w4 x4", "w4 x8"]
    assert board.table.loc["rand", "w4 x8"].startswith("22.00")
    out = CliRunner().invoke(app, ["compare", "--results", str(tmp_path), "--by-length", "w4", "-f", "csv"])
    assert out.exit_code == 0, out.output
    assert "w4 x4" in out.output
    bad = CliRunner().invoke(app, ["compare", "--results", str(tmp_path), "--by-length", "w8"])
    assert bad.exit_code == 1 and "eval.long_form" in bad.output


def test_cell_labels_keep_custom_cells_and_rand_sweeps_apart(tmp_path):
    text = """\
name: cells
task: asr
data: {train_utterances: 4, valid_utterances: 2, test_utterances: 2}
model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3}
quant: {technique: rand, bits: 4}
grid:
  quant.technique: [pqn-sg, pqn, lsq, pact, clip, rand]
  quant.estimator: [round-ste, noise]
"""
    (tmp_path / "c.yaml").write_text(text)
    labels = sorted(technique_label(r) for r in load_suite(tmp_path / "c.yaml").runs)
    assert labels == sorted(
        [
            "absmax-sg+round-ste",
            "pqn-sg",
            "ste",
            "pqn",
            "lsq",
            "learned+noise",
            "pact",
            "pact+noise",
            "clip",
            "mse-clip+noise",
            "rand-ste",
            "rand",
        ]
    )
    cells = {cell(lab) for lab in labels}
    assert len(cells) == 12  # every (scale, estimator) cell once
    assert cell("pqn-sg") == ("absmax-sg", "noise") and cell("clip") == ("mse-clip", "round-ste")
    r = load_suite(tmp_path / "c.yaml", ["grid=", "quant.k=3", "quant.p=4"]).runs[0]
    assert technique_label(r) == "rand(k=3,p=4)"
    assert topk_options("rand(k=4,p=4)") == {"k": 4, "p": 4.0, "c": 1.0} and cell("rand(k=4,p=4)") == cell(
        "rand"
    )


TINY = """\
name: tinylong
task: asr
seed: 0
data: {source: synthetic-speech, train_utterances: 16, valid_utterances: 4, test_utterances: 6, workers: 1}
model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3, dropout: 0.1}
quant: {technique: rand, bits: 4, float_warmup_steps: 4}
train: {steps: 8, batch_size: 4, lr: 3.0e-3, warmup: 2, checkpoint_every: 8, log_every: 1}
eval:
  precisions: [w4, head8, auto5]
  batch_size: 4
  long_form: [2, 3]
precisions:
  head8: {default: 4, "head.*": 8}
  auto5: {auto: {budget_bits: 5.0, sensitivity: hessian, samples: 2, batches: 1}}
"""


def test_run_records_long_form_and_auto_map(tmp_path, results):
    (tmp_path / "r.yaml").write_text(TINY)
    recipe = load_suite(tmp_path / "r.yaml").runs[0]
    run_recipe(recipe, "tinylong", results, CPU, progress=False)
    run_dir = results / "runs" / "tinylong" / recipe.run_id
    report = json.loads((run_dir / "precision_maps" / "auto5.json").read_text())
    assert report["hvp"] == "finite-difference"  # CTC has no double backward
    assert report["average_bits"] <= 5.0
    df = read_results(results)
    assert set(df.precision) == {"w4", "head8", "auto5"}
    assert {"wer", "cer", "wer@x2", "cer@x2", "wer@x3"} <= set(df.metric)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precisions"]["w4"]["utterances@x2"] == 3  # 6 test utterances, 2 per recording
    assert metrics["precisions"]["w4"]["utterances@x3"] == 2
    # inspect shows the map the run chose
    out = CliRunner().invoke(app, ["quant", "inspect", str(tmp_path / "r.yaml"), "--results", str(results)])
    assert out.exit_code == 0, out.output
    assert "auto5" in out.output and "chosen by" in out.output


def test_long_form_is_asr_only(tmp_path):
    (tmp_path / "m.yaml").write_text("name: m\ntask: mt\neval: {long_form: [4]}\n")
    try:
        load_suite(tmp_path / "m.yaml")
    except RecipeError as e:
        assert "long_form" in str(e) and "asr" in str(e)
    else:
        raise AssertionError("long_form accepted for mt")
    (tmp_path / "a.yaml").write_text("name: a\ntask: asr\neval: {long_form: [1]}\n")
    try:
        load_suite(tmp_path / "a.yaml")
    except RecipeError as e:
        assert "long_form" in str(e)
    else:
        raise AssertionError("long_form 1 accepted")
    assert Path(tmp_path / "a.yaml").is_file()
