"""The ``fsdd-digits`` source: connected-digit strings from Free Spoken Digit Dataset recordings.

FSDD (github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0) holds isolated digits,
``recordings/{digit}_{speaker}_{take}.wav``, 8 kHz mono, 50 takes of each digit per speaker.
Like TIDIGITS, an utterance here joins 2 to 7 recordings of ONE speaker with short random pauses
("three one four"), resampled to 16 kHz with torchaudio, with a little noise under it so that the
pauses are not digital silence.

Splits are speaker-disjoint between training and test: the recipe names the speakers of each.
Validation is either its own speakers (``valid_speakers``) or, by default, held-out takes of the
training speakers (takes below ``valid_takes``, FSDD's own test convention is takes 0-4), so all
five speakers of a five-speaker copy can be used: four to train on, one unseen to test on.

Training utterances may be speed-perturbed (Kaldi style: resampling as if the clip had been
recorded at rate x factor changes tempo and pitch together), which with only four training
voices is the cheapest way to hear more of them. Everything derives from ``data.seed``: utterance
i of a split is drawn from a generator seeded by (seed, split, i).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qbench.data import DataError
from qbench.data.audio import SAMPLE_RATE, load_audio, resample
from qbench.data.synthetic_speech import Utterance

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")
PEAK_LEVEL = 0.9
EDGE_PAUSE_S = (0.05, 0.25)  # silence before the first and after the last digit

# Bump whenever a change alters the generated audio or texts (part of the feature cache key).
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Recording:
    digit: int
    speaker: str
    take: int
    path: Path


def recordings_folder(path: str | Path | None) -> Path:
    """The folder of wav files: ``data.path`` itself or its ``recordings/`` subfolder."""
    if path is None:
        raise DataError(
            "fsdd-digits needs the FSDD folder (the one holding recordings/): pass "
            "--set data.path=/path/to/fsdd, or fetch it with `qbench data download fsdd`"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data.path is not a folder")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    return folder


def source_files(cfg) -> list[Path]:
    """Every wav file the source reads (for the feature cache key)."""
    return sorted(recordings_folder(cfg.path).glob("*.wav"))


def scan(cfg) -> tuple[list[Recording], int]:
    """The recordings, and how many files were skipped for a name that gives no transcript."""
    folder = recordings_folder(cfg.path)
    recordings, skipped = [], 0
    for path in source_files(cfg):
        m = NAME.match(path.name)
        if not m:
            if cfg.skip_bad_files:
                skipped += 1
                continue
            raise DataError(
                f"{path}: audio with no transcript: FSDD names files {{digit}}_{{speaker}}_{{take}}.wav "
                "(set data.skip_bad_files=true to skip such files)"
            )
        recordings.append(Recording(int(m.group(1)), m.group(2), int(m.group(3)), path))
    if not recordings:
        raise DataError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) found")
    return recordings, skipped


def split_pools(cfg, recordings: list[Recording]) -> dict[str, list[Recording]]:
    """Recordings each split may draw from; speaker-disjoint between training and test."""
    speakers = sorted({r.speaker for r in recordings})
    for key in ("train_speakers", "valid_speakers", "test_speakers"):
        unknown = [s for s in getattr(cfg, key) if s not in speakers]
        if unknown:
            raise DataError(
                f"data.{key}: no recordings of {', '.join(unknown)} in {recordings_folder(cfg.path)} "
                f"(speakers found: {', '.join(speakers)})"
            )
    train, test = set(cfg.train_speakers), set(cfg.test_speakers)
    if train & test:
        raise DataError(f"data.test_speakers: {', '.join(sorted(train & test))} also in train_speakers")
    if cfg.valid_speakers:
        valid = set(cfg.valid_speakers)
        if valid & (train | test):
            raise DataError(
                f"data.valid_speakers: {', '.join(sorted(valid & (train | test)))} also in another split"
            )
        pools = {
            "train": [r for r in recordings if r.speaker in train],
            "valid": [r for r in recordings if r.speaker in valid],
        }
    else:
        pools = {
            "train": [r for r in recordings if r.speaker in train and r.take >= cfg.valid_takes],
            "valid": [r for r in recordings if r.speaker in train and r.take < cfg.valid_takes],
        }
    pools["test"] = [r for r in recordings if r.speaker in test]
    for split, pool in pools.items():
        if not pool:
            raise DataError(f"fsdd-digits: the {split} split has no recordings to draw from")
    return pools


def _by_speaker(pool: list[Recording]) -> dict[str, list[Recording]]:
    out: dict[str, list[Recording]] = {}
    for r in pool:
        out.setdefault(r.speaker, []).append(r)
    return {s: out[s] for s in sorted(out)}


def generate(
    cfg, stats: dict, splits: Sequence[str] = ("train", "valid", "test")
) -> dict[str, Iterator[Utterance]]:
    """Utterances of each of `splits`, generated lazily (the audio of a split need not fit in
    memory). Files skipped for their names are counted where the training split is generated."""
    recordings, skipped = scan(cfg)
    pools = split_pools(cfg, recordings)
    stats["skipped_files"] = skipped if "train" in splits else 0
    clips: dict[Path, tuple[np.ndarray, int]] = {}  # each file decoded once, at its own rate

    def clip(r: Recording) -> tuple[np.ndarray, int] | None:
        if r.path not in clips:
            try:
                audio, rate = load_audio(r.path)
            except DataError:
                if not cfg.skip_bad_files:
                    raise
                stats["skipped_files"] += 1
                clips[r.path] = (np.zeros(0, np.float32), 0)
            else:
                peak = float(np.abs(audio).max())
                clips[r.path] = (audio * (PEAK_LEVEL / peak) if peak > 0 else audio, rate)
        audio, rate = clips[r.path]
        return (audio, rate) if rate else None

    def split_utterances(split: str, count: int) -> Iterator[Utterance]:
        speakers = _by_speaker(pools[split])
        names = list(speakers)
        for i in range(count):
            rng = random.Random(f"fsdd:{cfg.seed}:{split}:{i}")
            speaker = rng.choice(names)
            n = rng.randint(cfg.min_digits, cfg.max_digits)
            factor = rng.choice(cfg.speed_perturb) if split == "train" else 1.0
            pieces, misses = [_silence(rng, EDGE_PAUSE_S)], 0
            words: list[str] = []
            while len(words) < n:
                r = rng.choice(speakers[speaker])
                got = clip(r)
                if got is None:  # an unreadable file, skipped as the recipe allows
                    misses += 1
                    if misses > 1000:
                        raise DataError(
                            f"fsdd-digits: no readable recordings of {speaker} in the {split} split"
                        )
                    continue
                audio, rate = got
                pieces.append(resample(audio, round(rate * factor), SAMPLE_RATE))
                pieces.append(_silence(rng, EDGE_PAUSE_S if len(words) == n - 1 else cfg.pause_s))
                words.append(DIGIT_WORDS[r.digit])
            audio = np.concatenate(pieces)
            audio = _add_noise(audio, rng, cfg.snr_db)
            yield Utterance(f"{split}-{i:05d}-{speaker}", " ".join(words), audio, speaker)

    counts = {"train": cfg.train_utterances, "valid": cfg.valid_utterances, "test": cfg.test_utterances}
    return {split: split_utterances(split, counts[split]) for split in splits}


def _silence(rng: random.Random, seconds: tuple[float, float]) -> np.ndarray:
    return np.zeros(round(rng.uniform(*seconds) * SAMPLE_RATE), np.float32)


def _add_noise(audio: np.ndarray, rng: random.Random, snr_db: tuple[float, float]) -> np.ndarray:
    """White noise at a random SNR (relative to the speech's mean power) under the whole utterance."""
    speech = audio[audio != 0]
    power = float(np.mean(speech**2)) if speech.size else 1e-4
    snr = rng.uniform(*snr_db)
    noise = np.random.default_rng(rng.getrandbits(64)).standard_normal(len(audio)).astype(np.float32)
    out = audio + noise * np.float32(np.sqrt(power / 10 ** (snr / 10)))
    return np.clip(out, -1.0, 1.0)
