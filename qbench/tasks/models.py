"""A recipe's model built without data, and the quantization settings that are wrong only for
that model.

- :func:`skeleton_model`: the recipe's model with untrained weights (a placeholder vocabulary for
  subword units; the real model differs only in its vocabulary rows), for checks and
  `qbench quant inspect`;
- :func:`model_errors`: a glob matching nothing, a group size not dividing an input dimension,
  `topk-lp`'s k above a row, as recipe locations, found while the recipe is validated: before
  any data, run folder or training (:func:`qbench.tasks.load_suite`).
"""

from __future__ import annotations

import torch
from torch import nn

from qbench.config import Recipe
from qbench.quant import parse_precision
from qbench.quant.check import check_model, check_precision_map
from qbench.tasks.asr import build_asr_model
from qbench.tasks.mt import build_mt_model
from qbench.tasks.tokenizers import CharTokenizer

#: QuantSpec field -> recipe key under `quant.`
_SPEC_TO_RECIPE = {"granularity": "group_size", "k": "k", "include": "include", "exclude": "exclude"}


def skeleton_model(recipe: Recipe) -> nn.Module:
    """The recipe's model architecture with untrained weights, built without any data."""
    m = recipe.model
    with torch.random.fork_rng(devices=[]):
        if m.arch in ("conformer-ctc", "conformer-transducer"):
            vocab = CharTokenizer().size if m.units == "chars" else m.vocab_size
            return build_asr_model(m, vocab)
        if m.arch == "transformer":
            return build_mt_model(m, m.vocab_size)
    raise ValueError(f"no skeleton for model arch {m.arch!r}")


def quantizes_anything(recipe: Recipe) -> bool:
    """True if training attaches quantizers or some evaluation precision is not float."""
    if recipe.quant.technique not in ("float", "ptq"):
        return True
    return any(not parse_precision(p, recipe.precisions).is_float for p in recipe.eval.precisions)


def model_errors(recipe: Recipe, model: nn.Module | None = None) -> list[tuple[tuple, str]]:
    """Model-dependent problems of `recipe.quant`, as (location, message) like
    `Recipe.cross_field_errors`; `model` defaults to :func:`skeleton_model`."""
    if not quantizes_anything(recipe):
        return []
    try:
        spec = recipe.quant_spec()
    except ValueError as e:  # reported by the schema checks already
        return [(("quant",), str(e))]
    model = skeleton_model(recipe) if model is None else model
    errors: list[tuple[tuple, str]] = [
        (("quant", _SPEC_TO_RECIPE.get(key, key)), msg) for key, msg in check_model(model, spec)
    ]
    for name in dict.fromkeys(recipe.eval.precisions):
        pmap = parse_precision(name, recipe.precisions)
        rules = [pat for pat, _ in pmap.rules]
        errors += [(("precisions", name, pat), msg) for pat, msg in check_precision_map(model, spec, rules)]
    return errors
