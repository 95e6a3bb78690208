"""The technique registry: the scale functions and estimators (one class each, each declaring its
own options), the presets that name a (scale function, estimator, scale gradient) triple, and the
defaults of what gets quantized.

Adding a scale function or an estimator is its class (in :mod:`.scale_fns` or :mod:`.estimators`)
and its entry in :data:`SCALES` or :data:`ESTIMATORS`: a recipe can then name it as
``quant.scale`` / ``quant.estimator`` and set its options as ``quant.<option>``. Adding a preset is
one entry in :data:`TECHNIQUE_CONFIGS`.
"""

from __future__ import annotations

import torch

from .estimators import Noise, RoundSTE
from .parts import Estimator, Option, Scale
from .scale_fns import AbsMax, Learned, MseClip, Pact, TopkLp

#: scale function name -> its class
SCALES: dict[str, type[Scale]] = {cls.name: cls for cls in (AbsMax, TopkLp, MseClip, Learned, Pact)}
#: estimator name -> its class
ESTIMATORS: dict[str, type[Estimator]] = {cls.name: cls for cls in (RoundSTE, Noise)}

#: technique -> WeightQuantizer parts. "float" and "ptq" attach nothing; "custom" names its parts.
TECHNIQUE_CONFIGS: dict[str, dict] = {
    "ste": dict(scale_fn="absmax", estimator="round-ste"),
    "pqn": dict(scale_fn="absmax", estimator="noise"),
    "pqn-sg": dict(scale_fn="absmax", estimator="noise", detach_scale=True),
    "rand": dict(scale_fn="topk-lp", estimator="noise"),
    "rand-ste": dict(scale_fn="topk-lp", estimator="round-ste"),
    "lsq": dict(scale_fn="learned", estimator="round-ste"),
    "pact": dict(scale_fn="pact", estimator="round-ste"),
    "clip": dict(scale_fn="mse-clip", estimator="round-ste"),
}
TECHNIQUES: tuple[str, ...] = ("float", "ptq", *TECHNIQUE_CONFIGS, "custom")

#: the other names a recipe may use for a scale (the technique names of two of them)
SCALE_ALIASES: dict[str, str] = {alias: cls.name for cls in SCALES.values() for alias in cls.aliases}
SCALE_NAMES: tuple[str, ...] = (*SCALES, *SCALE_ALIASES)


def _options() -> tuple[Option, ...]:
    out: dict[str, Option] = {}
    for part in (*SCALES.values(), *ESTIMATORS.values()):
        for o in part.options:
            if o.name in out:
                raise TypeError(f"option {o.name!r} of {part.name} is declared by another part too")
            out[o.name] = o
    return tuple(out.values())


#: every part's options, each declared once: a recipe's flat ``quant.<name>`` keys
OPTIONS: tuple[Option, ...] = _options()

#: dtypes a quantized model may store its scales and its float-kept tensors in
FLOAT_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float32": torch.float32}
DEFAULT_INCLUDE: tuple[str, ...] = ("*.weight", "*in_proj_weight")
DEFAULT_EXCLUDE: tuple[str, ...] = ("*norm*", "*bias*")


def scale_class(name: str) -> type[Scale]:
    """The scale function class of a name or alias."""
    return SCALES[SCALE_ALIASES.get(name, name)]


def preset_options(technique: str) -> tuple[Option, ...]:
    """The options of a preset's parts (none for float, ptq and custom)."""
    cfg = TECHNIQUE_CONFIGS.get(technique)
    if cfg is None:
        return ()
    return (*SCALES[cfg["scale_fn"]].options, *ESTIMATORS[cfg["estimator"]].options)


def preset_for(scale_fn: str, estimator: str, detach_scale: bool) -> str:
    """The technique preset spelled by these parts, or ``"custom"`` when none is."""
    scale = scale_class(scale_fn)
    for name, cfg in TECHNIQUE_CONFIGS.items():
        if cfg["scale_fn"] == scale.name and cfg["estimator"] == estimator:
            # a scale without a gradient is the same with or without scale_grad
            if not scale.has_gradient or cfg.get("detach_scale", False) == detach_scale:
                return name
    return "custom"
