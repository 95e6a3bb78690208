"""Tasks: one module per task behind one small interface (lm-evaluation-harness style registry).

A task turns a recipe into data, a model, a training loss and an evaluation. The engine and the
CLI only talk to this interface, so adding machine translation is adding a module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class EvalResult:
    """Metrics for one split at one precision, plus (id, reference, hypothesis) rows."""

    metric: str  # the headline metric's name, e.g. "wer"
    value: float
    higher_is_better: bool
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)


class Task(Protocol):
    name: str
    metric: str
    higher_is_better: bool
    secondary_metrics: dict[str, bool]  # other metrics in EvalResult.details -> higher is better
    dataset: str

    def build_data(self) -> None: ...

    def build_model(self) -> nn.Module: ...

    def train_batch(self, step: int, device: torch.device) -> Any:
        """The batch of a training step; a pure function of (seed, step) so a resumed run sees
        exactly the batches an uninterrupted one would."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, progress: bool = True
    ) -> EvalResult: ...


def build_task(recipe, cache_dir: Path, progress: bool = True) -> Task:
    if recipe.task == "asr":
        from qbench.tasks.asr import ASRTask

        return ASRTask(recipe, cache_dir, progress=progress)
    if recipe.task == "mt":
        from qbench.tasks.mt import MTTask

        return MTTask(recipe, cache_dir, progress=progress)
    raise ValueError(f"unknown task {recipe.task!r}")
