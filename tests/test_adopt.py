"""Results roots written when run ids and training keys also hashed the test split and data
folder are adopted: their finished runs are found (renamed, index rows too), not trained again,
and a recipe that asks for another test split is told how to score the run there."""

from pathlib import Path

import torch

from qbench.config import load_suite, run_id, training_key
from qbench.run.engine import run_recipe
from qbench.store import read_results, rename_run
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")


def _legacy_root(results: Path, recipe, suite: str) -> str:
    """Turn today's finished run and shared training into what an older qbench left behind."""
    new, old = recipe.run_id, run_id(recipe, legacy=True)
    assert old != new
    (results / "runs" / suite / new).rename(results / "runs" / suite / old)
    rename_run(results, suite, new, old)
    shared = results / "cache" / "shared"
    for prefix, until in [("final", None), ("float", recipe.quant.float_warmup_steps)]:
        f = shared / f"{prefix}-{training_key(recipe, float_until=until)}.pt"
        if f.is_file():
            f.rename(shared / f"{prefix}-{training_key(recipe, float_until=until, legacy=True)}.pt")
    return old


def test_a_legacy_results_root_is_adopted_not_retrained(tmp_path, results, capsys):
    path = tiny_recipe(tmp_path / "tiny.yaml", technique="float", steps=6, warmup=0, ckpt=6)
    recipe = load_suite(path).runs[0]
    first = run_recipe(recipe, "tiny", results, CPU, progress=False)
    assert not first.get("skipped")
    old = _legacy_root(results, recipe, "tiny")
    assert set(read_results(results).run_id) == {old}

    again = run_recipe(recipe, "tiny", results, CPU, progress=False)
    assert again.get("skipped") and again["run_id"] == recipe.run_id  # found, not trained
    assert (results / "runs" / "tiny" / recipe.run_id / "checkpoint.pt").is_file()
    assert not (results / "runs" / "tiny" / old).exists()
    rows = read_results(results)
    assert set(rows.run_id) == {recipe.run_id}
    assert set(rows.run_dir) == {str(results / "runs" / "tiny" / recipe.run_id)}
    assert (results / "cache" / "shared" / f"final-{training_key(recipe)}.pt").is_file()
    assert f"{old}: now {recipe.run_id}" in capsys.readouterr().err

    # another test split: the same training, not run again; the way to score it there is printed
    other = load_suite(path, ["data.test_utterances=5"]).runs[0]
    assert other.run_id == recipe.run_id
    capsys.readouterr()
    assert run_recipe(other, "tiny", results, CPU, progress=False).get("skipped")
    err = capsys.readouterr().err
    assert "was scored on data.test_utterances=6" in err
    assert "qbench eval --suite tiny --set 'data.test_utterances=5' --test-set NAME" in err


def test_index_rename_covers_the_runs_evaluations_elsewhere(tmp_path):
    from qbench.store import record_results

    row = dict(task="asr", dataset="d", technique="float", train_bits=4, seed=0, precision="float")
    row |= dict(metric="wer", value=1.0, higher_is_better=0, headline=1, created=0.0)
    record_results(
        tmp_path,
        [
            {**row, "run_id": "a", "suite": "s", "run_dir": str(tmp_path / "runs" / "s" / "a")},
            {**row, "run_id": "a", "suite": "s@other", "run_dir": str(tmp_path / "runs" / "s" / "a")},
            {**row, "run_id": "a", "suite": "s2", "run_dir": "elsewhere"},  # another suite's run a
        ],
    )
    rename_run(tmp_path, "s", "a", "b")
    got = read_results(tmp_path, latest_only=False).set_index("suite")
    assert got.loc["s", "run_id"] == got.loc["s@other", "run_id"] == "b"
    assert got.loc["s", "run_dir"] == str(tmp_path / "runs" / "s" / "b")
    assert got.loc["s2", "run_id"] == "a"


def test_run_folders_recorded_relative_to_another_directory_are_found(tmp_path, shared_cache, monkeypatch):
    """`--results results` records run folders relative to where the command ran; read from
    elsewhere, the index still leads to them (per-item scores, curves, commits)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "res" / "cache").mkdir(parents=True)
    for name in ("synthetic-speech", "features"):
        (shared_cache / name).mkdir(exist_ok=True)
        (tmp_path / "res" / "cache" / name).symlink_to(shared_cache / name, target_is_directory=True)
    recipe = load_suite(
        tiny_recipe(tmp_path / "tiny.yaml", technique="float", steps=4, warmup=0, ckpt=4)
    ).runs[0]
    run_recipe(recipe, "tiny", Path("res"), CPU, progress=False)
    assert set(read_results(Path("res")).run_dir) == {str(Path("res") / "runs" / "tiny" / recipe.run_id)}
    monkeypatch.chdir(tmp_path / "res")  # the recorded relative path no longer leads anywhere
    found = set(read_results(tmp_path / "res").run_dir)
    assert found == {str(tmp_path / "res" / "runs" / "tiny" / recipe.run_id)}
