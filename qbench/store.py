"""Run directories and the SQLite results index: where a run's files and a suite's records live.

Layout under the results root (default `results/`):
    runs/<suite>/<run-id>/   config.yaml, status.json, metrics.json, env.json, train.log,
                             hyp/<precision>.tsv, items/<precision>.csv.gz, checkpoint.pt
    cache/                   data, features and shared training checkpoints
    index.sqlite             one row per run x eval precision x metric (WAL: several writers are safe)
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import platform
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torchaudio

from qbench.config import Recipe, resolved_yaml
from qbench.config.schema import SAFE_NAME
from qbench.io import CorruptFile, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from qbench.quant.labels import technique_label


@functools.cache
def code_version() -> tuple[str | None, bool]:
    """The git commit of the qbench code this process runs, and whether qbench/ had uncommitted
    changes: asked once per process (run_suite asks before its first run), so a commit made
    while a suite runs does not relabel the code it loaded. (None, False) outside a checkout."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=here)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(commit and git("status", "--porcelain", "--", str(here)))
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit, dirty


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "commit": code_version()[0],
        "dirty": code_version()[1],  # uncommitted changes in qbench/: the commit alone does not say
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


class RunDir:
    """One run's folder. Created only when the run starts, never while validating."""

    def __init__(self, root: Path, suite: str, recipe: Recipe):
        self.recipe = recipe
        self.suite = suite
        self.path = root / "runs" / suite / recipe.run_id

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def status(self) -> dict:
        f = self.path / "status.json"
        if not f.is_file():
            return {"state": "new"}
        status = read_json(f, "delete it and the run resumes from its checkpoint")
        if not isinstance(status, dict):
            raise CorruptFile(f"{f}: not a run's status; delete it and the run resumes from its checkpoint")
        return status

    def set_status(self, state: str, **extra: Any) -> None:
        atomic_write_json(self.path / "status.json", {"state": state, "time": time.time(), **extra})

    def start(self, device: torch.device) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", resolved_yaml(self.recipe))
        atomic_write_json(self.path / "env.json", environment(device))
        self.set_status("running")

    def log(self, line: str) -> None:
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    def write_hypotheses(self, precision: str, rows: Iterable[tuple[str, str, str]]) -> None:
        text = "id\treference\thypothesis\n" + "".join(f"{i}\t{r}\t{h}\n" for i, r, h in rows)
        atomic_write_text(self.path / "hyp" / f"{precision}.tsv", text)

    def write_items(self, precision: str, items: list[dict[str, Any]]) -> None:
        """The per-item scores of an evaluation at `precision` (EvalResult.items), in items/."""
        write_items(self.path, precision, items)

    def read_items(self, precision: str) -> pd.DataFrame | None:
        """The per-item scores at `precision`; None for a run that predates them."""
        return read_items(self.path, precision)

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / "metrics.json", metrics)

    def metrics(self) -> dict:
        return read_json(self.path / "metrics.json", "delete it and status.json to evaluate the run again")


# ---------------------------------------------------------------- per-item scores

#: columns of an items file read as text whatever they hold (a speaker "19", a hypothesis "NA")
_ITEM_TEXT = ("test_set", "id", "cluster", "reference", "hypothesis")


def items_path(run_dir: Path | str, precision: str) -> Path:
    """items/<precision>.csv.gz of a run folder. The precision is a recipe's name, checked as a
    file name (SAFE_NAME) when the recipe loaded; checked again here, as a reader may pass any."""
    if not re.fullmatch(SAFE_NAME, precision):
        raise ValueError(f"{precision!r} is not a precision name")
    return Path(run_dir) / "items" / f"{precision}.csv.gz"


def write_items(run_dir: Path | str, precision: str, items: list[dict[str, Any]]) -> None:
    """Per-item scores as gzipped CSV, one row per item, written atomically (gzip without a
    timestamp: the same scores give the same bytes)."""
    text = pd.DataFrame(items).to_csv(index=False)
    atomic_write_bytes(items_path(run_dir, precision), gzip.compress(text.encode("utf-8"), mtime=0))


def read_items(run_dir: Path | str, precision: str) -> pd.DataFrame | None:
    """The per-item scores of a run folder (the index's `run_dir`) at `precision`, as written by
    :func:`write_items`: text columns as str, counts as int. None where the run has none (it
    predates them): such a run still shows, without intervals."""
    path = items_path(run_dir, precision)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=dict.fromkeys(_ITEM_TEXT, str), keep_default_na=False)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:  # truncated gzip, bad CSV
        raise CorruptFile(
            f"{path}: unreadable ({type(e).__name__}); delete it and the run shows without intervals, "
            "or delete status.json too to evaluate the run again"
        ) from None


