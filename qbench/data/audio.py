"""Reading recorded audio for the real ASR sources: soundfile to decode, torchaudio to resample.

Every failure is a `DataError` naming the file. libsndfile reads a WAV file cut short without
complaint (it trusts the bytes present over the header), so for PCM WAV the frame count the header
declares is checked against what is there with the standard `wave` module; FLAC's decoder notices
truncation itself.

Decoded audio is checked once, as it is read (the features are cached after): every sample finite
(a float WAV can hold NaN or inf, which would reach the loss as NaN at step 0 with no file named)
and within `MAX_PEAK` (float audio lies in [-1, 1]; far larger values overflow the features' power
spectrum to inf), and the file's sample rate one the features can use (`check_rate`).
"""

from __future__ import annotations

import math
import wave
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from qbench.data import DataError

SAMPLE_RATE = 16000
#: Sample rates accepted, in Hz. Below 4 kHz a recording holds nothing above 2 kHz, too little of
#: speech for the 16 kHz log-mel features (telephone speech, the narrowest in use, is 8 kHz); above
#: 192 kHz is no audio format in use.
MIN_RATE, MAX_RATE = 4_000, 192_000
#: torchaudio's resampler builds a kernel of (rate / g) x (16000 / g) values, g = gcd(rate, 16000),
#: for each rate: about 70 thousand for 44.1 kHz, 280 thousand for 11.025 kHz, but 700 million
#: (minutes and gigabytes) for 44101 Hz. A rate is accepted if its kernel stays under this.
MAX_RESAMPLE_KERNEL = 1_000_000
#: Largest sample magnitude accepted: float audio lies in [-1, 1]; this leaves room for float files
#: written on the 16-bit scale (+-32768) while keeping the features' power spectrum finite.
MAX_PEAK = 1e6


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


def check_rate(path: Path, rate: int) -> None:
    """DataError naming the file unless `rate` (Hz) lies in [MIN_RATE, MAX_RATE] and resamples to
    16 kHz with a kernel of at most MAX_RESAMPLE_KERNEL values."""
    accepted = f"accepted: {MIN_RATE} to {MAX_RATE} Hz"
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DataError(
            f"{path}: sample rate {rate} Hz is outside the range the features can use ({accepted})"
        )
    g = math.gcd(rate, SAMPLE_RATE)
    kernel = (rate // g) * (SAMPLE_RATE // g)
    if kernel > MAX_RESAMPLE_KERNEL:
        raise DataError(
            f"{path}: sample rate {rate} Hz resamples to {SAMPLE_RATE} Hz only with a kernel of {kernel} "
            f"values ({accepted}, at a rate sharing a large factor with {SAMPLE_RATE} such as 8000, "
            "11025, 22050, 44100 or 48000): resample the file first"
        )


def check_samples(path: Path, audio: np.ndarray, rate: int) -> None:
    """DataError naming the file and its first bad sample unless every sample is finite and at most
    MAX_PEAK in magnitude."""
    magnitude = np.abs(audio)
    i = int(np.argmax(magnitude))  # NaN or inf wins wherever there is one
    if not np.isfinite(magnitude[i]):
        finite = np.isfinite(audio)
        i, bad = int(np.argmin(finite)), int(finite.size - np.count_nonzero(finite))  # the first one
        raise DataError(
            f"{path}: sample {i} (at {i / rate:.3f} s) is {audio[i]}, one of {bad} non-finite samples: "
            "audio must hold finite numbers"
        )
    if magnitude[i] > MAX_PEAK:
        raise DataError(
            f"{path}: sample {i} (at {i / rate:.3f} s) is {audio[i]:.3g}: audio must lie within "
            f"+-{MAX_PEAK:g} (float audio lies in [-1, 1])"
        )


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples at the file's own rate; DataError naming the file if unreadable, holding
    non-finite or absurdly large samples, or at a sample rate the features cannot use."""
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
    check_rate(path, rate)
    mono = audio.mean(axis=1)
    check_samples(path, mono, rate)
    return mono, rate


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `sample_rate` (resampled with torchaudio when the file differs)."""
    audio, rate = load_audio(path)
    return resample(audio, rate, sample_rate)
