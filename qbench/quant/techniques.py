"""The technique registry: every technique preset as a (scale function, estimator, scale
gradient) triple, the names a recipe may use for scales and estimators, and the defaults of what
gets quantized. Adding a preset is one entry in :data:`TECHNIQUE_CONFIGS` (and its name in
:data:`TECHNIQUES`)."""

from __future__ import annotations

import torch

from .scales import SCALE_FUNCTIONS

TECHNIQUES: tuple[str, ...] = (
    "float",
    "ptq",
    "ste",
    "pqn",
    "pqn-sg",
    "rand",
    "rand-ste",
    "lsq",
    "pact",
    "clip",
    "custom",
)

#: technique -> WeightQuantizer options. "float" and "ptq" attach nothing.
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

#: scale kinds that are parameters of the quantizer (attribute name of the parameter)
LEARNED_SCALES: dict[str, str] = {"learned": "step", "pact": "alpha"}
SCALE_KINDS: tuple[str, ...] = (*SCALE_FUNCTIONS, *LEARNED_SCALES)
#: the names a recipe may use for a scale: the kinds, and the technique names of two of them
SCALE_ALIASES: dict[str, str] = {"lsq": "learned", "clip": "mse-clip"}
SCALE_NAMES: tuple[str, ...] = (*SCALE_KINDS, *SCALE_ALIASES)

ESTIMATORS = ("round-ste", "noise")
NOISES = ("uniform", "normal")
#: dtypes a quantized model may store its scales and its float-kept tensors in
FLOAT_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float32": torch.float32}
DEFAULT_INCLUDE: tuple[str, ...] = ("*.weight", "*in_proj_weight")
DEFAULT_EXCLUDE: tuple[str, ...] = ("*norm*", "*bias*")


def preset_for(scale_fn: str, estimator: str, detach_scale: bool) -> str:
    """The technique preset spelled by these parts, or ``"custom"`` when none is."""
    scale_fn = SCALE_ALIASES.get(scale_fn, scale_fn)
    for name, cfg in TECHNIQUE_CONFIGS.items():
        detach = cfg.get("detach_scale", False)
        if cfg["scale_fn"] == scale_fn and cfg["estimator"] == estimator:
            if scale_fn == "mse-clip" or detach == detach_scale:  # mse-clip has no scale gradient at all
                return name
    return "custom"
