"""Tasks: one module per task behind one small interface (:class:`~qbench.tasks.base.Task`),
registered by name like lm-evaluation-harness tasks.

A task turns a recipe into data, a model, a training loss and an evaluation. The engine and the
CLI only talk to this interface, so adding a task is adding a module and one registry entry.
"""

from __future__ import annotations

from pathlib import Path

from qbench.config import Recipe, Suite
from qbench.config import load_suite as load_recipe_file
from qbench.tasks.asr import ASRTask
from qbench.tasks.base import EvalResult, Task
from qbench.tasks.models import model_errors, skeleton_model
from qbench.tasks.mt import MTTask

#: recipe `task:` -> the class that runs it
TASKS: dict[str, type[ASRTask] | type[MTTask]] = {"asr": ASRTask, "mt": MTTask}

__all__ = ["TASKS", "EvalResult", "Task", "build_task", "load_suite", "model_errors", "skeleton_model"]


def build_task(recipe: Recipe, cache_dir: Path, progress: bool = True) -> Task:
    if recipe.task not in TASKS:
        raise ValueError(f"unknown task {recipe.task!r}")
    return TASKS[recipe.task](recipe, cache_dir, progress=progress)


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """A recipe file loaded and validated (qbench.config.load_suite), each run's quantization
    settings also checked against the model it builds (without data)."""
    return load_recipe_file(path, overrides, checks=(model_errors,))