# ---------------------------------------------------------------- index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    suite TEXT NOT NULL,
    task TEXT NOT NULL,
    dataset TEXT NOT NULL,
    technique TEXT NOT NULL,
    train_bits INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    precision TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    higher_is_better INTEGER NOT NULL,
    headline INTEGER NOT NULL DEFAULT 1,
    size_bits INTEGER,
    float32_bits INTEGER,
    extra TEXT,
    run_dir TEXT NOT NULL,
    created REAL NOT NULL,
    model TEXT,
    PRIMARY KEY (run_id, suite, precision, metric)
)
"""

#: columns added to `results` after indexes were first written: (name, SQL type); older
#: indexes get them on open, NULL in their old rows
_ADDED_RESULT_COLUMNS = (("model", "TEXT"), ("variant", "TEXT"))


_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL,
    suite TEXT NOT NULL,
    task TEXT NOT NULL,
    technique TEXT NOT NULL,
    train_bits INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    run_dir TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, suite)
)
"""

_BUSY_MS = 60_000


def _retrying(fn, attempts: int = 20):
    """Call fn, retrying while SQLite reports the database busy or locked. busy_timeout covers
    most contention; this covers what it does not (switching to WAL, schema creation at the same
    moment in two processes, a checkpoint holding the lock)."""
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            msg = str(e).lower()
            if i == attempts - 1 or ("locked" not in msg and "busy" not in msg):
                raise
            time.sleep(min(2.0, 0.05 * 2**i))


def _connect(db: Path) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, timeout=_BUSY_MS / 1000)

    def setup() -> None:
        con.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        con.execute("PRAGMA journal_mode=WAL")
        with con:
            con.execute(_SCHEMA)
            con.execute(_RUNS_SCHEMA)
            have = {row[1] for row in con.execute("PRAGMA table_info(results)")}
            for name, kind in _ADDED_RESULT_COLUMNS:
                if name not in have:
                    con.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")

    try:
        _retrying(setup)
    except BaseException:
        con.close()
        raise
    return con


def index_path(root: Path) -> Path:
    return root / "index.sqlite"


def record_results(root: Path, rows: list[dict]) -> None:
    """Insert or replace rows (one per run x precision x metric) in one transaction."""
    cols = [
        "run_id",
        "suite",
        "task",
        "dataset",
        "technique",
        "train_bits",
        "seed",
        "precision",
        "metric",
        "value",
        "higher_is_better",
        "headline",
        "size_bits",
        "float32_bits",
        "extra",
        "run_dir",
        "created",
        "model",
        "variant",
    ]
    _insert(root, "results", cols, rows)


def _insert(root: Path, table: str, cols: list[str], rows: list[dict]) -> None:
    values = [tuple(r.get(c) for c in cols) for r in rows]
    sql = f"INSERT OR REPLACE INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
    with closing(_connect(index_path(root))) as con:

        def write() -> None:
            with con:  # one transaction: all rows or none
                con.executemany(sql, values)

        _retrying(write)


_RUN_COLS = [
    "run_id",
    "suite",
    "task",
    "technique",
    "train_bits",
    "seed",
    "state",
    "reason",
    "run_dir",
    "updated",
]


def record_run_state(root: Path, recipe: Recipe, suite: str, state: str, reason: str | None = None) -> None:
    """One row per run in the `runs` table: done, failed (with the reason) or interrupted."""
    row = {
        "run_id": recipe.run_id,
        "suite": suite,
        "task": recipe.task,
        "technique": technique_label(recipe),
        "train_bits": recipe.quant.bits,
        "seed": recipe.seed,
        "state": state,
        "reason": reason,
        "run_dir": str(root / "runs" / suite / recipe.run_id),
        "updated": time.time(),
    }
    _insert(root, "runs", _RUN_COLS, [row])


def rename_run(root: Path, suite: str, old: str, new: str) -> None:
    """Give a run's index rows (its own, and its evaluations under ``<suite>@<test set>``) run id
    `new` and their folder ``runs/<suite>/<new>``, in one transaction."""
    db = index_path(root)
    if not db.is_file():
        return
    old_dir, new_dir = str(root / "runs" / suite / old), str(root / "runs" / suite / new)
    with closing(_connect(db)) as con:

        def write() -> None:
            with con:
                for table in ("results", "runs"):
                    con.execute(
                        f"UPDATE {table} SET run_id = ?, run_dir = CASE WHEN run_dir = ? THEN ? "
                        "ELSE run_dir END WHERE run_id = ? AND (suite = ? OR substr(suite, 1, ?) = ?)",
                        (new, old_dir, new_dir, old, suite, len(suite) + 1, suite + "@"),
                    )

        _retrying(write)


