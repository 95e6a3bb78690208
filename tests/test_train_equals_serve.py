"""Train equals serve: the integer grid a weight is trained on is the one `use_precision`
evaluates and the packed export stores, for every technique and bit width; the packed file's
size is the size the leaderboard shows."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.quant import QuantSpec, export_packed, find_quantizers, model_size_bits, quantize_, use_precision
from qbench.quant.apply import weight_slots
from qbench.quant.export import packed_bytes, unpack_bits
from qbench.quant.scales import rows_view
from qbench.quant.techniques import TECHNIQUE_CONFIGS
from qbench.store import read_results
from tests.conftest import tiny_recipe

WIDTHS = (2, 3, 4, 5, 8)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 12, 3)
        self.attn = nn.MultiheadAttention(12, 2, batch_first=True)
        self.ffn = nn.Linear(12, 24)
        self.out = nn.Linear(24, 5)

    def forward(self, x):  # (B, 4, T)
        h = self.conv(x).transpose(1, 2)
        h = self.attn(h, h, h, need_weights=False)[0]
        return self.out(torch.relu(self.ffn(h)))


def _trained(technique: str, bits: int) -> tuple[nn.Module, QuantSpec]:
    """A model with the technique's quantizers after a few training steps (scales moved)."""
    torch.manual_seed(bits)
    model, spec = Small(), QuantSpec(technique, bits)
    quantize_(model, spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model(torch.randn(2, 4, 9)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, spec


def _weights(model: nn.Module) -> dict:
    return {name: t for name, _, _, t in weight_slots(model)}


def _training_codes(model: nn.Module) -> dict[str, torch.Tensor]:
    """The integers of the training forward's grid: the hard-rounded training-mode output over
    the training-mode scales (noise estimators draw around this grid)."""
    weights, out = _weights(model), {}
    model.train()
    with torch.no_grad():
        for name, q in find_quantizers(model).items():
            rows = rows_view(weights[name], q.granularity)
            q.hard = True
            fake = q.fake_quant_rows(rows)
            q.hard = False
            _, s = q.rows_and_scales(rows)
            out[name] = torch.round(fake / s.unsqueeze(1)).to(torch.int8).reshape(-1)
    return out


def _eval_codes(model: nn.Module, spec: QuantSpec, bits: int) -> dict[str, torch.Tensor]:
    weights, out = _weights(model), {}
    model.eval()
    with torch.no_grad(), use_precision(model, f"w{bits}", spec):
        for name, q in find_quantizers(model).items():
            out[name] = q.quantize_int(weights[name])[0].reshape(-1)
    return out


def _export_codes(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["qbench"])
        blobs = {k: f.get_tensor(k) for k in f.keys() if k.startswith("q")}
    at = dict.fromkeys(blobs, 0)
    out = {}
    for name, shape, bits, _, _ in meta["quantized"]:
        n = math.prod(shape)
        nbytes = (n * bits + 7) // 8
        key = f"q{bits}"
        out[name] = unpack_bits(blobs[key][at[key] : at[key] + nbytes], n, bits)
        at[key] += nbytes
    return out


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("technique", sorted(TECHNIQUE_CONFIGS))
def test_no_integer_code_differs_between_training_evaluation_and_export(tmp_path, technique, bits):
    model, spec = _trained(technique, bits)
    trained, evaluated = _training_codes(model), _eval_codes(model, spec, bits)
    export_packed(model, f"w{bits}", spec, tmp_path / "m.safetensors")
    exported = _export_codes(tmp_path / "m.safetensors")
    assert set(trained) == set(evaluated) == set(exported) and len(trained) == 5
    qp = 2 ** (bits - 1) - 1
    for name in trained:
        assert int(trained[name].abs().max()) <= qp
        differ = (
            (trained[name] != evaluated[name]).sum().item(),
            (evaluated[name] != exported[name]).sum().item(),
        )
        assert differ == (0, 0), f"{technique} w{bits} {name}: {differ} codes differ"


@pytest.mark.parametrize("bits", WIDTHS)
def test_packed_file_is_the_computed_size_at_every_width(tmp_path, bits):
    model, spec = _trained("ste", 4)
    path = tmp_path / "m.safetensors"
    export_packed(model, f"w{bits}", spec, path)
    with open(path, "rb") as f:
        header = 8 + int.from_bytes(f.read(8), "little")
    size = path.stat().st_size
    assert size == packed_bytes(model, f"w{bits}", spec)
    # the data is exactly model_size_bits' count: dense bits per weight (whole bytes), scales, floats
    assert (size - header) * 8 == model_size_bits(model, f"w{bits}", spec)["total_bits"]


def test_the_leaderboard_size_is_the_exported_files_bytes(tmp_path, results):
    recipe = tiny_recipe(tmp_path / "tiny.yaml", technique="ste")
    text = recipe.read_text().replace("precisions: [float, w8, w4]", "precisions: [float, w8, w5, w3, w2]")
    recipe.write_text(text)
    out = CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"])
    assert out.exit_code == 0, out.output
    df = read_results(results)
    run_dir = results / "runs" / "tiny" / df.run_id.iloc[0]
    for precision in ("w8", "w5", "w3", "w2"):
        target = tmp_path / f"{precision}.safetensors"
        made = CliRunner().invoke(
            app,
            [
                "export",
                str(run_dir),
                "--precision",
                precision,
                "--out",
                str(target),
                "--results",
                str(results),
            ],
        )
        assert made.exit_code == 0, made.output
        shown = df[df.precision == precision].size_bits.unique()
        assert list(shown) == [8 * target.stat().st_size], precision
