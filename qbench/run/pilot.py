"""`qbench pilot`: the quantization setting a suite compares techniques at, chosen so that
post-training rounding of its float model loses enough to leave QAT something to recover (the
headroom gate, report/gates). Chosen on the validation split, never on test.

The candidates, mildest first: the recipe's own bits and granularity (w4 per-channel by default),
then w4 per-tensor, w3 and w2 at the recipe's granularity. Each is the float model of the suite's
first float run evaluated with absmax round-to-nearest weights at that setting (exactly the ptq
cell the suite would publish), scored on the same validation items as the float model; the
report layer turns the two sets of per-item scores into a paired difference and picks the first
candidate whose loss reaches the headroom rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from qbench.quant import parse_precision, use_precision
from qbench.run.engine import load_trained
from qbench.tasks import EvalResult

__all__ = ["Candidate", "candidates", "evaluate_candidates"]


@dataclass(frozen=True)
class Candidate:
    """A setting to try: its label, bits, weight granularity, and the `--set` overrides that make
    a suite train and evaluate its techniques there (the labelled stress setting)."""

    label: str
    bits: int
    granularity: str
    overrides: tuple[str, ...]


def candidates(bits: int, granularity: str) -> list[Candidate]:
    """The recipe's setting first, then w4 per-tensor, w3, w2 (each once, milder first)."""

    def make(b: int, g: str) -> Candidate:
        sets = [f"quant.bits={b}", f"eval.precisions=[float,w8,w{b}]"] if b != bits else []
        if g != granularity:  # a per-group recipe's group_size goes with its granularity
            sets += [f"quant.granularity={g}", *(["quant.group_size=null"] if "group" in granularity else [])]
        return Candidate(f"w{b}" + ("" if g == "per-channel" else f" {g}"), b, g, tuple(sets))

    wanted = [(bits, granularity), (4, "per-tensor"), (3, granularity), (2, granularity)]
    return [make(b, g) for b, g in dict.fromkeys(wanted)]


def evaluate_candidates(
    run_dir: Path, results: Path, settings: list[Candidate], device: torch.device, split: str = "valid"
) -> tuple[EvalResult, dict[str, EvalResult]]:
    """The finished float run at `run_dir` evaluated on `split`: in float, and rounded to each
    setting (post-training, absmax round-to-nearest, scales stored as the recipe stores them)."""
    _, task, model, spec = load_trained(run_dir, results)
    model = model.to(device)
    base = task.evaluate(model, split, device)
    out = {}
    for c in settings:
        at = dataclasses.replace(spec, bits=c.bits, granularity=c.granularity)
        with use_precision(model, parse_precision(f"w{c.bits}"), at):
            out[c.label] = task.evaluate(model, split, device)
    return base, out
