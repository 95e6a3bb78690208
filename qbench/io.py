"""Atomic writes and checkpoint loading: the only ways qbench puts a file on disk or reads a
checkpoint back, so a reader never sees half a file and a checkpoint never runs code."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

#: mkstemp creates files readable by their owner only; a result file gets the mode a plain open()
#: would give it (0666 less the umask), as logs written with open() have
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


class CorruptFile(ValueError):
    """A file qbench wrote earlier cannot be read back (truncated, overwritten, another format)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, remedy: str) -> Any:
    """A JSON file qbench wrote; one that cannot be parsed (truncated, edited) raises CorruptFile
    naming it and what to do."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFile(f"{path}: unreadable ({type(e).__name__}); {remedy}") from None


def atomic_torch_save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's tensors and plain data, never code (``weights_only``). One that cannot be read
    raises :class:`CorruptFile` naming the file and what to do, not torch's internals."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, pickle and torch's own errors alike
        # torch's own message is about its internals (and advises weights_only=False): not shown
        raise CorruptFile(
            f"{path}: unreadable checkpoint ({type(e).__name__}); delete it and run again to retrain it from "
            "the start of that training"
        ) from None
    if not isinstance(ckpt, dict):
        raise CorruptFile(f"{path}: not a qbench checkpoint (holds a {type(ckpt).__name__})")
    return ckpt
