"""Names of quantization techniques as the results index and the leaderboards show them.

A preset keeps its name (``ste``, ``rand``, ...). A recipe that spells its own combination
(``technique: custom``) is named by its parts, ``<scale>[-sg]+<estimator>`` (``learned+noise``,
``absmax-sg+round-ste``), so different custom cells never share a leaderboard row; a top-k L_p
scale with other than the default k=2, p=8, c=1 carries them (``rand(k=4,p=8)``), and normal noise
says so (``pqn(normal)``). :func:`cell` maps any such name back to its (scale, estimator) cell of
the reference paper's table, which :mod:`qbench.findings` uses.
"""

from __future__ import annotations

import re

from .techniques import ESTIMATORS, SCALES, TECHNIQUE_CONFIGS, scale_class

__all__ = ["technique_label", "cell", "topk_options"]


def technique_label(recipe) -> str:
    """The index/leaderboard name of a recipe's technique (see the module docstring): the preset's
    name or the parts', followed by the parts' options that are not at their defaults (each part
    says how it shows them)."""
    q = recipe.quant
    if q.technique in TECHNIQUE_CONFIGS:
        base = TECHNIQUE_CONFIGS[q.technique]
        scale, estimator = SCALES[base["scale_fn"]], ESTIMATORS[base["estimator"]]
        name = q.technique
    elif q.technique == "custom":
        scale, estimator = scale_class(q.scale), ESTIMATORS[q.estimator]
        sg = "-sg" if q.scale_grad is False and scale.has_gradient else ""
        name = f"{scale.name}{sg}+{estimator.name}"
    else:
        return q.technique
    opts = scale.from_settings(q).label_options() + estimator.from_settings(q).label_options()
    label = f"{name}({','.join(opts)})" if opts else name
    # trained at a mixed map: its own row beside the technique trained at `bits`
    return label if q.train_precision is None else f"{label}@{q.train_precision}"


_OPTS_RE = re.compile(r"\(([^)]*)\)(?:@[^@]*)?$")


def topk_options(label: str) -> dict[str, float]:
    """``{"k": 2, "p": 8.0, "c": 1.0}`` of a label with a top-k L_p scale (defaults when unnamed)."""
    out = {"k": 2, "p": 8.0, "c": 1.0}
    m = _OPTS_RE.search(label)
    if m:
        for part in m.group(1).split(","):
            key, _, value = part.partition("=")
            if key in out and value:
                out[key] = int(value) if key == "k" else float(value)
    return out


def cell(label: str) -> tuple[str, str] | None:
    """``(scale treatment, estimator)`` of a technique label: scale treatments are
    ``absmax``, ``absmax-sg``, ``learned``, ``pact``, ``mse-clip``, ``topk-lp``; estimators
    ``round-ste`` and ``noise``. None for float, ptq and names this module did not make."""
    base = _OPTS_RE.sub("", label)
    if base in TECHNIQUE_CONFIGS:
        cfg = TECHNIQUE_CONFIGS[base]
        sg = cfg.get("detach_scale") and SCALES[cfg["scale_fn"]].has_gradient
        scale = cfg["scale_fn"] + ("-sg" if sg else "")
        return scale, cfg["estimator"]
    if "+" in base:
        scale, _, est = base.partition("+")
        return scale, est
    return None
