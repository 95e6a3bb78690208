"""Running a suite: every grid point of a recipe, in order or in parallel processes.

- A run that already finished is skipped; an interrupted one resumes from its checkpoint
  (engine.py), so rerunning the same command after a kill finishes only what was left.
- `jobs > 1` runs independent runs in spawned worker processes, each with `cores / jobs` torch
  threads (or `QBENCH_THREADS`), and one GPU per worker when there are several.
- Each distinct data set is built (or loaded from its cache) once, in this process, before the
  suite's record is written or any run starts: unusable data stops the suite with nothing
  written under runs/. Runs that share a float warm-up (or, for ptq,
  the whole float training) wait on a file lock for the run that trains it (engine.py), so the
  shared part is trained once; the schedule starts one run of each such group first so that
  nobody waits needlessly.
- A failing run (NaN loss, an exception) is recorded as `failed` with its reason in its run
  folder (`status.json`, `train.log`) and in the index's `runs` table; `keep_going` lets the
  other runs finish, otherwise the suite stops (runs already under way in other workers finish).
- Each invocation is appended to `runs/<suite>/suite.json`: command, times, jobs, outcome, so
  RESULTS.md can say what produced it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import shlex
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock

from qbench.config import Recipe, Suite
from qbench.device import busy_machine_warning, resolve_device, threads_from_env
from qbench.io import atomic_write_json
from qbench.progress import console
from qbench.run import distributed
from qbench.run.launch import run_jobs
from qbench.run.runner import RunOutcome, announce, prepare_data, run_one, schedule
from qbench.store import RunDir, code_version, record_run_state


class SuiteInterrupted(Exception):
    """Ctrl-C: run folders keep their checkpoints; the same command resumes."""


def default_threads(jobs: int) -> int:
    return threads_from_env() or max(1, (os.cpu_count() or 1) // max(1, jobs))


def worker_devices(device: str, jobs: int) -> list[str]:
    """One device per worker: GPUs round-robin when several are visible, else the one device."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.device_count() > 1:
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(jobs)]
    return [str(dev)] * jobs


# ---------------------------------------------------------------- parallel workers

_WORKER: dict = {}


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when the suite's process dies (kill -9 included), so no worker
    goes on training and writing for a parent that is gone. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


#: prctl(2) option: the signal this process gets when its parent dies
_PR_SET_PDEATHSIG = 1


