"""`qbench results`: results/RESULTS.md, generated from the index and the run folders.

For each suite: its gates (report/gates; a failed one on top), the command(s) that ran it (runs/<suite>/suite.json, written by `qbench run`),
wall time, the hardware and versions the runs recorded (env.json), the commit(s) the runs come
from, the key recipe settings, one leaderboard per metric (exactly `qbench compare --suite S
--metric M --format markdown`), the plot (`qbench compare --plot`) and any failed runs. Beside the
page, <page>-per-seed.csv: one row per run x precision x metric. Runs of several commits are
refused unless allowed (qbench.report.provenance), and the page then says they are mixed.

A README's tables come from here too: the lines between ``<!-- NAME -->`` and ``<!-- /NAME -->``
are replaced with the leaderboard and the commands that made it (:func:`write_readme_block`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd

from qbench.config import load_run_config
from qbench.io import CorruptFile, atomic_write_text
from qbench.report.board import failed_runs, filter_results, leaderboard, precision_key, render, technique_key
from qbench.report.gates import render as render_gates
from qbench.report.gates import suite_gates, untestable
from qbench.report.plots import plot_suite
from qbench.report.provenance import check_one_commit, run_commits
from qbench.store import read_results, read_runs, read_suite_record, run_folder, suite_sessions
from qbench.tasks.metrics import metric

#: columns of the per-seed CSV
PER_SEED_COLUMNS = (
    "suite",
    "technique",
    "train_bits",
    "seed",
    "precision",
    "metric",
    "value",
    "run_id",
    "commit",
)


class MarkerError(ValueError):
    """A README without the block to rewrite; one line."""


def _distinct(values) -> str:
    seen = []
    for v in values:
        if v is not None and v not in seen:
            seen.append(v)
    return ", ".join(str(v) for v in seen) or "unknown"


def _run_dirs(df, results: Path) -> list[Path]:
    out = []
    for r in df.drop_duplicates("run_id").itertuples():
        out.append(run_folder(results, r.run_dir, r.suite, r.run_id))
    return out


def _environment(dirs: list[Path]) -> tuple[str, str]:
    envs = []
    for d in dirs:
        try:
            envs.append(json.loads((d / "env.json").read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if not envs:
        return "not recorded", "not recorded"

    def get(k):
        return _distinct(e.get(k) for e in envs)

    gpu = get("gpu")
    hardware = (
        f"{get('processor')}, {get('cpu_count')} CPU cores, device {get('device')}"
        + (f" ({gpu})" if gpu != "unknown" else "")
        + f", {get('torch_threads')} torch thread(s) per run; {get('platform')}"
    )
    commits = _distinct((e.get("commit") or "")[:10] or None for e in envs)
    versions = f"python {get('python')}, torch {get('torch')}, torchaudio {get('torchaudio')}, qbench commit {commits}"
    return hardware, versions


def _settings(dirs: list[Path]) -> str:
    configs = []
    for d in dirs:
        try:
            configs.append(load_run_config(d / "config.yaml").model_dump(mode="json"))
        except (OSError, CorruptFile):
            continue
    if not configs:
        return "not recorded"
    c = configs[0]
    data, m, t, q = c["data"], c["model"], c["train"], c["quant"]
    sizes = ", ".join(
        f"{k.split('_')[0]} {v}" for k, v in data.items() if k.endswith(("_utterances", "_sentences"))
    )
    qat = [x["quant"] for x in configs if x["quant"]["technique"] not in ("float", "ptq")]
    if not qat:
        schedule = "float only"
    elif any(x.get("qat_steps") for x in qat):  # QAT fine-tunes the finished float model
        budgets = sorted({(x["qat_steps"], x.get("qat_lr")) for x in qat if x.get("qat_steps")})
        how = ", ".join(f"{n} steps from lr {lr:g}" if lr else f"{n} steps" for n, lr in budgets)
        schedule = f"float trained once, then QAT fine-tunes it ({how})"
    else:
        schedule = f"QAT after {q.get('float_warmup_steps', 0)} shared float steps"
    granularity = {x.get("granularity", "per-channel") for x in (qat or [q])}
    weights = "" if granularity == {"per-channel"} else f", weights {'/'.join(sorted(granularity))}"
    return (
        f"task {c['task']}, data {data['source']} ({sizes}), model {m['arch']} d_model {m.get('d_model')} "
        f"x {m.get('layers', m.get('encoder_layers'))} layers, {t['steps']} steps of batch {t['batch_size']}, "
        f"{schedule}{weights}"
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _suite_rows(all_rows: pd.DataFrame, suite: str, results: Path) -> pd.DataFrame:
    rows = all_rows[all_rows.suite == suite] if not all_rows.empty else all_rows
    if rows.empty:
        raise ValueError(f"no results for suite {suite!r} in {results}/index.sqlite")
    return rows


def _headline(rows: pd.DataFrame) -> str:
    head = rows[rows.headline == 1]
    return str((head if not head.empty else rows).metric.iloc[0])


def _compare_flags(ci: bool, against: str | None) -> str:
    return (" --ci" if ci else "") + (f" --against {against}" if against else "")


def _board_markdown(
    all_rows: pd.DataFrame, suite: str, m: str, ci: bool, against: str | None, failed=None
) -> str:
    df = filter_results(all_rows, suite=suite, metric=m)
    if against is not None and against not in set(df.technique):
        have = ", ".join(sorted(set(df.technique)))
        raise ValueError(f"--against {against}: no such technique in suite {suite} ({have})")
    board = leaderboard(df, ci=ci, against=against)
    board.failed = failed
    return render(board, "markdown")


def suite_section(
    results: Path,
    suite: str,
    out_dir: Path,
    metrics: list[str] | None,
    plot: bool,
    allow_mixed: bool = False,
    ci: bool = False,
    against: str | None = None,
) -> str:
    all_rows = read_results(results)
    rows = _suite_rows(all_rows, suite, results)
    headline = _headline(rows)
    wanted = metrics or [headline, *sorted(set(rows.metric) - {headline})]
    commit_note = check_one_commit(rows, allow_mixed, results)
    dirs = _run_dirs(rows, results)
    hardware, versions = _environment(dirs)
    sessions = suite_sessions(results, suite)
    lines = [f"## {suite}", ""]
    gates = suite_gates(all_rows, suite, results)
    if why := untestable(gates):
        lines += [f"> **Gates not passed ({why}): claims on this suite are not testable here.**", ""]
    if sessions:
        commands = _distinct_list(s["command"] for s in sessions)
        wall = sum(s.get("wall_seconds", 0) for s in sessions)
        label = "Command" if len(commands) == 1 else "Commands"
        lines.append(
            f"- {label}: {', '.join(f'`{c}`' for c in commands)} "
            f"({len(sessions)} invocation(s), {_minutes(wall)} wall time in all"
            + (
                f"; {killed} killed, counted up to their last finished run)"
                if (killed := sum("finished" in s and s["finished"] is None for s in sessions))
                else ")"
            )
        )
    else:
        lines.append("- Command: not recorded (runs made before `qbench run` logged suite.json)")
    seeds = rows.seed.nunique()
    lines += [
        f"- Runs: {rows.run_id.nunique()} finished ({rows.technique.nunique()} techniques x {seeds} seed(s))",
        f"- Settings: {_settings(dirs)}",
        f"- Hardware: {hardware}",
        f"- Versions: {versions}",
        f"- Commit: {commit_note}",
        "",
    ]
    if gates:
        lines += ["### Gates", "", *render_gates(gates), ""]
    if pilot := read_suite_record(results, suite, "pilot"):
        lines += [_pilot_line(pilot), ""]
    if sweep := read_suite_record(results, suite, "sweep"):
        lines += [_sweep_line(sweep), ""]
    failed = failed_runs(read_runs(results), suite=suite)
    mixed = commit_note.startswith("**Mixed")
    for m in wanted:
        lines += [f"### {m.upper()}", ""]
        if mixed:  # the table itself says so, not only the list above it
            lines += [f"> {commit_note}", ""]
        board = _board_markdown(all_rows, suite, m, ci, against, failed if m == wanted[0] else None)
        lines += [board, ""]
    if plot:
        png = out_dir / f"{suite}.png"
        plot_suite(filter_results(all_rows, suite=suite, metric=wanted[0]), png, title=suite, results=results)
        lines += [f"![{suite}: accuracy vs packed size, and training curves]({png.name})", ""]
    return "\n".join(lines)


def _pilot_line(pilot: dict) -> str:
    """What `qbench pilot` measured for the suite (runs/<suite>/pilot.json), in one line."""
    try:
        m = metric(str(pilot["metric"]))
        tried = ", ".join(
            f"{c['setting']} {m.format(c['loss'], signed=True)} ({c['loss_se']:.1f} se)"
            for c in pilot["candidates"]
        )
        chosen = pilot["chosen"] or "none (no headroom)"
        return (
            f"Pilot (`qbench pilot`, {pilot['split']} split, float {m.label} {m.format(pilot['float'])}): "
            f"loss of post-training rounding {tried}; chosen: {chosen}."
        )
    except (KeyError, TypeError, ValueError):
        return "Pilot: runs/<suite>/pilot.json is not a pilot record (rerun qbench pilot)."


def _sweep_line(sweep: dict) -> str:
    """What `qbench sweep` measured and chose for the suite (runs/<suite>/sweep.json), in one line:
    per estimator family each (qat_lr, qat_steps) with its mean and paired difference from the best."""
    try:
        m = metric(str(sweep["metric"]))
        parts = []
        for family, rec in sweep["families"].items():
            tried = []
            for c in rec["candidates"]:
                d = c["difference_from_best"]
                vs = (
                    "best"
                    if d is None
                    else f"Δ {m.format(d['estimate'], signed=True)} [{m.format(d['low'], signed=True)}, "
                    f"{m.format(d['high'], signed=True)}]"
                )
                tried.append(f"lr {c['qat_lr']:g} x {c['qat_steps']} steps {m.format(c['value'])} ({vs})")
            chosen = rec["chosen"]
            parts.append(
                f"{family} ({', '.join(rec['techniques'])}): {'; '.join(tried)}; chosen: lr "
                f"{chosen['qat_lr']:g} x {chosen['qat_steps']} steps"
            )
        return (
            f"QAT budget (`qbench sweep`, {sweep['split']} split, {m.label}, runs in suite "
            f"{sweep['suite']}-sweep; the cheapest setting whose interval includes the best): "
            + ". ".join(parts)
            + "."
        )
    except (KeyError, TypeError, ValueError):
        return "QAT budget: runs/<suite>/sweep.json is not a sweep record (rerun qbench sweep)."


def _distinct_list(values) -> list:
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def per_seed_path(out: Path) -> Path:
    """The per-seed CSV written beside a results page: RESULTS.md -> RESULTS-per-seed.csv."""
    return out.with_name(f"{out.stem}-per-seed.csv")


def per_seed_table(rows: pd.DataFrame, results: Path | None = None) -> pd.DataFrame:
    """One row per run x precision x metric of index rows `rows`, with the commit of its run."""
    if rows.empty:
        return pd.DataFrame(columns=list(PER_SEED_COLUMNS))
    commits = run_commits(rows, results)
    t = rows.assign(commit=[commits[(str(s), str(r))] for s, r in zip(rows.suite, rows.run_id, strict=True)])
    t = t[list(PER_SEED_COLUMNS)].copy()
    order = t.apply(
        lambda r: (
            r.suite,
            technique_key(r.technique),
            r.train_bits,
            r.seed,
            precision_key(r.precision),
            r.metric,
        ),
        axis=1,
    )
    return t.iloc[sorted(range(len(t)), key=lambda i: order.iloc[i])].reset_index(drop=True)


def _command(
    suites: list[str], metrics: list[str] | None, ci: bool, against: str | None, allow_mixed: bool
) -> str:
    return (
        "qbench results"
        + "".join(f" --suite {s}" for s in suites)
        + "".join(f" --metric {m}" for m in metrics or [])
        + _compare_flags(ci, against)
        + (" --allow-mixed-commits" if allow_mixed else "")
    )


def write_results_md(
    results: Path,
    suites: list[str],
    out: Path,
    metrics: list[str] | None = None,
    plot: bool = True,
    allow_mixed: bool = False,
    ci: bool = False,
    against: str | None = None,
) -> Path:
    """Write the page `out` and its per-seed CSV (returned). Runs of several commits raise
    provenance.MixedCommits unless `allow_mixed`; nothing is written then."""
    all_rows = read_results(results)
    rows = pd.concat([_suite_rows(all_rows, s, results) for s in suites])
    commit_note = check_one_commit(rows, allow_mixed, results)
    csv_path = per_seed_path(out)
    parts = [
        "# qbench results",
        "",
        f"Generated by `{_command(suites, metrics, ci, against, allow_mixed)}` on "
        f"{time.strftime('%Y-%m-%d')} from the runs indexed in `{results}`; regenerate it after a suite "
        "changes rather than editing it. Each table is `qbench compare --suite SUITE --metric METRIC "
        f"--format markdown{_compare_flags(ci, against)}`. {commit_note} Per-seed values: "
        f"[{csv_path.name}]({csv_path.name}).",
        "",
    ]
    for s in suites:
        parts.append(suite_section(results, s, out.parent, metrics, plot, allow_mixed, ci, against))
    table = per_seed_table(rows[rows.metric.isin(metrics)] if metrics else rows, results)
    atomic_write_text(csv_path, table.to_csv(index=False))
    atomic_write_text(out, "\n".join(parts).rstrip() + "\n")
    return csv_path


# ---------------------------------------------------------------- README blocks

_MARKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def find_block(text: str, marker: str, where: str = "README") -> tuple[int, int]:
    """Line numbers of the ``<!-- MARKER -->`` and ``<!-- /MARKER -->`` lines of `text` (each
    alone on its line, exactly once, in that order); MarkerError otherwise."""
    if not _MARKER_NAME.fullmatch(marker):
        raise MarkerError(f"--marker {marker!r}: letters, digits, '_', '.' and '-' only")
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == start]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        found = f"found {len(starts)} {start} and {len(ends)} {end}"
        raise MarkerError(
            f"{where}: expected one {start} line, then one {end} line ({found}); nothing written"
        )
    return starts[0], ends[0]


def replace_block(text: str, marker: str, body: str, where: str = "README") -> str:
    """`text` with the lines between its marker lines replaced by `body`; the markers stay."""
    start, end = find_block(text, marker, where)
    lines = text.splitlines(keepends=True)
    return "".join([*lines[: start + 1], body.rstrip("\n") + "\n", *lines[end:]])


def readme_block(
    results: Path,
    suites: list[str],
    command: str,
    metric: str | None = None,
    ci: bool = False,
    against: str | None = None,
    allow_mixed: bool = False,
) -> str:
    """The block's lines: a comment naming `command` (which rewrites it), then per suite the
    `qbench compare` command, the commit(s) of its runs and its leaderboard."""
    all_rows = read_results(results)
    rows = pd.concat([_suite_rows(all_rows, s, results) for s in suites])
    check_one_commit(rows, allow_mixed, results)  # refuse before anything is built
    parts = [f"<!-- generated by `{command}` from the index: rerun it rather than editing this block -->"]
    for s in suites:
        suite_rows = _suite_rows(all_rows, s, results)
        m = metric or _headline(suite_rows)
        note = check_one_commit(suite_rows, allow_mixed, results, name_commit=False)
        compare = f"qbench compare --suite {s} --metric {m} --format markdown{_compare_flags(ci, against)}"
        failed = failed_runs(read_runs(results), suite=s)
        parts += [f"`{compare}`. {note}", "", _board_markdown(all_rows, s, m, ci, against, failed), ""]
    return "\n".join(parts)


def write_readme_block(path: Path, marker: str, body: str) -> None:
    """Replace the block `marker` of the file `path` with `body` (MarkerError, nothing written,
    when the file lacks the block)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MarkerError(f"{path}: no such file") from None
    atomic_write_text(path, replace_block(text, marker, body, str(path)))


def write_pages(
    results: Path,
    suites: list[str],
    out: Path | None,
    readme: Path | None = None,
    marker: str | None = None,
    metrics: list[str] | None = None,
    plot: bool = True,
    allow_mixed: bool = False,
    ci: bool = False,
    against: str | None = None,
) -> list[str]:
    """`qbench results`: the page `out` (with its per-seed CSV) and/or the block `marker` of
    `readme`. Everything is checked (the block's markers, the commits, the results) before
    anything is written. Returns what was written, as lines to print."""
    block = ""
    if readme is not None and marker is not None:
        find_block(readme.read_text() if readme.is_file() else "", marker, str(readme))
        command = (
            _command(suites, metrics, ci, against, allow_mixed) + f" --readme {readme} --marker {marker}"
        )
        first = metrics[0] if metrics else None
        block = readme_block(results, suites, command, first, ci, against, allow_mixed)
    done = []
    if out is not None:
        csv = write_results_md(results, suites, out, metrics, plot, allow_mixed, ci, against)
        done.append(f"wrote {out} and {csv}")
    if readme is not None and marker is not None:
        write_readme_block(readme, marker, block)
        done.append(f"rewrote the {marker} block of {readme}")
    return done
