"""Leaderboard options, failed runs, the CI gate's reports (JUnit), baselines, plots, show, RESULTS.md.
All on index rows and run folders written here: no training."""

import json
import xml.etree.ElementTree as ET

import pandas as pd
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import load_suite, resolved_yaml
from qbench.report.board import leaderboard
from qbench.store import read_results, record_results, record_run_state
from tests.conftest import tiny_recipe
from tests.test_report import entry, fill, row


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def fill_more(root):
    fill(root)  # float 0.20 everywhere; rand float 0.21, w4 0.22/0.24 over two seeds
    record_results(root, [row("ste", "w4", 0.21), row("ste", "float", 0.26)])


def test_sort_by_column_best_first_and_by_name(tmp_path):
    fill_more(tmp_path)
    df = read_results(tmp_path)
    df = df[df.metric == "wer"]
    assert list(leaderboard(df, sort="w4").table.index[:-1]) == ["float", "ste", "rand"]
    assert list(leaderboard(df, sort="float").table.index[:-1]) == ["float", "rand", "ste"]
    assert list(leaderboard(df, sort="technique").table.index[:-1]) == ["float", "rand", "ste"]
    out = cli("compare", "--results", tmp_path, "--sort", "w4", "-f", "csv")
    body = pd.read_csv(__import__("io").StringIO(out.stdout))
    assert list(dict.fromkeys(body.technique)) == ["float", "ste", "rand"]
    assert abs(body[(body.technique == "ste") & (body.precision == "w4")].delta.iloc[0] - 0.01) < 1e-9
    bad = cli("compare", "--results", tmp_path, "--sort", "w3")
    assert bad.exit_code == 1 and "cannot sort by 'w3'" in bad.output and "float, w8, w4" in bad.output


def test_filters_by_dataset_technique_and_keeps_suites_apart(tmp_path):
    fill(tmp_path)
    other = [row("float", "float", 0.50, suite="t"), row("rand", "w4", 0.55, suite="t")]
    other += [{**row("rand", "w4", 0.9, suite="u"), "dataset": "fsdd-digits"}]
    record_results(tmp_path, other)
    board = leaderboard(read_results(tmp_path).query("dataset == 'synthetic-speech'"))
    assert "t: rand" in board.table.index and "s: rand" in board.table.index
    assert board.table.loc["t: rand", "w4"] == "55.00 (+5.00)"  # against t's float, not s's
    out = cli("compare", "--results", tmp_path, "--dataset", "fsdd-digits", "-f", "json")
    records = json.loads(out.stdout)
    assert [(r["suite"], r["technique"]) for r in records] == [("u", "rand")]
    out = cli("compare", "--results", tmp_path, "--suite", "s", "--technique", "rand", "-f", "markdown")
    assert "23.00 ± 1.41 (+3.00)" in out.stdout  # the delta's float reference survives the filter
    assert (
        "\n| rand" in out.stdout
        and "\n| float" not in out.stdout
        and "mean ± standard deviation" in out.stdout
    )


def test_compare_shows_failed_runs_with_reason(tmp_path):
    fill(tmp_path)
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml", technique="pqn")).runs[0]
    record_run_state(tmp_path, recipe, "s", "failed", "loss is nan at step 7")
    out = cli("compare", "--results", tmp_path)
    assert out.exit_code == 0
    assert f"failed s/{recipe.run_id}: loss is nan at step 7" in out.output
    md = cli("compare", "--results", tmp_path, "-f", "markdown").stdout
    assert "Failed runs" in md and f"`{recipe.run_id}` (pqn, seed 0): loss is nan at step 7" in md
    record_run_state(tmp_path, recipe, "s", "done")  # a rerun that succeeded clears it
    assert "failed" not in cli("compare", "--results", tmp_path).output


