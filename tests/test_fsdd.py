"""fsdd-digits: connected digits from the shared FSDD recordings (skipped without QBENCH_DATA)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qbench.config import FSDDData, RecipeError, load_suite
from qbench.data import DataError, fsdd, speech

SMALL = {"train_utterances": 12, "valid_utterances": 4, "test_utterances": 6}


def collect(cfg) -> tuple[dict[str, list], dict]:
    stats: dict = {}
    return {split: list(it) for split, it in fsdd.generate(cfg, stats).items()}, stats


@pytest.fixture
def fsdd_path(data_dir) -> Path:
    return data_dir / "fsdd"


def test_connected_digits_speaker_disjoint_and_deterministic(fsdd_path):
    cfg = FSDDData(path=str(fsdd_path), **SMALL)
    out, stats = collect(cfg)
    assert {k: len(v) for k, v in out.items()} == {"train": 12, "valid": 4, "test": 6}
    assert stats["skipped_files"] == 0
    train_speakers = {u.speaker for u in out["train"]}
    assert train_speakers <= set(cfg.train_speakers) and len(train_speakers) >= 3
    assert {u.speaker for u in out["valid"]} <= set(cfg.train_speakers)  # held-out takes
    assert {u.speaker for u in out["test"]} == {"theo"}
    for u in out["train"] + out["test"]:
        words = u.text.split()
        assert 2 <= len(words) <= 7 and set(words) <= set(fsdd.DIGIT_WORDS)
        # each FSDD digit lasts 0.15-1 s; pauses are 0.05-0.3 s between and 0.05-0.25 s at the edges
        assert 0.15 * len(words) < u.audio.shape[0] / 16000 < 1.6 * len(words) + 0.5
        assert u.audio.dtype == np.float32 and np.abs(u.audio).max() <= 1.0
    again, _ = collect(cfg)
    assert all(
        a.text == b.text and np.array_equal(a.audio, b.audio)
        for split in out
        for a, b in zip(out[split], again[split], strict=True)
    )
    other, _ = collect(FSDDData(path=str(fsdd_path), seed=1, **SMALL))
    assert [u.text for u in other["test"]] != [u.text for u in out["test"]]


def test_valid_takes_never_reach_training(fsdd_path):
    cfg = FSDDData(path=str(fsdd_path), valid_takes=5)
    pools = fsdd.split_pools(cfg, fsdd.scan(cfg)[0])
    assert all(r.take >= 5 for r in pools["train"]) and all(r.take < 5 for r in pools["valid"])
    assert {r.speaker for r in pools["test"]}.isdisjoint(r.speaker for r in pools["train"])
    # 4 speakers x 10 digits x 45 takes
    assert len(pools["train"]) == 1800 and len(pools["valid"]) == 200 and len(pools["test"]) == 500


def test_speaker_errors(fsdd_path):
    with pytest.raises(DataError, match=r"no recordings of lucas .*speakers found: george, jackson"):
        collect(FSDDData(path=str(fsdd_path), test_speakers=("lucas",), **SMALL))
    with pytest.raises(DataError, match="theo also in train_speakers"):
        collect(FSDDData(path=str(fsdd_path), train_speakers=("george", "theo"), **SMALL))
    with pytest.raises(DataError, match="needs the FSDD folder"):
        collect(FSDDData(**SMALL))


def copy_some(fsdd_path: Path, dest: Path) -> Path:
    rec = dest / "recordings"
    rec.mkdir(parents=True)
    for speaker in ("george", "theo"):
        for digit in range(10):
            for take in range(2):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(fsdd_path / "recordings" / name, rec / name)
    return rec


def test_bad_files_name_the_file_or_are_skipped(fsdd_path, tmp_path):
    rec = copy_some(fsdd_path, tmp_path / "fsdd")
    kw = {"path": str(tmp_path / "fsdd"), "train_speakers": ("george",), "test_speakers": ("theo",)}
    kw |= {"valid_takes": 1, **SMALL}
    (rec / "notes.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match=rf"{rec / 'notes.wav'}: audio with no transcript"):
        collect(FSDDData(**kw))
    (rec / "notes.wav").unlink()
    broken = rec / "3_theo_1.wav"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{broken}: truncated audio"):
        collect(FSDDData(**kw | {"test_utterances": 60}))
    out, stats = collect(FSDDData(**kw | {"test_utterances": 60, "skip_bad_files": True}))
    assert stats["skipped_files"] == 1 and len(out["test"]) == 60
    assert sf.info(rec / "0_george_0.wav").samplerate == 8000  # and the output is 16 kHz:
    assert speech.source_files(FSDDData(**kw))[0].name == "0_george_0.wav"


def test_recipe_and_schema(fsdd_path):
    suite = load_suite(Path("recipes/asr-fsdd.yaml"), [f"data.path={fsdd_path}"])
    assert {r.quant.technique for r in suite.runs} == {"float", "ptq", "ste", "pqn", "rand"}
    assert all(r.data.source == "fsdd-digits" and r.data.path == str(fsdd_path) for r in suite.runs)
    assert suite.runs[0].eval.precisions == ("float", "w8", "w4")


def test_schema_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: asr\ndata: {source: fsdd-digits, min_digits: 5, max_digits: 3}\n")
    with pytest.raises(RecipeError, match=r"bad.yaml:3: data: .*min_digits \(5\) is above max_digits \(3\)"):
        load_suite(bad)
    bad.write_text("name: x\ntask: mt\ndata: {source: fsdd-digits}\n")
    with pytest.raises(RecipeError, match="'fsdd-digits' is not a mt data source"):
        load_suite(bad)
