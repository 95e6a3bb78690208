"""`qbench eval`: score a suite's finished runs again without retraining (qbench.run.rescore): on
the fake-quant path or on real integer kernels, with each evaluation's throughput.

The library's modules are imported inside the command, as in main.py: they load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qbench.cli.errors import fail
from qbench.cli.options import ResultsOpt
from qbench.progress import console


def evaluate(
    suite: Annotated[str, typer.Option(help="The suite whose finished runs to score.")],
    kernels: Annotated[
        str,
        typer.Option(
            help="fake: the fake-quant forward the leaderboard scores; int: torch's int8/int4 "
            "weight-only kernels for the Linear layers they take (the rest dequantized once)."
        ),
    ] = "int",
    precision: Annotated[
        list[str] | None, typer.Option(help="Precisions to score (repeatable; default: each run's recipe's).")
    ] = None,
    technique: Annotated[list[str] | None, typer.Option(help="Only these techniques (repeatable).")] = None,
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="Score on other data: data.test_speakers=[lucas], data.test_set=test_2017_flickr, "
            "data.path=DIR (a copy elsewhere), or eval.* (repeatable; needs --test-set).",
        ),
    ] = [],  # noqa: B006
    test_set: Annotated[
        str | None,
        typer.Option(
            help="Name of that data: its rows land under suite SUITE@NAME (qbench compare --suite SUITE@NAME)."
        ),
    ] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Score finished runs again at their precisions, timing each evaluation (after a warm-up on
    the validation split): the integer path's cells land in the index as precision <p>+int, the
    throughput as rtfx (ASR) or sentences_per_s (MT); qbench compare --suite S --metric rtfx shows
    them. Prints each cell beside the stored fake-quant value."""
    from qbench.config import RecipeError
    from qbench.data import DataError
    from qbench.run.rescore import rescore_run
    from qbench.store import read_results
    from qbench.tasks.metrics import metric

    if kernels not in ("fake", "int"):
        fail(f"--kernels {kernels}: expected fake or int", 2)
    if set_ and not test_set:
        fail("--set chooses other data to score on: name it with --test-set (e.g. --test-set lucas)", 2)
    if test_set is not None and not test_set.replace("-", "").replace("_", "").isalnum():
        fail(f"--test-set {test_set!r}: letters, digits, - and _ only", 2)
    df = read_results(results)
    rows = df[(df.suite == suite) & ~df.precision.str.endswith("+int")] if not df.empty else df
    if technique:
        rows = rows[rows.technique.isin(technique)]
    if rows.empty:
        have = ", ".join(sorted(set(df.suite))) if not df.empty else "none"
        fail(f"no finished runs of suite {suite!r} in {results}/index.sqlite (suites: {have})", 2)
    where = f"{suite}@{test_set}" if test_set else suite
    table = Table(title=f"qbench eval: {where} ({kernels} path)")
    cols = ("technique", "seed", "precision", "metric", "stored (fake)", "change", "throughput", "peak RSS")
    for col in (*cols, "kernels"):
        table.add_column(col, overflow="fold")
    for run_id, run_rows in rows.groupby("run_id", sort=False):
        first = run_rows.iloc[0]
        console.print(f"{first.technique} seed {first.seed}: {run_id}")
        try:
            scored = rescore_run(
                run_rows,
                results,
                kernels,  # type: ignore[arg-type]
                precision,
                evaluate_on=set_,
                test_set=test_set,
            )
        except (FileNotFoundError, ValueError, RecipeError, DataError) as e:
            fail(str(e), 2)
        for s in scored:
            m = metric(s.metric)
            change = "–" if s.stored is None else m.format(s.value - s.stored, signed=True)
            table.add_row(
                str(first.technique),
                str(first.seed),
                s.precision,
                f"{m.label} {m.format(s.value)}",
                "–" if s.stored is None else m.format(s.stored),
                change,
                f"{metric(s.throughput_metric).label} {metric(s.throughput_metric).format(s.throughput)}",
                "–" if s.peak_rss_mb is None else f"{s.peak_rss_mb:.0f} MB",
                s.kernel_use,
            )
    console.print(table)
