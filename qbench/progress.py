"""Rich progress bars shared by data generation, training and evaluation. Where the output is
not a terminal (a log file, `| tee`, CI) a bar cannot redraw, so every so often (30 s;
QBENCH_HEARTBEAT_SECONDS) it prints one plain line instead: what, how far, rate, time left."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True, soft_wrap=True)  # long lines stay whole in logs and CI output


def heartbeat_seconds() -> float:
    """Seconds between two plain progress lines when the output is not a terminal."""
    try:
        return max(0.0, float(os.environ.get("QBENCH_HEARTBEAT_SECONDS", "30")))
    except ValueError:
        return 30.0


class HeartbeatProgress(Progress):
    """A rich Progress that, off a terminal, prints a plain line per task every few seconds."""

    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.every = heartbeat_seconds()
        self.last_beat = time.monotonic()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self.beat(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.beat(task_id)

    def beat(self, task_id: TaskID) -> None:
        now = time.monotonic()
        if self.disable or self.console.is_terminal or now - self.last_beat < self.every:
            return
        self.last_beat = now
        task = next(t for t in self.tasks if t.id == task_id)
        parts = [f"{task.description}: {task.completed:.0f}" + (f"/{task.total:.0f}" if task.total else "")]
        if task.speed:
            parts.append(f"{task.speed:.2f}/s")
        if task.time_remaining is not None:
            parts.append(f"{datetime.timedelta(seconds=round(task.time_remaining))} left")
        if task.fields.get("info"):
            parts.append(str(task.fields["info"]))
        self.console.print(", ".join(parts), markup=False, highlight=False)


def make_progress(transient: bool = False, enabled: bool = True) -> Progress:
    return HeartbeatProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=not enabled,
    )


def progress_bar(
    items: Iterable[T], description: str, enabled: bool = True, total: int | None = None
) -> Iterator[T]:
    """Iterate with a transient bar (heartbeat lines off a terminal; nothing when disabled)."""
    if not enabled:
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    with make_progress(transient=True) as bar:
        task = bar.add_task(description, total=total, info="")
        for item in items:
            yield item
            bar.advance(task)
