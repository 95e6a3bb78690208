"""`qbench data ...`: download the public datasets and list what is present locally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qbench.cli.errors import fail
from qbench.data.download import DownloadError, download, status
from qbench.progress import console

data_app = typer.Typer(
    help="Download public datasets (fsdd, multi30k, LibriSpeech subsets) and list local copies.",
    no_args_is_help=True,
)

DestOpt = Annotated[
    Path, typer.Option("--dest", help="Folder that holds the datasets.", envvar="QBENCH_DATA_DEST")
]


@data_app.command("download")
def download_cmd(
    name: Annotated[
        str, typer.Argument(help="fsdd, multi30k or librispeech-<subset> (see `qbench data list`).")
    ],
    dest: DestOpt = Path("data"),
    mirror: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="https base URL serving the same files by name, instead of the official one "
            "(files are verified against the pinned checksums).",
        ),
    ] = None,
    insecure_mirror: Annotated[
        str | None,
        typer.Option(
            "--insecure-mirror",
            metavar="URL",
            help="Like --mirror, but plain http is allowed (e.g. a local copy served on 127.0.0.1); "
            "checksums are still verified.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Download again even if complete.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Download, verify against pinned checksums and unpack a dataset; rerun to resume.

    Every file is checked before it is unpacked or marked complete (LibriSpeech: the publisher's MD5;
    Multi30k: SHA-256 per file; FSDD: SHA-256 per recording). Mirrors must be https unless given with
    --insecure-mirror."""
    if mirror is not None and insecure_mirror is not None:
        fail("give --mirror or --insecure-mirror, not both", 2)
    try:
        folder = download(
            name,
            dest,
            mirror=insecure_mirror if insecure_mirror is not None else mirror,
            force=force,
            progress=progress,
            insecure_mirror=insecure_mirror is not None,
        )
    except DownloadError as e:
        fail(str(e), 2)
    console.print(f"{name}: complete in {folder}")


@data_app.command("list")
def list_cmd(dest: DestOpt = Path("data")) -> None:
    """Each downloadable dataset, whether it is present (complete, partial or absent) and its size."""
    table = Table(title=f"datasets in {dest}")
    for col in ("name", "state", "size", "path", "description"):
        table.add_column(col, justify="right" if col == "size" else "left")
    color = {"complete": "green", "partial": "yellow", "absent": "dim"}
    for row in status(dest):
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "-"
        state = f"[{color[row['state']]}]{row['state']}[/{color[row['state']]}]"
        table.add_row(row["name"], state, size, row["path"], row["description"])
    Console().print(table)  # stdout: the listing is the output, not a message
