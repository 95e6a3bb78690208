"""The `qbench` command line. Thin: parse, call the library, print.

The library's modules are imported inside the commands that use them: nearly all of them load
torch, which `qbench --help` and a mistyped option should not wait for.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text
from typer.core import TyperGroup

from qbench.cli.boards import Format, print_board
from qbench.cli.errors import fail
from qbench.cli.options import DeviceOpt, ResultsOpt
from qbench.data import DataError
from qbench.io import CorruptFile
from qbench.progress import console


class _Commands(TyperGroup):
    """Every command's expected failures on bad state or bad paths (an unreadable checkpoint or
    index, a results path that is a file or not writable) end as one line and exit code 2."""

    def invoke(self, ctx):  # ctx: the Context of the click that typer vendors
        try:
            return super().invoke(ctx)
        except CorruptFile as e:
            fail(str(e), 2)
        except (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as e:
            fail(f"{e.filename}: {e.strerror}", 2)


app = typer.Typer(
    cls=_Commands,
    help="Benchmark quantization-aware training techniques on sequence-to-sequence models.\n\n"
    "Start with: qbench run recipes/demo.yaml, then qbench compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"qbench {importlib.metadata.version('qbench')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Benchmark quantization-aware training techniques on sequence-to-sequence models.

    Start with: qbench run recipes/demo.yaml, then qbench compare."""


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's preemption, `kill`) stops a suite as Ctrl-C does: the run under way is
    marked interrupted, keeps its checkpoint, and the same command resumes it."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def _tracked_by_git(path: Path) -> bool:
    """True when `path` is a file of a git checkout's index (no git, no checkout: False)."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "--error-unmatch", path.name],
            cwd=path.resolve().parent,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (a single run or a grid of runs).")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a key, e.g. --set train.steps=200 (repeatable).")
    ] = [],  # noqa: B006
    device: DeviceOpt = "auto",
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            help="Runs at once, in separate processes (cores/N threads each; one GPU each).",
        ),
    ] = 1,
    keep_going: Annotated[
        bool,
        typer.Option("--keep-going", "-k", help="Finish the other runs when one fails (exit 1 at the end)."),
    ] = False,
    results: ResultsOpt = Path("results"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    launcher: Annotated[
        str | None,
        typer.Option(
            help="Submit each run as a job through submitit: slurm, or local (subprocesses, for trials). "
            "Waits for the jobs; finished runs are skipped and interrupted ones resume as without it."
        ),
    ] = None,
    launcher_option: Annotated[
        list[str],
        typer.Option(
            "--launcher-option",
            help="Executor parameter KEY=VALUE, e.g. slurm_partition=gpu, gpus_per_node=1, timeout_min=600.",
        ),
    ] = [],  # noqa: B006
    from_sweep: Annotated[
        bool,
        typer.Option(
            "--from-sweep",
            help="Give every QAT run (quant.qat_steps) the learning rate and length `qbench sweep` chose "
            "for its estimator family, recorded in <results>/runs/<suite>/sweep.json.",
        ),
    ] = False,
) -> None:
    """Train and evaluate every run of a recipe; finished runs are skipped, interrupted ones resume."""
    from qbench.config import RecipeError, Suite
    from qbench.tasks import load_suite

    try:
        suite = load_suite(recipe, set_)
    except RecipeError as e:
        fail(str(e), 2)
    if from_sweep:
        from qbench.run.sweep import with_budgets
        from qbench.store import read_suite_record, suite_record_path

        record = read_suite_record(results, suite.name, "sweep")
        if record is None:
            fail(
                f"--from-sweep: no {suite_record_path(results, suite.name, 'sweep')}: run `qbench sweep {recipe}` "
                f"(with the same --set and --results) first",
                2,
            )
        try:
            suite = Suite(suite.name, suite.path, with_budgets(suite.runs, record))
        except ValueError as e:
            fail(f"--from-sweep: {e}", 2)
    from qbench.device import resolve_device, threads_from_env
    from qbench.run import distributed
    from qbench.run.suite import SuiteInterrupted, run_suite

    try:
        from qbench.run.launch import LAUNCHERS, parse_options

        if launcher is not None and launcher not in LAUNCHERS:
            raise ValueError(f"--launcher {launcher!r}: one of {', '.join(LAUNCHERS)}")
        options = parse_options(launcher_option)
        if jobs < 1:
            raise ValueError(f"--jobs {jobs}: expected at least 1 run at once")
        threads_from_env()  # a bad QBENCH_THREADS is found before anything runs
        where = f"{resolve_device(device)}" if launcher is None else f"{launcher} jobs"
        if distributed.launched():  # torchrun: join the group; each rank takes its own GPU
            if jobs > 1 or launcher is not None:
                raise ValueError("--jobs and --launcher start processes of their own; not under torchrun")
            dist_env, device = distributed.init(device)
            where = f"{dist_env.world} {resolve_device(device).type} processes ({dist_env.backend})"
    except ValueError as e:
        fail(str(e), 2)
    if results.exists() and not results.is_dir():
        fail(f"{results}: not a folder (--results names the results root)", 2)
    console.print(
        Text.assemble(
            (suite.name, "bold"), f": {len(suite.runs)} run(s) on {where} -> {results}/runs/{suite.name}"
        )
    )
    t0 = time.perf_counter()
    _interrupt_on_sigterm()
    try:
        outcomes = run_suite(
            suite,
            results,
            device,
            jobs=jobs,
            keep_going=keep_going,
            progress=progress,
            launcher=launcher,
            launcher_options=options,
        )
    except DataError as e:  # unusable data: nothing was trained; the message names file and line
        fail(str(e), 2)
    except SuiteInterrupted:
        fail(
            "interrupted; finished runs are kept and the others keep their last checkpoint: "
            "rerun the same command to resume",
            130,
        )
    finally:
        main = distributed.current().is_main
        distributed.shutdown()
    if not main:  # torchrun: rank 0 reports (and sets the exit code for failed runs)
        return
    spent = {"data_seconds": 0.0, "train_wall_seconds": 0.0, "eval_seconds": 0.0}
    for o in outcomes:
        for k in spent:
            spent[k] += o.timings.get(k, 0.0)
    console.print(
        f"finished in {(time.perf_counter() - t0) / 60:.1f} min: data {spent['data_seconds']:.0f} s, "
        f"training {spent['train_wall_seconds']:.0f} s, evaluation {spent['eval_seconds']:.0f} s"
    )
    failed = [o for o in outcomes if o.state == "failed"]
    not_run = len(suite.runs) - len(outcomes)
    if len(outcomes) > len(failed):
        print_board(results, suite.name, None, None, Format.table)
    if failed:

        def details(run_id: str) -> str:  # a run that failed before its folder existed has no log
            log = results / "runs" / suite.name / run_id / "train.log"
            return f" (details: {log})" if log.is_file() else ""

        lines = "\n".join(f"  {o.run_id}: {o.reason}{details(o.run_id)}" for o in failed)
        rest = f"; {not_run} run(s) not started (--keep-going runs them anyway)" if not_run else ""
        fail(f"{len(failed)} run(s) failed{rest}:\n{lines}", 1)


@app.command()
def compare(
    suite: Annotated[str | None, typer.Option(help="Only this suite (the recipe's name).")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task: asr or mt.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset, e.g. synthetic-speech.")] = None,
    technique: Annotated[list[str] | None, typer.Option(help="Only these techniques (repeatable).")] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Metric to show (default: the task's headline, WER or BLEU; also cer, chrf)."),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(help="Order rows by a precision column (best first, e.g. w4), 'technique' or 'size'."),
    ] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also write a PNG: accuracy vs packed size per technique, and training curves."),
    ] = None,
    relative_to_best: Annotated[
        bool,
        typer.Option(
            "--relative-to-best",
            help="Show each cell's change from the best precision of its own row (the same trained "
            "model), instead of from the float baseline.",
        ),
    ] = False,
    by_length: Annotated[
        str | None,
        typer.Option(
            "--by-length",
            help="Long-form WER at this precision (e.g. w4): one column per recording length "
            "(x1 = single utterances; recipes set eval.long_form).",
        ),
    ] = None,
    ci: Annotated[
        bool,
        typer.Option(
            "--ci",
            help="Show each cell's 95 % interval (bootstrap over seeds, speakers and utterances for "
            "WER/CER; sacrebleu's over sentences for BLEU/chrF). Fixed resampling: a table repeats exactly.",
        ),
    ] = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Show each cell's paired difference (same seeds, same test items) from this technique, "
            "with its 95 % interval and p-value, * where the interval excludes zero: 'float' (the float "
            "model in float) or e.g. 'ptq' (at the same precision).",
        ),
    ] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Leaderboard: rows are techniques, columns are evaluation precisions, cells the metric."""
    print_board(
        results,
        suite,
        task,
        technique,
        format,
        metric,
        dataset,
        sort,
        relative_to_best,
        by_length,
        ci,
        against,
    )
    if plot is not None:
        from qbench.report.board import filter_results
        from qbench.report.plots import plot_suite
        from qbench.store import read_results

        df = filter_results(
            read_results(results), suite=suite, task=task, technique=technique, dataset=dataset, metric=metric
        )
        try:
            plot_suite(df, plot, title=suite, results=results)
        except ValueError as e:
            fail(str(e), 1)
        console.print(f"wrote {plot}")