def _stop_once(signum: int, frame: object) -> None:
    """A worker's SIGINT/SIGTERM: the run under way stops as on Ctrl-C (marked interrupted, its
    checkpoint kept); a second signal (Ctrl-C reaches the worker, then the parent forwards its
    SIGTERM) is ignored so it cannot cut that bookkeeping short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


#: how long a suite stopped by a signal waits for its workers to mark their runs interrupted
_STOP_GRACE_S = 60


def _stop_workers() -> None:
    """Forward the stop to the worker processes and wait for them to finish their bookkeeping."""
    workers = mp.active_children()
    for w in workers:
        if w.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))


def _init_worker(devices, threads: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, _stop_once)
    signal.signal(signal.SIGTERM, _stop_once)
    console.quiet = True  # lines of parallel runs would interleave; the parent announces each run
    device = devices.get()
    _WORKER["device"] = torch.device(device)
    if _WORKER["device"].type == "cpu":
        torch.set_num_threads(threads)
    elif _WORKER["device"].index is not None:  # several GPUs: this worker's; one GPU: "cuda", shared
        torch.cuda.set_device(_WORKER["device"])


def _worker_run(recipe: dict, suite: str, results: str) -> RunOutcome:
    r = Recipe.model_validate(recipe)
    return run_one(r, suite, Path(results), _WORKER["device"], progress=False)


def _run_parallel(
    runs: list[Recipe], suite: str, results: Path, device: str, jobs: int, keep_going: bool, progress: bool
) -> list[RunOutcome]:
    ctx = mp.get_context("spawn")  # no fork after torch has started threads
    devices = ctx.Queue()
    for d in worker_devices(device, jobs):
        devices.put(d)
    threads = default_threads(jobs)
    console.print(f"{jobs} worker processes, {threads} torch thread(s) each")
    outcomes: list[RunOutcome] = []
    pool = ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_init_worker, initargs=(devices, threads, os.getpid())
    )
    try:
        pending = {pool.submit(_worker_run, r.model_dump(mode="json"), suite, str(results)): r for r in runs}
        stopping = False
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                pending.pop(f)
                if f.cancelled():
                    continue
                o = f.result()
                outcomes.append(o)
                announce(o)
                if o.state == "failed" and not keep_going and not stopping:
                    stopping = True
                    for other in pending:
                        other.cancel()
                    running = sum(not f.done() and f.running() for f in pending)
                    if running:
                        console.print(f"stopping: waiting for {running} run(s) already under way")
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


# ---------------------------------------------------------------- the suite


def run_suite(
    suite: Suite,
    results: Path,
    device: str = "auto",
    jobs: int = 1,
    keep_going: bool = False,
    progress: bool = True,
    command: str | None = None,
    launcher: str | None = None,
    launcher_options: dict | None = None,
) -> list[RunOutcome]:
    """Run every grid point; returns one outcome per run that was attempted (skipped included).
    With a `launcher` (slurm, local) each run not yet done is a submitit job (launch.py)."""
    dist = distributed.current()  # under torchrun every rank runs this; rank 0's folders decide
    started = time.time()
    code_version()  # the commit of the code this process loaded, before a later commit moves HEAD
    command = command or shlex.join(["qbench", *sys.argv[1:]])
    outcomes: list[RunOutcome] = []
    todo = []
    done = dist.broadcast(
        [RunDir(results, suite.name, r).status().get("state") == "done" for r in suite.runs]
    )
    for r, finished in zip(suite.runs, done, strict=True):
        if finished:
            console.print(f"[dim]{r.run_id}: done, skipped[/dim]")
            if dist.is_main:
                record_run_state(results, r, suite.name, "done")
            outcomes.append(RunOutcome(r.run_id, r.quant.technique, r.seed, "skipped"))
        else:
            todo.append(r)
    if dist.enabled and jobs > 1:
        raise ValueError("--jobs runs suites in separate processes; under torchrun use --jobs 1")
    jobs = max(1, min(jobs, len(todo)))
    interrupted = False
    if todo and not dist.enabled:  # under torchrun rank 0 builds the data (engine.run_recipe)
        prepare_data(todo, results, progress)  # unusable data fails here, before the suite's record
    if dist.is_main:
        _log_session(results, suite, command, started, jobs, keep_going, outcomes, None)
    if todo and launcher is None and resolve_device(device).type == "cpu":
        if busy := busy_machine_warning(jobs):
            console.print(busy, style="yellow", markup=False, highlight=False)
    try:
        if launcher is not None:
            if todo:
                outcomes += run_jobs(
                    todo, suite.name, results, device, launcher, launcher_options or {}, keep_going, progress
                )
        elif jobs == 1:
            dev = resolve_device(device)
            threads = threads_from_env()
            if dev.type == "cpu" and threads:
                torch.set_num_threads(threads)
            for r in todo:
                o = run_one(r, suite.name, results, dev, progress)
                outcomes.append(o)
                announce(o)
                if dist.is_main:  # a suite killed later still shows what it did, and for how long
                    _log_session(results, suite, command, started, jobs, keep_going, outcomes, None)
                if o.state == "failed" and not keep_going:
                    break
        else:
            outcomes += _run_parallel(schedule(todo), suite.name, results, device, jobs, keep_going, progress)
    except KeyboardInterrupt:
        interrupted = True
        raise SuiteInterrupted() from None
    finally:
        if dist.is_main:
            _log_session(results, suite, command, started, jobs, keep_going, outcomes, interrupted)
    return outcomes


def _log_session(
    results: Path,
    suite: Suite,
    command: str,
    started: float,
    jobs: int,
    keep_going: bool,
    outcomes: list[RunOutcome],
    interrupted: bool | None,
) -> None:
    """Record this invocation in suite.json, replacing its earlier record (same start time).
    `interrupted` None: still running (if the process is killed, the record stays so)."""
    f = results / "runs" / suite.name / "suite.json"
    lock = results / "runs" / suite.name / ".locks" / "suite.json.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # two processes of one suite each add their session, none lost
        try:
            data = json.loads(f.read_text()) if f.is_file() else {}
        except json.JSONDecodeError:
            data = {}
        sessions = [x for x in data.get("sessions", []) if x.get("started") != started]
        sessions.append(
            {
                "command": command,
                "recipe": str(suite.path),
                "started": started,
                "finished": None if interrupted is None else time.time(),
                "wall_seconds": round(time.time() - started, 1),
                "jobs": jobs,
                "keep_going": keep_going,
                "interrupted": interrupted,  # None: running, or killed without a chance to say so
                "runs": len(suite.runs),
                "outcomes": [asdict(o) for o in outcomes],
            }
        )
        atomic_write_json(f, {"suite": suite.name, "sessions": sessions})
