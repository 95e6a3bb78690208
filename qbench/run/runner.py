"""One run of a suite: train and evaluate a grid point, turning a failure into an outcome, and
the order in which a suite's runs start (shared float warm-ups first)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

from qbench.config import Recipe, float_training_key, stable_hash, training_key, trains_quantized
from qbench.data import DataError
from qbench.progress import console
from qbench.run import distributed
from qbench.run.engine import TrainingDiverged, run_recipe
from qbench.store import RunDir, record_run_state
from qbench.tasks import TASKS, build_task


@dataclass
class RunOutcome:
    run_id: str
    technique: str
    seed: int
    state: str  # done | skipped | failed
    reason: str | None = None
    timings: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)  # precision -> headline metric (display units)


def schedule(runs: list[Recipe]) -> list[Recipe]:
    """Order for parallel workers: first one run per shared float warm-up (it trains the warm-up
    while the others would wait for it), then the rest interleaved across groups, and runs that
    reuse another run's whole float training (ptq beside float) last."""

    def group(r: Recipe) -> str:  # what the run's QAT starts from, or what it trains
        if r.quant.qat_steps and trains_quantized(r):
            return float_training_key(r)
        return training_key(r, float_until=r.quant.float_warmup_steps)

    finals = [training_key(r) for r in runs if not trains_quantized(r)]
    reusers = [r for i, r in enumerate(runs) if not trains_quantized(r) and training_key(r) in finals[:i]]
    rest = [r for r in runs if r not in reusers]
    by_group: dict[str, list[Recipe]] = {}
    for r in rest:
        by_group.setdefault(group(r), []).append(r)
    ordered = []
    queues = list(by_group.values())
    while any(queues):
        for q in queues:
            if q:
                ordered.append(q.pop(0))
    return ordered + reusers


def _data_key(r: Recipe) -> str:
    d = r.model_dump(mode="json")
    return stable_hash({k: d[k] for k in ("task", "data", "model")})


def _record_failure(r: Recipe, suite: str, results: Path, exc: BaseException) -> str:
    reason = str(exc) if isinstance(exc, TrainingDiverged) else f"{type(exc).__name__}: {exc}"
    run = RunDir(results, suite, r)
    if run.path.is_dir():
        run.set_status("failed", reason=reason)
        if not isinstance(exc, TrainingDiverged):  # the engine logged that one already
            run.log("FAILED: " + "".join(traceback.format_exception(exc)).rstrip())
    return reason


def run_one(r: Recipe, suite: str, results: Path, device, progress: bool) -> RunOutcome:
    """One grid point; a failure becomes an outcome (DataError and Ctrl-C propagate)."""
    main = distributed.current().is_main  # data-parallel (torchrun): rank 0 records
    try:
        m = run_recipe(r, suite, results, device, progress=progress)
    except (DataError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, not fatal to the suite
        reason = f"{type(e).__name__}: {e}"
        if main:
            reason = _record_failure(r, suite, results, e)
            record_run_state(results, r, suite, "failed", reason)
        if distributed.current().enabled and not isinstance(e, TrainingDiverged):
            raise  # maybe this rank's alone: the others wait in a collective, so end the group
        return RunOutcome(r.run_id, r.quant.technique, r.seed, "failed", reason)
    if main:
        record_run_state(results, r, suite, "done")
    state = "skipped" if m.get("skipped") else "done"
    head = TASKS[r.task].metric if r.task in TASKS else None  # the task's headline metric
    per = m.get("precisions", {})
    scores = {p: head.display(d[head.name]) for p, d in per.items() if head and head.name in d}
    return RunOutcome(r.run_id, r.quant.technique, r.seed, state, timings=m.get("timings", {}), scores=scores)


def prepare_data(runs: list[Recipe], results: Path, progress: bool) -> None:
    """Build (or load from the cache) each distinct data set once, before workers race for it."""
    seen = set()
    for r in runs:
        key = _data_key(r)
        if key not in seen:
            seen.add(key)
            build_task(r, results / "cache", progress=progress).build_data()


def announce(o: RunOutcome) -> None:
    if o.state == "failed":
        console.print(f"[red]{o.run_id} failed:[/red] {o.reason}", highlight=False)
    elif o.state == "done":
        t = o.timings
        scores = " / ".join(f"{p} {v:.2f}" for p, v in o.scores.items())
        console.print(
            f"[green]{o.run_id} done[/green]: {scores} (training {t.get('train_wall_seconds', 0):.0f} s, "
            f"evaluation {t.get('eval_seconds', 0):.0f} s)",
            highlight=False,
        )
