"""`qbench export RUN_DIR`: the packed model as safetensors (checked to reload exactly), or as
ONNX (checked by scoring it with ONNX Runtime through qbench's decoder).

The library's modules are imported inside the command, as in main.py: they load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qbench.cli.errors import fail
from qbench.cli.options import ResultsOpt
from qbench.progress import console


def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder, results/runs/<suite>/<run-id>.")],
    precision: Annotated[str, typer.Option(help="float, w2..w8 or a named map of the run's recipe.")] = "w4",
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="safetensors: qbench's packed file; onnx: an ONNX model (8-bit weights as int8 "
            "initialisers with DequantizeLinear) that ONNX Runtime runs (CTC speech models).",
        ),
    ] = "safetensors",
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (default: RUN_DIR/model-<precision>.safetensors or .onnx)."),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            help="safetensors: reload the file into a float model and compare test hypotheses "
            "(ONNX is always scored)."
        ),
    ] = True,
    results: ResultsOpt = Path("results"),
) -> None:
    """Write the packed model (b-bit integers packed densely, scales) as safetensors and check it
    reloads exactly, or as ONNX and score it with ONNX Runtime beside the fake-quant score."""
    if format not in ("safetensors", "onnx"):
        fail(f"--format {format}: expected safetensors or onnx", 2)
    out = out or run_dir / f"model-{precision}.{format}"
    if format == "onnx":
        _onnx(run_dir, results, precision, out)
        return
    import torch

    from qbench.quant import model_size_bits, parse_precision, use_precision
    from qbench.quant.export import export_packed, load_packed, packed_size_bytes
    from qbench.quant.sensitivity import written_maps
    from qbench.run.engine import load_trained

    try:
        recipe, task, model, spec = load_trained(run_dir, results)
        pmap = parse_precision(precision, written_maps(run_dir, recipe.precisions))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e), 2)
    export_packed(model, pmap, spec, out)
    size = packed_size_bytes(out)
    f32 = model_size_bits(model, "float", spec)["float32_bits"] / 8
    console.print(f"wrote {out}: {size / 1e6:.2f} MB, 1/{f32 / size:.2f} of float32 ({f32 / 1e6:.2f} MB)")
    if not verify:
        return
    cpu = torch.device("cpu")
    with use_precision(model, pmap, spec, cache=True):
        fake = task.evaluate(model, "test", cpu)
    plain = task.build_model()
    load_packed(plain, out)
    packed = task.evaluate(plain.eval(), "test", cpu)
    same = [f[2] == p[2] for f, p in zip(fake.rows, packed.rows, strict=True)]
    console.print(
        f"reloaded: {sum(same)}/{len(same)} test hypotheses identical to the fake-quant evaluation "
        f"({fake.metric} {fake.value:.4f} vs {packed.value:.4f})"
    )
    if not all(same):
        raise typer.Exit(1)


def _onnx(run_dir: Path, results: Path, precision: str, out: Path) -> None:
    from qbench.run.onnx_export import export_onnx

    try:
        done = export_onnx(run_dir, results, precision, out)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e), 2)
    m = done.fake.metric
    same = sum(a[2] == b[2] for a, b in zip(done.onnx.rows, done.fake.rows, strict=True))
    console.print(
        f"wrote {out}: {done.size_bytes / 1e6:.2f} MB; {len(done.int8)} weight(s) as int8 initialisers, "
        f"{len(done.float_weights)} quantized weight(s) as their dequantized float values"
    )
    diff = done.onnx.value - done.fake.value
    console.print(
        f"ONNX Runtime: {m.label} {m.format(done.onnx.value)} vs fake-quant {m.format(done.fake.value)} "
        f"({m.format(diff, signed=True)}); {same}/{len(done.fake.rows)} test hypotheses identical"
    )
    if abs(diff) > 0.0005:  # 0.05 points of WER (stored as a fraction)
        raise typer.Exit(1)
