"""The ``synthetic-speech`` data source: grammar sentences spoken by eSpeak NG.

Each utterance is a random sentence (``grammar.py``) spoken by one of many
eSpeak voices (an English accent plus a voice variant, with its own speaking
rate and pitch), resampled to 16 kHz, padded with a little silence, mixed with
noise at a random SNR and peak-normalised.  The test split uses voice variants
never heard in training, and no training sentence appears in the other splits.

Everything derives from ``SyntheticSpeechConfig.seed``: each utterance draws
from its own generators seeded by (seed, split, index), and eSpeak runs in
fixed shards of utterances (see ``espeak.py``), so the audio is bit-identical
whatever the number of workers.  Splits are cached as ``.npz`` files under a
directory named after the config and ``GENERATOR_VERSION``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
import torchaudio.transforms
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qbench.data import espeak
from qbench.data.grammar import make_sentence

# Bump whenever a change alters the generated audio or texts, to invalidate caches.
GENERATOR_VERSION = 1

SPLITS = ("train", "valid", "test")

# Utterances synthesised in one eSpeak process; it also fixes which utterances
# share eSpeak state, so changing it changes the audio (bump GENERATOR_VERSION).
SHARD_SIZE = 25

LANGUAGE_VOICES = (
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc",
)  # fmt: skip
# Variants from espeak-ng-data/voices/!v, all checked to give clear speech.
# Joke and robot variants (croak, Demonic, robosoft...) are left out.
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4",
    "klatt", "klatt2", "klatt3", "Alex", "Andy", "Annie", "adam", "benjamin",
    "david", "edward", "grandpa", "linda", "max", "quincy", "steph",
)  # fmt: skip
TEST_VARIANTS = ("m8", "f5", "klatt4", "iven", "norbert", "shelby")

RATE_RANGE_WPM = (140, 210)
PEAK_LEVEL = 0.9
SILENCE_RANGE_S = (0.05, 0.35)
NOISE_KINDS = ("white", "pink", "brown", "babble")


@dataclass(frozen=True)
class SyntheticSpeechConfig:
    seed: int = 0
    train_utterances: int = 3000
    valid_utterances: int = 200
    test_utterances: int = 300
    snr_db: tuple[float, float] = (10.0, 30.0)
    sample_rate: int = 16000


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    audio: np.ndarray  # float32, mono, at the config's sample rate
    speaker: str


@dataclass(frozen=True)
class Voice:
    language: str
    variant: str
    rate: int  # words per minute that this voice's utterances vary around
    pitch: int  # eSpeak pitch (0-100) that this voice's utterances vary around

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"


def _voices(variants: Iterable[str]) -> tuple[Voice, ...]:
    voices = []
    for variant in variants:
        for language in LANGUAGE_VOICES:
            # Seeded by the name: a voice keeps its rate and pitch across datasets.
            rng = random.Random(f"{language}+{variant}")
            voices.append(Voice(language, variant, rate=rng.randint(150, 200), pitch=rng.randint(35, 65)))
    return tuple(voices)


TRAIN_VOICES = _voices(TRAIN_VARIANTS)
TEST_VOICES = _voices(TEST_VARIANTS)


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to render one utterance, drawn before any synthesis."""

    id: str
    text: str
    voice: Voice
    rate: int
    pitch: int
    seed: int  # seeds the audio-side randomness (silence, noise, SNR)


