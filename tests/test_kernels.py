"""Integer kernels: the int8/int4 weight-only Linear paths compute what the fake-quant forward
computes, from the integers and scales the export stores."""

import pytest
import torch
from torch import nn

from qbench.quant import QuantSpec, quantize_, use_precision
from qbench.quant.kernels import Int4WeightLinear, Int8WeightLinear, integer_kernels


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 64, 3)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.ffn = nn.Linear(64, 96)
        self.odd = nn.Linear(96, 40)  # 40 outputs: not the CPU int4 kernel's multiple of 16
        self.head = nn.Linear(40, 7)  # 40 inputs: no int4 group size divides it

    def forward(self, x):
        h = self.conv(x).transpose(1, 2)
        h = self.attn(h, h, h, need_weights=False)[0]
        return self.head(torch.relu(self.odd(torch.relu(self.ffn(h)))))


@pytest.mark.parametrize("technique", ["ptq", "ste", "lsq", "rand"])
@pytest.mark.parametrize("precision", ["w8", "w4"])
def test_integer_path_matches_fake_quant(technique, precision):
    torch.manual_seed(0)
    model, spec = Net(), QuantSpec(technique, 4)
    quantize_(model, spec)
    model.eval()
    x = torch.randn(3, 4, 20)
    ffn = model.ffn
    with torch.no_grad(), use_precision(model, precision, spec):
        fake = model(x)
        with integer_kernels(model) as use:
            kinds = {type(m) for m in model.modules()}
            real = model(x)
        assert model.ffn is ffn  # put back
    if precision == "w8":
        assert use.int8 == ["ffn", "odd", "head"] and not use.int4 and Int8WeightLinear in kinds
    else:
        assert use.int4 == ["ffn"] and use.dequantized == ["odd", "head"] and Int4WeightLinear in kinds
    torch.testing.assert_close(real, fake, rtol=1e-4, atol=1e-4)
    assert not torch.equal(fake, model(x))  # outside use_precision: the model as trained


def test_float_precision_takes_no_kernel():
    model, spec = Net(), QuantSpec("ste", 4)
    quantize_(model, spec)
    with torch.no_grad(), use_precision(model, "float", spec), integer_kernels(model) as use:
        assert use.int8 == use.int4 == use.dequantized == []


def test_qbench_eval_scores_finished_runs_on_integer_kernels(tmp_path, results):
    from typer.testing import CliRunner

    from qbench.cli.main import app
    from qbench.store import read_results
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path / "tiny.yaml", technique="ste")
    assert (
        CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"]).exit_code
        == 0
    )
    before = read_results(results)
    out = CliRunner().invoke(app, ["eval", "--suite", "tiny", "--kernels", "int", "--results", str(results)])
    assert out.exit_code == 0, out.output
    df = read_results(results)
    wer = df[df.metric == "wer"].set_index("precision").value
    assert set(wer.index) == {"float", "w8", "w4", "w8+int", "w4+int"}
    for p in ("w8", "w4"):
        assert abs(wer[f"{p}+int"] - wer[p]) <= 0.05  # the integer path scores what fake-quant scored
    rtfx = df[df.metric == "rtfx"]
    assert set(rtfx.precision) == {"float", "w8+int", "w4+int"} and (rtfx.value > 0).all()
    rss = df[df.metric == "peak_rss_mb"]  # Linux: the process's high-water mark, in MB
    assert set(rss.precision) == {"float", "w8+int", "w4+int"} and (rss.value > 10).all()
    # the stored fake-quant cells are untouched, and the run keeps one configuration
    old = before.set_index(["precision", "metric"]).value
    assert df.set_index(["precision", "metric"]).value.loc[old.index].equals(old)
    board = CliRunner().invoke(
        app, ["compare", "--suite", "tiny", "--metric", "rtfx", "--results", str(results)]
    )
    assert board.exit_code == 0 and "w4+int" in board.output
    # fake path: throughput of the stored cells, no new cells
    fake = CliRunner().invoke(
        app, ["eval", "--suite", "tiny", "--kernels", "fake", "--results", str(results)]
    )
    assert fake.exit_code == 0, fake.output
    assert set(read_results(results).query("metric == 'rtfx'").precision) == {
        "float",
        "w8",
        "w4",
        "w8+int",
        "w4+int",
    }
    for bad, says in (
        (["--suite", "nope"], "no finished runs of suite 'nope'"),
        (["--suite", "tiny", "--kernels", "onnx"], "--kernels onnx: expected fake or int"),
    ):
        r = CliRunner().invoke(app, ["eval", *bad, "--results", str(results)])
        assert r.exit_code == 2 and says in r.output
