"""Run directories, atomic writes and the SQLite results index.

Layout under the results root (default `results/`):
    runs/<suite>/<run-id>/   config.yaml, status.json, metrics.json, env.json, train.log,
                             hyp/<precision>.tsv, checkpoint.pt
    cache/                   data, features and shared training checkpoints
    index.sqlite             one row per run x eval precision x metric (WAL: several writers are safe)
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import torch

from qbench.recipe import Recipe, resolved_yaml


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    # weights_only: a checkpoint is data, never code to execute.
    return torch.load(path, map_location="cpu", weights_only=True)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    import torchaudio

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "commit": git_commit(),
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
        return json.loads(f.read_text()) if f.is_file() else {"state": "new"}

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

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / "metrics.json", metrics)

    def metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())


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
    PRIMARY KEY (run_id, suite, precision, metric)
)
"""


def _connect(db: Path) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, timeout=60)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA busy_timeout=60000")
    con.execute(_SCHEMA)
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
    ]
    values = [tuple(r.get(c) for c in cols) for r in rows]
    with closing(_connect(index_path(root))) as con, con:
        con.executemany(
            f"INSERT OR REPLACE INTO results ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", values
        )


def read_results(root: Path):
    import pandas as pd

    db = index_path(root)
    if not db.is_file():
        return pd.DataFrame()
    with closing(_connect(db)) as con:
        return pd.read_sql_query("SELECT * FROM results", con)
