"""`qbench sweep RECIPE`: the QAT learning rate and length of a suite, chosen on the validation
split per estimator family (qbench.run.sweep).

The library's modules are imported inside the command, as in main.py: they load torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qbench.cli.errors import fail
from qbench.cli.options import DeviceOpt, ResultsOpt
from qbench.progress import console


def sweep(
    recipe: Annotated[Path, typer.Argument(help="The suite's recipe (its QAT runs with quant.qat_steps).")],
    qat_lr: Annotated[list[float], typer.Option("--qat-lr", help="A QAT learning rate to try (repeatable).")],
    qat_steps: Annotated[list[int], typer.Option("--qat-steps", help="A QAT length to try (repeatable).")],
    technique: Annotated[
        list[str],
        typer.Option(
            "--technique",
            help="Representative techniques (repeatable; default: each estimator family's first in the suite).",
        ),
    ] = [],  # noqa: B006
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a key, e.g. --set train.steps=200 (repeatable).")
    ] = [],  # noqa: B006
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Runs at once, in separate processes.")
    ] = 1,
    device: DeviceOpt = "auto",
    results: ResultsOpt = Path("results"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fine-tune the suite's finished float model (trained once) at every --qat-lr x --qat-steps
    with a representative technique of each estimator family (round-STE, noise), score each on
    the validation split at the suite's training precision, and choose per family the cheapest
    setting (fewest QAT steps) that the validation items cannot tell from the best mean (its paired
    difference's 95 % interval includes zero). The runs form suite <suite>-sweep; the choice is
    recorded in runs/<suite>/sweep.json with the --set overrides that run the suite at it."""
    from qbench.config import RecipeError, Suite
    from qbench.data import DataError
    from qbench.device import resolve_device
    from qbench.report.intervals import items_difference
    from qbench.run.suite import SuiteInterrupted, run_suite
    from qbench.run.sweep import Candidate, estimator_family, score_on_valid, sweep_runs
    from qbench.store import RunDir, write_suite_record
    from qbench.tasks import load_suite

    try:
        suite = load_suite(recipe, set_)
        dev = resolve_device(device)
    except (RecipeError, ValueError) as e:
        fail(str(e), 2)
    qat = [r for r in suite.runs if r.quant.technique not in ("float", "ptq")]
    if not qat or any(not r.quant.qat_steps for r in qat):
        fail(
            f"{recipe}: the sweep fine-tunes the finished float model: its QAT runs need quant.qat_steps "
            "and quant.qat_lr (and quant.float_warmup_steps unset)",
            2,
        )
    if results.exists() and not results.is_dir():
        fail(f"{results}: not a folder (--results names the results root)", 2)
    candidates = [Candidate(lr, n) for lr in qat_lr for n in qat_steps]
    try:
        runs, families = sweep_runs(suite.runs, candidates, technique or None)
    except ValueError as e:
        fail(str(e), 2)
    name = f"{suite.name}-sweep"
    who = "; ".join(f"{family}: {', '.join(names)}" for family, names in families.items())
    console.print(f"{name}: {len(candidates)} setting(s) x ({who}), each scored on valid")
    try:
        outcomes = run_suite(
            Suite(name, suite.path, tuple(runs)), results, str(dev), jobs=jobs, progress=progress
        )
    except DataError as e:
        fail(str(e), 2)
    except SuiteInterrupted:
        fail("interrupted; finished runs are kept: rerun the same command to go on", 130)
    failed = [o for o in outcomes if o.state == "failed"]
    if failed:
        fail(f"{len(failed)} sweep run(s) failed, first {failed[0].run_id}: {failed[0].reason}", 1)
    t0 = time.perf_counter()
    scores: dict[tuple[str, Candidate], list[float]] = {}
    items: dict[tuple[str, Candidate], list] = {}  # each representative's per-item scores, in order
    metric = None
    for r in runs:
        res = score_on_valid(RunDir(results, name, r).path, results, dev)
        metric = res.metric
        key = (estimator_family(r), Candidate(r.quant.qat_lr or 0.0, r.quant.qat_steps))
        scores.setdefault(key, []).append(res.value)
        items.setdefault(key, []).append(res.items)
    assert metric is not None
    record: dict = {
        "suite": suite.name,
        "recipe": str(recipe),
        "split": "valid",
        "metric": metric.name,
        "rule": "the best mean; among the settings whose paired difference from it (first representative, "
        "95 % interval) includes zero, the one with the fewest QAT steps",
        "families": {},
    }
    title = f"{suite.name} sweep: {metric.label} on valid (mean over each family's techniques)"
    table = Table(title=title)
    for col in ("family", "techniques", "qat_lr", "qat_steps", metric.label, "Δ from best [95 %]", "chosen"):
        table.add_column(col)
    for family, techniques in families.items():
        mean = {c: sum(scores[family, c]) / len(scores[family, c]) for c in candidates}
        best = (max if metric.higher_is_better else min)(candidates, key=lambda c: mean[c])
        # A setting the validation items cannot tell from the best is as good: the cheapest of
        # them is chosen (a difference inside its interval is no difference).
        diffs = {
            c: items_difference(items[family, c][0], items[family, best][0], metric.name) for c in candidates
        }
        tied = [c for c in candidates if c == best or (d := diffs[c]) is None or d.low <= 0 <= d.high]
        chosen = min(tied, key=lambda c: (c.qat_steps, candidates.index(c)))
        shown_diffs = {
            c: {"estimate": d.estimate, "low": d.low, "high": d.high}
            for c, d in diffs.items()
            if d is not None and c != best
        }
        record["families"][family] = {
            "techniques": techniques,
            "candidates": [
                {
                    "qat_lr": c.qat_lr,
                    "qat_steps": c.qat_steps,
                    "value": mean[c],
                    "difference_from_best": shown_diffs.get(c),
                }
                for c in candidates
            ],
            "best": {"qat_lr": best.qat_lr, "qat_steps": best.qat_steps},
            "chosen": {"qat_lr": chosen.qat_lr, "qat_steps": chosen.qat_steps},
            "overrides": list(chosen.overrides),
        }
        for c in candidates:
            d = diffs[c]
            shown = (
                "(best)"
                if c == best
                else "–"
                if d is None
                else f"{metric.format(d.estimate, signed=True)} [{metric.format(d.low, signed=True)}, "
                f"{metric.format(d.high, signed=True)}]"
            )
            table.add_row(
                family,
                ", ".join(techniques),
                f"{c.qat_lr:g}",
                str(c.qat_steps),
                metric.format(mean[c]),
                shown,
                "*" if c == chosen else "",
            )
    record["evaluation_seconds"] = round(time.perf_counter() - t0, 1)
    path = write_suite_record(results, suite.name, "sweep", record)
    console.print(table)
    for family, rec in record["families"].items():
        console.print(f"{family}: {' '.join(rec['overrides'])} for every {family} technique ({path})")