def utterance_seed(seed: int, split: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def plan_split(cfg: SyntheticSpeechConfig, split: str, excluded_texts: set[str]) -> list[UtterancePlan]:
    count = {"train": cfg.train_utterances, "valid": cfg.valid_utterances, "test": cfg.test_utterances}[split]
    voices = TEST_VOICES if split == "test" else TRAIN_VOICES
    plans = []
    for index in range(count):
        seed = utterance_seed(cfg.seed, split, index)
        rng = random.Random(seed)
        text = make_sentence(rng)
        while text in excluded_texts:
            text = make_sentence(rng)
        voice = rng.choice(voices)
        rate = min(max(voice.rate + rng.randint(-15, 15), RATE_RANGE_WPM[0]), RATE_RANGE_WPM[1])
        pitch = voice.pitch + rng.randint(-10, 10)
        plans.append(UtterancePlan(f"{split}-{index:05d}", text, voice, rate, pitch, seed))
    return plans


def plan_utterances(cfg: SyntheticSpeechConfig) -> dict[str, list[UtterancePlan]]:
    train = plan_split(cfg, "train", excluded_texts=set())
    train_texts = {plan.text for plan in train}
    return {
        "train": train,
        "valid": plan_split(cfg, "valid", train_texts),
        "test": plan_split(cfg, "test", train_texts),
    }


def make_noise(kind: str, clean: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unscaled noise as long as ``clean``: white, pink (1/f), brown (1/f^2) or babble."""
    if kind == "babble":
        # Time-reversed, shifted copies of the utterance: speech spectrum and rhythm, no words.
        reversed_speech = clean[::-1].astype(np.float64)
        talkers = rng.integers(3, 7)
        babble = np.zeros(len(clean))
        for _ in range(talkers):
            babble += np.roll(reversed_speech, rng.integers(len(clean))) * rng.uniform(0.5, 1.0)
        return babble
    if kind == "white":
        return rng.standard_normal(len(clean))
    power_exponent = {"pink": 1.0, "brown": 2.0}[kind]
    # Shape white noise in the frequency domain; a power-of-two length keeps the FFT fast.
    fft_length = 1 << (len(clean) - 1).bit_length()
    # Flat below 100 Hz so the energy is not spent on inaudible rumble.
    frequencies = np.maximum(np.fft.rfftfreq(fft_length, 1.0 / sample_rate), 100.0)
    spectrum = np.fft.rfft(rng.standard_normal(fft_length)) * frequencies ** (-power_exponent / 2)
    return np.fft.irfft(spectrum, fft_length)[: len(clean)]


def add_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled so that the whole-signal SNR is ``snr_db``."""
    noise_power = np.mean(noise.astype(np.float64) ** 2)
    if noise_power == 0:  # babble made from an all-silent utterance
        return clean
    gain = np.sqrt(np.mean(clean.astype(np.float64) ** 2) / (noise_power * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def measure_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return float(10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise**2)))


@cache
def _resampler(orig_freq: int, new_freq: int) -> torchaudio.transforms.Resample:
    """torchaudio's sinc resampler with its kernel computed once, not per utterance."""
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def render_utterance(
    speech: np.ndarray, speech_rate: int, seed: int, cfg: SyntheticSpeechConfig
) -> np.ndarray:
    """eSpeak output -> noisy float32 audio at the config's rate, before normalisation."""
    rng = np.random.default_rng(seed)
    clean = _resampler(speech_rate, cfg.sample_rate)(torch.from_numpy(speech)).numpy()
    lead, trail = (int(rng.uniform(*SILENCE_RANGE_S) * cfg.sample_rate) for _ in range(2))
    clean = np.pad(clean, (lead, trail))
    noise = make_noise(NOISE_KINDS[rng.integers(len(NOISE_KINDS))], clean, cfg.sample_rate, rng)
    return add_noise(clean, noise, rng.uniform(*cfg.snr_db))


def normalise_to_int16(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio), initial=0.0))
    scaled = audio * (PEAK_LEVEL / peak) if peak > 0 else audio
    return np.round(scaled * 32767).astype(np.int16)


def render_shard(plans: Sequence[UtterancePlan], cfg: SyntheticSpeechConfig) -> list[np.ndarray]:
    """Synthesise and post-process a shard of utterances; returns int16 waveforms."""
    requests = [espeak.SpeechRequest(plan.text, plan.voice.name, plan.rate, plan.pitch) for plan in plans]
    waveforms, speech_rate = espeak.synthesize_many(requests)
    return [
        normalise_to_int16(render_utterance(waveform, speech_rate, plan.seed, cfg))
        for waveform, plan in zip(waveforms, plans, strict=True)
    ]


def _init_worker() -> None:
    torch.set_num_threads(1)  # the pool already runs one process per core


