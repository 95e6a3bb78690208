"""Suites end to end on tiny recipes: failures (stop or --keep-going), --jobs with a shared
warm-up trained once, and a killed suite that a rerun finishes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import qbench.run.engine
from qbench.cli.main import app
from qbench.config import load_suite
from qbench.store import read_results, read_runs
from tests.conftest import tiny_recipe


def grid_recipe(tmp_path, techniques, steps=6, warmup=3):
    path = tiny_recipe(tmp_path / "r.yaml", steps=steps, warmup=warmup, ckpt=2)
    path.write_text(path.read_text() + f"grid: {{quant.technique: [{', '.join(techniques)}]}}\n")
    return path


def status(results, run_id):
    return json.loads((results / "runs" / "tiny" / run_id / "status.json").read_text())


def test_failing_run_stops_the_suite_unless_keep_going(tmp_path, results, monkeypatch):
    path = grid_recipe(tmp_path, ["ste", "float"])
    ste, flt = load_suite(path).runs

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(qbench.run.engine, "attach_quantizers", boom)  # ste fails when QAT starts
    args = ["run", str(path), "--results", str(results), "--no-progress"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1
    assert "1 run(s) failed; 1 run(s) not started" in out.output and "RuntimeError: boom" in out.output
    assert status(results, ste.run_id) == {
        **status(results, ste.run_id),
        "state": "failed",
        "reason": "RuntimeError: boom",
    }
    assert "Traceback" in (results / "runs/tiny" / ste.run_id / "train.log").read_text()
    assert not (results / "runs/tiny" / flt.run_id).exists()

    out = CliRunner().invoke(app, [*args, "--keep-going"])
    assert out.exit_code == 1 and "1 run(s) failed" in out.output and "not started" not in out.output
    assert status(results, flt.run_id)["state"] == "done"
    runs = read_runs(results).set_index("run_id")
    assert (
        runs.loc[ste.run_id, "state"] == "failed" and runs.loc[ste.run_id, "reason"] == "RuntimeError: boom"
    )
    board = CliRunner().invoke(app, ["compare", "--results", str(results)])
    assert f"failed tiny/{ste.run_id}: RuntimeError: boom" in board.output
    sessions = json.loads((results / "runs/tiny/suite.json").read_text())["sessions"]
    assert [s["keep_going"] for s in sessions] == [False, True]
    assert [o["state"] for o in sessions[1]["outcomes"]] == ["failed", "done"]


def qbench_cmd(path, results, *extra):
    return [
        sys.executable,
        "-m",
        "qbench",
        "run",
        str(path),
        "--results",
        str(results),
        "--no-progress",
        *extra,
    ]


ENV = {**os.environ, "QBENCH_THREADS": "1"}


def test_jobs_run_in_parallel_and_train_the_shared_warmup_once(tmp_path, results):
    path = grid_recipe(tmp_path, ["float", "ptq", "ste", "rand"], steps=12, warmup=6)
    out = CliRunner(env={"QBENCH_THREADS": "1"}).invoke(app, qbench_cmd(path, results, "--jobs", "2")[3:])
    assert out.exit_code == 0, out.output
    assert "2 worker processes, 1 torch thread(s) each" in out.output
    logs = {
        r.quant.technique: (results / "runs/tiny" / r.run_id / "train.log").read_text()
        for r in load_suite(path).runs
    }
    assert sum("from scratch" in log for log in logs.values()) == 1  # the float warm-up, trained once
    # The whole float training, also trained once: ptq is scheduled last so it usually reuses float's,
    # but on a loaded machine ptq may claim it before float's worker starts; then float reuses ptq's.
    finished = ["reused identical finished training" in logs[t] for t in ("float", "ptq")]
    assert sorted(finished) == [False, True], logs
    assert sum("reused shared float warm-up (6 steps)" in log for log in logs.values()) == 2
    df = read_results(results)
    assert df.run_id.nunique() == 4 and len(df[df.metric == "wer"]) == 12


def test_killed_suite_rerun_finishes_only_what_was_left(tmp_path, results):
    path = grid_recipe(tmp_path, ["float", "ste", "rand"], steps=80, warmup=70)
    runs = load_suite(path).runs
    proc = subprocess.Popen(
        qbench_cmd(path, results), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    second = results / "runs/tiny" / runs[1].run_id / "checkpoint.pt"
    deadline = time.time() + 180
    while not second.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # float is done, ste is mid-way, rand has not started
    proc.wait()
    assert status(results, runs[0].run_id)["state"] == "done"
    assert status(results, runs[1].run_id)["state"] == "running"
    assert not (results / "runs/tiny" / runs[2].run_id).exists()
    out = subprocess.run(qbench_cmd(path, results), env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"{runs[0].run_id}: done, skipped" in out.stderr
    assert (results / "runs/tiny" / runs[0].run_id / "train.log").read_text().count("training ") == 1
    assert "resumed from own checkpoint" in (results / "runs/tiny" / runs[1].run_id / "train.log").read_text()
    assert "reused shared float warm-up" in (results / "runs/tiny" / runs[2].run_id / "train.log").read_text()
    assert read_results(results).run_id.nunique() == 3


def test_workers_share_one_gpu_and_pin_one_each_of_several(monkeypatch):
    """--jobs on one GPU: every worker uses "cuda" (set_device("cuda") raises, so it is not called);
    on several GPUs each worker is pinned to its own. (Found on an H200: the pool broke at start.)"""
    import queue

    import torch

    from qbench.progress import console
    from qbench.run import suite

    monkeypatch.setattr(console, "quiet", console.quiet)  # _init_worker silences this process's console
    monkeypatch.setattr(suite, "_die_with_parent", lambda parent: None)  # not for the test process
    monkeypatch.setattr(suite, "_WORKER", dict(suite._WORKER))  # and records its device
    pinned = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pinned.append(str(d)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for count, expected_devices, expected_pins in [
        (1, ["cuda", "cuda", "cuda"], []),
        (2, ["cuda:0", "cuda:1", "cuda:0"], ["cuda:0", "cuda:1", "cuda:0"]),
    ]:
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        devices = suite.worker_devices("cuda", 3)
        assert devices == expected_devices
        q = queue.Queue()
        for d in devices:
            q.put(d)
        pinned.clear()
        for _ in devices:
            suite._init_worker(q, threads=1, parent=os.getpid())
        assert pinned == expected_pins


def test_shared_warmup_gives_every_run_what_it_would_train_alone(tmp_path, results):
    """A QAT run's `quant.qat_lr` restart must not leak into the float run that loads the warm-up
    it saved (nor the float run's rate into the QAT run): the grid in either order, and with two
    workers racing for the warm-up, trains every run to the same weights, bit for bit."""
    weights = {}
    for order, jobs in ((["rand", "float"], 1), (["float", "rand"], 1), (["rand", "float"], 2)):
        path = grid_recipe(tmp_path, order, steps=8, warmup=4)
        path.write_text(
            path.read_text().replace("float_warmup_steps: 4", "float_warmup_steps: 4, qat_lr: 1.0e-2")
        )
        root = tmp_path / f"{'-'.join(order)}-jobs{jobs}"
        shutil.copytree(results, root, symlinks=True)
        if jobs == 1:
            out = CliRunner().invoke(app, ["run", str(path), "--results", str(root), "--no-progress"])
            assert out.exit_code == 0, out.output
        else:
            done = subprocess.run(
                qbench_cmd(path, root, "--jobs", "2"), env=ENV, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
        for r in load_suite(path).runs:
            ckpt = torch.load(root / "runs/tiny" / r.run_id / "checkpoint.pt", weights_only=True)
            weights.setdefault(r.run_id, []).append(ckpt["model"])
    assert len(weights) == 2
    for run_id, (first, *others) in weights.items():
        for other in others:
            assert first.keys() == other.keys()
            assert all(torch.equal(first[k], other[k]) for k in first), run_id


def test_two_processes_of_one_suite_train_and_evaluate_each_run_once(tmp_path, results):
    path = grid_recipe(tmp_path, ["float", "ste"], steps=30, warmup=20)
    runs = load_suite(path).runs
    procs = [
        subprocess.Popen(
            qbench_cmd(path, results), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for r in runs:
        log = (results / "runs/tiny" / r.run_id / "train.log").read_text()
        assert log.count("training ") == 1, log
    evaluated = read_results(results).groupby(["run_id", "precision", "metric"]).size()
    assert evaluated.max() == 1 and read_results(results).run_id.nunique() == 2
    assert any("done, skipped" in e for e in errors)


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_the_suite_process_leaves_no_worker_alive(tmp_path, results):
    path = grid_recipe(tmp_path, ["float", "ste"], steps=2000, warmup=1000)
    proc = subprocess.Popen(
        qbench_cmd(path, results, "--jobs", "2"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)  # the worker processes (and multiprocessing's resource tracker)
        if len(workers) >= 2 and list((results / "runs" / "tiny").glob("*/train.log")):
            break
        time.sleep(0.2)
    assert len(workers) >= 2, "the workers did not start"
    proc.kill()
    proc.wait()
    time.sleep(5)
    alive = [w for w in workers if _running(w)]
    assert not alive, f"workers still running after their parent was killed: {alive}"


def test_sigterm_interrupts_like_ctrl_c_and_the_run_resumes(tmp_path, results):
    path = grid_recipe(tmp_path, ["float"], steps=2000, warmup=1000)
    (run,) = load_suite(path).runs
    proc = subprocess.Popen(
        qbench_cmd(path, results), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    checkpoint = results / "runs/tiny" / run.run_id / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert status(results, run.run_id)["state"] == "interrupted"


def test_sigterm_to_a_parallel_suite_marks_every_run_under_way_interrupted(tmp_path, results):
    path = grid_recipe(tmp_path, ["float", "ste"], steps=2000, warmup=1000)
    runs = load_suite(path).runs
    proc = subprocess.Popen(
        qbench_cmd(path, results, "--jobs", "2"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    logs = [results / "runs/tiny" / r.run_id / "train.log" for r in runs]
    deadline = time.time() + 120
    while not all(f.exists() for f in logs) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert all(f.exists() for f in logs), "the runs did not start"
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert {status(results, r.run_id)["state"] for r in runs} == {"interrupted"}
    deadline = time.time() + 5  # multiprocessing's resource tracker exits once it sees the parent gone
    while [w for w in workers if _running(w)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _running(w)]


def test_off_a_terminal_training_prints_a_plain_progress_line_every_so_often(tmp_path, results, monkeypatch):
    monkeypatch.setenv("QBENCH_HEARTBEAT_SECONDS", "0")
    path = grid_recipe(tmp_path, ["float"], steps=6, warmup=3)
    (run,) = load_suite(path).runs
    out = CliRunner().invoke(app, ["run", str(path), "--results", str(results)])
    assert out.exit_code == 0, out.output
    beats = [line for line in out.output.splitlines() if line.startswith(f"train {run.run_id}: ")]
    assert len(beats) >= 5 and "6/6" in beats[-1] and "loss" in beats[-1], out.output