def _read_table(root: Path, table: str) -> pd.DataFrame:
    """A table of the index, opened read-only: reading changes nothing (no WAL switch, no schema
    migration) and works where the results are not writable."""
    db = index_path(root)
    if not db.is_file():
        return pd.DataFrame()
    try:
        try:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_MS / 1000)
            with closing(con):
                return _retrying(lambda: pd.read_sql_query(f"SELECT * FROM {table}", con))
        except sqlite3.OperationalError:  # a WAL index in a folder this process may not write
            con = sqlite3.connect(f"{db.resolve().as_uri()}?immutable=1", uri=True)
            with closing(con):
                return pd.read_sql_query(f"SELECT * FROM {table}", con)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as e:
        raise CorruptFile(
            f"{db}: not a readable qbench results index ({str(e).splitlines()[0][:120]}); "
            "move it aside and rerun the suites to rebuild it"
        ) from None


def read_results(root: Path, latest_only: bool = True):
    """The `results` table. With `latest_only`, a run superseded by a newer run of the same suite,
    technique, training bits, seed, model and variant (the suite's recipe changed since) is left out,
    so a leaderboard never averages two configurations as if they were seeds. `model` is the model's
    architecture and `variant` the run's other grid keys ("" where none, or not recorded)."""
    df = _read_table(root, "results")
    for column in ("model", "variant"):  # absent or NULL in indexes written before they were recorded
        df[column] = df[column].fillna("") if column in df.columns else ""
    if not df.empty:  # one lookup per run, not per row (a run has a row per metric and precision)
        where = {
            row: str(run_folder(root, *row)) for row in set(zip(df.run_dir, df.suite, df.run_id, strict=True))
        }
        df["run_dir"] = [where[row] for row in zip(df.run_dir, df.suite, df.run_id, strict=True)]
    if not latest_only or df.empty:
        return df
    started = df.groupby(["suite", "run_id"]).created.transform("min")
    same_config = [df.suite, df.technique, df.train_bits, df.seed, df.model, df.variant]
    newest = started.groupby(same_config).transform("max")
    return df[started == newest].reset_index(drop=True)


def run_folder(root: Path | None, run_dir: object, suite: object, run_id: object) -> Path:
    """A row's run folder as this process can reach it: the recorded path, or where it lies under
    `root` when that path is not a folder from here (recorded relative to another working
    directory, or the root moved). Evaluations under ``<suite>@<name>`` are of the suite's runs."""
    recorded = Path(str(run_dir or ""))
    if recorded.is_dir() or root is None:
        return recorded
    here = root / "runs" / str(suite).partition("@")[0] / str(run_id)
    return here if here.is_dir() else recorded


def read_runs(root: Path):
    """The `runs` table: each run's last known state and, for failures, the reason."""
    return _read_table(root, "runs")


def suite_sessions(results: Path, suite: str) -> list[dict]:
    f = results / "runs" / suite / "suite.json"
    if not f.is_file():
        return []
    try:
        return json.loads(f.read_text()).get("sessions", [])
    except json.JSONDecodeError:
        return []


# ---------------------------------------------------------------- a suite's pilot and sweep records

#: what `qbench pilot` (the setting a suite compares at) and `qbench sweep` (each estimator
#: family's QAT budget) measured and chose, one JSON file each beside the suite's runs
SUITE_RECORDS = ("pilot", "sweep")


def suite_record_path(results: Path, suite: str, kind: str) -> Path:
    """runs/<suite>/<kind>.json, `kind` one of SUITE_RECORDS."""
    if kind not in SUITE_RECORDS:
        raise ValueError(f"unknown suite record {kind!r} (one of {', '.join(SUITE_RECORDS)})")
    return results / "runs" / suite / f"{kind}.json"


def write_suite_record(results: Path, suite: str, kind: str, record: dict) -> Path:
    """Write a suite's pilot or sweep record (atomically) and return its path."""
    path = suite_record_path(results, suite, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return path


def read_suite_record(results: Path, suite: str, kind: str) -> dict | None:
    """A suite's pilot or sweep record, or None where none ran (or its file is unreadable)."""
    path = suite_record_path(results, suite, kind)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
