"""`qbench eval --set ... --test-set NAME`: a finished run scored on data it was neither trained
nor tested on, without retraining (FSDD: a new speaker; Multi30k: another test file), its rows
under SUITE@NAME; and the clear errors for data that would change the trained model or is
missing. Needs the shared data (QBENCH_DATA)."""

from __future__ import annotations

import gzip

from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.store import read_results

MODEL = "model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3, dropout: 0.0}\n"


def _run(recipe, results):
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert out.exit_code == 0, out.output


def _eval(results, *args):
    return CliRunner().invoke(app, ["eval", *args, "--results", str(results)])


def test_fsdd_run_scored_on_a_speaker_it_never_heard(tmp_path, data_dir):
    recipe = tmp_path / "tiny-fsdd.yaml"
    recipe.write_text(
        "name: tiny-fsdd\ntask: asr\nseed: 0\n"
        f"data: {{source: fsdd-digits, path: {data_dir / 'fsdd'}, train_speakers: [george, jackson, nicolas], "
        "train_utterances: 12, valid_utterances: 4, test_utterances: 6}\n"
        + MODEL
        + "quant: {technique: ste, bits: 4, float_warmup_steps: 4}\n"
        "train: {steps: 8, batch_size: 4, lr: 3.0e-3, warmup: 2, checkpoint_every: 4}\n"
        "eval: {precisions: [float, w4], batch_size: 4}\n"
    )
    results = tmp_path / "results"
    _run(recipe, results)
    before = read_results(results)
    features = results / "cache" / "features"
    built = sorted(features.glob("*.pt"))
    done = _eval(
        results,
        "--suite",
        "tiny-fsdd",
        "--kernels",
        "fake",
        "--set",
        "data.test_speakers=[yweweler]",
        "--test-set",
        "yweweler",
    )
    assert done.exit_code == 0, done.output
    new_parts = sorted(set(features.glob("*.pt")) - set(built))
    assert [f.name.split("-")[2] for f in new_parts] == ["test"]  # the training features were reused
    after = read_results(results)
    other = after[after.suite == "tiny-fsdd@yweweler"]
    assert set(other.precision) == {"float", "w4"} and {"wer", "cer", "rtfx"} <= set(other.metric)
    assert set(other.run_id) == set(before.run_id)  # the same run, scored on other data
    assert (
        after[after.suite == "tiny-fsdd"]
        .set_index(["precision", "metric"])
        .value.loc[before.set_index(["precision", "metric"]).index]
        .equals(before.set_index(["precision", "metric"]).value)
    )  # its own cells untouched
    board = CliRunner().invoke(app, ["compare", "--suite", "tiny-fsdd@yweweler", "--results", str(results)])
    assert board.exit_code == 0, board.output
    for args, says in (
        (
            ["--set", "data.train_speakers=[yweweler]", "--test-set", "x"],
            "changes what the run was trained on",
        ),
        (["--set", "data.test_speakers=[yweweler]"], "name it with --test-set"),
        (["--set", "data.test_speakers=[lucas]", "--test-set", "lucas"], "no recordings of lucas"),
        (["--set", "data.test_speakers=[george]", "--test-set", "george"], "george"),  # a training speaker
        (["--set", f"data.path={tmp_path / 'nowhere'}", "--test-set", "gone"], "nowhere"),
        (["--set", "data.test_speakers=[yweweler]", "--test-set", "a/b"], "letters, digits, - and _ only"),
    ):
        bad = _eval(results, "--suite", "tiny-fsdd", *args)
        assert bad.exit_code == 2 and says in bad.output and "Traceback" not in bad.output, (args, bad.output)
    assert set(read_results(results).suite) == {"tiny-fsdd", "tiny-fsdd@yweweler"}  # nothing written by them


def _multi30k_copy(src, dest, lines=400):
    """A small Multi30k folder, with its validation files also as a second test file."""
    dest.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            text = gzip.open(src / f"{split}.{lang}.gz", "rt", encoding="utf-8").read().splitlines()[:lines]
            with gzip.open(dest / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(text) + "\n")
    for lang in ("en", "de"):
        (dest / f"test_2017_flickr.{lang}.gz").write_bytes((dest / f"val.{lang}.gz").read_bytes())


def test_multi30k_run_scored_on_another_test_file(tmp_path, data_dir):
    folder = tmp_path / "m30k"
    _multi30k_copy(data_dir / "multi30k", folder)
    recipe = tmp_path / "tiny-mt.yaml"
    recipe.write_text(
        f"name: tiny-mt\ntask: mt\nseed: 0\ndata: {{source: multi30k, path: {folder}}}\n"
        "model: {arch: transformer, d_model: 32, encoder_layers: 1, decoder_layers: 1, heads: 2, "
        "vocab_size: 200, max_len: 48, dropout: 0.0}\n"
        "quant: {technique: ste, bits: 4, float_warmup_steps: 4}\n"
        "train: {steps: 8, batch_size: 16, lr: 3.0e-3, warmup: 2, checkpoint_every: 4}\n"
        "eval: {precisions: [float, w4], batch_size: 100}\n"
    )
    results = tmp_path / "results"
    _run(recipe, results)
    done = _eval(
        results, "--suite", "tiny-mt", "--set", "data.test_set=test_2017_flickr", "--test-set", "2017"
    )
    assert done.exit_code == 0, done.output
    other = read_results(results).query("suite == 'tiny-mt@2017'")
    assert {"bleu", "chrf", "sentences_per_s"} <= set(other.metric) and "w4+int" in set(other.precision)
    missing = _eval(
        results, "--suite", "tiny-mt", "--set", "data.test_set=test_2018_flickr", "--test-set", "2018"
    )
    assert (
        missing.exit_code == 2 and "test_2018_flickr" in missing.output and "Traceback" not in missing.output
    )
