"""Quantization-aware training at a mixed precision map (`quant.train_precision`): each weight
trains at its bits in the map, the run is its own leaderboard row (`<technique>@<map>`), and
its checkpoint reloads with the same quantizers."""

from pathlib import Path

import pytest
import torch

from qbench.config import RecipeError, load_suite
from qbench.quant import QuantSpec, find_quantizers, parse_precision, quantize_
from qbench.run.engine import load_trained, run_recipe
from qbench.store import read_results
from qbench.tasks import build_task

CPU = torch.device("cpu")

MIXED = """\
name: tiny-mixed
task: asr
seed: 0
data: {source: synthetic-speech, train_utterances: 16, valid_utterances: 4, test_utterances: 6, workers: 1}
model: {d_model: 16, layers: 1, heads: 2, conv_kernel: 3}
quant: {technique: ste, bits: 4, float_warmup_steps: 3, train_precision: head8}
train: {steps: 6, batch_size: 4, lr: 3.0e-3, warmup: 2, checkpoint_every: 6}
eval: {precisions: [float, w4, head8], batch_size: 4}
precisions:
  head8: {default: 4, "head.*": 8, "subsample.*": float}
  auto5: {auto: {budget_bits: 5.0}}
"""


def _recipe(tmp_path: Path, *sets: str):
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    return load_suite(path, list(sets)).runs[0]


def test_each_weight_trains_at_its_bits_in_the_map(tmp_path, results):
    recipe = _recipe(tmp_path)
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    model = task.build_model()
    names = quantize_(model, recipe.quant_spec())
    bits = {name: q.bits for name, q in find_quantizers(model).items()}
    assert set(bits) == set(names) and bits
    assert all(b == 8 for n, b in bits.items() if n.startswith("head."))
    assert all(b == 4 for n, b in bits.items() if not n.startswith("head."))
    assert "head.weight" in bits and not any(n.startswith("subsample.") for n in bits)  # kept float
    plain = task.build_model()
    all_four = quantize_(plain, recipe.quant.spec())
    assert set(all_four) > set(names)  # without the map: subsampling quantized too, all at 4 bits


def test_a_run_trained_at_a_map_is_its_own_row_and_reloads(tmp_path, results):
    mixed = _recipe(tmp_path)
    plain = _recipe(tmp_path, "quant.train_precision=null")
    assert mixed.run_id != plain.run_id
    run_recipe(mixed, "tiny-mixed", results, CPU, progress=False)
    rows = read_results(results)
    assert set(rows.technique) == {"ste@head8"}
    assert set(rows.precision) == {"float", "w4", "head8"}
    _, _, model, spec = load_trained(results / "runs" / "tiny-mixed" / mixed.run_id, results, progress=False)
    assert spec.precision == parse_precision("head8", mixed.precisions)
    assert {q.bits for n, q in find_quantizers(model).items() if n.startswith("head.")} == {8}


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["quant.train_precision=nope"], "'nope' is not a map under precisions"),
        (["quant.train_precision=auto5"], "automatic (chosen after training)"),
        (["quant.technique=float"], "trains no quantizer"),
    ],
)
def test_a_bad_training_map_is_refused_before_anything_runs(tmp_path, sets, says):
    with pytest.raises(RecipeError, match=r"quant\.train_precision") as e:
        _recipe(tmp_path, *sets)
    assert says in str(e.value)


def test_the_spec_refuses_a_map_without_fixed_bits():
    with pytest.raises(ValueError, match="fixed bits"):
        QuantSpec("ste", 4, precision=parse_precision("float"))
