"""The metric registry: the task modules fill it when qbench.tasks is imported, a lookup turns a
stored name (variants included) into its Metric, and each task names its metrics as objects."""

import subprocess
import sys
from dataclasses import replace

import pytest

from qbench.config import load_suite
from qbench.tasks import TASKS
from qbench.tasks.metrics import METRICS, Metric, find_metric, metric, register
from tests.conftest import tiny_recipe


def test_the_registry_is_filled_by_importing_the_metrics_module_alone():
    code = "from qbench.tasks.metrics import metric; m = metric('wer@x4'); print(m.base, m.joined, m.scale)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["wer", "4", "100.0"]


def test_registered_metrics_in_task_order():
    quality = [m for m in METRICS if m in ("wer", "cer", "bleu", "chrf")]
    assert quality == ["wer", "cer", "bleu", "chrf"]  # the tasks' own metrics, in task order
    # and what qbench eval measures of any task: throughput per task, peak memory for all
    assert {"rtfx", "sentences_per_s", "peak_rss_mb"} <= set(METRICS)
    assert not metric("peak_rss_mb").higher_is_better and metric("rtfx").higher_is_better
    for name in ("wer", "cer"):
        m = metric(name)
        assert (m.higher_is_better, m.unit, m.scale, m.base, m.joined) == (False, "%", 100.0, name, 1)
    for name in ("bleu", "chrf"):
        m = metric(name)
        assert (m.higher_is_better, m.unit, m.scale) == (True, "", 1.0)
        assert m.description


@pytest.mark.parametrize(
    ("name", "base", "joined"),
    [
        ("wer@x4", "wer", 4),
        ("cer@x12", "cer", 12),
        ("wer_greedy", "wer_greedy", 1),
        ("cer_greedy@x2", "cer_greedy", 2),
    ],
)
def test_asr_variants_come_from_the_asr_rule(name, base, joined):
    m = metric(name)
    assert (m.name, m.base, m.joined) == (name, base, joined)
    assert not m.higher_is_better and m.scale == 100.0 and m.unit == "%"
    assert name not in METRICS  # derived on lookup, not added to the registry


@pytest.mark.parametrize("name", ["accuracy", "wer@x0", "wer@4", "bleu@x4", "WER", "wer_beam", ""])
def test_unknown_names_are_an_error(name):
    assert find_metric(name) is None
    with pytest.raises(ValueError, match="unknown metric"):
        metric(name)


def test_formatting_and_direction():
    wer, bleu = metric("wer"), metric("bleu")
    assert wer.format(0.2345) == "23.45" and wer.format(0.03, signed=True) == "+3.00"
    assert bleu.format(31.256) == "31.26" and bleu.format(-0.5, signed=True) == "-0.50"
    assert wer.label == "WER %" and bleu.label == "BLEU"
    assert wer.legend == "WER %, lower is better" and bleu.legend == "BLEU, higher is better"
    assert wer.better(0.1, 0.2) == pytest.approx(0.1) and bleu.better(20.0, 30.0) == -10.0
    assert wer.best([0.3, 0.1, 0.2], key=float) == 0.1 and bleu.best(
        [(1, 20.0), (2, 30.0)], key=lambda x: x[1]
    ) == (
        2,
        30.0,
    )
    assert str(wer) == "wer"


def test_a_variant_follows_its_base_registration(monkeypatch):
    monkeypatch.setitem(METRICS, "wer", replace(METRICS["wer"], higher_is_better=True, decimals=1))
    assert metric("wer@x4").higher_is_better and metric("wer@x4").format(0.25) == "25.0"


def test_registering_a_name_twice_differently_is_an_error():
    assert register(METRICS["bleu"]) is METRICS["bleu"]  # the same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register(Metric("bleu", higher_is_better=False))


def test_tasks_name_their_metrics_as_objects(tmp_path):
    assert TASKS["asr"].metric is METRICS["wer"] and TASKS["mt"].metric is METRICS["bleu"]
    assert TASKS["asr"].secondary_metrics == (METRICS["cer"],)
    assert TASKS["mt"].secondary_metrics == (METRICS["chrf"],)
    suite = load_suite(tiny_recipe(tmp_path / "r.yaml"), ["eval.long_form=[2,3]"])
    task = TASKS["asr"](suite.runs[0], tmp_path / "cache", progress=False)
    assert [m.name for m in task.secondary_metrics] == ["cer", "wer@x2", "cer@x2", "wer@x3", "cer@x3"]
    assert all(isinstance(m, Metric) for m in task.secondary_metrics)
