"""Reading recorded audio for the real ASR sources: soundfile to decode, torchaudio to resample.

Every failure is a `DataError` naming the file. libsndfile reads a WAV file cut short without
complaint (it trusts the bytes present over the header), so for PCM WAV the frame count the header
declares is checked against what is there with the standard `wave` module; FLAC's decoder notices
truncation itself.
"""

from __future__ import annotations

import wave
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from qbench.data import DataError

SAMPLE_RATE = 16000


@cache
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # One kernel per rate pair, built once: FSDD alone resamples thousands of 8 kHz clips.
    return torchaudio.transforms.Resample(orig, new)


def resample(audio: np.ndarray, orig: int, new: int = SAMPLE_RATE) -> np.ndarray:
    if orig == new:
        return audio.astype(np.float32, copy=False)
    with torch.no_grad():
        return _resampler(orig, new)(torch.from_numpy(np.ascontiguousarray(audio, np.float32))).numpy()


def _declared_wav_frames(path: Path) -> int | None:
    """Frames the header of a PCM WAV file announces, or None for other files."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes()
    except (wave.Error, EOFError, OSError):
        return None  # not plain PCM WAV (FLAC, float or extensible WAV): libsndfile checks those


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] at the file's own rate; DataError naming the file if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(f"{path}: unreadable or corrupt audio ({e})") from None
    declared = _declared_wav_frames(path)
    if declared is not None and audio.shape[0] < declared:
        raise DataError(
            f"{path}: truncated audio: the header declares {declared} frames, the file holds {audio.shape[0]}"
        )
    if audio.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples")
    return audio.mean(axis=1), rate


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `sample_rate` (resampled with torchaudio when the file differs)."""
    audio, rate = load_audio(path)
    return resample(audio, rate, sample_rate)
