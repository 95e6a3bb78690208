"""Malformed input of every kind a user can hand qbench: recipes, --set values, data, results
state, baselines, the command line and archives. Each case must end with exit code 2 and one plain
line naming what is wrong and where (a run's header line may come first), no traceback, and
nothing written: the folder the case works in is byte for byte what it was before."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import load_suite
from qbench.data import download
from tests.conftest import tiny_recipe
from tests.test_download import FSDD_FILE, FSDD_TOP, Server, tar_gz

MULTI30K_FILES = [item.filename for item in download.get_dataset("multi30k").items]

CI = (Path(__file__).resolve().parent.parent / "recipes" / "ci.yaml").read_text()

ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
ALIAS_CHAIN = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 60))


@dataclass
class Case:
    """`setup(folder)` writes the case's inputs into `folder` and returns the command line (and
    environment); `expected` must appear in the error line."""

    setup: Callable[[Path], list]
    expected: str
    env: dict = field(default_factory=dict)
    header: int = 0  # lines a run prints before it finds the problem (its "N run(s) on cpu" line)


# ---------------------------------------------------------------- recipes and --set


def recipe_case(text: str, sets: tuple[str, ...] = (), expected: str = "") -> Case:
    def setup(d: Path) -> list:
        (d / "bad.yaml").write_text(text)
        args = ["run", d / "bad.yaml", "--results", d / "results", "--no-progress"]
        for s in sets:
            args += ["--set", s]
        return args

    return Case(setup, expected)


def ci_with(old: str, new: str) -> str:
    assert old in CI, old
    return CI.replace(old, new, 1)


RECIPES = {
    "duplicate section": recipe_case(
        CI + "train:\n  steps: 5\n", expected="train: given twice (first at line"
    ),
    "duplicate key": recipe_case(
        ci_with("  steps: 600\n", "  steps: 600\n  steps: 700\n"), expected="given twice"
    ),
    "alias bomb": recipe_case(ALIAS_BOMB + "name: x\n", expected="expands to more than 100000 values"),
    "alias chain": recipe_case(ALIAS_CHAIN + "name: x\n", expected="expands to deeper than 50 levels"),
    "deep nesting": recipe_case("name: x\nk: " + "[" * 5000 + "]" * 5000 + "\n", expected="nested more than"),
    "seed true": recipe_case(
        ci_with("seed: 0", "seed: true"), expected="seed: Input should be a valid integer"
    ),
    "seed negative": recipe_case(ci_with("seed: 0", "seed: -1"), expected="seed: Input should be greater"),
    "unknown section": recipe_case(CI + "trian: {steps: 5}\n", expected="trian"),
    "unknown key": recipe_case(ci_with("  steps: 600\n", "  stpes: 600\n"), expected="stpes"),
    "steps not a number": recipe_case(ci_with("  steps: 600\n", "  steps: many\n"), expected="train.steps"),
    "unknown technique": recipe_case(CI, ("quant.technique=bogus",), "--set quant.technique=bogus"),
    "unknown task": recipe_case(ci_with("task: asr", "task: ocr"), expected="task"),
    "not a mapping": recipe_case("- a\n- b\n", expected="a recipe is a YAML mapping"),
    "empty file": recipe_case("", expected="a recipe is a YAML mapping"),
    "YAML syntax": recipe_case("name: x\n  bad: [\n", expected="bad.yaml"),
    "tab indentation": recipe_case("name: x\ntrain:\n\tsteps: 5\n", expected="bad.yaml"),
    "grid not a mapping": recipe_case(
        CI.split("grid:")[0] + "grid: [1, 2]\n", expected="grid: expected a mapping"
    ),
    "grid empty axis": recipe_case(CI.split("grid:")[0] + "grid: {quant.technique: []}\n", expected="grid:"),
    "grid duplicates": recipe_case(
        CI.split("grid:")[0] + "grid: {quant.technique: [float, float]}\n",
        expected="grid produces duplicate runs",
    ),
    "suite name 300 chars": recipe_case(
        ci_with("name: ci", "name: " + "n" * 300), expected="at most 100 characters"
    ),
    "suite name with a slash": recipe_case(ci_with("name: ci", "name: ../up"), expected="name"),
    "precision name ../": recipe_case(
        CI + "precisions:\n  '../../evil': {'*': 8}\n", expected="becomes a file name"
    ),
    "precision name /": recipe_case(CI + "precisions:\n  'a/b': {'*': 8}\n", expected="becomes a file name"),
    "precision name hidden": recipe_case(
        CI + "precisions:\n  '.x': {'*': 8}\n", expected="becomes a file name"
    ),
    "precision glob matching nothing": recipe_case(
        CI + "precisions:\n  mixed: {'nothing.*': 4, '*': 8}\n",
        ("eval.precisions=[float,mixed]",),
        "bad.yaml:35: precisions.mixed.nothing.*: 'nothing.*' matches no quantized weight",
    ),
    "include matching nothing": recipe_case(CI, ("quant.include=[nothing_here.*]",), "matches no parameter"),
    "bits out of range": recipe_case(CI, ("quant.bits=1",), "quant.bits"),
    "bits true": recipe_case(CI, ("quant.bits=true",), "--set quant.bits=true: quant.bits:"),
    "steps 1e30": recipe_case(CI, ("train.steps=1" + "0" * 30,), "train.steps: Input should be less than"),
    "steps zero": recipe_case(CI, ("train.steps=0",), "train.steps"),
    "batch 1e12": recipe_case(
        CI, ("train.batch_size=1000000000000",), "train.batch_size: Input should be less"
    ),
    "eval batch 1e12": recipe_case(
        CI, ("eval.batch_size=1000000000000",), "eval.batch_size: Input should be less"
    ),
    "lr negative": recipe_case(CI, ("train.lr=-1",), "train.lr"),
    "unparsable --set": recipe_case(CI, ("train.steps=[1",), "--set train.steps=[1: not a YAML value"),
    "--set without =": recipe_case(CI, ("train.steps",), "train.steps"),
    "--set unknown key": recipe_case(CI, ("train.stpes=5",), "stpes"),
    "--set deep value": recipe_case(CI, ("train.steps=" + "[" * 100 + "]" * 100,), "--set train.steps="),
    "--set grid axis not a list": recipe_case(CI, ("grid.quant.technique=float",), "grid"),
    "recipe not found": Case(
        lambda d: ["run", d / "missing.yaml", "--results", d / "r"], "recipe file not found"
    ),
    "recipe path with markup": Case(
        lambda d: ["run", d / "[/x]" / "[red]r.yaml", "--results", d / "r"],
        "[/x]/[red]r.yaml: recipe file not found",
    ),
    "recipe not UTF-8": Case(
        lambda d: (
            (d / "r.yaml").write_bytes(b"name: \xff\xfe\n") and ["run", d / "r.yaml", "--results", d / "r"]
        ),
        "not UTF-8 text",
    ),
}


# ---------------------------------------------------------------- data


def manifest_case(rows: Callable[[Path], str], expected: str, encoding_bytes: bytes | None = None) -> Case:
    """A manifest-sourced ASR recipe whose three splits are the manifest `rows(folder)` writes."""

    def setup(d: Path) -> list:
        manifest = d / "m.tsv"
        if encoding_bytes is not None:
            manifest.write_bytes(encoding_bytes)
        else:
            manifest.write_text(rows(d))
        (d / "r.yaml").write_text(
            "name: m\ntask: asr\n"
            f"data: {{source: manifest, train: {manifest}, valid: {manifest}, test: {manifest}}}\n"
            "model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3}\ntrain: {steps: 2}\n"
        )
        return ["run", d / "r.yaml", "--results", d / "results", "--no-progress"]

    return Case(setup, expected, header=1)  # data is checked once the run has started


def wav(d: Path, name: str, samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> str:
    sf.write(d / name, samples, rate, subtype=subtype)
    return str(d / name)


def good_rows(d: Path, n: int = 4) -> str:
    rng = np.random.default_rng(0)
    return "".join(
        f"{wav(d, f'ok{i}.wav', 0.1 * rng.standard_normal(8000))}\thello world\n" for i in range(n)
    )


def nan_wav_rows(d: Path) -> str:
    samples = np.zeros(8000, dtype=np.float32)
    samples[100] = np.nan
    return good_rows(d) + f"{wav(d, 'nan.wav', samples, subtype='FLOAT')}\thello\n"


DATA = {
    "missing audio file": manifest_case(lambda d: "missing.wav\thello\n", "missing.wav"),
    "NaN samples": manifest_case(nan_wav_rows, "nan.wav"),
    "3 Hz recording": manifest_case(
        lambda d: good_rows(d) + f"{wav(d, 'slow.wav', np.zeros(30), 3)}\thi\n", "slow.wav"
    ),
    "manifest not UTF-8": manifest_case(lambda d: "", "m.tsv", encoding_bytes=b"a.wav\thello \xff\xfe\n"),
    "empty manifest": manifest_case(lambda d: "", "m.tsv"),
    "manifest line without a transcript": manifest_case(lambda d: good_rows(d) + "lonely.wav\n", "m.tsv"),
}


# ---------------------------------------------------------------- results state


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results root holding one finished tiny run (copied by the cases that need one)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = tiny_recipe(root / "r.yaml", steps=2, warmup=1)
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(root / "results"), "--no-progress"])
    assert out.exit_code == 0, out.output
    return root


def with_run(change: Callable[[Path], None], command: Callable[[Path, Path], list]) -> Callable[[Path], list]:
    """Copy the finished run into the case's folder, apply `change` to its run folder, then the
    command line `command(folder, run_folder)`."""

    def setup(d: Path) -> list:
        shutil.copytree(FINISHED[0], d, dirs_exist_ok=True, symlinks=True)
        (run_dir,) = (d / "results" / "runs" / "tiny").glob("rand-*")
        change(run_dir)
        return command(d, run_dir)

    return setup


FINISHED: list[Path] = []  # filled by the `finished` fixture for with_run


def rerun(d: Path, run_dir: Path) -> list:
    return ["run", d / "r.yaml", "--results", d / "results", "--no-progress"]


def truncate(name: str, keep: int = 20) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_bytes((run_dir / name).read_bytes()[:keep])


def sqlite_of_something_else(d: Path) -> None:
    con = sqlite3.connect(d / "index.sqlite")
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()


STATE = {
    "truncated status.json": Case(
        with_run(truncate("status.json"), rerun), "status.json: unreadable", header=1
    ),
    "truncated metrics.json in show": Case(
        with_run(truncate("metrics.json"), lambda d, r: ["show", r]), "metrics.json: unreadable"
    ),
    "truncated config.yaml in show": Case(
        with_run(truncate("config.yaml", 200), lambda d, r: ["show", r]),
        "config.yaml: not a valid run config",
    ),
    "config.yaml not YAML in export": Case(
        with_run(
            lambda r: (r / "config.yaml").write_text("a: [1\n"),
            lambda d, r: ["export", r, "--results", d / "results"],
        ),
        "config.yaml: not a readable run config",
    ),
    "corrupt checkpoint in export": Case(
        with_run(truncate("checkpoint.pt", 100), lambda d, r: ["export", r, "--results", d / "results"]),
        "checkpoint.pt: unreadable checkpoint",
    ),
    "checkpoint of another program in export": Case(
        with_run(
            lambda r: (r / "checkpoint.pt").write_bytes(b"not a zip at all"),
            lambda d, r: ["export", r, "--results", d / "results"],
        ),
        "checkpoint.pt: unreadable checkpoint",
    ),
    "export of an unknown precision": Case(
        with_run(
            lambda r: None, lambda d, r: ["export", r, "--results", d / "results", "--precision", "w99"]
        ),
        "w99",
    ),
    "show of a missing folder": Case(lambda d: ["show", d / "nope"], "nope"),
    "export of a folder that is not a run": Case(lambda d: ["export", d], "not a run folder"),
    "index that is not SQLite": Case(
        lambda d: (d / "index.sqlite").write_bytes(b"garbage" * 500) and ["compare", "--results", d],
        "index.sqlite: not a readable qbench results index",
    ),
    "index of another program": Case(
        lambda d: sqlite_of_something_else(d) or ["compare", "--results", d],
        "index.sqlite: not a readable qbench results index",
    ),
    "results path that is a file": Case(
        lambda d: (
            (d / "results").write_text("x") and ["run", tiny_recipe(d / "r.yaml"), "--results", d / "results"]
        ),
        "not a folder",
    ),
}


# ---------------------------------------------------------------- baselines


def baseline_case(content: str | None, expected: str) -> Case:
    def setup(d: Path) -> list:
        if content is not None:
            (d / "b.json").write_text(content)
        return ["check", "--baseline", d / "b.json", "--results", d]

    return Case(setup, expected)


def entry(**changes) -> dict:
    e = {
        "suite": "s",
        "technique": "rand",
        "precision": "w4",
        "metric": "wer",
        "value": 0.2,
        "tolerance": 0.05,
    }
    return {**e, **changes}


def entries(*es: dict) -> str:
    return json.dumps({"entries": list(es)})


BASELINES = {
    "baseline missing": baseline_case(None, "b.json: baseline file not found"),
    "baseline not JSON": baseline_case("{entries: [", "b.json:1: invalid JSON"),
    "baseline without entries": baseline_case("{}", "expected an object with an 'entries' list"),
    "baseline entry not an object": baseline_case('{"entries": [1]}', "entries[0] is not an object"),
    "baseline entry lacking keys": baseline_case('{"entries": [{"suite": "s"}]}', "entries[0] lacks"),
    "baseline NaN value": baseline_case(
        entries(entry(value=math.nan)), "entries[0].value: expected a finite"
    ),
    "baseline inf value": baseline_case(
        entries(entry(value=math.inf)), "entries[0].value: expected a finite"
    ),
    "baseline NaN tolerance": baseline_case(entries(entry(tolerance=math.nan)), "entries[0].tolerance"),
    "baseline negative tolerance": baseline_case(entries(entry(tolerance=-1)), "entries[0].tolerance"),
    "baseline value a string": baseline_case(entries(entry(value="0.2")), "entries[0].value"),
    "baseline value a bool": baseline_case(entries(entry(value=True)), "entries[0].value"),
    "baseline unknown metric": baseline_case(entries(entry(metric="accuracy")), "unknown metric 'accuracy'"),
    "baseline unknown format": baseline_case('{"format": "x/9", "entries": []}', "unknown baseline format"),
}


# ---------------------------------------------------------------- command line


def run_tiny(*extra: str) -> Callable[[Path], list]:
    return lambda d: ["run", tiny_recipe(d / "r.yaml"), "--results", d / "results", *extra]


CLI = {
    "--device tpu9": Case(run_tiny("--device", "tpu9"), "--device tpu9: expected auto, cpu, cuda or cuda:N"),
    "--device mps": Case(run_tiny("--device", "mps"), "--device mps: qbench trains on cpu or cuda"),
    "QBENCH_THREADS=abc": Case(run_tiny(), "QBENCH_THREADS='abc'", env={"QBENCH_THREADS": "abc"}),
    "QBENCH_THREADS=0": Case(run_tiny(), "QBENCH_THREADS='0'", env={"QBENCH_THREADS": "0"}),
    "unparsable --launcher-option": Case(
        run_tiny("--launcher", "local", "--launcher-option", "x=[1"),
        "--launcher-option 'x=[1': not a YAML value",
    ),
    "unknown --launcher": Case(run_tiny("--launcher", "pbs"), "--launcher 'pbs'"),
    "--jobs 0": Case(run_tiny("--jobs", "0"), "--jobs 0: expected at least 1"),
    "unknown dataset": Case(
        lambda d: ["data", "download", "imagenet", "--dest", d / "data"], "unknown dataset"
    ),
    "http mirror without --insecure-mirror": Case(
        lambda d: ["data", "download", "multi30k", "--dest", d / "data", "--mirror", "http://127.0.0.1:9/x"],
        "--insecure-mirror",
    ),
    "mirror that is not a URL": Case(
        lambda d: [
            "data",
            "download",
            "multi30k",
            "--dest",
            d / "data",
            "--insecure-mirror",
            "ftp://127.0.0.1/x",
        ],
        "ftp://127.0.0.1/x",
    ),
}


# ---------------------------------------------------------------- archives (served from 127.0.0.1)

SERVER: list[Server] = []  # filled by the `server` fixture


def archive_case(dataset: str, files: Callable[[], dict[str, bytes]], expected: str) -> Case:
    def setup(d: Path) -> list:
        SERVER[0].files = files()
        return [
            "data",
            "download",
            dataset,
            "--dest",
            d / "data",
            "--insecure-mirror",
            SERVER[0].url,
            "--no-progress",
        ]

    return Case(setup, expected)


WAV = b"RIFF" + b"\0" * 40


ARCHIVES = {
    "archive member leaving the folder": archive_case(
        "fsdd",
        lambda: {FSDD_FILE: tar_gz({f"{FSDD_TOP}/recordings/../../../evil.wav": WAV})},
        "unsafe archive",
    ),
    "archive member with an absolute path": archive_case(
        "fsdd", lambda: {FSDD_FILE: tar_gz({"/tmp/evil.wav": WAV})}, "expected one folder '*/recordings'"
    ),
    "archive with a dangling symlink": archive_case(
        "fsdd",
        lambda: {FSDD_FILE: tar_gz({}, symlinks={f"{FSDD_TOP}/recordings/0_x_0.wav": "missing.wav"})},
        "unsafe archive",
    ),
    "archive that is not a tar": archive_case(
        "fsdd", lambda: {FSDD_FILE: b"not a tar" * 100}, "corrupt archive"
    ),
    "tampered Multi30k file": archive_case(
        "multi30k", lambda: {name: b"tampered" for name in MULTI30K_FILES}, "checksum mismatch"
    ),
}


CASES = {**RECIPES, **DATA, **STATE, **BASELINES, **CLI, **ARCHIVES}


def snapshot(folder: Path) -> dict:
    """Every path under `folder` with its size and modification time (folders: None)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_dir():
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
        else:
            out[str(p.relative_to(folder))] = None
    return out


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_line_exit_2_and_writes_nothing(tmp_path, name, finished, server):
    FINISHED[:] = [finished]
    SERVER[:] = [server]
    case = CASES[name]
    args = [str(a) for a in case.setup(tmp_path)]
    before = snapshot(tmp_path)
    started = time.monotonic()
    out = CliRunner().invoke(app, args, env=case.env)
    assert time.monotonic() - started < 30
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 + case.header, out.output
    assert lines[-1].startswith("error: ") and case.expected in lines[-1], out.output
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- what the cases do not show


def test_the_alias_bomb_fails_in_under_a_second(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(ALIAS_BOMB + "name: x\n")
    started = time.monotonic()
    with pytest.raises(Exception, match="expands to more than 100000 values"):
        load_suite(recipe)
    assert time.monotonic() - started < 1


def test_set_of_a_grid_key_replaces_that_axis(tmp_path):
    recipe = tmp_path / "ci.yaml"
    recipe.write_text(CI)
    assert [r.quant.technique for r in load_suite(recipe).runs] == ["float", "ptq", "rand"]
    assert [r.quant.technique for r in load_suite(recipe, ["quant.technique=rand"]).runs] == ["rand"]
    grid = load_suite(recipe, ["grid.quant.technique=[float,ste]"]).runs
    assert [r.quant.technique for r in grid] == ["float", "ste"]
