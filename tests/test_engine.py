"""The engine end to end on a tiny model: results, resume after a kill, sharing, NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import load_suite
from qbench.run.engine import TrainingDiverged, run_recipe
from qbench.store import read_results
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")


def results_beside(results, root):
    """Another results root sharing only the data caches: training there starts from nothing."""
    (root / "cache").mkdir(parents=True)
    for name in ("synthetic-speech", "features"):
        (root / "cache" / name).symlink_to((results / "cache" / name).resolve())
    return root


def metrics_of(results, recipe):
    return json.loads((results / "runs" / "tiny" / recipe.run_id / "metrics.json").read_text())


def test_run_writes_run_dir_and_index(tmp_path, results):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml")).runs[0]
    m = run_recipe(recipe, "tiny", results, CPU, progress=False)
    run = results / "runs" / "tiny" / recipe.run_id
    for f in (
        "config.yaml",
        "metrics.json",
        "env.json",
        "status.json",
        "checkpoint.pt",
        "train.log",
        "hyp/float.tsv",
        "hyp/w8.tsv",
        "hyp/w4.tsv",
    ):
        assert (run / f).is_file(), f
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert set(m["precisions"]) == {"float", "w8", "w4"}
    p4 = m["precisions"]["w4"]
    assert {"wer", "cer", "substitutions", "deletions", "insertions"} <= set(p4)
    assert p4["size_bits"] < m["precisions"]["w8"]["size_bits"] < m["precisions"]["float"]["size_bits"]
    df = read_results(results)
    assert set(df.technique) == {"rand"}
    for metric, headline in (("wer", 1), ("cer", 0)):  # one row per precision and metric
        rows = df[df.metric == metric]
        assert sorted(rows.precision) == ["float", "w4", "w8"] and set(rows.headline) == {headline}
        assert rows.set_index("precision").value["w4"] == m["precisions"]["w4"][metric]
    assert len((run / "hyp/w4.tsv").read_text().splitlines()) == 1 + 6


@pytest.mark.parametrize("technique", ["rand", "lsq"])  # lsq: learned scales join the optimizer mid-run
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, results, monkeypatch, technique):
    """Killed after its step-8 checkpoint (QAT began at step 5), the rerun resumes and matches."""
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml", technique=technique)).runs[0]
    reference = results_beside(results, tmp_path / "reference")
    expected = run_recipe(recipe, "tiny", reference, CPU, progress=False)

    from qbench.tasks.asr import ASRTask

    original = ASRTask.train_batch

    def dies_at_step_10(self, step, device):
        if step == 10:
            raise KeyboardInterrupt
        return original(self, step, device)

    monkeypatch.setattr(ASRTask, "train_batch", dies_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, "tiny", results, CPU, progress=False)
    run = results / "runs" / "tiny" / recipe.run_id
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 8
    monkeypatch.setattr(ASRTask, "train_batch", original)
    resumed = run_recipe(recipe, "tiny", results, CPU, progress=False)
    assert "resumed from own checkpoint at step 8" in (run / "train.log").read_text()
    for p in ("float", "w8", "w4"):
        assert resumed["precisions"][p]["wer"] == expected["precisions"][p]["wer"]
        assert resumed["precisions"][p]["cer"] == expected["precisions"][p]["cer"]
    assert (run / "hyp/w4.tsv").read_text() == (
        reference / "runs/tiny" / recipe.run_id / "hyp/w4.tsv"
    ).read_text()


def test_killed_process_resumes_with_same_command(tmp_path, results):
    """A real SIGKILL mid-training; the same command again finishes with an uninterrupted run's hypotheses."""
    path = tiny_recipe(tmp_path / "r.yaml", steps=300, warmup=100, ckpt=20)
    recipe = load_suite(path).runs[0]
    cmd = [sys.executable, "-m", "qbench", "run", str(path), "--results", str(results), "--no-progress"]
    env = {**os.environ, "QBENCH_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = results / "runs" / "tiny" / recipe.run_id / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 300
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    run = results / "runs" / "tiny" / recipe.run_id
    assert f"resumed from own checkpoint at step {killed_at}" in (run / "train.log").read_text()

    fresh = results_beside(results, tmp_path / "fresh")
    subprocess.run(
        [*cmd[:-3], "--results", str(fresh), "--no-progress"], env=env, check=True, capture_output=True
    )
    for p in ("float", "w8", "w4"):
        assert (run / f"hyp/{p}.tsv").read_text() == (
            fresh / "runs/tiny" / recipe.run_id / f"hyp/{p}.tsv"
        ).read_text()


def test_techniques_share_float_warmup_and_ptq_reuses_float(tmp_path, results):
    path = tiny_recipe(tmp_path / "r.yaml")
    text = path.read_text() + "grid: {quant.technique: [float, ptq, ste]}\n"
    path.write_text(text)
    runs = load_suite(path).runs
    for r in runs:
        run_recipe(r, "tiny", results, CPU, progress=False)
    logs = {r.quant.technique: (results / "runs/tiny" / r.run_id / "train.log").read_text() for r in runs}
    assert "from scratch" in logs["float"]
    assert "reused identical finished training" in logs["ptq"]
    assert "reused shared float warm-up (5 steps)" in logs["ste"]
    float_m = metrics_of(results, runs[0])["precisions"]
    ptq_m = metrics_of(results, runs[1])["precisions"]
    assert float_m["w4"]["wer"] == ptq_m["w4"]["wer"]  # same weights, same quantization at evaluation

    # Sharing is only a shortcut: ste trained alone from scratch ends identically.
    alone = results_beside(results, tmp_path / "alone")
    m = run_recipe(runs[2], "tiny", alone, CPU, progress=False)
    assert "from scratch" in (alone / "runs/tiny" / runs[2].run_id / "train.log").read_text()
    assert m["precisions"]["w4"]["wer"] == metrics_of(results, runs[2])["precisions"]["w4"]["wer"]


def test_nan_loss_marks_run_failed(tmp_path, results, monkeypatch):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml")).runs[0]
    from qbench.tasks.asr import ASRTask

    original = ASRTask.loss
    monkeypatch.setattr(
        ASRTask, "loss", lambda self, model, batch: original(self, model, batch) * float("nan")
    )
    with pytest.raises(TrainingDiverged, match="at step 0"):
        run_recipe(recipe, "tiny", results, CPU, progress=False)
    status = json.loads((results / "runs/tiny" / recipe.run_id / "status.json").read_text())
    assert status["state"] == "failed" and "nan" in status["reason"]
    assert read_results(results).empty


def test_cli_run_then_compare_and_skip(tmp_path, results):
    path = tiny_recipe(tmp_path / "r.yaml", steps=6)
    r = CliRunner().invoke(app, ["run", str(path), "--results", str(results), "--no-progress"])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(app, ["run", str(path), "--results", str(results), "--no-progress"])
    assert "done, skipped" in r2.output
    out = CliRunner().invoke(app, ["compare", "--results", str(results), "--format", "csv"])
    assert out.exit_code == 0
    assert "rand" in out.output and "w4" in out.output


def test_export_reloads_to_identical_hypotheses(tmp_path, results):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml", technique="ste")).runs[0]
    run_recipe(recipe, "tiny", results, CPU, progress=False)
    run = results / "runs" / "tiny" / recipe.run_id
    sizes = {}
    for p in ("w4", "w8"):
        out = CliRunner().invoke(app, ["export", str(run), "--precision", p, "--results", str(results)])
        assert out.exit_code == 0, out.output
        assert "6/6 test hypotheses identical" in out.output
        sizes[p] = (run / f"model-{p}.safetensors").stat().st_size
    assert sizes["w4"] < sizes["w8"]
    bad = CliRunner().invoke(app, ["export", str(tmp_path), "--results", str(results)])
    assert bad.exit_code == 2 and "not a run folder" in bad.output


def test_qat_lr_restarts_the_schedule_when_quantization_aware_training_starts(tmp_path):
    """quant.qat_lr: float steps follow the run's schedule; from the float warm-up on, a QAT run
    restarts at qat_lr and decays by cosine to min_lr_ratio; float ignores it; unset, run ids
    and schedules are those of before."""
    import math

    from qbench.config.run_ids import hashed_quant
    from qbench.run.engine import lr_lambda

    path = tiny_recipe(tmp_path / "r.yaml", steps=20, warmup=10)
    plain = load_suite(path).runs[0]
    restarted = load_suite(path, ["quant.qat_lr=0.5e-3"]).runs[0]
    lr, floor = plain.train.lr, plain.train.min_lr_ratio
    before, after = lr_lambda(plain), lr_lambda(restarted)
    assert [after(s) for s in range(10)] == [before(s) for s in range(10)]
    assert math.isclose(after(10), 0.5e-3 / lr) and math.isclose(after(20), floor)
    assert floor < after(15) < 0.5e-3 / lr and after(15) != before(15)
    assert restarted.run_id != plain.run_id
    float_run = load_suite(path, ["quant.technique=float", "quant.qat_lr=0.5e-3"]).runs[0]
    assert math.isclose(lr_lambda(float_run)(15), before(15))
    assert "qat_lr" not in hashed_quant(plain.quant)


def test_recording_a_learning_curve_leaves_the_trained_weights_bit_identical(tmp_path):
    """The training key leaves train.eval_every out (config/run_ids.CURVE_KEYS): evaluating on the
    way must not move the weights, noise estimator and shared warm-up included."""
    from tests.conftest import tiny_recipe

    weights = []
    for name, extra in (("plain", ""), ("curve", "eval_every: 5, ")):
        recipe = tiny_recipe(tmp_path / f"{name}.yaml", technique="rand", steps=20, warmup=8, ckpt=10)
        recipe.write_text(recipe.read_text().replace("train: {", "train: {" + extra))
        root = tmp_path / name
        out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(root), "--no-progress"])
        assert out.exit_code == 0, out.output
        (ckpt,) = (root / "runs" / "tiny").glob("*/checkpoint.pt")
        weights.append(torch.load(ckpt, weights_only=True)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("nan_at", [4, 6])
def test_nan_loss_between_log_steps_fails_before_any_checkpoint_holds_it(
    tmp_path, results, monkeypatch, nan_at
):
    """The losses are read on the host every log_every (4) steps and before anything is saved: a
    NaN at step 4 (after the step-4 checkpoint, before the shared float warm-up of 5 steps is
    saved) or at step 6 (between two reads) fails the run with its step, and every file saved
    holds finite weights from before it."""
    path = tiny_recipe(tmp_path / "r.yaml")
    path.write_text(path.read_text().replace("log_every: 1", "log_every: 4"))
    recipe = load_suite(path).runs[0]
    assert recipe.train.log_every == 4 and recipe.train.checkpoint_every == 4
    from qbench.tasks.asr import ASRTask

    original, calls = ASRTask.loss, []

    def nan_once(self, model, batch):
        calls.append(None)
        loss = original(self, model, batch)
        return loss * float("nan") if len(calls) == nan_at + 1 else loss

    monkeypatch.setattr(ASRTask, "loss", nan_once)
    with pytest.raises(TrainingDiverged, match=f"loss is nan at step {nan_at}$"):
        run_recipe(recipe, "tiny", results, CPU, progress=False)
    run = results / "runs/tiny" / recipe.run_id
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and f"at step {nan_at}" in status["reason"]
    # the run went on to the next read: before the float warm-up's save (5 steps), or step 8's log
    assert len(calls) == (5 if nan_at < 5 else 8)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4
    saved = [ckpt, *(torch.load(f, weights_only=True) for f in (results / "cache/shared").glob("*.pt"))]
    assert len(saved) == (2 if nan_at > 5 else 1)  # the float warm-up is saved only before the NaN
    for c in saved:
        assert c["step"] <= nan_at
        assert all(torch.isfinite(v).all() for v in c["model"].values() if v.is_floating_point())
    assert "step 4 loss" in (run / "train.log").read_text()


def test_fused_adamw_trains_close_to_foreach_and_is_another_run(tmp_path, results):
    """train.optimizer_impl: "foreach" (the default) is the optimizer and the run of before;
    "fused" (one AdamW kernel over all parameters) trains to losses close to foreach's (its
    rounding differs, so it is another run and another training)."""
    from qbench.config import training_key
    from qbench.run.engine import make_optimizer
    from tests.test_distributed import losses

    path = tiny_recipe(tmp_path / "r.yaml", technique="float", steps=8, warmup=0, ckpt=8)
    plain = load_suite(path).runs[0]
    foreach = load_suite(path, ["train.optimizer_impl=foreach"]).runs[0]
    fused = load_suite(path, ["train.optimizer_impl=fused"]).runs[0]
    assert foreach.run_id == plain.run_id != fused.run_id
    assert training_key(foreach) == training_key(plain) != training_key(fused)
    default = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.0).defaults
    assert (default["foreach"], default["fused"]) == (True, None)  # as the engine built it before

    logged = {}
    for recipe in (foreach, fused):
        run_recipe(recipe, "tiny", results, CPU, progress=False)
        run = results / "runs" / "tiny" / recipe.run_id
        groups = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
        impl = recipe.train.optimizer_impl
        assert all(g["fused"] is (True if impl == "fused" else None) for g in groups)
        assert all(g["foreach"] is (None if impl == "fused" else True) for g in groups)
        logged[impl] = losses((run / "train.log").read_text())
    assert len(logged["fused"]) == 8 and logged["fused"][-1] < logged["fused"][0]  # it trains
    assert logged["fused"] == pytest.approx(logged["foreach"], rel=1e-3)
