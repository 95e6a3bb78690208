"""Options several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ResultsOpt = Annotated[
    Path,
    typer.Option(
        "--results", help="Results root: run folders, caches and index.sqlite.", envvar="QBENCH_RESULTS"
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")]
