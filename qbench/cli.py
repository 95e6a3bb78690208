"""The `qbench` command line. Thin: parse, call the library, print."""

from __future__ import annotations

import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from qbench.progress import console

app = typer.Typer(
    help="Benchmark quantization-aware training techniques on sequence-to-sequence models.\n\n"
    "Start with: qbench run recipes/demo.yaml, then qbench compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ResultsOpt = Annotated[
    Path,
    typer.Option(
        "--results", help="Results root: run folders, caches and index.sqlite.", envvar="QBENCH_RESULTS"
    ),
]


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


def _fail(msg: str, code: int) -> None:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (a single run or a grid of runs).")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a key, e.g. --set train.steps=200 (repeatable).")
    ] = [],  # noqa: B006
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")] = "auto",
    results: ResultsOpt = Path("results"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train and evaluate every run of a recipe; finished runs are skipped, interrupted ones resume."""
    from qbench.recipe import RecipeError, load_suite

    try:
        suite = load_suite(recipe, set_)
    except RecipeError as e:
        _fail(str(e), 2)
    import torch

    from qbench.data import DataError
    from qbench.device import resolve_device
    from qbench.engine import TrainingDiverged, run_recipe

    try:
        dev = resolve_device(device)
    except ValueError as e:
        _fail(str(e), 2)
    if dev.type == "cpu" and "QBENCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["QBENCH_THREADS"]))
    console.print(
        f"[bold]{suite.name}[/bold]: {len(suite.runs)} run(s) on {dev} -> {results}/runs/{suite.name}"
    )
    failed = []
    spent = {"data_seconds": 0.0, "train_wall_seconds": 0.0, "eval_seconds": 0.0}
    t0 = time.perf_counter()
    for r in suite.runs:
        try:
            m = run_recipe(r, suite.name, results, dev, progress=progress)
        except TrainingDiverged as e:
            console.print(f"[red]{r.run_id} failed:[/red] {e}")
            failed.append(r.run_id)
            continue
        except DataError as e:  # unusable data: nothing was trained; the message names file and line
            _fail(str(e), 2)
        except KeyboardInterrupt:
            _fail(
                f"interrupted during {r.run_id}; its last checkpoint is kept: rerun the same command to resume",
                130,
            )
        if m.get("skipped"):
            continue
        for k in spent:
            spent[k] += m["timings"].get(k, 0.0)
    console.print(
        f"finished in {(time.perf_counter() - t0) / 60:.1f} min: data {spent['data_seconds']:.0f} s, "
        f"training {spent['train_wall_seconds']:.0f} s, evaluation {spent['eval_seconds']:.0f} s"
    )
    _print_board(results, suite.name, None, None, Format.table)
    if failed:
        _fail(f"{len(failed)} run(s) failed: {', '.join(failed)} (see train.log in their run folders)", 1)


def _print_board(
    results: Path,
    suite: str | None,
    task: str | None,
    technique: list[str] | None,
    fmt: Format,
    metric: str | None = None,
) -> None:
    from qbench.report import filter_results, leaderboard, render, rich_table
    from qbench.store import read_results

    df = filter_results(read_results(results), suite=suite, task=task, technique=technique, metric=metric)
    try:
        board = leaderboard(df)
    except ValueError as e:
        _fail(str(e), 1)
    if fmt == Format.table:
        console.print(rich_table(board, title=f"qbench leaderboard{': ' + suite if suite else ''}"))
    else:
        sys.stdout.write(render(board, fmt.value) + "\n")


@app.command()
def compare(
    suite: Annotated[str | None, typer.Option(help="Only this suite (the recipe's name).")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task: asr or mt.")] = None,
    technique: Annotated[list[str] | None, typer.Option(help="Only these techniques (repeatable).")] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Metric to show (default: the task's headline, WER or BLEU; also cer, chrf)."),
    ] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    results: ResultsOpt = Path("results"),
) -> None:
    """Leaderboard: rows are techniques, columns are evaluation precisions, cells the metric."""
    _print_board(results, suite, task, technique, format, metric)


@app.command()
def check(
    baseline: Annotated[Path, typer.Option(help="Baseline JSON (results/baselines/*.json).")],
    results: ResultsOpt = Path("results"),
) -> None:
    """Compare the index with a baseline: exit 1 if any metric regressed beyond its tolerance or is missing."""
    from qbench.report import check as run_check
    from qbench.report import load_baseline
    from qbench.store import read_results

    try:
        entries = load_baseline(baseline)
    except ValueError as e:
        _fail(str(e), 2)
    outcomes = run_check(read_results(results), entries)
    for o in outcomes:
        color = {"ok": "green", "improvement": "cyan", "regression": "red", "missing": "red"}[o.status]
        console.print(f"[{color}]{o.describe()}[/{color}]", highlight=False, soft_wrap=True)
    bad = [o for o in outcomes if o.status in ("regression", "missing")]
    console.print(f"{len(outcomes)} checked, {len(bad)} failing")
    if bad:
        raise typer.Exit(1)


@app.command("baseline")
def write_baseline(
    suite: Annotated[str, typer.Argument(help="Suite whose results become the baseline.")],
    out: Annotated[Path, typer.Option(help="Where to write the baseline JSON.")],
    tolerance: Annotated[float, typer.Option(help="Allowed absolute change of the metric.")] = 0.05,
    metric: Annotated[
        list[str] | None, typer.Option(help="Only these metrics (repeatable; default: all).")
    ] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Write a baseline from the index after a deliberate change (review the diff before committing)."""
    import json

    from qbench.report import baseline_from
    from qbench.store import atomic_write_text, read_results

    try:
        data = baseline_from(read_results(results), suite, tolerance, metric)
    except ValueError as e:
        _fail(str(e), 1)
    atomic_write_text(out, json.dumps(data, indent=2) + "\n")
    console.print(f"wrote {len(data['entries'])} entries to {out}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder, results/runs/<suite>/<run-id>.")],
    precision: Annotated[str, typer.Option(help="float, w2..w8 or a named map of the run's recipe.")] = "w4",
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: RUN_DIR/model-<precision>.safetensors).")
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Reload the file into a float model and compare test hypotheses.")
    ] = True,
    results: ResultsOpt = Path("results"),
) -> None:
    """Write the packed model (int4 two per byte, int8, scales) as safetensors; check it reloads exactly."""
    import torch

    from qbench.engine import load_trained
    from qbench.quant import model_size_bits, parse_precision, use_precision
    from qbench.quant.export import export_packed, load_packed, packed_size_bytes

    try:
        recipe, task, model, spec = load_trained(run_dir, results)
        pmap = parse_precision(precision, recipe.precisions)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e), 2)
    out = out or run_dir / f"model-{precision}.safetensors"
    export_packed(model, pmap, spec, out)
    size = packed_size_bytes(out)
    f32 = model_size_bits(model, "float", spec)["float32_bits"] / 8
    console.print(f"wrote {out}: {size / 1e6:.2f} MB, 1/{f32 / size:.2f} of float32 ({f32 / 1e6:.2f} MB)")
    if not verify:
        return
    cpu = torch.device("cpu")
    with use_precision(model, pmap, spec, cache=True):
        fake = task.evaluate(model, "test", cpu)
    plain = task.build_model()
    load_packed(plain, out)
    packed = task.evaluate(plain.eval(), "test", cpu)
    same = [f[2] == p[2] for f, p in zip(fake.rows, packed.rows, strict=True)]
    console.print(
        f"reloaded: {sum(same)}/{len(same)} test hypotheses identical to the fake-quant evaluation "
        f"({fake.metric} {fake.value:.4f} vs {packed.value:.4f})"
    )
    if not all(same):
        raise typer.Exit(1)


from qbench.cli_data import data_app  # noqa: E402 - registered after the commands above

app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
