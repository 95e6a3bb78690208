"""Bad data is refused before training starts: `qbench run` exits 2 with one line naming the file
(and line) and what is wrong, no traceback, and nothing under runs/ (issue 19). Covers decoded
audio (NaN/inf, absurd magnitudes, sample rates, too short), text that is not UTF-8 (manifests,
LibriSpeech transcripts, Multi30k and parallel text), a vocabulary too small for the data, and
empty transcripts or splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.data import DataError
from qbench.data.audio import check_rate
from qbench.tasks.tokenizers import SentencePieceTokenizer

ASR_MODEL = "model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3}\ntrain: {steps: 2}\n"
MT_MODEL = (
    "model: {arch: transformer, d_model: 16, encoder_layers: 1, decoder_layers: 1, heads: 2, "
    "vocab_size: 16}\ntrain: {steps: 2}\n"
)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def good_manifest(folder: Path) -> Path:
    """Three half-second 16 kHz clips with transcripts: a usable split."""
    for i in range(3):
        sf.write(folder / f"ok{i}.wav", noise(8000, i), 16000)
    manifest = folder / "good.tsv"
    manifest.write_text("ok0.wav\thello world\nok1.wav\tgood day\nok2.wav\tyes no\n")
    return manifest


def run(tmp_path: Path, recipe_text: str):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(recipe_text)
    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    return out, results


def assert_refused(out, results: Path, *expected: str) -> None:
    """Exit 2; one error line holding every `expected` piece (at most the suite's banner before it);
    no traceback; no runs/ and no suite.json."""
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output, out.output
    lines = out.output.strip().splitlines()
    assert lines[-1].startswith("error: "), out.output
    assert all(e in lines[-1] for e in expected), (expected, out.output)
    assert len(lines) == 1 or (len(lines) == 2 and " run(s) on " in lines[0]), out.output
    assert not (results / "runs").exists()
    assert not list(results.rglob("suite.json"))


def manifest_recipe(train: Path, valid: Path | None = None, extra: str = "") -> str:
    valid = valid or train
    return (
        f"name: m\ntask: asr\ndata: {{source: manifest, train: {train}, valid: {valid}, "
        f"test: {valid}{extra}}}\n" + ASR_MODEL
    )


def refused_clip(tmp_path: Path, name: str, audio: np.ndarray, rate: int, subtype: str | None = None):
    """A manifest whose second utterance is `audio` in `name`, run through `qbench run`."""
    good = good_manifest(tmp_path)
    sf.write(tmp_path / name, audio, rate, subtype=subtype)
    bad = tmp_path / "train.tsv"
    bad.write_text(f"ok0.wav\thello world\n{name}\tgood day\n")
    return run(tmp_path, manifest_recipe(bad, good))


# ------------------------------------------------------------------ decoded audio


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_name_the_file(tmp_path, value):
    audio = noise(8000)
    audio[1600] = value
    out, results = refused_clip(tmp_path, "bad.wav", audio, 16000, subtype="FLOAT")
    assert_refused(out, results, "bad.wav", "sample 1600 (at 0.100 s)", "non-finite")


def test_samples_far_outside_any_audio_scale_name_the_file(tmp_path):
    audio = noise(8000)
    audio[10] = 1e20  # finite, but its power spectrum overflows float32 to inf
    out, results = refused_clip(tmp_path, "loud.wav", audio, 16000, subtype="FLOAT")
    assert_refused(out, results, "loud.wav", "sample 10", "must lie within")


def test_a_3_hz_wav_is_refused_with_its_rate_and_the_range(tmp_path):
    out, results = refused_clip(tmp_path, "slow.wav", np.full(30, 0.1, np.float32), 3)
    assert_refused(out, results, "slow.wav", "sample rate 3 Hz", "4000 to 192000 Hz")


def test_a_rate_the_resampler_cannot_afford_is_refused(tmp_path):
    # 44101 Hz shares no factor with 16000: torchaudio's kernel would be 700 million values
    out, results = refused_clip(tmp_path, "odd.wav", noise(44101), 44101)
    assert_refused(out, results, "odd.wav", "sample rate 44101 Hz", "resample the file first")


def test_audio_shorter_than_one_feature_window_is_refused(tmp_path):
    out, results = refused_clip(tmp_path, "blip.wav", noise(100), 16000)
    assert_refused(out, results, "blip.wav", "shorter than one 25 ms feature window")


@pytest.mark.parametrize("rate", [4000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000])
def test_common_sample_rates_are_accepted(rate):
    check_rate(Path("x.wav"), rate)


@pytest.mark.parametrize("rate", [3, 3999, 192001, 44101])
def test_unusable_sample_rates_are_refused(rate):
    with pytest.raises(DataError, match=rf"x\.wav: sample rate {rate} Hz"):
        check_rate(Path("x.wav"), rate)


# ------------------------------------------------------------------ text that is not UTF-8


def test_a_latin1_tsv_manifest_names_file_line_and_byte(tmp_path):
    good = good_manifest(tmp_path)
    bad = tmp_path / "latin.tsv"
    bad.write_bytes("ok0.wav\thello world\nok1.wav\tcaf\xe9 day\n".encode("latin-1"))
    out, results = run(tmp_path, manifest_recipe(bad, good))
    assert_refused(out, results, "latin.tsv:2: invalid UTF-8 at byte 12 of the line", r"(b'\xe9')")


def test_a_latin1_jsonl_manifest_names_file_and_line(tmp_path):
    good = good_manifest(tmp_path)
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(
        '{"audio": "ok0.wav", "text": "hi"}\n{"audio": "ok1.wav", "text": "\xe9"}\n'.encode("latin-1")
    )
    out, results = run(tmp_path, manifest_recipe(good, bad))
    assert_refused(out, results, "latin.jsonl:2: invalid UTF-8")


def make_librispeech(root: Path, transcript: bytes | None = None) -> Path:
    """train/dev/test subsets of one chapter each; `transcript` replaces train's .trans.txt."""
    for subset in ("train", "dev", "test"):
        d = root / subset / "19" / "198"
        d.mkdir(parents=True)
        for i in range(2):
            sf.write(d / f"19-198-{i:04d}.flac", noise(8000, i), 16000)
        text = b"19-198-0000 HELLO THERE\n19-198-0001 GOOD DAY\n"
        (d / "19-198.trans.txt").write_bytes(transcript if subset == "train" and transcript else text)
    return root


def librispeech_recipe(root: Path) -> str:
    return (
        f"name: m\ntask: asr\ndata: {{source: librispeech, path: {root}, train: [train], valid: [dev], "
        "test: [test]}\n" + ASR_MODEL
    )


def test_a_librispeech_transcript_not_utf8_names_file_and_line(tmp_path):
    root = make_librispeech(tmp_path / "ls", "19-198-0000 HELLO\n19-198-0001 CAF\xc9\n".encode("latin-1"))
    out, results = run(tmp_path, librispeech_recipe(root))
    assert_refused(out, results, "19-198.trans.txt:2: invalid UTF-8 at byte 16 of the line")


def test_a_multi30k_line_not_utf8_names_file_and_line(tmp_path):
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for stem in ("train", "val", "test_2016_flickr"):
        (folder / f"{stem}.en.gz").write_bytes(gzip.compress(b"a dog runs\na cat sits\n"))
        (folder / f"{stem}.de.gz").write_bytes(gzip.compress("ein hund läuft\neine katze sitzt\n".encode()))
    (folder / "train.de.gz").write_bytes(gzip.compress("ein hund l\xe4uft\neine katze\n".encode("latin-1")))
    recipe = f"name: m\ntask: mt\ndata: {{source: multi30k, path: {folder}}}\n" + MT_MODEL
    out, results = run(tmp_path, recipe)
    assert_refused(out, results, "train.de.gz:1: invalid UTF-8")


def test_a_parallel_tsv_not_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_bytes("a dog\tein hund\nthe cat\tdie k\xe4tze\n".encode("latin-1"))
    recipe = (
        f"name: m\ntask: mt\ndata: {{source: parallel, train: [{bad}], valid: [{bad}], test: [{bad}]}}\n"
        + MT_MODEL
    )
    out, results = run(tmp_path, recipe)
    assert_refused(out, results, "pairs.tsv:2: invalid UTF-8")


# ------------------------------------------------------------------ vocabulary too small


def test_an_asr_vocabulary_too_small_names_the_key_and_the_smallest_size(tmp_path):
    good = good_manifest(tmp_path)  # "hello world", "good day", "yes no": 13 letters and a space
    out, results = run(
        tmp_path,
        manifest_recipe(good).replace("conv_kernel: 3}", "conv_kernel: 3, units: bpe, vocab_size: 10}"),
    )
    assert_refused(out, results, "model.vocab_size: 10 is too small", "at least 14")


def test_an_mt_vocabulary_too_small_names_the_key_and_the_smallest_size(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the quick brown fox\tder schnelle braune fuchs\njumps over\tspringt über\n")
    recipe = (
        f"name: m\ntask: mt\ndata: {{source: parallel, train: [{pairs}], valid: [{pairs}], "
        f"test: [{pairs}]}}\n" + MT_MODEL
    )
    out, results = run(tmp_path, recipe)
    assert_refused(out, results, "model.vocab_size: 16 is too small", "at least 29")


def test_the_smallest_vocabulary_named_is_enough(tmp_path):
    texts = ["the quick brown fox", "der schnelle braune fuchs", "jumps over", "springt über"]
    with pytest.raises(DataError, match="at least 29") as e:
        SentencePieceTokenizer.train(texts, 28, tmp_path / "a.model", bos_eos=True)
    assert "set model.vocab_size to 29 or more" in str(e.value)
    assert SentencePieceTokenizer.train(texts, 29, tmp_path / "b.model", bos_eos=True).size >= 30


# ------------------------------------------------------------------ empty transcripts and splits


@pytest.mark.parametrize(
    ("line", "expected"),
    [("ok1.wav\t", "has no transcript"), ("ok1.wav\t123 !!", "no letters a-z left after normalisation")],
)
def test_a_manifest_line_without_words_names_file_and_line(tmp_path, line, expected):
    good = good_manifest(tmp_path)
    bad = tmp_path / "train.tsv"
    bad.write_text(f"ok0.wav\thello\n{line}\n")
    out, results = run(tmp_path, manifest_recipe(bad, good))
    assert_refused(out, results, "train.tsv:2", expected)


def test_a_librispeech_line_without_words_names_file_and_line(tmp_path):
    root = make_librispeech(tmp_path / "ls", b"19-198-0000 HELLO\n19-198-0001 \n")
    out, results = run(tmp_path, librispeech_recipe(root))
    assert_refused(out, results, "19-198.trans.txt:2: 19-198-0001 has no transcript")


def test_a_split_left_empty_by_filtering_is_one_line(tmp_path):
    good = good_manifest(tmp_path)
    out, results = run(tmp_path, manifest_recipe(good, extra=", max_seconds: 0.1"))
    assert_refused(out, results, "good.tsv: the train manifest has no usable utterances")


def test_an_empty_translation_target_names_file_and_line(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a dog\tein hund\nthe cat\t \n")
    recipe = (
        f"name: m\ntask: mt\ndata: {{source: parallel, train: [{pairs}], valid: [{pairs}], "
        f"test: [{pairs}]}}\n" + MT_MODEL
    )
    out, results = run(tmp_path, recipe)
    assert_refused(out, results, "pairs.tsv:2: empty target side")
