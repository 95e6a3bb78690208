"""`qbench eval`: score finished runs again without retraining, at their precisions, on the
fake-quant path or on real integer kernels (qbench.quant.kernels), with the throughput of each
evaluation. The rows land in the index as rows of the same run: the integer path's cells under
precision ``<p>+int`` (its own column on the leaderboard), and throughput as the task's
throughput metric (`rtfx` for ASR, `sentences_per_s` for MT) at each precision and path.

Throughput is timed on the test split after a warm-up pass over the validation split at the same
precision and path (first calls allocate, pack and fill caches), in this process's threads: the
faster of two timed passes. Peak resident memory (`peak_rss_mb`, Linux) is the process's high-water
mark over those passes, counted afresh after the warm-up: the model, its data and the decoder.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from qbench.quant import parse_precision, use_precision
from qbench.quant.kernels import integer_kernels
from qbench.quant.sensitivity import written_maps
from qbench.run.engine import load_trained
from qbench.store import record_results, run_folder
from qbench.tasks.metrics import PEAK_RSS

__all__ = ["Kernels", "Rescored", "rescore_run"]

Kernels = Literal["fake", "int"]
TIMED_PASSES = 2
#: index columns a rescored row copies from the run's own row
_KEPT: tuple[str, ...] = (
    *("run_id", "suite", "task", "dataset", "technique", "train_bits", "seed"),
    *("size_bits", "float32_bits", "run_dir", "model", "variant"),
)


@dataclass(frozen=True)
class Rescored:
    """One precision of one run on one path: its headline metric (and the stored fake-quant value
    beside it), its throughput and which Linear layers took an integer kernel."""

    run_id: str
    precision: str
    kernels: str
    metric: str
    value: float
    stored: float | None  # the index's fake-quant value of the same cell
    throughput: float
    throughput_metric: str
    peak_rss_mb: float | None
    kernel_use: str


def _reset_peak_rss() -> None:
    """Start this process's peak-RSS count afresh (Linux: 5 > /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    """The process's peak resident memory since the last reset, in MB (Linux VmHWM); None where
    the system does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _plain(value: object) -> object:
    """A pandas/numpy scalar as the Python value SQLite stores (None for NaN)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def _column(precision: str, kernels: Kernels) -> str:
    return precision if kernels == "fake" else f"{precision}+int"


def rescore_run(
    index_rows: pd.DataFrame,
    results: Path,
    kernels: Kernels,
    precisions: list[str] | None = None,
    device: torch.device | None = None,
    progress: bool = False,
    evaluate_on: list[str] | None = None,
    test_set: str | None = None,
) -> list[Rescored]:
    """Evaluate the run whose index rows are `index_rows` (one run, any precisions) at each of
    `precisions` (default: its recipe's), record the rows, and return what was measured.
    `evaluate_on`: `--set` overrides of the data it is scored on, recorded under suite
    ``<suite>@<test_set>`` (a leaderboard of its own: ``qbench compare --suite <suite>@<test_set>``)."""
    device = device or torch.device("cpu")
    first = index_rows.iloc[0]
    run_dir = run_folder(results, first.run_dir, first.suite, first.run_id)
    if evaluate_on and not test_set:
        raise ValueError("scoring on other data needs a name for it (--test-set)")
    recipe, task, model, spec = load_trained(run_dir, results, progress=progress, evaluate_on=evaluate_on)
    suite = str(first.suite) + (f"@{test_set}" if test_set else "")
    model = model.to(device)
    named = written_maps(run_dir, recipe.precisions)
    out, rows = [], []
    for name in precisions or list(recipe.eval.precisions):
        pmap = parse_precision(name, named)
        with use_precision(model, pmap, spec, cache=True):
            swap = kernels == "int" and not pmap.is_float
            with integer_kernels(model) if swap else nullcontext() as use:
                task.evaluate(model, "valid", device, progress=False)  # warm-up
                _reset_peak_rss()
                times = []
                for _ in range(TIMED_PASSES):
                    t0 = time.perf_counter()
                    res = task.evaluate(model, "test", device, progress=progress)
                    times.append(time.perf_counter() - t0)
                seconds = min(times)  # the least disturbed pass: other processes only add time
                peak = _peak_rss_mb()
        column = _column(name, kernels if swap else "fake")  # float takes no kernel: its own cell
        own = index_rows if not test_set else index_rows.iloc[0:0]  # other data: nothing stored to compare
        stored = own[(own.precision == name) & (own.metric == res.metric.name)]
        same_cell = index_rows[index_rows.precision == name]
        base = same_cell.iloc[0] if len(same_cell) else first
        speed = task.throughput("test", seconds)
        values = {task.throughput_metric.name: (speed, True, 0)}
        if peak is not None:
            values[PEAK_RSS.name] = (peak, False, 0)
        if kernels == "int" or test_set:  # a cell the index does not hold yet
            values[res.metric.name] = (res.value, res.metric.higher_is_better, 1)
            for m in task.secondary_metrics:
                if m.name in res.details:
                    values[m.name] = (res.details[m.name], m.higher_is_better, 0)
        same = {k: _plain(base[k]) for k in _KEPT}  # numpy scalars are not SQLite values
        rows += [
            {
                **same,
                "suite": suite,
                "precision": column,
                "metric": metric_name,
                "value": float(value),
                "higher_is_better": int(higher),
                "headline": headline,
                "extra": None,
                "created": float(base["created"]),  # the run's own time: latest_only keeps it with its run
            }
            for metric_name, (value, higher, headline) in values.items()
        ]
        out.append(
            Rescored(
                str(first.run_id),
                name,
                kernels,
                res.metric.name,
                res.value,
                float(stored.value.iloc[0]) if len(stored) else None,
                speed,
                task.throughput_metric.name,
                peak,
                use.summary() if use is not None else "fake-quant",
            )
        )
    record_results(results, rows)
    return out
