"""Glue between a recipe's `quant:` section and the quantization library.

- :func:`quant_spec`: the :class:`~qbench.quant.QuantSpec` a recipe trains and evaluates with;
- :func:`skeleton_model`: the recipe's model built without data (placeholder vocabulary for
  subword units; the real model differs only in its vocabulary rows), for checks and
  `qbench quant inspect`;
- :func:`model_errors`: settings that are wrong only for this model (a glob matching nothing,
  a group size not dividing an input dimension, `topk-lp`'s k above a row), as recipe locations,
  found while the recipe is validated: before any data, run folder or training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from qbench.quant import QuantSpec
    from qbench.recipe import Recipe

#: QuantSpec field -> recipe key under `quant.`
_SPEC_TO_RECIPE = {"granularity": "group_size", "k": "k", "include": "include", "exclude": "exclude"}


def quant_spec(recipe: Recipe) -> QuantSpec:
    from qbench.quant import QuantSpec

    q = recipe.quant
    granularity = f"per-group-{q.group_size}" if q.granularity == "per-group" else q.granularity
    return QuantSpec(
        technique=q.technique,
        bits=q.bits,
        granularity=granularity,
        k=q.k,
        p=q.p,
        c=q.c,
        noise=q.noise,
        clip_every=q.clip_every,
        include=tuple(q.include),
        exclude=tuple(q.exclude),
        scale=q.scale,
        estimator=q.estimator,
        scale_grad=q.scale_grad,
        activations=8 if q.activations == "a8" else None,
        float_dtype=q.float_dtype,
    )


def skeleton_model(recipe: Recipe) -> nn.Module:
    """The recipe's model architecture with untrained weights, built without any data."""
    import torch

    m = recipe.model
    with torch.random.fork_rng(devices=[]):
        if m.arch in ("conformer-ctc", "conformer-transducer"):
            from qbench.tasks.asr import build_asr_model
            from qbench.tokenizers import CharTokenizer

            vocab = CharTokenizer().size if m.units == "chars" else m.vocab_size
            return build_asr_model(m, vocab)
        if m.arch == "transformer":
            from qbench.tasks.mt import TransformerMT

            return TransformerMT(
                m.vocab_size,
                m.d_model,
                m.encoder_layers,
                m.decoder_layers,
                m.heads,
                m.ffn_mult,
                m.dropout,
                m.max_len,
            )
    raise ValueError(f"no skeleton for model arch {m.arch!r}")


def quantizes_anything(recipe: Recipe) -> bool:
    """True if training attaches quantizers or some evaluation precision is not float."""
    from qbench.quant import parse_precision

    if recipe.quant.technique not in ("float", "ptq"):
        return True
    return any(not parse_precision(p, recipe.precisions).is_float for p in recipe.eval.precisions)


def model_errors(recipe: Recipe, model: nn.Module | None = None) -> list[tuple[tuple, str]]:
    """Model-dependent problems of `recipe.quant`, as (location, message) like
    `Recipe.cross_field_errors`; `model` defaults to :func:`skeleton_model`."""
    if not quantizes_anything(recipe):
        return []
    from qbench.quant.check import check_model

    try:
        spec = quant_spec(recipe)
    except ValueError as e:  # reported by the schema checks already
        return [(("quant",), str(e))]
    model = skeleton_model(recipe) if model is None else model
    out = []
    for key, msg in check_model(model, spec):
        out.append((("quant", _SPEC_TO_RECIPE.get(key, key)), msg))
    return out
