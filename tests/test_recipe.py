"""Recipes: validation errors name file, line, key and nearest name; nothing is written on error."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.config import RecipeError, load_suite

GOOD = """\
name: t
task: asr
seed: 0
data: {source: synthetic-speech, train_utterances: 8}
model:
  d_model: 16
  layers: 1
  heads: 2
quant:
  technique: rand
  bits: 4
train:
  steps: 10
  batch_size: 4
eval:
  precisions: [float, w8, w4, mixed]
precisions:
  mixed: {default: 4, "encoder.*": 8}
grid:
  quant.technique: [float, ste, rand]
  seed: [0, 1]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_good_recipe_expands_grid_with_distinct_ids(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    assert len(suite.runs) == 6
    assert {(r.quant.technique, r.seed) for r in suite.runs} == {
        (t, s) for t in ("float", "ste", "rand") for s in (0, 1)
    }
    assert len({r.run_id for r in suite.runs}) == 6
    assert suite.runs[0].model.d_model == 16


def test_set_override_changes_value_and_id(tmp_path):
    path = write(tmp_path, GOOD)
    base = load_suite(path).runs[0]
    over = load_suite(path, ["train.steps=20", "model.dropout=0.2"]).runs[0]
    assert over.train.steps == 20 and over.model.dropout == 0.2
    assert over.run_id != base.run_id


CASES = [
    # (replace this, with this, expected fragments of the message)
    ("  bits: 4\n", "  bits: 3.5\n", ["recipe.yaml:11", "quant.bits", "integer", "3.5"]),
    (
        "[float, ste, rand]",
        "[float, ste, rnad]",
        ["recipe.yaml:20", "quant.technique", "did you mean 'rand'"],
    ),
    ("  steps: 10\n", "  steps: -5\n", ["recipe.yaml:13", "train.steps", "greater than or equal to 1", "-5"]),
    (
        "  layers: 1\n",
        "  layerz: 1\n",
        ["recipe.yaml:7", "model.layerz", "unknown key", "did you mean 'layers'"],
    ),
    ("  bits: 4\n", "  bits: 9\n", ["recipe.yaml:11", "quant.bits", "less than or equal to 8"]),
    (
        "quant.technique: [float, ste, rand]",
        "quant.tecnique: [float]",
        ["recipe.yaml:20", "quant.tecnique", "did you mean 'technique'"],
    ),
    (
        "[float, w8, w4, mixed]",
        "[float, w8, w44]",
        ["recipe.yaml:16", "eval.precisions", "w44", "did you mean 'w4'"],
    ),
    ("task: asr\n", "task: asrr\n", ["recipe.yaml:2", "task", "did you mean 'asr'"]),
    ("d_model: 16", "d_model: [16", ["recipe.yaml", "invalid YAML"]),
]


@pytest.mark.parametrize("old,new,fragments", CASES, ids=[c[1].strip()[:20] for c in CASES])
def test_malformed_recipe_message(tmp_path, old, new, fragments):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RecipeError) as e:
        load_suite(path)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


@pytest.mark.parametrize("old,new,fragments", CASES[:4], ids=[c[1].strip()[:20] for c in CASES[:4]])
def test_cli_exits_2_and_writes_nothing(tmp_path, old, new, fragments):
    path = write(tmp_path, GOOD.replace(old, new))
    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["run", str(path), "--results", str(results)])
    assert out.exit_code == 2, out.output
    assert fragments[1] in out.output
    assert not results.exists()


def test_unknown_technique_outside_grid(tmp_path):
    no_grid = GOOD.split("grid:")[0].replace("technique: rand", "technique: lsqq")
    with pytest.raises(RecipeError, match=r"recipe.yaml:10: quant.technique: .*'lsqq'"):
        load_suite(write(tmp_path, no_grid))


def test_bad_override_names_the_flag(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(RecipeError, match=r"--set train.steps=-1: train.steps"):
        load_suite(path, ["train.steps=-1"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_suite(path, ["train.steps"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="mapping"):
        load_suite(write(tmp_path, "- just\n- a list\n"))


def test_yaml_is_loaded_safely(tmp_path):
    evil = GOOD.replace("name: t", "name: !!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_suite(write(tmp_path, evil))


def test_gpu_size_speech_recipes_load_and_share_their_float_trainings():
    """recipes/asr-synthetic-gpu.yaml (issue 23's GPU-size Conformer) and the rand-paper claim suite
    on it: both load; the model, data and training are GPU-size; the suite's grid is rand-paper's;
    and each seed's float training and float warm-up have one training key in both suites."""
    from qbench.config import training_key

    root = Path(__file__).resolve().parents[1]
    asr = load_suite(root / "recipes/asr-synthetic-gpu.yaml").runs
    rand = load_suite(root / "benchmarks/rand-paper-gpu.yaml").runs
    paper = load_suite(root / "benchmarks/rand-paper.yaml").runs
    r = asr[0]
    assert (r.model.d_model, r.model.layers, r.model.specaugment, r.data.workers) == (256, 8, True, 16)
    assert 30_000 <= r.data.train_utterances <= 50_000 and r.data.test_utterances >= 2000
    assert r.train.batch_size >= 64 and r.train.compile and r.train.pad_to_multiple
    assert {x.quant.technique for x in asr} > {"float", "ptq", "rand"}
    assert [x.quant for x in rand] == [x.quant.model_copy(update={"float_warmup_steps": 9400}) for x in paper]
    # seed 0 (asr-synthetic-gpu's; rand-paper-gpu also trains seeds 1 and 2)
    a = next(x for x in asr if x.quant.technique == "float")
    b = next(x for x in rand if x.quant.technique == "float" and x.seed == a.seed)
    warm = a.quant.float_warmup_steps
    assert training_key(a) == training_key(b)
    assert training_key(a, float_until=warm) == training_key(b, float_until=warm)
    assert len({x.run_id for x in rand}) == len(rand) == 60


SECTION_GRID = (
    GOOD.split("grid:")[0]
    + """\
grid:
  quant:
    - {technique: ste, bits: 4}
    - {technique: rand, bits: 4}
"""
)


def test_set_reaches_every_whole_section_grid_entry(tmp_path):
    """A grid of whole `quant:` sections (benchmarks/rand-paper.yaml) still takes `--set quant.X`:
    the pilot's stress setting (quant.bits=3) must reach every technique, not only the top level."""
    path = write(tmp_path, SECTION_GRID)
    plain = load_suite(path)
    assert [r.quant.bits for r in plain.runs] == [4, 4]
    stressed = load_suite(path, ["quant.bits=3", "quant.granularity=per-tensor"])
    assert [(r.quant.technique, r.quant.bits) for r in stressed.runs] == [("ste", 3), ("rand", 3)]
    assert {r.quant.granularity for r in stressed.runs} == {"per-tensor"}
    assert len({r.run_id for r in stressed.runs} | {r.run_id for r in plain.runs}) == 4
