"""Results roots written by qbench versions whose run ids and training keys also hashed what a
run is only scored on and where its data lay (qbench.config.run_ids, ``legacy=True``): the first
time a run needs them, its folder and the shared trainings it reuses take today's names, and the
index follows, so finished runs are found instead of trained again."""

from __future__ import annotations

import json
from pathlib import Path

from qbench.config import Recipe, run_id, training_key
from qbench.io import atomic_write_json
from qbench.progress import console
from qbench.store import rename_run

__all__ = ["adopt_legacy_run", "adopt_legacy_shared"]


def adopt_legacy_shared(shared: Path, recipe: Recipe) -> None:
    """Rename the recipe's shared finished training and float warm-up (``cache/shared/``) from
    their legacy keys, where only the legacy file exists."""
    warm = recipe.quant.float_warmup_steps
    for prefix, until in [("final", None), *([("float", warm)] if warm else [])]:
        new = shared / f"{prefix}-{training_key(recipe, float_until=until)}.pt"
        old = shared / f"{prefix}-{training_key(recipe, float_until=until, legacy=True)}.pt"
        if old != new and old.is_file() and not new.exists():
            try:
                old.rename(new)
            except FileNotFoundError:  # another process adopted it first
                pass


def adopt_legacy_run(results: Path, suite: str, recipe: Recipe) -> bool:
    """Rename the run's legacy folder ``runs/<suite>/<legacy id>`` to its run id (its metrics.json
    and index rows too) and adopt its shared trainings; True when a folder was renamed. Call it
    holding the run's lock."""
    adopt_legacy_shared(results / "cache" / "shared", recipe)
    old, new = run_id(recipe, legacy=True), recipe.run_id
    folder = results / "runs" / suite
    if old == new or not (folder / old).is_dir() or (folder / new).exists():
        return False
    (folder / old).rename(folder / new)
    metrics = folder / new / "metrics.json"
    if metrics.is_file():
        record = json.loads(metrics.read_text(encoding="utf-8"))
        if isinstance(record, dict) and record.get("run_id") == old:
            atomic_write_json(metrics, {**record, "run_id": new})
    rename_run(results, suite, old, new)
    console.print(f"[dim]{suite}/{old}: now {new} (run ids leave out the test split and data folder)[/dim]")
    return True
