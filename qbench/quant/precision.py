"""Evaluation precisions: bits per parameter name, and the packed model size.

A precision is ``"float"``, ``"w2"`` .. ``"w8"`` (uniform bits), ``"w4a8"`` / ``"w8a8"``
(also 8-bit dynamic per-token activations) or a named mixed map from a recipe, e.g.
``{"default": 4, "encoder.*.conv*": 8}`` (``"activations": 8`` in a map quantizes activations).
Parameter names are the *original* names (``encoder.layers.0.ffn.0.weight``),
never the parametrize names (``...parametrizations.weight.original``).

Glob matching (``fnmatch``, case-sensitive) also tries ``"." + name``, so
``"*.weight"`` selects a top-level ``weight`` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

__all__ = ["PrecisionMap", "parse_precision", "model_size_bits", "name_matches"]

_WBITS_RE = re.compile(r"w(\d+)")
_PRECISION_RE = re.compile(r"w(\d+)(?:a(\d+))?")


def name_matches(name: str, patterns) -> bool:
    """True if ``name`` matches any fnmatch glob in ``patterns``."""
    dotted = "." + name
    return any(fnmatchcase(name, pat) or fnmatchcase(dotted, pat) for pat in patterns)


def _specificity(pattern: str) -> int:
    """Number of literal characters of a glob (wildcards and [classes] count 0)."""
    return len(re.sub(r"\[[^\]]*\]|[*?]", "", pattern))


def _parse_bits(value, where: str) -> int | None:
    if value is None or value == "float":
        return None
    if isinstance(value, str):
        m = _WBITS_RE.fullmatch(value)
        if m:
            value = int(m.group(1))
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
        raise ValueError(f"{where}: bits must be an int in 2..8, 'wN' or 'float'/None, got {value!r}")
    return value


@dataclass(frozen=True)
class PrecisionMap:
    """Bits per parameter name.

    ``rules`` are ``(glob, bits)`` pairs; ``bits=None`` keeps the weight float.
    Among the rules matching a name the most specific one (most literal
    characters) wins, ties going to the earlier rule; ``default`` applies when no
    rule matches (``None`` = float).
    """

    name: str
    default: int | None
    rules: tuple[tuple[str, int | None], ...] = ()
    act_bits: int | None = None  # 8: activations of quantized layers fake-quantized per token
    # an automatic map not resolved yet (qbench.quant.sensitivity.AutoConfig): its bits are chosen
    # for a trained model (resolve_auto_maps); until then bits_for raises
    auto: object | None = None

    def __post_init__(self) -> None:
        _parse_bits(self.default, f"precision {self.name!r} default")
        if self.act_bits not in (None, 8):
            raise ValueError(
                f"precision {self.name!r}: activations must be 8 bits (a8), got {self.act_bits!r}"
            )
        rules = tuple(
            (str(pat), _parse_bits(b, f"precision {self.name!r} rule {pat!r}")) for pat, b in self.rules
        )
        object.__setattr__(self, "rules", rules)
        # rules in match order: most specific first, stable for ties
        ordered = tuple(sorted(rules, key=lambda r: -_specificity(r[0])))
        object.__setattr__(self, "_ordered", ordered)

    def bits_for(self, param_name: str) -> int | None:
        """Bits for ``param_name`` (original name), or ``None`` for float."""
        if self.auto is not None:
            raise ValueError(
                f"precision {self.name!r} is automatic: its bits are chosen after training "
                "(qbench.quant.sensitivity.resolve_auto_maps)"
            )
        for pat, bits in self._ordered:  # type: ignore[attr-defined]
            if name_matches(param_name, (pat,)):
                return bits
        return self.default

    @property
    def is_float(self) -> bool:
        return (
            self.default is None
            and all(b is None for _, b in self.rules)
            and self.act_bits is None
            and self.auto is None
        )


def parse_precision(
    name: str | PrecisionMap, named_maps: Mapping[str, Mapping] | None = None
) -> PrecisionMap:
    """``"float"``, ``"w2"``..``"w8"``, ``"wNa8"`` or a key of ``named_maps`` -> :class:`PrecisionMap`.

    A named map is ``{"default": 4, "glob": bits, ...}`` with bits an int 2..8,
    ``"wN"``, ``"float"`` or ``None``; without ``"default"`` unmatched weights stay float;
    ``"activations": 8`` adds 8-bit per-token activation quantization.
    """
    if isinstance(name, PrecisionMap):
        return name
    if not isinstance(name, str):
        raise ValueError(f"precision must be a string, got {type(name).__name__} {name!r}")
    named_maps = named_maps or {}
    if name == "float":
        return PrecisionMap("float", None)
    m = _PRECISION_RE.fullmatch(name)
    if m:
        bits = int(m.group(1))
        if not 2 <= bits <= 8:
            raise ValueError(f"precision {name!r}: bit width must be between 2 and 8 (w2..w8)")
        if m.group(2) is not None and m.group(2) != "8":
            raise ValueError(f"precision {name!r}: only 8-bit activations are supported (w{bits}a8)")
        return PrecisionMap(name, bits, act_bits=8 if m.group(2) else None)
    if name in named_maps:
        spec = named_maps[name]
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"precision map {name!r} must be a mapping of glob -> bits, got {type(spec).__name__}"
            )
        if "auto" in spec:
            from .sensitivity import AutoConfig

            return PrecisionMap(name, None, auto=AutoConfig.parse(name, spec))
        default = spec.get("default")
        act = spec.get("activations")
        if act not in (None, 8, "a8"):
            raise ValueError(f"precision map {name!r}: activations must be 8 or 'a8', got {act!r}")
        rules = tuple((pat, bits) for pat, bits in spec.items() if pat not in ("default", "activations"))
        return PrecisionMap(
            name, _parse_bits(default, f"precision {name!r} default"), rules, act_bits=8 if act else None
        )
    known = ", ".join(repr(k) for k in sorted(named_maps)) or "none defined"
    raise ValueError(
        f"unknown precision {name!r}; expected 'float', 'w2'..'w8', 'w4a8'/'w8a8' or a named map ({known})"
    )


def model_size_bits(
    model: nn.Module,
    precision_map: PrecisionMap | str | None,
    spec,
) -> dict[str, int]:
    """True packed size of ``model`` at ``precision_map``.

    Quantized weights cost ``bits * numel + f * n_scales`` (one scale per row: per output
    channel for per-channel granularity); every other parameter costs ``f * numel``, with
    ``f`` the width of ``spec.float_dtype`` (16 for bfloat16) when ``precision_map`` quantizes
    anything (the packed export stores them so) and 32 otherwise (``"float"``, ``None``);
    learned quantizer scales are not counted twice.  Each parameter is counted once (tied weights too).  The
    quantized weights are the ones ``use_precision`` would quantize: those with
    a quantizer attached plus those ``spec`` selects.  ``precision_map=None``
    means "as trained": attached quantizers at their own bits, the rest float.

    Returns ``total_bits``, ``float32_bits`` (32 x all parameters),
    ``quantized_params`` and ``float_params`` (numbers of scalars).
    """
    from .apply import find_quantizer, is_selected, quantizer_parameters, weight_slots
    from .quantizers import FLOAT_DTYPES
    from .scales import num_scales

    pmap = None if precision_map is None else parse_precision(precision_map)
    fbits = 32
    if pmap is not None and not pmap.is_float:
        fbits = torch.finfo(FLOAT_DTYPES[getattr(spec, "float_dtype", "float32")]).bits
    qinfo: dict[int, tuple[int, int]] = {}  # id(param) -> (bits, n_scales)
    for name, module, tname, tensor in weight_slots(model):
        if id(tensor) in qinfo or not isinstance(tensor, nn.Parameter):
            continue
        quantizer = find_quantizer(module, tname)
        if quantizer is not None:
            bits = quantizer.bits if pmap is None else pmap.bits_for(name)
            granularity = quantizer.granularity
        elif pmap is not None and is_selected(name, tensor, spec):
            bits, granularity = pmap.bits_for(name), spec.granularity
        else:
            bits = None
        if bits is not None:
            qinfo[id(tensor)] = (bits, num_scales(tensor.shape, granularity))

    # learned scales (LSQ/PACT) are folded into the exported per-row scales already counted
    learned = {id(p) for _, p in quantizer_parameters(model)}
    total = float32 = n_q = n_f = 0
    for p in model.parameters():  # deduplicated
        if id(p) in learned:
            continue
        n = p.numel()
        float32 += 32 * n
        if id(p) in qinfo:
            bits, n_scales = qinfo[id(p)]
            total += bits * n + fbits * n_scales
            n_q += n
        else:
            total += fbits * n
            n_f += n
    return dict(total_bits=total, float32_bits=float32, quantized_params=n_q, float_params=n_f)
