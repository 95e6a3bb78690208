"""A suite submitted as jobs through submitit's local executor: same run ids, index and skipping."""

import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import load_suite
from qbench.run.launch import parse_options
from qbench.store import read_results, read_runs
from tests.conftest import tiny_recipe


def test_local_launcher_runs_each_run_as_a_job_and_a_rerun_submits_nothing(tmp_path, results):
    path = tiny_recipe(tmp_path / "r.yaml", steps=6, warmup=3, ckpt=3)
    path.write_text(path.read_text() + "grid: {quant.technique: [float, ste]}\n")
    runs = load_suite(path).runs
    args = ["run", str(path), "--results", str(results), "--no-progress", "--launcher", "local"]
    out = CliRunner(env={"QBENCH_THREADS": "1"}).invoke(app, args)
    assert out.exit_code == 0, out.output
    assert out.output.count("as local job") == 2
    for r in runs:
        assert f"submitted {r.run_id} as local job" in out.output
        assert f"{r.run_id} done" in out.output
    jobs = results / "jobs" / "tiny"
    assert len(list(jobs.glob("*_result.pkl"))) == 2  # the runs ran inside submitit's jobs
    df = read_results(results)
    assert sorted(df.run_id.unique()) == sorted(r.run_id for r in runs)
    assert len(df[df.metric == "wer"]) == 2 * 3
    assert set(read_runs(results).state) == {"done"}

    again = CliRunner(env={"QBENCH_THREADS": "1"}).invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "submitted" not in again.output
    assert all(f"{r.run_id}: done, skipped" in again.output for r in runs)
    assert len(list(jobs.glob("*_submitted.pkl"))) == len(list(jobs.glob("*_result.pkl"))) == 2
    assert len(read_results(results)) == len(df)


def test_launcher_options():
    assert parse_options(["slurm_partition=gpu", "gpus_per_node=1"]) == {
        "slurm_partition": "gpu",
        "gpus_per_node": 1,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["gpu"])
