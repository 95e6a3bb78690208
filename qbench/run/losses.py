"""The training losses between two host reads (qbench.run.engine's loop)."""

from __future__ import annotations

import math

import torch

__all__ = ["StepLosses", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is marked failed with the step."""


class StepLosses:
    """The training losses of the steps since the last host read, kept on the device: reading a
    loss per step (its NaN check, the running average) would stop the device's queue every step.
    :meth:`read` copies them to the host in one go, every ``log_every`` steps and before anything is
    saved or evaluated, so a non-finite loss still fails the run, with its step, before any
    checkpoint is written from it."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.buffer = torch.zeros(size, device=device)
        self.first = 0  # the step of buffer[0]
        self.count = 0
        self.running: float | None = None  # the running average, as it was updated every step
        self.last = float("nan")

    def add(self, step: int, loss: torch.Tensor) -> None:
        if self.count == self.buffer.numel():
            self.read()
        if self.count == 0:
            self.first = step
        self.buffer[self.count] = loss  # a device copy: no sync
        self.count += 1

    def read(self) -> None:
        """One host sync for the pending losses: raises TrainingDiverged at the first non-finite one."""
        if not self.count:
            return
        values, first = self.buffer[: self.count].tolist(), self.first
        self.count = 0
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss is {value} at step {first + i}")
            self.running = value if self.running is None else 0.95 * self.running + 0.05 * value
        self.last = values[-1]
