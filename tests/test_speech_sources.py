"""Recorded-speech sources on tiny generated fixtures: LibriSpeech layout, manifests, errors, cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import LibriSpeechData, ManifestData, load_suite
from qbench.data import DataError, speech
from qbench.data.audio import read_audio
from qbench.tasks.asr import ASRTask


def tone(seconds: float, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_librispeech(root: Path, subset: str, speakers=(("19", "198"), ("26", "495")), n=2, seconds=0.5):
    for speaker, chapter in speakers:
        d = root / subset / speaker / chapter
        d.mkdir(parents=True)
        lines = []
        for i in range(n):
            uid = f"{speaker}-{chapter}-{i:04d}"
            sf.write(d / f"{uid}.flac", tone(seconds, freq=200 + 50 * i), 16000)
            lines.append(f"{uid} SHE SAID IT'S {'YES' if i else 'NO'}")
        (d / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def libri_cfg(root: Path, **kw) -> LibriSpeechData:
    return LibriSpeechData(path=str(root), train=("train",), valid=("dev",), test=("test",), **kw)


@pytest.fixture
def libri(tmp_path) -> Path:
    root = tmp_path / "LibriSpeech"
    for subset in ("train", "dev", "test"):
        make_librispeech(root, subset)
    return root


def collect(cfg) -> tuple[dict[str, list], dict]:
    stats: dict = {}
    return {split: list(it) for split, it in speech.utterances(cfg, stats).items()}, stats


def test_librispeech_layout_read_and_normalised(libri):
    out, stats = collect(libri_cfg(libri))
    assert [u.id for u in out["train"]] == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    assert out["train"][1].text == "she said it's yes" and out["train"][1].speaker == "19"
    assert out["test"][0].audio.dtype == np.float32 and out["test"][0].audio.shape == (8000,)
    assert stats == {
        "skipped_files": 0,
        "skipped_too_long": 0,
        "utterances": {"train": 4, "valid": 4, "test": 4},
    }


def test_librispeech_long_utterances_skipped_and_counted(libri):
    d = libri / "train" / "19" / "198"
    sf.write(d / "19-198-0001.flac", tone(3.0), 16000)
    out, stats = collect(libri_cfg(libri, max_seconds=2.0))
    assert len(out["train"]) == 3 and stats["skipped_too_long"] == 1


def test_missing_subset_names_the_folders(libri):
    with pytest.raises(DataError, match=r"subset 'dev-clean' not found .*dev, test, train"):
        collect(LibriSpeechData(path=str(libri), train=("train",), valid=("dev-clean",), test=("test",)))


def test_transcript_line_without_audio(libri):
    (libri / "dev" / "26" / "495" / "26-495-0001.flac").unlink()
    trans = libri / "dev" / "26" / "495" / "26-495.trans.txt"
    with pytest.raises(DataError, match=rf"{trans}:2: transcript of 26-495-0001 has no audio"):
        collect(libri_cfg(libri))
    out, stats = collect(libri_cfg(libri, skip_bad_files=True))
    assert len(out["valid"]) == 3 and stats["skipped_files"] == 1


def test_audio_without_transcript(libri):
    extra = libri / "test" / "19" / "198" / "19-198-0007.flac"
    sf.write(extra, tone(0.3), 16000)
    with pytest.raises(DataError, match=rf"{extra}: audio with no transcript in 19-198.trans.txt"):
        collect(libri_cfg(libri))


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_corrupt_or_truncated_audio_names_the_file(tmp_path, damage):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(1.0), 16000, subtype="PCM_16")
    data = wav.read_bytes()
    wav.write_bytes(b"not audio at all" * 8 if damage == "corrupt" else data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{wav}: (unreadable or corrupt|truncated) audio"):
        read_audio(wav)


def test_truncated_flac_in_librispeech(libri):
    flac = libri / "train" / "26" / "495" / "26-495-0000.flac"
    flac.write_bytes(flac.read_bytes()[:300])
    with pytest.raises(DataError, match=str(flac)):
        collect(libri_cfg(libri))
    out, stats = collect(libri_cfg(libri, skip_bad_files=True))
    assert len(out["train"]) == 3 and stats["skipped_files"] == 1


def write_manifests(root: Path) -> dict[str, Path]:
    audio = root / "clips"
    audio.mkdir(parents=True)
    sf.write(audio / "a.wav", tone(0.5, rate=8000), 8000)  # resampled to 16 kHz
    sf.write(audio / "b.flac", tone(0.25, rate=22050), 22050)
    sf.write(audio / "c.wav", tone(1.0), 16000)
    rows = [
        {"audio": "clips/a.wav", "text": "Hello, World!"},
        {"audio": "clips/b.flac", "text": "second one", "duration": 0.25},
        {"audio": "clips/c.wav", "text": "too long", "duration": 9.0},
    ]
    jsonl = root / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tsv = root / "test.tsv"  # Common Voice style: a header row names the columns
    tsv.write_text('client_id\tpath\tsentence\nx\tclips/a.wav\tthe "quoted" word\ny\tclips/b.flac\tok\n')
    plain = root / "valid.tsv"
    plain.write_text("clips/c.wav\tthird\t1.0\n")
    return {"train": jsonl, "valid": plain, "test": tsv}


def test_manifest_jsonl_and_tsv(tmp_path):
    m = write_manifests(tmp_path)
    cfg = ManifestData(train=str(m["train"]), valid=str(m["valid"]), test=str(m["test"]), max_seconds=5.0)
    out, stats = collect(cfg)
    assert [u.text for u in out["train"]] == ["hello world", "second one"]
    assert out["train"][0].audio.shape == (8000,) and out["train"][1].audio.shape == (4000,)
    assert [u.text for u in out["test"]] == ["the quoted word", "ok"]
    assert [u.text for u in out["valid"]] == ["third"]
    assert stats["skipped_too_long"] == 1
    assert sorted(p.name for p in speech.source_files(cfg)) == [
        "a.wav", "b.flac", "c.wav", "test.tsv", "train.jsonl", "valid.tsv",
    ]  # fmt: skip


def test_manifest_errors_name_file_and_line(tmp_path):
    m = write_manifests(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "clips/a.wav", "text": "fine"}\n{"audio": "clips/gone.wav", "text": "lost"}\n')
    cfg = ManifestData(train=str(bad), valid=str(m["valid"]), test=str(m["test"]))
    with pytest.raises(DataError, match=rf"{bad}:2: transcript has no audio \(.*gone.wav not found\)"):
        collect(cfg)
    bad.write_text('{"audio": "clips/a.wav", "text": ""}\n')
    with pytest.raises(DataError, match=rf"{bad}:1: audio .*a.wav has no transcript"):
        collect(cfg)
    bad.write_text('{"audio": "clips/a.wav", "text": "x"\n')
    with pytest.raises(DataError, match=rf"{bad}:1: invalid JSON"):
        collect(cfg)


LIBRI_RECIPE = """\
name: libri-tiny
task: asr
data: {{source: librispeech, path: {path}, train: [train], valid: [dev], test: [test], max_seconds: 2.0, skip_bad_files: {skip}}}
model: {{d_model: 16, layers: 1, heads: 2, conv_kernel: 3}}
quant: {{technique: float}}
train: {{steps: 2, batch_size: 2, warmup: 1, checkpoint_every: 2}}
eval: {{precisions: [float], batch_size: 4}}
"""


def test_bad_data_exits_2_or_is_counted_in_metrics(libri, tmp_path):
    flac = libri / "train" / "26" / "495" / "26-495-0000.flac"
    flac.write_bytes(b"garbage")
    sf.write(libri / "train" / "19" / "198" / "19-198-0001.flac", tone(3.0), 16000)
    recipe = tmp_path / "r.yaml"
    results = tmp_path / "results"
    runner = CliRunner()
    recipe.write_text(LIBRI_RECIPE.format(path=libri, skip="false"))
    result = runner.invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert str(flac) in result.output and "unreadable or corrupt audio" in result.output

    recipe.write_text(LIBRI_RECIPE.format(path=libri, skip="true"))
    result = runner.invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert result.exit_code == 0, result.output
    (metrics,) = (results / "runs" / "libri-tiny").glob("*/metrics.json")
    data = json.loads(metrics.read_text())["data"]
    assert data["skipped_files"] == 1 and data["skipped_too_long"] == 1
    assert data["utterances"] == {"train": 2, "valid": 4, "test": 4}


def test_feature_cache_rebuilt_when_a_source_file_changes(libri, tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(LIBRI_RECIPE.format(path=libri, skip="false"))
    (recipe,) = load_suite(recipe_file).runs
    cache = tmp_path / "cache"

    def build() -> ASRTask:
        task = ASRTask(recipe, cache, progress=False)
        task.build_data()
        return task

    first = build()
    files = sorted((cache / "features").glob("librispeech-*.pt"))
    assert [f.name.split("-")[1] for f in files] == ["test", "train+valid"]  # two parts
    build()  # unchanged: the same cache files are read, nothing new written
    assert sorted((cache / "features").glob("librispeech-*.pt")) == files

    flac = libri / "test" / "19" / "198" / "19-198-0000.flac"
    sf.write(flac, tone(0.8, freq=900.0), 16000)
    st = flac.stat()
    os.utime(flac, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = build()  # a test file changed: the test part only is rebuilt
    assert len(list((cache / "features").glob("librispeech-test-*.pt"))) == 2
    assert len(list((cache / "features").glob("librispeech-train+valid-*.pt"))) == 1
    i = second.splits["test"]["ids"].index("19-198-0000")
    assert second.splits["test"]["feats"][i].shape[0] > first.splits["test"]["feats"][i].shape[0]


def test_a_moved_copy_of_the_data_or_another_test_split_builds_only_what_changed(libri, tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(LIBRI_RECIPE.format(path=libri, skip="false"))
    cache = tmp_path / "cache"

    def build(*sets: str) -> ASRTask:
        task = ASRTask(load_suite(recipe_file, list(sets)).runs[0], cache, progress=False)
        task.build_data()
        return task

    first = build()
    files = sorted((cache / "features").glob("*.pt"))
    moved = tmp_path / "moved"
    shutil.copytree(libri, moved)  # copy2: sizes and modification times kept
    again = build(f"data.path={moved}")
    assert sorted((cache / "features").glob("*.pt")) == files  # nothing rebuilt
    assert again.splits["test"]["ids"] == first.splits["test"]["ids"]

    other = build("data.test=[dev]")  # another test split: its features only
    assert len(list((cache / "features").glob("librispeech-train+valid-*.pt"))) == 1
    assert len(list((cache / "features").glob("librispeech-test-*.pt"))) == 2
    assert other.splits["test"]["ids"] == first.splits["valid"]["ids"]
