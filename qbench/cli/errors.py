"""How every `qbench` command ends on an expected failure: one line and an exit code."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.text import Text

from qbench.progress import console


def fail(msg: str, code: int) -> NoReturn:
    """One line (the message's own), `error:` in red; the message is printed as it is, never read
    as Rich markup (a path may hold brackets)."""
    console.print(Text.assemble(("error: ", "red"), msg), highlight=False, soft_wrap=True)
    raise typer.Exit(code)
