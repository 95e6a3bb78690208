"""Evaluation precisions: bits per parameter name (the packed size they give:
``qbench.quant.apply.model_size_bits``).

A precision is ``"float"``, ``"w2"`` .. ``"w8"`` (uniform bits), ``"w4a8"`` / ``"w8a8"``
(also 8-bit dynamic per-token activations) or a named mixed map from a recipe, e.g.
``{"default": 4, "encoder.*.conv*": 8}`` (``"activations": 8`` in a map quantizes activations).
Parameter names are the *original* names (``encoder.layers.0.ffn.0.weight``),
never the parametrize names (``...parametrizations.weight.original``).

Glob matching (``fnmatch``, case-sensitive) also tries ``"." + name``, so
``"*.weight"`` selects a top-level ``weight`` too. An automatic map (``{"auto": {...}}``,
:class:`AutoConfig`) gets its bits after training (qbench.quant.sensitivity).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeGuard

__all__ = ["PrecisionMap", "parse_precision", "name_matches", "AutoConfig", "is_auto"]

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
    # an automatic map not resolved yet (AutoConfig): its bits are chosen
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


METHODS = ("hessian", "fisher")
_AUTO_KEYS = ("budget_bits", "sensitivity", "bits", "samples", "batches")


def is_auto(spec: object) -> TypeGuard[Mapping]:
    """True for a named precision map that is automatic: ``{"auto": {...}}``."""
    return isinstance(spec, Mapping) and "auto" in spec


@dataclass(frozen=True)
class AutoConfig:
    """An automatic map's settings (the mapping under ``auto:``)."""

    budget_bits: float
    sensitivity: str = "hessian"  # "hessian" (Hutchinson trace) | "fisher" (squared gradients)
    bits: tuple[int, ...] = (4, 8)  # the bit widths a layer may get
    samples: int = 8  # Rademacher vectors per batch (hessian)
    batches: int = 2  # training batches the estimate averages over

    @classmethod
    def parse(cls, name: str, spec: Mapping) -> AutoConfig:
        """Validate ``{"auto": {...}}``; errors name the map and the key."""
        extra = [k for k in spec if k != "auto"]
        if extra:
            raise ValueError(f"precision map {name!r}: an automatic map has only 'auto:', not {extra}")
        cfg = spec["auto"]
        if not isinstance(cfg, Mapping):
            raise ValueError(
                f"precision map {name!r}: auto must be a mapping such as "
                "{budget_bits: 5.0, sensitivity: hessian}, got " + repr(cfg)
            )
        unknown = [k for k in cfg if k not in _AUTO_KEYS]
        if unknown:
            raise ValueError(f"precision map {name!r}: unknown auto key(s) {unknown}; expected {_AUTO_KEYS}")
        if "budget_bits" not in cfg:
            raise ValueError(f"precision map {name!r}: auto needs budget_bits (average bits per weight)")
        budget = cfg["budget_bits"]
        if isinstance(budget, bool) or not isinstance(budget, int | float):
            raise ValueError(f"precision map {name!r}: auto.budget_bits must be a number, got {budget!r}")
        method = cfg.get("sensitivity", "hessian")
        if method not in METHODS:
            raise ValueError(
                f"precision map {name!r}: auto.sensitivity must be one of {METHODS}, got {method!r}"
            )
        bits = cfg.get("bits", (4, 8))
        if (
            isinstance(bits, int)
            or not bits
            or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in bits)
        ):
            raise ValueError(
                f"precision map {name!r}: auto.bits must be a list of ints in 2..8, got {bits!r}"
            )
        bits = tuple(sorted(set(bits)))
        if not bits[0] <= budget:
            raise ValueError(
                f"precision map {name!r}: auto.budget_bits {budget} is below the smallest choice {bits[0]}"
            )
        for key in ("samples", "batches"):
            v = cfg.get(key, getattr(cls, key))
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"precision map {name!r}: auto.{key} must be a positive int, got {v!r}")
        return cls(
            float(budget),
            method,
            bits,
            int(cfg.get("samples", cls.samples)),
            int(cfg.get("batches", cls.batches)),
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
