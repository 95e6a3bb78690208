"""`qbench export --format onnx`: ONNX Runtime runs the exported speech model and qbench's decoder
scores it as it scored the fake-quant model."""

import onnx
from typer.testing import CliRunner

from qbench.cli.main import app
from tests.conftest import tiny_recipe


def test_onnx_export_runs_in_onnx_runtime_with_int8_weights(tmp_path, results):
    recipe = tiny_recipe(tmp_path / "tiny.yaml", technique="ste")
    assert (
        CliRunner().invoke(app, ["run", str(recipe), "--results", str(results), "--no-progress"]).exit_code
        == 0
    )
    run_dir = next((results / "runs" / "tiny").glob("ste-*"))
    out = tmp_path / "m.onnx"
    args = ["export", str(run_dir), "--precision", "w8", "--format", "onnx", "--out", str(out)]
    done = CliRunner().invoke(app, [*args, "--results", str(results)])
    assert done.exit_code == 0, done.output
    assert "6/6 test hypotheses identical" in done.output and "(+0.00)" in done.output
    graph = onnx.load(str(out)).graph
    int8 = [
        i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("__int8")
    ]
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(int8) == len(dq) >= 5  # the Linear and convolution weights stored at 8 bits
    assert f"{len(int8)} weight(s) as int8 initialisers" in done.output


def test_export_refuses_an_unknown_format_and_a_missing_run(tmp_path, results):
    bad = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "tflite", "--results", str(results)])
    assert bad.exit_code == 2 and "--format tflite: expected safetensors or onnx" in bad.output
    gone = CliRunner().invoke(
        app, ["export", str(tmp_path / "nope"), "--format", "onnx", "--results", str(results)]
    )
    assert gone.exit_code == 2 and "not a run folder" in gone.output
