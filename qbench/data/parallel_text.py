"""Readers for real parallel text: Multi30k's raw files and user-supplied aligned files or TSVs.

Lines are split on "\\n" only (a "\\r" before it is dropped): str.splitlines would also split on
characters such as U+2028 inside a sentence and silently misalign the two sides. Every problem
raises `DataError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from qbench.config import Multi30kData, ParallelData
from qbench.data import DataError

Pair = tuple[str, str]
SPLITS = ("train", "valid", "test")
GZIP_MAGIC = b"\x1f\x8b"
MULTI30K_MAX_LINE_CHARS = 1000  # Multi30k's longest en/de line has 254 characters


def read_lines(path: str | Path, max_line_chars: int) -> list[str]:
    """The lines of a UTF-8 text file, gzip-compressed or plain (told apart by content, not name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip file ({e})") from None
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    chunks = raw.split(b"\n")
    if chunks[-1] == b"":  # the final newline ends the last line rather than starting another
        chunks.pop()
    lines = []
    for number, chunk in enumerate(chunks, 1):
        try:
            line = chunk.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{number}: invalid UTF-8 at byte {e.start + 1} of the line "
                f"({chunk[e.start : e.end]!r})"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark is not text
        if len(line) > max_line_chars:
            raise DataError(
                f"{path}:{number}: line has {len(line)} characters, over max_line_chars={max_line_chars}"
            )
        if not line.strip():
            raise DataError(f"{path}:{number}: blank line (every line must hold a sentence)")
        lines.append(line)
    return lines


def read_aligned(source: str | Path, target: str | Path, max_line_chars: int) -> list[Pair]:
    """Two line-aligned files: line i of `source` translates to line i of `target`."""
    src = read_lines(source, max_line_chars)
    tgt = read_lines(target, max_line_chars)
    if len(src) != len(tgt):
        longer, n = (source, len(src)) if len(src) > len(tgt) else (target, len(tgt))
        raise DataError(
            f"{source} has {len(src)} lines but {target} has {len(tgt)}: the files must be "
            f"line-aligned; the first unmatched line is {longer}:{min(len(src), len(tgt)) + 1} (of {n})"
        )
    return list(zip(src, tgt, strict=True))


def read_tsv(path: str | Path, max_line_chars: int) -> list[Pair]:
    """One `source<TAB>target` pair per line."""
    pairs = []
    for number, line in enumerate(read_lines(path, max_line_chars), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{number}: expected source<TAB>target (exactly one tab), found {len(fields) - 1} tabs"
            )
        src, tgt = fields
        if not src.strip() or not tgt.strip():
            raise DataError(f"{path}:{number}: empty {'source' if not src.strip() else 'target'} side")
        pairs.append((src, tgt))
    return pairs


def load_parallel(cfg: ParallelData) -> dict[str, list[Pair]]:
    """Each split from [source_file, target_file] or [tsv_file]; relative paths start at the working
    directory."""
    splits = {}
    for split in SPLITS:
        files = getattr(cfg, split)
        if len(files) == 2:
            splits[split] = read_aligned(files[0], files[1], cfg.max_line_chars)
        elif len(files) == 1:
            splits[split] = read_tsv(files[0], cfg.max_line_chars)
        else:
            raise DataError(
                f"data.{split}: expected [source_file, target_file] or [tsv_file], got {len(files)} paths"
            )
    return splits


def load_multi30k(cfg: Multi30kData) -> dict[str, list[Pair]]:
    """Multi30k task 1 from a folder of `{train,val,<test_set>}.{en,de,fr}[.gz]` files."""
    if cfg.path is None:
        raise DataError(
            "multi30k needs the folder that holds its raw files (train.en.gz, val.en.gz, "
            "test_2016_flickr.en.gz, ...): pass --set data.path=/path/to/multi30k"
        )
    if cfg.src == cfg.tgt:
        raise DataError(f"data.src and data.tgt are both {cfg.src!r}: pick two different languages")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: data.path is not a folder")

    def find(stem: str, lang: str) -> Path:
        for name in (f"{stem}.{lang}.gz", f"{stem}.{lang}"):
            if (folder / name).is_file():
                return folder / name
        raise DataError(f"{folder}: missing {stem}.{lang}.gz (or {stem}.{lang})")

    stems = {"train": "train", "valid": "val", "test": cfg.test_set}
    return {
        split: read_aligned(find(stem, cfg.src), find(stem, cfg.tgt), MULTI30K_MAX_LINE_CHARS)
        for split, stem in stems.items()
    }
