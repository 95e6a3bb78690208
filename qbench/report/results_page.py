"""`qbench results`: results/RESULTS.md, generated from the index and the run folders.

For each suite: the command(s) that ran it (runs/<suite>/suite.json, written by `qbench run`),
wall time, the hardware and versions the runs recorded (env.json), the key recipe settings, one
leaderboard per metric (exactly `qbench compare --suite S --metric M --format markdown`), the
plot (`qbench compare --plot`) and any failed runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from qbench.config import load_run_config
from qbench.io import CorruptFile, atomic_write_text
from qbench.report.board import failed_runs, filter_results, leaderboard, render
from qbench.report.plots import plot_suite
from qbench.store import read_results, read_runs, suite_sessions


def _distinct(values) -> str:
    seen = []
    for v in values:
        if v is not None and v not in seen:
            seen.append(v)
    return ", ".join(str(v) for v in seen) or "unknown"


def _run_dirs(df, results: Path) -> list[Path]:
    out = []
    for r in df.drop_duplicates("run_id").itertuples():
        p = Path(r.run_dir)
        out.append(p if p.is_dir() else results / "runs" / r.suite / r.run_id)
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
    for d in dirs:
        try:
            c = load_run_config(d / "config.yaml").model_dump(mode="json")
        except (OSError, CorruptFile):
            continue
        data, m, t, q = c["data"], c["model"], c["train"], c["quant"]
        sizes = ", ".join(
            f"{k.split('_')[0]} {v}" for k, v in data.items() if k.endswith(("_utterances", "_sentences"))
        )
        return (
            f"task {c['task']}, data {data['source']} ({sizes}), model {m['arch']} d_model {m.get('d_model')} "
            f"x {m.get('layers', m.get('encoder_layers'))} layers, {t['steps']} steps of batch {t['batch_size']}, "
            f"QAT after {q.get('float_warmup_steps', 0)} shared float steps"
        )
    return "not recorded"


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def suite_section(results: Path, suite: str, out_dir: Path, metrics: list[str] | None, plot: bool) -> str:
    all_rows = read_results(results)
    rows = all_rows[all_rows.suite == suite] if not all_rows.empty else all_rows
    if rows.empty:
        raise ValueError(f"no results for suite {suite!r} in {results}/index.sqlite")
    headline = rows[rows.headline == 1].metric.iloc[0]
    wanted = metrics or [headline, *sorted(set(rows.metric) - {headline})]
    dirs = _run_dirs(rows, results)
    hardware, versions = _environment(dirs)
    sessions = suite_sessions(results, suite)
    lines = [f"## {suite}", ""]
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
        "",
    ]
    failed = failed_runs(read_runs(results), suite=suite)
    for m in wanted:
        board = leaderboard(filter_results(all_rows, suite=suite, metric=m))
        if m == wanted[0]:
            board.failed = failed
        lines += [f"### {m.upper()}", "", render(board, "markdown"), ""]
    if plot:
        png = out_dir / f"{suite}.png"
        plot_suite(filter_results(all_rows, suite=suite, metric=wanted[0]), png, title=suite, results=results)
        lines += [f"![{suite}: accuracy vs packed size, and training curves]({png.name})", ""]
    return "\n".join(lines)


def _distinct_list(values) -> list:
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def write_results_md(
    results: Path, suites: list[str], out: Path, metrics: list[str] | None = None, plot: bool = True
) -> None:
    parts = [
        "# qbench results",
        "",
        f"Generated by `qbench results {' '.join(f'--suite {s}' for s in suites)}` on "
        f"{time.strftime('%Y-%m-%d')} from the runs indexed in `{results}`; regenerate it after a suite "
        "changes rather than editing it. Each table is `qbench compare --suite SUITE --metric METRIC "
        "--format markdown`.",
        "",
    ]
    for s in suites:
        parts.append(suite_section(results, s, out.parent, metrics, plot))
    atomic_write_text(out, "\n".join(parts).rstrip() + "\n")
