"""Integer weight-only Linear kernels against the fake-quant (dequantized float) Linear on this
machine: the time of one forward of each, as a ratio to float, for square layers of several
widths and for a few rows (decoding one utterance) and many rows (a batch of frames).

    .venv/bin/python benchmarks/int_kernels.py [--threads 2] [--repeats 200]

Each cell is the median over `repeats` of alternating calls of the three layers (float,
int8 via qbench.quant.kernels.Int8WeightLinear, int4 via Int4WeightLinear), after a warm-up, in
one process; a ratio below 1 means the integer layer is faster. It says at which sizes torch's
weight-only kernels pay on this CPU (they read 4x / 8x fewer weight bytes; a small layer's
weights stay in cache either way and the kernel's own overhead decides).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qbench.quant.kernels import Int4WeightLinear, Int8WeightLinear  # noqa: E402


def _layers(width: int) -> dict[str, nn.Module]:
    torch.manual_seed(width)
    w = torch.randn(width, width)
    s8 = w.abs().amax(1) / 127
    q8 = torch.round(w / s8[:, None]).clamp(-127, 127)
    s4 = w.abs().amax(1) / 7
    q4 = torch.round(w / s4[:, None]).clamp(-7, 7)
    fake = nn.Linear(width, width, bias=False)
    fake.weight.data = q4 * s4[:, None]  # a dequantized weight: what the fake-quant path multiplies
    return {
        "float": fake,
        "int8": Int8WeightLinear(q8.to(torch.int8), s8, None),
        "int4": Int4WeightLinear(q4.to(torch.int8), s4, None, 32),
    }


def _median_seconds(layers: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in layers}
    with torch.no_grad():
        for _ in range(10):  # warm-up
            for m in layers.values():
                m(x)
        for _ in range(repeats):
            for name, m in layers.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); median of {args.repeats} calls each")
    print(f"{'width':>6} {'rows':>5} {'float us':>9} {'int8/float':>11} {'int4/float':>11}")
    for width in (96, 384, 1024, 2048, 4096):
        layers = _layers(width)
        for rows in (1, 256):
            x = torch.randn(rows, width)
            t = _median_seconds(layers, x, args.repeats)
            print(
                f"{width:>6} {rows:>5} {t['float'] * 1e6:>9.1f} "
                f"{t['int8'] / t['float']:>11.2f} {t['int4'] / t['float']:>11.2f}"
            )


if __name__ == "__main__":
    main()