def _render_shards(
    shards: list[list[UtterancePlan]], cfg: SyntheticSpeechConfig, workers: int
) -> Iterator[list[np.ndarray]]:
    """Render shards in order, in a pool of ``workers`` processes (in-process if <= 1)."""
    render = partial(render_shard, cfg=cfg)
    if workers <= 1:
        yield from map(render, shards)
        return
    # "spawn" because forking a process that has used torch's thread pool can deadlock.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(render, shards)


def config_hash(cfg: SyntheticSpeechConfig) -> str:
    key = json.dumps({"generator_version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _write_split(path: Path, plans: Sequence[UtterancePlan], waveforms: Sequence[np.ndarray]) -> None:
    offsets = np.cumsum([0, *map(len, waveforms)])
    audio = np.concatenate(waveforms) if waveforms else np.zeros(0, np.int16)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(
                file,
                audio=audio,
                offsets=offsets,
                ids=np.array([plan.id for plan in plans], dtype=str),
                texts=np.array([plan.text for plan in plans], dtype=str),
                speakers=np.array([plan.voice.name for plan in plans], dtype=str),
            )
        os.chmod(temporary, 0o644)  # mkstemp makes it private to the owner
        os.replace(temporary, path)  # readers never see a half-written split
    except BaseException:
        os.unlink(temporary)
        raise


def _read_split(path: Path) -> list[Utterance]:
    with np.load(path) as arrays:
        audio = arrays["audio"].astype(np.float32) / 32768.0
        offsets = arrays["offsets"]
        return [
            Utterance(str(id_), str(text), audio[start:end], str(speaker))
            for id_, text, speaker, start, end in zip(
                arrays["ids"], arrays["texts"], arrays["speakers"], offsets[:-1], offsets[1:], strict=True
            )
        ]


def _generate(cfg: SyntheticSpeechConfig, paths: dict[str, Path], workers: int, progress: bool) -> None:
    splits = list(paths)
    # Plan every split: valid and test sentences must avoid the training ones.
    plans = plan_utterances(cfg)
    jobs = [
        (split, plans[split][start : start + SHARD_SIZE])
        for split in splits
        for start in range(0, len(plans[split]), SHARD_SIZE)
    ]
    waveforms: dict[str, list[np.ndarray]] = {split: [] for split in splits}
    total = sum(len(plans[split]) for split in splits)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"synthetic-speech: synthesising {', '.join(splits)}", total=total)
        for (split, _), rendered in zip(
            jobs, _render_shards([shard for _, shard in jobs], cfg, workers), strict=True
        ):
            waveforms[split].extend(rendered)
            bar.advance(task, len(rendered))
    for split in splits:
        paths[split].parent.mkdir(parents=True, exist_ok=True)
        _write_split(paths[split], plans[split], waveforms[split])


def load_synthetic_speech(
    cfg: SyntheticSpeechConfig,
    cache_dir: Path,
    workers: int = 2,
    progress: bool = True,
    splits: Sequence[str] = SPLITS,
) -> dict[str, list[Utterance]]:
    """The `splits` ("train", "valid", "test"), synthesised once and then read from the cache. Each
    split is cached under a key of what it depends on (:func:`split_config`): another test size
    synthesises the test split only."""
    paths = {
        split: Path(cache_dir) / "synthetic-speech" / config_hash(split_config(cfg, split)) / f"{split}.npz"
        for split in splits
    }
    missing = {split: path for split, path in paths.items() if not path.exists()}
    if missing:
        _generate(cfg, missing, workers, progress)
    return {split: _read_split(path) for split, path in paths.items()}


def split_config(cfg: SyntheticSpeechConfig, split: str) -> SyntheticSpeechConfig:
    """`cfg` with the sizes a split does not depend on set to 0: training sentences are planned
    first, and valid and test each avoid them (plan_utterances)."""
    if split == "train":
        return dataclasses.replace(cfg, valid_utterances=0, test_utterances=0)
    if split == "valid":
        return dataclasses.replace(cfg, test_utterances=0)
    return dataclasses.replace(cfg, valid_utterances=0)
