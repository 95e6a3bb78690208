"""What every task provides: the :class:`Task` interface the engine and the CLI talk to, and
the :class:`EvalResult` of one evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from qbench.tasks.metrics import Metric


@dataclass
class EvalResult:
    """Metrics for one split at one precision, plus (id, reference, hypothesis) rows."""

    metric: Metric  # the headline metric; its stored name is metric.name
    value: float
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)


class Task(Protocol):
    name: str
    metric: Metric  # the headline metric (registered in qbench.tasks.metrics)
    secondary_metrics: tuple[Metric, ...]  # also recorded in the index, read from EvalResult.details
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
