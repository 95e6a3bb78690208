"""Recorded-speech sources for ASR: ``fsdd-digits``, ``librispeech`` and ``manifest``.

Each source gives (1) the list of files it reads, whose (path below the data folder, size, mtime)
join the feature cache key so that features are rebuilt when a file changes, and (2) lazy per-split iterators of
utterances at 16 kHz. Problems raise `DataError` naming the file (and the line of a transcript or
manifest); where the recipe sets ``skip_bad_files`` the item is skipped instead and counted in
``stats``, which the task stores in the run's metrics (``data`` in metrics.json).

Manifests and transcripts are UTF-8 text split on "\n" (a "\r" before it is dropped), so a line
number in a message is the one an editor shows; a byte that is not UTF-8 is named by line and
byte. Every utterance needs a transcript left after normalisation and audio at least one feature
window (25 ms) long; decoded audio is checked as it is read (qbench.data.audio).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import soundfile as sf

from qbench.data import DataError, fsdd
from qbench.data.audio import SAMPLE_RATE, read_audio
from qbench.data.synthetic_speech import Utterance

SPLITS = ("train", "valid", "test")
_NOT_TEXT = re.compile(r"[^a-z' ]+")
MIN_SAMPLES = 400  # one 25 ms window of the log-mel features at 16 kHz: shorter audio has no frame


def normalise_text(text: str) -> str:
    """Lower-case a-z, apostrophe and single spaces: the character units' alphabet. Anything else
    (punctuation, digits, letters outside a-z) becomes a space."""
    return " ".join(_NOT_TEXT.sub(" ", text.lower()).split())


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark dropped); DataError naming the line and byte
    of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        number, start = raw.count(b"\n", 0, e.start) + 1, raw.rfind(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{number}: invalid UTF-8 at byte {e.start - start + 1} of the line "
            f"({raw[e.start : e.end]!r}): save the file as UTF-8"
        ) from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def source_files(cfg, splits: Sequence[str] = SPLITS) -> list[Path]:
    """The files the source reads for `splits` (for the feature cache key); FSDD's splits draw
    from one folder of recordings, so every split reads all of it."""
    if cfg.source == "fsdd-digits":
        return fsdd.source_files(cfg)
    if cfg.source == "librispeech":
        return sorted(f for split in splits for f in _librispeech_files(cfg, split))
    if cfg.source == "manifest":
        return sorted({p for split in splits for p in _manifest_files(cfg, split)})
    raise ValueError(f"{cfg.source!r} is not a recorded-speech source")


def data_root(cfg) -> Path | None:
    """The folder `data.path` names (None for manifests, whose files are named by the manifest)."""
    if cfg.source == "fsdd-digits":
        return fsdd.recordings_folder(cfg.path)
    if cfg.source == "librispeech":
        return _librispeech_root(cfg)
    return None


def fingerprint(files: list[Path], root: Path | None = None) -> list[tuple[str, int, int]]:
    """What identifies the files' contents cheaply: path (below `root` where the file lies there,
    so a moved copy of the data keeps its fingerprint), size and modification time (ns)."""
    base = root.resolve() if root is not None else None
    out = []
    for f in files:
        resolved, st = f.resolve(), f.stat()
        name = (
            resolved.relative_to(base).as_posix() if base and resolved.is_relative_to(base) else str(resolved)
        )
        out.append((name, st.st_size, st.st_mtime_ns))
    return out


def generator_version(cfg) -> int:
    return fsdd.GENERATOR_VERSION if cfg.source == "fsdd-digits" else 1


def utterances(cfg, stats: dict, splits: Sequence[str] = SPLITS) -> dict[str, Iterator[Utterance]]:
    """Per-split iterators of `splits`; `stats` fills in (skipped items, kept utterances) as they
    are consumed."""
    if cfg.source == "fsdd-digits":
        return fsdd.generate(cfg, stats, splits)
    stats.setdefault("skipped_files", 0)
    stats.setdefault("skipped_too_long", 0)
    read = _librispeech_split if cfg.source == "librispeech" else _manifest_split
    return {split: read(cfg, split, stats) for split in splits}


def _skip_or_raise(cfg, stats: dict, message: str) -> None:
    if not cfg.skip_bad_files:
        raise DataError(f"{message} (set data.skip_bad_files=true to skip and count such items)")
    stats["skipped_files"] += 1


def _read(cfg, stats: dict, path: Path) -> tuple | None:
    """(audio, seconds) or None when skipped: too long (counted), or unreadable and skippable."""
    try:
        seconds = sf.info(path).duration
        if seconds > cfg.max_seconds:
            stats["skipped_too_long"] += 1
            return None
        audio = read_audio(path)
        if audio.shape[0] < MIN_SAMPLES:
            raise DataError(
                f"{path}: audio of {seconds * 1000:.1f} ms is shorter than one 25 ms feature window"
            )
    except (DataError, sf.LibsndfileError, RuntimeError) as e:
        message = str(e) if isinstance(e, DataError) else f"{path}: unreadable or corrupt audio ({e})"
        _skip_or_raise(cfg, stats, message)
        return None
    return audio, audio.shape[0] / SAMPLE_RATE


# ---------------------------------------------------------------- LibriSpeech


def _librispeech_root(cfg) -> Path:
    if cfg.path is None:
        raise DataError(
            "librispeech needs the folder holding the subset folders (train-clean-100, dev-clean, ...): "
            "pass --set data.path=/path/to/LibriSpeech, or fetch subsets with `qbench data download`"
        )
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data.path is not a folder")
    return root


def _subset_dirs(cfg, split: str) -> list[Path]:
    root = _librispeech_root(cfg)
    dirs = []
    for subset in getattr(cfg, split):
        d = root / subset
        if not d.is_dir():
            d = root / "LibriSpeech" / subset  # the archives unpack into LibriSpeech/
        if not d.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"data.{split}: subset {subset!r} not found in {root} (folders there: {', '.join(found)})"
            )
        dirs.append(d)
    return dirs


def _librispeech_files(cfg, split: str) -> list[Path]:
    files: list[Path] = []
    for d in _subset_dirs(cfg, split):
        files += d.glob("*/*/*.flac")
        files += d.glob("*/*/*.trans.txt")
    return files


def _librispeech_split(cfg, split: str, stats: dict) -> Iterator[Utterance]:
    kept = 0
    for d in _subset_dirs(cfg, split):
        for chapter in sorted(p for p in d.glob("*/*") if p.is_dir()):
            audio_files = {p.stem: p for p in chapter.glob("*.flac")}
            transcripts = sorted(chapter.glob("*.trans.txt"))
            seen = set()
            for trans in transcripts:
                for number, line in enumerate(text_lines(trans), 1):
                    if not line.strip():
                        continue
                    uid, _, text = line.strip().partition(" ")
                    if uid not in audio_files:
                        _skip_or_raise(
                            cfg, stats, f"{trans}:{number}: transcript of {uid} has no audio ({uid}.flac)"
                        )
                        continue
                    seen.add(uid)
                    if not normalise_text(text):
                        _skip_or_raise(cfg, stats, f"{trans}:{number}: {uid} has {_no_words(text)}")
                        continue
                    got = _read(cfg, stats, audio_files[uid])
                    if got is None:
                        continue
                    kept += 1
                    yield Utterance(uid, normalise_text(text), got[0], uid.split("-")[0])
            for uid in sorted(set(audio_files) - seen):
                where = f"in {', '.join(t.name for t in transcripts)}" if transcripts else "(no .trans.txt)"
                _skip_or_raise(cfg, stats, f"{audio_files[uid]}: audio with no transcript {where}")
    if not kept:
        raise DataError(
            f"librispeech: the {split} split ({', '.join(getattr(cfg, split))}) has no utterances"
        )
    stats.setdefault("utterances", {})[split] = kept


# ---------------------------------------------------------------- manifests

AUDIO_KEYS = ("audio", "audio_filepath", "path", "file")
TEXT_KEYS = ("text", "transcript", "sentence")


def _manifest_path(cfg, split: str) -> Path:
    path = Path(getattr(cfg, split)).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: data.{split} manifest not found")
    return path


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) pairs of a JSONL file, or of a TSV file with or without a header row."""
    lines = text_lines(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            yield number, row
        return
    # csv with no quoting: Common Voice TSVs hold quote characters inside sentences
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    named = any(h in AUDIO_KEYS for h in header) and any(h in TEXT_KEYS for h in header)
    columns = header if named else ["audio", "text", "duration"]
    for number, fields in enumerate(rows[1:] if named else rows, 2 if named else 1):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: expected audio<TAB>transcript[<TAB>duration]")
        yield number, dict(zip(columns, fields, strict=False))


def _no_words(text) -> str:
    if text is None or not str(text).strip():
        return "no transcript"
    return f"a transcript with no letters a-z left after normalisation ({str(text)[:40]!r})"


def _field(row: dict, keys: tuple[str, ...]):
    return next((row[k] for k in keys if k in row), None)


def _manifest_files(cfg, split: str) -> list[Path]:
    path = _manifest_path(cfg, split)
    files = [path]
    for _, row in _manifest_rows(path):
        audio = _field(row, AUDIO_KEYS)
        if audio:
            f = path.parent / str(audio)
            if f.is_file():
                files.append(f)
    return files


def _manifest_split(cfg, split: str, stats: dict) -> Iterator[Utterance]:
    path = _manifest_path(cfg, split)
    kept = 0
    for number, row in _manifest_rows(path):
        where = f"{path}:{number}"
        audio, text = _field(row, AUDIO_KEYS), _field(row, TEXT_KEYS)
        if not audio:
            raise DataError(f"{where}: no audio path (one of the keys {', '.join(AUDIO_KEYS)})")
        audio_path = path.parent / str(audio)
        if text is None or not normalise_text(str(text)):
            _skip_or_raise(cfg, stats, f"{where}: audio {audio_path} has {_no_words(text)}")
            continue
        if not audio_path.is_file():
            _skip_or_raise(cfg, stats, f"{where}: transcript has no audio ({audio_path} not found)")
            continue
        duration = row.get("duration")
        if duration not in (None, ""):
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                raise DataError(f"{where}: duration {duration!r} is not a number of seconds") from None
            if duration > cfg.max_seconds:  # trusted so that long files are never decoded
                stats["skipped_too_long"] += 1
                continue
        got = _read(cfg, stats, audio_path)
        if got is None:
            continue
        kept += 1
        yield Utterance(
            f"{split}-{number:06d}", normalise_text(str(text)), got[0], str(row.get("speaker", ""))
        )
    if not kept:
        raise DataError(f"{path}: the {split} manifest has no usable utterances")
    stats.setdefault("utterances", {})[split] = kept
