"""Runs of a suite as cluster jobs through submitit: `qbench run SUITE --launcher slurm`.

The suite is expanded, finished runs are skipped and the data is built here, exactly as for a
local suite (suite.py); each remaining run is then one job that calls the same `run_one` a local
suite calls, so run ids, run folders, resume and the index are the same. This process waits for
the jobs and announces each outcome; Ctrl-C cancels the jobs (their checkpoints stay, and the same
command resumes them). `--launcher local` uses submitit's LocalExecutor (every job at once, as a
subprocess of this machine): for tests and trials of a cluster setup.

Job logs and submitit's pickles are under `<results>/jobs/<suite>/`. The results root must be on
a file system every node sees; the shared float warm-up is trained once through a file lock
(engine.py), which needs locks that work across nodes there (on NFS, lockd).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from qbench.config import Recipe
from qbench.device import resolve_device, threads_from_env
from qbench.progress import console
from qbench.run.runner import RunOutcome, announce, run_one, schedule

if TYPE_CHECKING:
    import submitit

LAUNCHERS = ("slurm", "local")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs for the executor (`slurm_partition=gpu`, `gpus_per_node=1`,
    `timeout_min=600`); values are read as YAML scalars."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--launcher-option {pair!r}: expected KEY=VALUE, e.g. slurm_partition=gpu")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(
                f"--launcher-option {pair!r}: not a YAML value ({getattr(e, 'problem', e)})"
            ) from None
    return options


def executor(
    launcher: str, folder: Path, options: dict[str, Any]
) -> submitit.LocalExecutor | submitit.AutoExecutor:
    import submitit  # local: only `--launcher` needs it (and its cloudpickle)

    ex: submitit.LocalExecutor | submitit.AutoExecutor
    if launcher == "local":
        ex = submitit.LocalExecutor(folder=folder)
    elif launcher == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    else:
        raise ValueError(f"unknown launcher {launcher!r} (one of {', '.join(LAUNCHERS)})")
    ex.update_parameters(**{"timeout_min": 24 * 60, **options})
    return ex


def _job(recipe: dict, suite: str, results: str, device: str):
    """One run inside a job (a fresh process on some node)."""
    threads = threads_from_env()
    if threads:
        torch.set_num_threads(threads)
    return run_one(
        Recipe.model_validate(recipe), suite, Path(results), resolve_device(device), progress=False
    )


def run_jobs(
    runs: list[Recipe],
    suite: str,
    results: Path,
    device: str,
    launcher: str,
    options: dict[str, Any],
    keep_going: bool,
    progress: bool,
    poll_seconds: float = 1.0,
) -> list:
    ex = executor(launcher, results / "jobs" / suite, options)
    jobs = {}
    for r in schedule(runs):  # one run per shared warm-up first, as for --jobs
        if launcher == "slurm":
            ex.update_parameters(name=f"qbench-{suite}-{r.run_id}")
        job = ex.submit(_job, r.model_dump(mode="json"), suite, str(results), device)
        jobs[job] = r
        console.print(f"submitted {r.run_id} as {launcher} job {job.job_id}", highlight=False)
    outcomes = []
    try:
        while jobs:
            finished = [j for j in jobs if j.done()]
            if not finished:
                time.sleep(poll_seconds)
                continue
            for job in finished:
                r = jobs.pop(job)
                try:
                    o = job.result()
                except Exception as e:  # noqa: BLE001 - the job died (killed, out of time, lost node)
                    last = (str(e).strip().splitlines() or [""])[-1]
                    reason = f"job {job.job_id} died: {type(e).__name__}: {last}"
                    o = RunOutcome(r.run_id, r.quant.technique, r.seed, "failed", reason)
                outcomes.append(o)
                announce(o)
                if o.state == "failed" and not keep_going and jobs:
                    console.print(f"stopping: cancelling {len(jobs)} job(s) (--keep-going lets them finish)")
                    for other in jobs:
                        other.cancel(check=False)
                    return outcomes
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel(check=False)
        raise
    return outcomes
