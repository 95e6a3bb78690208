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

from qbench.quant.techniques import SCALE_ALIASES, TECHNIQUE_CONFIGS

__all__ = ["technique_label", "cell", "topk_options"]

_DEFAULT_KPC = (2, 8.0, 1.0)


def _label(technique: str, scale: str | None, estimator: str | None, detach: bool, k, p, c, noise) -> str:
    if technique in TECHNIQUE_CONFIGS:
        base = TECHNIQUE_CONFIGS[technique]
        scale_fn, est = base["scale_fn"], base["estimator"]
        name = technique
    elif technique == "custom":
        scale_fn, est = SCALE_ALIASES.get(scale, scale), estimator
        sg = "-sg" if detach and scale_fn != "mse-clip" else ""
        name = f"{scale_fn}{sg}+{est}"
    else:
        return technique
    opts = []
    if scale_fn == "topk-lp" and (k, float(p), float(c)) != _DEFAULT_KPC:
        opts += [f"k={k}", f"p={float(p):g}"] + ([f"c={float(c):g}"] if float(c) != 1.0 else [])
    if est == "noise" and noise != "uniform":
        opts.append(noise)
    return f"{name}({','.join(opts)})" if opts else name


def technique_label(recipe) -> str:
    """The index/leaderboard name of a recipe's technique (see the module docstring)."""
    q = recipe.quant
    detach = q.scale_grad is False
    return _label(q.technique, q.scale, q.estimator, detach, q.k, q.p, q.c, q.noise)


_OPTS_RE = re.compile(r"\((.*)\)$")


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
        scale = cfg["scale_fn"] + ("-sg" if cfg.get("detach_scale") and cfg["scale_fn"] != "mse-clip" else "")
        return scale, cfg["estimator"]
    if "+" in base:
        scale, _, est = base.partition("+")
        return scale, est
    return None
