"""What every task provides: the :class:`Task` interface the engine and the CLI talk to, and
the :class:`EvalResult` of one evaluation."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from qbench.tasks.metrics import Metric

T = TypeVar("T")


@dataclass
class EvalResult:
    """Metrics for one split at one precision, plus (id, reference, hypothesis) rows and the
    per-item scores a paired test or a bootstrap over items needs (`items`)."""

    metric: Metric  # the headline metric; its stored name is metric.name
    value: float
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    #: one dict per scored item (utterance, sentence), the same keys in each: `test_set` (the split,
    #: "test@x4" for a long-form one) and `id`, then what the task's metric sums: ASR `cluster`
    #: (speaker or voice), `word_errors`, `ref_words`, `char_errors`, `ref_chars`; MT `reference`
    #: and `hypothesis`. Summed (or rescored) over one test set they give the corpus metric exactly.
    items: list[dict[str, Any]] = field(default_factory=list)


class Shard(Protocol):
    """This process's share of the data under data-parallel training (qbench.run.distributed.Shard)."""

    def take(self, items: Sequence[T]) -> list[T]: ...

    def gather(self, part: dict) -> dict: ...


class Task(Protocol):
    name: str
    metric: Metric  # the headline metric (registered in qbench.tasks.metrics)
    secondary_metrics: tuple[Metric, ...]  # also recorded in the index, read from EvalResult.details
    dataset: str

    def build_data(self) -> None: ...

    def build_model(self) -> nn.Module: ...

    def train_batch(self, step: int, device: torch.device, shard: Shard | None = None) -> Any:
        """The batch of a training step; a pure function of (seed, step) so a resumed run sees
        exactly the batches an uninterrupted one would."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(
        self,
        model: nn.Module,
        split: str,
        device: torch.device,
        progress: bool = True,
        shard: Shard | None = None,
    ) -> EvalResult: ...

    throughput_metric: Metric  # speed of an evaluation: RTFx (ASR), sentences per second (MT)

    def throughput(self, split: str, seconds: float) -> float:
        """The throughput metric of an evaluation of `split` that took `seconds` of compute."""
        ...


def instance_cache(maxsize: int):
    """A method's results cached on its instance (the `maxsize` newest arguments): unlike
    functools.lru_cache on a method, the cache goes with the task, so a process that builds one
    task after another (qbench eval over a suite's runs) does not keep every task's data alive."""

    def wrap(method):
        name = f"_cache_{method.__name__}"

        @functools.wraps(method)
        def cached(self, *args):
            store = self.__dict__.setdefault(name, {})
            if args not in store:
                if len(store) >= maxsize:
                    store.pop(next(iter(store)))
                store[args] = method(self, *args)
            return store[args]

        return cached

    return wrap
