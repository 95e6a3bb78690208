"""Printing a leaderboard (qbench compare, and the end of qbench run) in the format asked for."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

from rich.text import Text

from qbench.cli.errors import fail
from qbench.progress import console


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


def print_board(
    results: Path,
    suite: str | None,
    task: str | None,
    technique: list[str] | None,
    fmt: Format,
    metric: str | None = None,
    dataset: str | None = None,
    sort: str | None = None,
    relative_to_best: bool = False,
    by_length: str | None = None,
    ci: bool = False,
    against: str | None = None,
) -> None:
    from qbench.report.board import by_length as length_view
    from qbench.report.board import (
        failed_runs,
        filter_results,
        leaderboard,
        no_match_reason,
        render,
        rich_table,
    )
    from qbench.store import read_results, read_runs

    raw = read_results(results)
    if by_length:  # one column per long-form length at this precision
        try:
            raw = length_view(raw, by_length)
        except ValueError as e:
            fail(str(e), 1)
        metric = None
    df = filter_results(raw, suite=suite, task=task, technique=technique, dataset=dataset, metric=metric)
    failed = failed_runs(read_runs(results), suite=suite, task=task, technique=technique)
    if df.empty and failed.empty:
        fail(no_match_reason(raw, suite, task, technique, dataset, metric), 1)
    reference = filter_results(read_results(results), suite=suite, task=task, dataset=dataset, metric=metric)
    try:
        if against is not None and against not in set(reference.technique):
            have = ", ".join(sorted(set(reference.technique)))
            raise ValueError(f"--against {against}: no such technique in these results ({have})")
        board = leaderboard(
            df, sort=sort, reference=reference, relative_to_best=relative_to_best, ci=ci, against=against
        )
    except ValueError as e:
        print_failed(failed)
        fail(str(e), 1)
    board.failed = failed
    if fmt == Format.table:
        console.print(rich_table(board, title=f"qbench leaderboard{': ' + suite if suite else ''}"))
        print_failed(failed)
        if suite is not None:
            print_gates(raw, suite, results)
    else:
        sys.stdout.write(render(board, fmt.value) + "\n")
        if fmt != Format.markdown:  # csv and json stay machine-readable; failures go to stderr
            print_failed(failed)


def print_gates(raw, suite: str, results: Path) -> None:
    """The suite's gates (report/gates), a line each: whether its claims can be judged."""
    from qbench.report.gates import suite_gates

    gates = suite_gates(raw, suite, results)
    if gates:
        console.print("gates a suite passes before qbench findings judges a claim on it:", style="dim")
    for g in gates:
        style = {True: "green", False: "red", None: "yellow"}[g.passed]
        console.print(
            Text.assemble(
                ("gate ", "dim"), (f"{g.gate} {g.status}", style), f": {g.measured} (rule: {g.rule})"
            ),
            highlight=False,
        )


def print_failed(failed) -> None:
    if failed is None or failed.empty:
        return
    console.print(f"[red]{len(failed)} failed run(s), not in the table:[/red]")
    for r in failed.itertuples():
        console.print(
            Text.assemble(("  failed ", "red"), f"{r.suite}/{r.run_id}: {r.reason}"), highlight=False
        )
