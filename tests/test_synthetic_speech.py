"""Tests for the synthetic-speech data source (grammar, eSpeak driver, dataset)."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import numpy as np
import pytest

from qbench.data import espeak, synthetic_speech
from qbench.data.grammar import MAX_WORDS, MIN_WORDS, make_sentences, vocabulary
from qbench.data.synthetic_speech import (
    NOISE_KINDS,
    TEST_VARIANTS,
    TRAIN_VARIANTS,
    SyntheticSpeechConfig,
    Utterance,
    add_noise,
    load_synthetic_speech,
    make_noise,
    measure_snr_db,
)

TINY = SyntheticSpeechConfig(seed=3, train_utterances=12, valid_utterances=4, test_utterances=6)
TRANSCRIPT = re.compile(r"[a-z']+( [a-z']+)*")

Dataset = dict[str, list[Utterance]]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(tiny_cache: Path) -> Dataset:
    """Generated once with a two-process pool; other tests compare against it."""
    return load_synthetic_speech(TINY, tiny_cache, workers=2, progress=False)


def assert_same(a: Dataset, b: Dataset) -> None:
    for split in synthetic_speech.SPLITS:
        assert [(u.id, u.text, u.speaker) for u in a[split]] == [(u.id, u.text, u.speaker) for u in b[split]]
        assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a[split], b[split], strict=True))


def test_sentences_are_short_lower_case_and_in_vocabulary() -> None:
    sentences = make_sentences(3000, random.Random(0))
    words = vocabulary()
    assert len(words) >= 500
    for sentence in sentences:
        assert TRANSCRIPT.fullmatch(sentence), sentence
        assert MIN_WORDS <= len(sentence.split()) <= MAX_WORDS, sentence
        assert set(sentence.split()) <= words, sentence
    assert len(set(sentences)) > 0.99 * len(sentences)


def test_sentences_are_deterministic() -> None:
    assert make_sentences(50, random.Random(7)) == make_sentences(50, random.Random(7))
    assert make_sentences(50, random.Random(7)) != make_sentences(50, random.Random(8))


def test_synthesis_does_not_depend_on_earlier_calls() -> None:
    first, sample_rate = espeak.synthesize("the old farmer sold three horses", "en-us+f3", 170, 55)
    espeak.synthesize("something completely different", "en-gb-x-rp+m3", 200, 40)
    second, _ = espeak.synthesize("the old farmer sold three horses", "en-us+f3", 170, 55)
    assert sample_rate == 22050
    assert first.dtype == np.float32 and np.array_equal(first, second)


def test_every_voice_variant_speaks() -> None:
    requests = [espeak.SpeechRequest("hello there", f"en-us+{v}") for v in TRAIN_VARIANTS + TEST_VARIANTS]
    requests += [
        espeak.SpeechRequest("hello there", f"{language}+m1") for language in synthetic_speech.LANGUAGE_VOICES
    ]
    waveforms, sample_rate = espeak.synthesize_many(requests)
    for request, waveform in zip(requests, waveforms, strict=True):
        assert len(waveform) > 0.3 * sample_rate and np.sqrt(np.mean(waveform**2)) > 0.01, request.voice


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import espeakng_loader

    monkeypatch.setattr(espeak, "_engine", None)
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: "/nonexistent/libespeak-ng.so")
    with pytest.raises(RuntimeError, match="cannot load the eSpeak NG library"):
        espeak.synthesize("hello there", "en-us")


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_is_added_at_the_requested_snr(kind: str) -> None:
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * np.hanning(16000).astype(np.float32)
    noisy = add_noise(clean, make_noise(kind, clean, 16000, rng), snr_db=17.5)
    assert measure_snr_db(clean, noisy) == pytest.approx(17.5, abs=1e-3)


def test_splits_sizes_rate_and_audio(tiny: Dataset) -> None:
    assert {split: len(utterances) for split, utterances in tiny.items()} == {
        "train": 12,
        "valid": 4,
        "test": 6,
    }
    for utterances in tiny.values():
        for utterance in utterances:
            assert utterance.audio.dtype == np.float32 and utterance.audio.ndim == 1
            # 16 kHz: eSpeak speaks at most about 4 words per second here, with at least 0.1 s of padding.
            seconds = len(utterance.audio) / TINY.sample_rate
            assert 0.1 + len(utterance.text.split()) / 5 < seconds < 2 + len(utterance.text.split())
            assert 0.5 < np.abs(utterance.audio).max() <= 1.0
            assert np.sqrt(np.mean(utterance.audio**2)) > 0.02
            assert TRANSCRIPT.fullmatch(utterance.text)


def test_test_voices_and_sentences_are_unseen_in_training(tiny: Dataset) -> None:
    def variants(split: str) -> set[str]:
        return {utterance.speaker.split("+")[1] for utterance in tiny[split]}

    assert variants("train") <= set(TRAIN_VARIANTS) and variants("valid") <= set(TRAIN_VARIANTS)
    assert variants("test") <= set(TEST_VARIANTS)
    assert len(TRAIN_VARIANTS) >= 20 and len(TEST_VARIANTS) >= 4
    assert not set(TRAIN_VARIANTS) & set(TEST_VARIANTS)
    train_texts = {utterance.text for utterance in tiny["train"]}
    assert not train_texts & {utterance.text for utterance in tiny["test"] + tiny["valid"]}


def test_same_seed_gives_identical_audio_whatever_the_workers(tiny: Dataset, tmp_path: Path) -> None:
    assert_same(tiny, load_synthetic_speech(TINY, tmp_path, workers=1, progress=False))


def test_different_seed_gives_different_data(tiny: Dataset, tmp_path: Path) -> None:
    other = SyntheticSpeechConfig(seed=4, train_utterances=12, valid_utterances=1, test_utterances=1)
    train = load_synthetic_speech(other, tmp_path, workers=1, progress=False)["train"]
    assert [u.text for u in train] != [u.text for u in tiny["train"]]
    assert not np.array_equal(train[0].audio, tiny["train"][0].audio)


def test_second_call_reads_the_cache(
    tiny: Dataset, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("synthesised despite a cached dataset")

    monkeypatch.setattr(espeak, "synthesize_many", fail)
    assert_same(tiny, load_synthetic_speech(TINY, tiny_cache, workers=1, progress=False))
    assert sorted(path.name for path in tiny_cache.glob("synthetic-speech/*/*")) == [
        "test.npz",
        "train.npz",
        "valid.npz",
    ]


def test_generated_snr_is_within_the_configured_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[float] = []

    def recording_add_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
        noisy = add_noise(clean, noise, snr_db)
        measured.append(measure_snr_db(clean, noisy))
        return noisy

    monkeypatch.setattr(synthetic_speech, "add_noise", recording_add_noise)
    cfg = SyntheticSpeechConfig(
        train_utterances=8, valid_utterances=1, test_utterances=1, snr_db=(12.0, 14.0)
    )
    load_synthetic_speech(cfg, tmp_path, workers=1, progress=False)
    assert len(measured) == 10
    assert all(12.0 - 1e-3 <= snr <= 14.0 + 1e-3 for snr in measured)


def test_another_test_size_synthesises_the_test_split_only(
    tiny: Dataset, tiny_cache: Path, monkeypatch
) -> None:
    rendered: list[str] = []
    original = synthetic_speech._generate

    def spy(cfg, paths, workers, progress):
        rendered.extend(paths)
        return original(cfg, paths, workers, progress)

    monkeypatch.setattr(synthetic_speech, "_generate", spy)
    more = dataclasses.replace(TINY, test_utterances=TINY.test_utterances + 2)
    got = load_synthetic_speech(more, tiny_cache, workers=1, progress=False)
    assert rendered == ["test"]
    for split in ("train", "valid"):
        assert [(u.id, u.text) for u in got[split]] == [(u.id, u.text) for u in tiny[split]]
        assert all(np.array_equal(x.audio, y.audio) for x, y in zip(got[split], tiny[split], strict=True))
    assert len(got["test"]) == len(tiny["test"]) + 2
