"""`qbench pilot RECIPE`: choose, on the validation split, the quantization setting a suite
compares techniques at (qbench.run.pilot), so that its claims pass the headroom gate.

The library's modules are imported inside the command, as in main.py: they load torch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qbench.cli.errors import fail
from qbench.cli.options import DeviceOpt, ResultsOpt
from qbench.progress import console


def pilot(
    recipe: Annotated[Path, typer.Argument(help="The suite's recipe (it needs a float run).")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a key, e.g. --set train.steps=200 (repeatable).")
    ] = [],  # noqa: B006
    device: DeviceOpt = "auto",
    results: ResultsOpt = Path("results"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the suite's first float run (or reuse it: the suite's own run, so `qbench run` skips
    it later), round it post-training at w4, w4 per-tensor, w3 and w2, and pick the mildest setting
    where the validation metric loses at least 5 standard errors of the paired difference from the
    float model. Records the choice in runs/<suite>/pilot.json and prints the --set overrides that
    run the suite at it."""
    from qbench.config import RecipeError, Suite
    from qbench.data import DataError
    from qbench.device import resolve_device
    from qbench.report.gates import HEADROOM_SE, loss_in_se
    from qbench.report.intervals import items_difference
    from qbench.run.pilot import candidates, evaluate_candidates
    from qbench.run.suite import SuiteInterrupted, run_suite
    from qbench.store import RunDir, write_suite_record
    from qbench.tasks import load_suite

    try:
        suite = load_suite(recipe, set_)
        dev = resolve_device(device)
    except (RecipeError, ValueError) as e:
        fail(str(e), 2)
    floats = [r for r in suite.runs if r.quant.technique == "float"]
    if not floats:
        fail(f"{recipe}: the suite has no float run to pilot on (add float to its grid)", 2)
    if results.exists() and not results.is_dir():
        fail(f"{results}: not a folder (--results names the results root)", 2)
    r = floats[0]
    console.print(f"{suite.name}: pilot on {r.run_id} (validation split) -> {results}/runs/{suite.name}")
    try:
        (outcome,) = run_suite(Suite(suite.name, suite.path, (r,)), results, str(dev), progress=progress)
    except DataError as e:
        fail(str(e), 2)
    except SuiteInterrupted:
        fail("interrupted; the float run keeps its last checkpoint: rerun the same command to resume", 130)
    if outcome.state == "failed":
        fail(f"the float run failed: {outcome.reason}", 1)
    settings = candidates(r.quant.bits, r.quant.spec().granularity)
    t0 = time.perf_counter()
    base, evals = evaluate_candidates(RunDir(results, suite.name, r).path, results, settings, dev)
    name = base.metric.name
    measured, chosen = [], None
    for c in settings:
        d = items_difference(evals[c.label].items, base.items, name)
        loss, z = loss_in_se(d, name) if d is not None else (math.nan, math.nan)
        measured.append((c, evals[c.label].value, loss, z, d.se if d is not None else math.nan))
        if chosen is None and z >= HEADROOM_SE:
            chosen = c
    rows = [
        {"setting": c.label, "overrides": list(c.overrides), "value": v, "loss": loss, "loss_se": z, "se": se}
        for c, v, loss, z, se in measured
    ]
    record = {
        "suite": suite.name,
        "recipe": str(recipe),
        "run_id": r.run_id,
        "split": "valid",
        "metric": name,
        "float": base.value,
        "rule": f"loss >= {HEADROOM_SE:g} standard errors of the paired difference from float",
        "candidates": rows,
        "chosen": None if chosen is None else chosen.label,
        "overrides": None if chosen is None else list(chosen.overrides),
        "evaluation_seconds": round(time.perf_counter() - t0, 1),
    }
    path = write_suite_record(results, suite.name, "pilot", record)
    fmt = base.metric.format
    table = Table(title=f"{suite.name} pilot: float {base.metric.label} {fmt(base.value)} on valid")
    for col in ("setting", base.metric.label, "loss", "loss / se"):
        table.add_column(col)
    table.add_column("--set", overflow="fold")
    for c, value, loss, z, _ in measured:
        table.add_row(
            c.label, fmt(value), fmt(loss, signed=True), f"{z:.1f}", " ".join(c.overrides) or "(the recipe's)"
        )
    console.print(table)
    if chosen is None:
        console.print(
            f"no setting loses {HEADROOM_SE:g} standard errors: the suite has no headroom here ({path})"
        )
        raise typer.Exit(1)
    how = "".join(f" --set {o}" for o in chosen.overrides)
    console.print(f"chosen: {chosen.label} ({path}); run the suite there: qbench run {recipe}{how}")
