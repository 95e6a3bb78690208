"""`qbench sweep`: the QAT learning rate and length of a suite's techniques, chosen on the
validation split, once per estimator family (round-STE, noise) and then the same for every
technique of that family, so no technique gets a budget tuned for it alone.

Every candidate fine-tunes the suite's finished float model (`quant.qat_steps`: the float run is
trained once and every candidate starts from it) for `qat_steps` steps from `qat_lr`; it is
scored on the validation split at the suite's training precision, and a family's score of a
candidate is the mean over its representative techniques. The runs form a suite of their own,
``<suite>-sweep``, beside the suite's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from qbench.config import Recipe, trains_quantized
from qbench.quant import parse_precision, use_precision
from qbench.run.engine import load_trained
from qbench.tasks import EvalResult

__all__ = ["Candidate", "estimator_family", "score_on_valid", "sweep_runs", "with_budgets"]


@dataclass(frozen=True)
class Candidate:
    """One (QAT learning rate, QAT steps) point of the sweep."""

    qat_lr: float
    qat_steps: int

    @property
    def overrides(self) -> tuple[str, str]:
        return (f"quant.qat_lr={self.qat_lr:g}", f"quant.qat_steps={self.qat_steps}")

    def applied(self, recipe: Recipe) -> dict:
        """The recipe, as its raw settings, with this QAT learning rate and length."""
        raw = recipe.model_dump(mode="json")
        raw["quant"] = {**raw["quant"], "qat_lr": self.qat_lr, "qat_steps": self.qat_steps}
        return raw


def estimator_family(recipe: Recipe) -> str:
    """The estimator a QAT run's quantizers use (``round-ste`` or ``noise``)."""
    return str(recipe.quant_spec().quantizer_options()["estimator"])


def sweep_runs(
    runs: tuple[Recipe, ...], candidates: list[Candidate], techniques: list[str] | None = None
) -> tuple[list[Recipe], dict[str, list[str]]]:
    """The sweep's runs (every representative technique at every candidate, at the suite's first
    seed; the first to train the float model shares it with the rest) and each family's
    representatives. Without `techniques`, a family's representative is its first technique in
    the suite."""
    seed = runs[0].seed
    first = [r for r in runs if r.seed == seed]
    quantized = [r for r in first if trains_quantized(r)]
    if techniques:
        unknown = sorted(set(techniques) - {r.quant.technique for r in quantized})
        if unknown:
            raise ValueError(f"--technique {', '.join(unknown)}: not a QAT technique of this suite")
        chosen = [r for r in quantized if r.quant.technique in techniques]
    else:
        first_of: dict[str, Recipe] = {}
        for r in quantized:
            first_of.setdefault(estimator_family(r), r)
        chosen = list(first_of.values())
    families: dict[str, list[str]] = {}
    out: list[Recipe] = []
    for r, c in itertools.product(chosen, candidates):
        families.setdefault(estimator_family(r), [])
        if r.quant.technique not in families[estimator_family(r)]:
            families[estimator_family(r)].append(r.quant.technique)
        raw = c.applied(r)
        # scored on valid after training; its own test evaluation kept to the one precision
        raw["eval"] = {
            **raw["eval"],
            "precisions": [r.quant.train_precision or f"w{r.quant.bits}"],
            "long_form": [],
        }
        raw["name"] = f"{r.name}-sweep"
        out.append(Recipe.model_validate(raw))
    return out, families


def with_budgets(runs: tuple[Recipe, ...], record: dict) -> tuple[Recipe, ...]:
    """The suite's runs with the QAT budget a sweep chose (its record, runs/<suite>/sweep.json):
    every QAT run fine-tuning the float model (`quant.qat_steps`) takes its estimator family's
    chosen qat_lr and qat_steps; float and ptq are unchanged. ValueError names a family of the
    suite that the sweep did not choose for."""
    chosen = {family: rec["chosen"] for family, rec in (record.get("families") or {}).items()}
    out = []
    for r in runs:
        if not (trains_quantized(r) and r.quant.qat_steps):
            out.append(r)
            continue
        family = estimator_family(r)
        if family not in chosen:
            raise ValueError(
                f"the sweep recorded no {family} budget (families: {', '.join(chosen) or 'none'}): "
                f"run qbench sweep over this suite's {family} techniques"
            )
        budget = Candidate(float(chosen[family]["qat_lr"]), int(chosen[family]["qat_steps"]))
        out.append(Recipe.model_validate(budget.applied(r)))
    return tuple(out)


def score_on_valid(run_dir: Path, results: Path, device: torch.device) -> EvalResult:
    """The finished run scored on the validation split at its training precision."""
    recipe, task, model, spec = load_trained(run_dir, results, progress=False)
    model = model.to(device)
    name = recipe.quant.train_precision or f"w{recipe.quant.bits}"
    with use_precision(model, parse_precision(name, recipe.precisions), spec):
        return task.evaluate(model, "valid", device, progress=False)