@app.command()
def check(
    baseline: Annotated[Path, typer.Option(help="Baseline JSON (results/baselines/*.json).")],
    junit: Annotated[
        Path | None, typer.Option(help="Also write the outcomes as JUnit XML, for CI test reports.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(help="Also fail on results that have no baseline entry (new techniques, precisions)."),
    ] = False,
    results: ResultsOpt = Path("results"),
) -> None:
    """Compare the index with a baseline: print every regression and improvement; exit 1 if a metric
    regressed beyond its tolerance or a baseline entry has no result. Results without a baseline
    entry are reported (and fail with --strict). Values and tolerances print as the leaderboard
    shows them (WER/CER in %, BLEU/chrF in points); an entry with "gate": "interval" fails only
    when its cell's 95 % interval lies wholly beyond the tolerance."""
    from qbench.report.gate import check as run_check
    from qbench.report.gate import load_baseline
    from qbench.store import read_results

    try:
        entries = load_baseline(baseline)
    except ValueError as e:
        fail(str(e), 2)
    outcomes = run_check(read_results(results), entries)
    colors = {
        "ok": "green",
        "improvement": "cyan",
        "regression": "red",
        "missing": "red",
        "unbaselined": "yellow",
    }
    for o in outcomes:
        c = colors[o.status]
        console.print(f"[{c}]{o.describe()}[/{c}]", highlight=False, soft_wrap=True)
    if junit is not None:
        from qbench.report.junit import write_junit

        write_junit(outcomes, junit)
    count = {k: sum(o.status == k for o in outcomes) for k in colors}
    bad = count["regression"] + count["missing"] + (count["unbaselined"] if strict else 0)
    console.print(
        f"{len(entries)} checked, {bad} failing: {count['regression']} regression(s), "
        f"{count['improvement']} improvement(s), {count['missing']} missing result(s), "
        f"{count['unbaselined']} result(s) without a baseline entry",
        highlight=False,
    )
    if bad:
        raise typer.Exit(1)


baseline_app = typer.Typer(help="Baselines for `qbench check`.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("update")
def baseline_update(
    suite: Annotated[str, typer.Argument(help="Suite whose results become the baseline.")],
    out: Annotated[
        Path, typer.Option(help="Baseline JSON to write (entries of other suites in it are kept).")
    ],
    tolerance: Annotated[
        float | None,
        typer.Option(
            help="Allowed change in the units the leaderboard shows: WER/CER percentage points, BLEU/chrF "
            "points (default: keep each entry's, 2.0 for new ones)."
        ),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Only these metrics (repeatable; default: all).")
    ] = None,
    gate: Annotated[
        str | None, typer.Option(help="value or interval (its 95 % interval); default: keep each entry's.")
    ] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Write a suite's baseline (format qbench-baseline/2) from the index after a deliberate change
    (review the diff before committing)."""
    from qbench.io import atomic_write_text
    from qbench.report.gate import baseline_from, load_baseline
    from qbench.store import read_results

    if gate is not None and gate not in ("value", "interval"):
        fail(f"--gate {gate!r}: one of value, interval", 2)
    if tolerance is not None and not 0 <= tolerance < float("inf"):  # NaN too
        fail(f"--tolerance {tolerance}: expected a finite non-negative number", 2)
    try:
        previous = load_baseline(out) if out.is_file() else []
        data = baseline_from(read_results(results), suite, tolerance, metric, previous, gate)
    except ValueError as e:
        fail(str(e), 1)
    atomic_write_text(out, json.dumps(data, indent=2) + "\n")
    old = {_entry_key(e): e["value"] for e in previous if e["suite"] == suite}
    changed = sum(1 for e in data["entries"] if e["suite"] == suite and old.get(_entry_key(e)) != e["value"])
    n = sum(e["suite"] == suite for e in data["entries"])
    console.print(f"wrote {out}: {n} entries for {suite} ({changed} new or changed)")


def _entry_key(e: dict) -> tuple:
    return tuple(e.get(k) for k in ("suite", "technique", "precision", "metric"))


@app.command()
def show(
    run: Annotated[
        str, typer.Argument(help="A run folder, or a run id (or its unique prefix) in the index.")
    ],
    worst: Annotated[int, typer.Option(help="How many worst hypotheses to list per precision.")] = 5,
    precision: Annotated[
        list[str] | None, typer.Option(help="Precisions for the worst hypotheses (default: the lowest).")
    ] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """One run: config, training curve summary, per-precision metrics and its worst hypotheses."""
    from qbench.report.show import find_run, show_run

    try:
        run_dir = find_run(run, results)
    except ValueError as e:
        fail(str(e), 2)
    show_run(run_dir, console, worst=worst, precisions=precision)


@app.command("results")
def results_md(
    suite: Annotated[list[str], typer.Option(help="Suites to include, in order (repeatable).")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Page to write, with OUT-per-seed.csv (default results/RESULTS.md; not with --readme)."
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(help="Metrics to tabulate (default: the headline metric, and CER for ASR)."),
    ] = None,
    plot: Annotated[bool, typer.Option(help="Also write <out dir>/<suite>.png and link it.")] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite OUT even when it is a file committed to git.")
    ] = False,
    allow_mixed_commits: Annotated[
        bool, typer.Option("--allow-mixed-commits", help="Combine runs of several qbench commits.")
    ] = False,
    readme: Annotated[Path | None, typer.Option(help="Rewrite a block of this file instead.")] = None,
    marker: Annotated[
        str | None, typer.Option(help="The block: <!-- MARKER --> to <!-- /MARKER -->.")
    ] = None,
    ci: Annotated[bool, typer.Option("--ci", help="Tables as qbench compare --ci.")] = False,
    against: Annotated[str | None, typer.Option(help="Tables as qbench compare --against.")] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Write RESULTS.md: each suite's leaderboards plus the hardware, versions, commit and command
    behind them, and the per-seed values as CSV; or, with --readme, a README's generated block."""
    from qbench.report import results_page as page
    from qbench.report.provenance import MixedCommits

    if (readme is None) != (marker is None):
        fail("--readme and --marker go together: the file and the name of its block", 2)
    out = out or (None if readme else Path("results/RESULTS.md"))
    for f in (out, page.per_seed_path(out)) if out else ():
        if f.is_file() and not force and _tracked_by_git(f):
            fail(f"{f} is a file committed to git: pass --force to overwrite it, or --out elsewhere", 2)
    try:
        for line in page.write_pages(
            results, suite, out, readme, marker, metric, plot, allow_mixed_commits, ci, against
        ):
            console.print(line)
    except (MixedCommits, page.MarkerError) as e:
        fail(str(e), 2)
    except ValueError as e:
        fail(str(e), 1)


@app.command()
def findings(
    suite: Annotated[
        list[str] | None,
        typer.Option(help="Only these of the suites the claims name (repeatable; default: all of them)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also put the section into this file (e.g. results/RESULTS.md), replacing an older one."
        ),
    ] = None,
    allow_mixed_commits: Annotated[
        bool, typer.Option(help="Test runs made by different commits together (the output says so).")
    ] = False,
    results: ResultsOpt = Path("results"),
) -> None:
    """The reference papers' claims, each a contrast declared in advance, tested on the suites it
    names: effect, 95 % interval, p (raw and Holm-adjusted in its family), n, basis and verdict
    (Markdown)."""
    from qbench.report.claims import CLAIMS
    from qbench.report.findings import findings as find
    from qbench.report.findings import render_findings, write_findings
    from qbench.report.gates import suite_gates
    from qbench.report.provenance import MixedCommits, check_one_commit
    from qbench.store import read_results

    df = read_results(results)
    if df.empty:
        fail(f"no results in {results}/index.sqlite: run the suites first", 1)
    named = list(dict.fromkeys(site.suite for c in CLAIMS for site in c.sites))
    if unknown := [s for s in suite or [] if s not in named]:
        fail(f"no claim is tested on {', '.join(unknown)}; the claims name {', '.join(named)}", 2)
    if others := sorted(set(df.suite) - set(named)):
        console.print(f"no claim is declared on {', '.join(others)} (in the index, left out)")
    try:
        provenance = check_one_commit(df[df.suite.isin(suite or named)], allow_mixed_commits, results)
    except MixedCommits as e:
        fail(str(e), 2)
    gates = functools.cache(lambda s, precisions: suite_gates(df, s, results, precisions))
    text = render_findings(find(df, suite or None, gates=gates), suite, results, provenance)
    sys.stdout.write(text)
    if out is not None:
        write_findings(text, out)
        console.print(f"wrote the findings section of {out}")


from qbench.cli.data import data_app  # noqa: E402 - registered after the commands above

app.add_typer(data_app, name="data")


from qbench.cli.quant import quant_app  # noqa: E402

app.add_typer(quant_app, name="quant")

from qbench.cli.evaluate import evaluate  # noqa: E402
from qbench.cli.export import export  # noqa: E402
from qbench.cli.pilot import pilot  # noqa: E402
from qbench.cli.sweep import sweep  # noqa: E402

app.command()(export)
app.command()(pilot)
app.command()(sweep)
app.command("eval")(evaluate)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
