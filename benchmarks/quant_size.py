"""Packed size of the demo Conformer (recipes/demo.yaml's model) at w8 and w4, as files.

    .venv/bin/python benchmarks/quant_size.py [--technique rand] [--run RESULTS/runs/demo/RUN_ID]

For each precision: the safetensors file `export_packed` writes, its size next to the float32
size (4 bytes x parameters, the denominator `qbench export` prints) and next to the float32
export file; the bits `model_size_bits` counts; and a check that reloading the file into a
plain float model gives outputs identical to the fake-quant evaluation on a random batch.
Without --run the weights are untrained (sizes do not depend on the values).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qbench.config import load_suite  # noqa: E402
from qbench.quant import (  # noqa: E402
    export_packed,
    load_packed,
    model_size_bits,
    packed_size_bytes,
    quantize_,
    use_precision,
)
from qbench.tasks.models import skeleton_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--technique", default="rand")
    ap.add_argument("--run", type=Path, help="a finished run folder: use its trained model")
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args()
    if args.run:
        from qbench.run.engine import load_trained

        recipe, _task, model, spec = load_trained(args.run, args.results, progress=False)
    else:
        root = Path(__file__).resolve().parents[1]
        recipe = load_suite(
            root / "recipes" / "demo.yaml", ["grid=", f"quant.technique={args.technique}"]
        ).runs[0]
        spec = recipe.quant.spec()
        torch.manual_seed(0)
        model = skeleton_model(recipe)
        quantize_(model, spec)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    f32 = model_size_bits(model, "float", spec)["float32_bits"] / 8
    torch.manual_seed(1)
    feats, lengths = torch.randn(2, 200, recipe.model.n_mels), torch.tensor([200, 150])
    print(
        f"demo Conformer ({recipe.quant.technique}, {n_params:,} parameters, float_dtype {spec.float_dtype})"
    )
    print(
        f"{'precision':<9} {'file bytes':>10} {'float32/file':>12} {'vs f32 file':>11} {'counted':>9} {'reload':>8}"
    )
    with tempfile.TemporaryDirectory() as d:
        export_packed(model, "float", spec, Path(d) / "float.safetensors")
        f32_file = packed_size_bytes(Path(d) / "float.safetensors")
        for prec in ("float", "w8", "w4"):
            path = Path(d) / f"{prec}.safetensors"
            export_packed(model, prec, spec, path)
            size = packed_size_bytes(path)
            counted = model_size_bits(model, prec, spec)["total_bits"] / 8
            with torch.no_grad(), use_precision(model, prec, spec):
                expected = model(feats, lengths)[0]
            plain = skeleton_model(recipe).eval()
            load_packed(plain, path)
            with torch.no_grad():
                same = torch.equal(plain(feats, lengths)[0], expected)
            print(
                f"{prec:<9} {size:>10,} {f'1/{f32 / size:.2f}':>12} {f'1/{f32_file / size:.2f}':>11} "
                f"{f'1/{f32 / counted:.2f}':>9} {'exact' if same else 'DIFFERS':>8}"
            )


if __name__ == "__main__":
    main()
