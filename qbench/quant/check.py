"""Settings that are only wrong for a given model, found before anything trains.

:func:`check_model` returns ``(key, message)`` pairs, ``key`` being the :class:`QuantSpec` field
at fault (``include``, ``exclude``, ``granularity``, or a scale function's option such as ``k``), so a recipe can name its own key.
"""

from __future__ import annotations

import difflib

from torch import nn

from .apply import is_selected, weight_slots
from .precision import name_matches
from .quantizers import QuantSpec
from .scales import GROUP_RE
from .techniques import DEFAULT_EXCLUDE, DEFAULT_INCLUDE

__all__ = ["check_model", "check_precision_map"]


def _closest(pattern: str, names: list[str]) -> str:
    match = difflib.get_close_matches(pattern, names, n=1, cutoff=0.3)
    return f" (a parameter name: {match[0]!r})" if match else ""


def check_model(model: nn.Module, spec: QuantSpec) -> list[tuple[str, str]]:
    """Problems of ``spec`` on ``model``: a glob of ``include``/``exclude`` (other than the
    defaults) matching no parameter, a selection that quantizes nothing, a group size that does
    not divide a selected weight's row (its input dimension x kernel), and a row shorter than the
    scale function needs (``topk-lp``'s ``k``)."""
    slots = list(weight_slots(model))
    names = [n for n, *_ in slots]
    errors: list[tuple[str, str]] = []
    for key, defaults in (("include", DEFAULT_INCLUDE), ("exclude", DEFAULT_EXCLUDE)):
        for pat in getattr(spec, key):
            if pat not in defaults and not any(name_matches(n, (pat,)) for n in names):
                errors.append((key, f"{pat!r} matches no parameter of the model{_closest(pat, names)}"))
    selected = [(n, t) for n, _, _, t in slots if is_selected(n, t, spec)]
    if not selected and not errors:
        errors.append(
            ("include", "selects no weight to quantize (after exclude, and only tensors of 2+ dims)")
        )
    m = GROUP_RE.fullmatch(spec.granularity)
    if m:
        g = int(m.group(1))
        bad = [(n, t) for n, t in selected if (t.numel() // t.shape[0]) % g]
        if bad:
            n, t = bad[0]
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            errors.append(
                (
                    "granularity",
                    f"group size {g} does not divide the input dimension {t.numel() // t.shape[0]} of "
                    f"{n} (shape {tuple(t.shape)}){more}; exclude those weights or pick a divisor",
                )
            )
    need = spec.parts()[0].min_row() if spec.attaches else None
    if need is not None:
        option, value = need

        def row(t) -> int:
            if spec.granularity == "per-tensor":
                return t.numel()
            return int(m.group(1)) if m else t.numel() // t.shape[0]

        small = [(n, t, row(t)) for n, t in selected if row(t) < value]
        if small:
            n, t, r = min(small, key=lambda x: x[2])
            errors.append(
                (
                    option,
                    f"{option}={value} is larger than the {r} weights of a quantization row of {n} "
                    f"(shape {tuple(t.shape)}); use {option} <= {r}",
                )
            )
    return errors


def check_precision_map(model: nn.Module, spec: QuantSpec, rules: list[str]) -> list[tuple[str, str]]:
    """``(glob, message)`` for each rule glob of a named precision map that matches no weight
    ``spec`` quantizes: such a rule changes nothing, and a typo would make a "mixed" map equal
    its default silently."""
    names = [n for n, _, _, t in weight_slots(model) if is_selected(n, t, spec)]
    return [
        (pat, f"{pat!r} matches no quantized weight of the model{_closest(pat, names)}")
        for pat in rules
        if not any(name_matches(n, (pat,)) for n in names)
    ]