def write_baseline(tmp_path, entries, name="baseline.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"entries": entries}))
    return p


def test_check_reports_results_without_baseline_entry(tmp_path):
    fill(tmp_path)
    b = write_baseline(tmp_path, [entry("float", p, 0.20) for p in ("float", "w8", "w4")])
    out = cli("check", "--baseline", b, "--results", tmp_path)
    assert out.exit_code == 0, out.output
    assert "NO BASELINE s/rand (trained w4)@w4 wer: 23.00 WER % in the index" in out.output
    assert "2 result(s) without a baseline entry" in out.output
    strict = cli("check", "--baseline", b, "--results", tmp_path, "--strict")
    assert strict.exit_code == 1


def test_check_writes_junit_with_failures(tmp_path):
    fill(tmp_path)
    entries = [entry("float", "w4", 0.20), entry("rand", "w4", 0.18), entry("pqn", "w4", 0.2)]
    junit = tmp_path / "out" / "check.xml"
    out = cli(
        "check", "--baseline", write_baseline(tmp_path, entries), "--results", tmp_path, "--junit", junit
    )
    assert out.exit_code == 1
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "2" and suite.get("skipped") == "3"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["s/float@w4 wer"].find("failure") is None
    fail = cases["s/rand@w4 wer"].find("failure")
    assert fail.get("type") == "regression" and "23.00 vs baseline 18.00" in fail.get("message")
    assert cases["s/pqn@w4 wer"].find("failure").get("type") == "missing result"
    assert cases["s/rand (trained w4)@float wer"].find("skipped") is not None


def test_check_rejects_malformed_entries(tmp_path):
    b = write_baseline(tmp_path, [{**entry("float", "w4", 0.2), "tolerance": "big"}])
    out = cli("check", "--baseline", b, "--results", tmp_path)
    assert out.exit_code == 2 and "entries[0].tolerance" in out.output


def test_baseline_update_keeps_other_suites_and_tolerances(tmp_path):
    fill(tmp_path)
    old = [
        {**entry("float", "w4", 0.5, tol=0.07), "train_bits": 4},
        {**entry("x", "w4", 0.1), "suite": "other"},
    ]
    b = write_baseline(tmp_path, old)
    out = cli("baseline", "update", "s", "--out", b, "--results", tmp_path)
    assert out.exit_code == 0, out.output
    data = json.loads(b.read_text())
    assert data["format"] == "qbench-baseline/2"
    by = {(e["suite"], e["technique"], e["precision"]): e for e in data["entries"]}
    assert by[("other", "x", "w4")]["value"] == 0.1  # another suite's entry is untouched
    assert by[("s", "float", "w4")]["value"] == 0.2 and by[("s", "float", "w4")]["tolerance"] == 7.0
    assert by[("s", "rand", "w4")]["value"] == 0.23 and by[("s", "rand", "w4")]["tolerance"] == 2.0
    assert by[("s", "rand", "w4")]["task"] == "asr" and by[("s", "rand", "w4")]["train_bits"] == 4
    check = cli("check", "--baseline", b, "--results", tmp_path)
    assert "MISSING     other/x@w4" in check.output and check.exit_code == 1


def fake_runs(tmp_path, results, seeds=(0, 1)):
    """Index rows plus run folders (config, metrics with a curve, env, hypotheses) for three techniques."""
    rows = []
    for technique, base in (("float", 0.30), ("ptq", 0.30), ("rand", 0.32)):
        for seed in seeds:
            recipe = load_suite(tiny_recipe(tmp_path / "r.yaml", technique=technique)).runs[0]
            recipe = recipe.model_copy(update={"seed": seed})
            run_dir = results / "runs" / "s" / f"{technique}-{seed}"
            (run_dir / "hyp").mkdir(parents=True)
            (run_dir / "config.yaml").write_text(resolved_yaml(recipe))
            curve = [
                {"step": s, "minutes": s / 10, "split": "valid", "wer": 1 - s / 20}
                for s in (2, 4, 6, 8, 10, 12)
            ]
            per = {}
            for p, extra in (("float", 0.0), ("w8", 0.01), ("w4", 0.05)):
                size = {"float": 32000, "w8": 8400, "w4": 4400}[p]
                per[p] = {
                    "wer": base + extra + seed / 100,
                    "cer": 0.1,
                    "size_bits": size,
                    "float32_bits": 32000,
                }
                rows.append(
                    {
                        **row(technique, p, base + extra + seed / 100, seed=seed),
                        "run_id": f"{technique}-{seed}",
                        "run_dir": str(run_dir),
                    }
                )
            (run_dir / "metrics.json").write_text(
                json.dumps({"curve": curve, "precisions": per, "steps": 12, "train_seconds": 30})
            )
            (run_dir / "env.json").write_text(
                json.dumps(
                    {
                        "python": "3.11",
                        "torch": "2.11.0",
                        "torchaudio": "2.11.0",
                        "processor": "x86_64",
                        "cpu_count": 2,
                        "torch_threads": 1,
                        "device": "cpu",
                        "platform": "Linux",
                        "commit": "abcdef1234567",
                    }
                )
            )
            (run_dir / "status.json").write_text(json.dumps({"state": "done"}))
            (run_dir / "train.log").write_text(
                "training from scratch at step 0/12\nstep 1 loss 3.0 avg 3.0 grad_norm 1 lr 1 t 1s\n"
            )
            (run_dir / "hyp" / "w4.tsv").write_text(
                "id\treference\thypothesis\nu1\tthe cat sat\tthe cat sat\nu2\ta big dog\tthe pig dug up\nu3\tred sun\tred son\n"
            )
    record_results(results, rows)
    return rows


def test_plot_writes_a_png(tmp_path, results):
    fake_runs(tmp_path, results)
    png = tmp_path / "plots" / "board.png"
    out = cli("compare", "--results", results, "--suite", "s", "--plot", png)
    assert out.exit_code == 0, out.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from matplotlib.image import imread

    h, w, _ = imread(png).shape
    assert w > 1500 and h > 500  # three readable panels side by side


def test_show_prints_config_curve_metrics_and_worst_hypotheses(tmp_path, results):
    fake_runs(tmp_path, results, seeds=(0,))
    out = cli("show", "rand-0", "--results", results, "--worst", "2")
    assert out.exit_code == 0, out.output
    text = out.output
    assert "technique rand at 4 bits" in text and "state: done" in text
    assert "WER on valid by step: 2: 90.00" in text and "best 40.00 at step 12" in text
    assert "37.00" in text  # w4 WER % in the metrics table
    worst = text[text.index("worst 2 hypotheses at w4") :]
    assert worst.index("u2") < worst.index("u3") and "u1" not in worst  # 4 errors / 3 words first
    assert cli("show", "nope", "--results", results).exit_code == 2


def test_show_ambiguous_prefix_is_an_error(tmp_path, results):
    fake_runs(tmp_path, results)
    out = cli("show", "rand", "--results", results)
    assert out.exit_code == 2 and "2 runs match" in out.output


def test_results_md_has_board_hardware_versions_command_and_plot(tmp_path, results):
    fake_runs(tmp_path, results)
    (results / "runs" / "s" / "suite.json").write_text(
        json.dumps(
            {
                "suite": "s",
                "sessions": [{"command": "qbench run benchmarks/s.yaml --jobs 2", "wall_seconds": 600}],
            }
        )
    )
    md_file = tmp_path / "doc" / "RESULTS.md"
    out = cli("results", "--suite", "s", "--results", results, "--out", md_file)
    assert out.exit_code == 0, out.output
    md = md_file.read_text()
    assert (
        "- Command: `qbench run benchmarks/s.yaml --jobs 2` (1 invocation(s), 10 min wall time in all)" in md
    )
    assert "- Hardware: x86_64, 2 CPU cores, device cpu" in md
    assert "torch 2.11.0" in md and "qbench commit abcdef1234" in md
    board = cli("compare", "--results", results, "--suite", "s", "-f", "markdown").stdout.strip()
    assert board in md  # exactly what `qbench compare --format markdown` prints
    assert "### WER" in md
    assert "![s: accuracy vs packed size, and training curves](s.png)" in md
    assert (md_file.parent / "s.png").is_file()


def test_results_md_counts_a_killed_invocation(tmp_path, results):
    """A suite killed mid-way leaves its session record (written after each run) unfinished."""
    fake_runs(tmp_path, results)
    sessions = [
        {"command": "qbench run s.yaml", "started": 1.0, "finished": None, "wall_seconds": 300},
        {"command": "qbench run s.yaml", "started": 2.0, "finished": 3.0, "wall_seconds": 60},
    ]
    (results / "runs" / "s" / "suite.json").write_text(json.dumps({"suite": "s", "sessions": sessions}))
    md_file = tmp_path / "doc" / "RESULTS.md"
    out = cli("results", "--suite", "s", "--results", results, "--out", md_file, "--no-plot")
    assert out.exit_code == 0, out.output
    assert "(2 invocation(s), 6 min wall time in all; 1 killed, counted up to their last finished run)" in (
        md_file.read_text()
    )
