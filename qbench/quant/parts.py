"""The parts a weight quantizer is made of: a scale function and an estimator.

Each part is a class that declares its own options (:class:`Option`: name, type, default,
validation) once; :mod:`qbench.quant.techniques` registers the parts, and the library's
:class:`~qbench.quant.QuantSpec` and a recipe's ``quant:`` section take their option fields from
those declarations. A part instance holds its option values; a quantizer's per-weight state
(learned scales, cached clip ratios) lives on the :class:`~qbench.quant.WeightQuantizer`, which
the scale registers it on (so it is in the model's parameters and state_dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Option", "Part", "Scale", "Estimator", "QuantizerBase"]


class QuantizerBase(nn.Module):
    """The state of a quantizer that its parts read and write, declared: the base of
    qbench.quant.quantizers.WeightQuantizer (which imports this module, so a part cannot import it).
    Its own state is set in WeightQuantizer.__init__; a scale function's per-weight state is
    registered by the scale function (:meth:`Scale.attach`), so each of those is present only on a
    quantizer with that scale function."""

    bits: int  # the current bit width
    train_bits: int  # the bit width it was made for (a learned scale is trained at it)
    detach_scale: bool  # no gradient through the scale
    hard: bool  # hard rounding even in training mode
    prepared: bool  # the per-forward work of qbench.quant.batching is done for this forward
    # learned (LSQ) / pact: the per-row parameter (Scale.param)
    step: nn.Parameter
    alpha: nn.Parameter
    # mse-clip: the cached per-row ratios and the training forwards counted (buffers), the count
    # as a Python int and the bit width the ratios were searched at
    clip_ratio: Tensor
    clip_calls: Tensor
    clip_count: int
    clip_bits: int

    @property
    def qp(self) -> int:
        return 2 ** (self.bits - 1) - 1


@dataclass(frozen=True)
class Option:
    """One option of a part, as a recipe spells it (``quant.<name>``).

    ``ge``/``gt``/``le`` bound a number, ``choices`` list a string's values. ``hashed_at_default``: the
    option enters run ids even at its default (true of the options run ids have always hashed);
    any other option enters them only when set to another value, so adding one moves no id.
    """

    name: str
    type: type
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    hashed_at_default: bool = False

    def check(self, value: Any) -> Any:
        """``value`` validated (a float option takes an int too); raises ValueError naming the option."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"unknown {self.name} {value!r}; expected one of {self.choices}")
            return value
        if self.type not in (int, float):
            if not isinstance(value, self.type):
                raise ValueError(f"{self.name} must be a {self.type.__name__}, got {value!r}")
            return value
        kinds = int if self.type is int else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(
                f"{self.name} must be {'an int' if self.type is int else 'a number'}, got {value!r}"
            )
        if self.type is int and self.ge == 1 and value < 1:
            raise ValueError(f"{self.name} must be a positive int, got {value!r}")
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"{self.name} must be >= {self.ge:g}, got {value!r}")
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"{self.name} must be > {self.gt:g}, got {value!r}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"{self.name} must be <= {self.le:g}, got {value!r}")
        return value if self.type is int else float(value)


class Part:
    """A scale function or an estimator: its registered ``name`` and its :class:`Option` values,
    validated, as attributes of the instance."""

    name: ClassVar[str]
    #: other names a recipe may use for it
    aliases: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - {o.name for o in self.options}
        if unknown:
            raise TypeError(f"{self.name} has no option(s) {sorted(unknown)}")
        for o in self.options:
            setattr(self, o.name, o.check(values.get(o.name, o.default)))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | Any) -> Part:
        """The part with its options read from ``settings`` (a mapping or an object with them as
        attributes, e.g. a QuantSpec); options it lacks take their defaults."""
        get = settings.get if isinstance(settings, Mapping) else lambda n, d: getattr(settings, n, d)
        return cls(**{o.name: get(o.name, o.default) for o in cls.options})

    def values(self) -> dict[str, Any]:
        return {o.name: getattr(self, o.name) for o in self.options}

    def key(self) -> tuple:
        """What decides the part's computation: its name and option values."""
        return (self.name, *self.values().values())

    def label_options(self) -> list[str]:
        """The options that differ from their defaults, as a technique label shows them."""
        return [
            f"{o.name}={getattr(self, o.name):g}"
            if o.type in (int, float)
            else f"{o.name}={getattr(self, o.name)}"
            for o in self.options
            if getattr(self, o.name) != o.default
        ]

    def describe(self) -> str:
        """The name with the option values, e.g. ``mse-clip(clip_every=32)``."""
        vals = [f"{n}={v:g}" if isinstance(v, int | float) else f"{n}={v}" for n, v in self.values().items()]
        return f"{self.name}({','.join(vals)})" if vals else self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={v!r}' for n, v in self.values().items())})"


class Scale(Part):
    """A scale function: one fp32 scale per row of a weight's ``(G, n)`` rows view.

    ``group`` (in the methods that take it): the quantizers, configured alike, whose rows are
    concatenated in ``rows`` (qbench.quant.batching); ``()`` means ``q``'s own rows alone. Per-row
    state of the members (learned scales, clip ratios) is concatenated the same way.
    """

    #: False: a search or a constant, through which no gradient flows (scale_grad is meaningless)
    has_gradient: ClassVar[bool] = True
    #: the name of the parameter on its quantizer that this scale is (None: a function of W)
    param: ClassVar[str | None] = None
    #: True when zero-padding rows to a longer length changes none of the scales or gradients it
    #: computes (qbench.quant.batching may then put rows of several lengths in one pass)
    pads: ClassVar[bool] = False

    def attach(self, q: QuantizerBase) -> None:
        """Register the per-weight state this scale keeps on its quantizer (parameters, buffers)."""

    def initialized(self, q: QuantizerBase) -> bool:
        return True

    def init_from(self, q: QuantizerBase, rows: Tensor) -> None:
        """(Re-)initialise the state from a weight's rows (detached), in place."""

    def prepare(self, q: QuantizerBase, rows: Tensor) -> None:
        """Per-forward work that cannot sit in a compiled graph, done before a training forward."""

    def clips(self, q: QuantizerBase) -> bool:
        """Whether some ``W / s`` may round beyond ``+-Qp`` (else round-STE skips the clamp)."""
        return True

    def clip_rows(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase]) -> Tensor:
        """The rows the estimator quantizes (PACT clamps them); ``rows`` itself by default."""
        return rows

    def scales(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        """``(G,)`` fp32 scales of ``rows`` at ``q.bits``; detached where ``q.detach_scale``."""
        raise NotImplementedError

    def min_row(self) -> tuple[str, int] | None:
        """``(option, value)`` when a quantization row must hold at least ``value`` weights."""
        return None

    def load_state(self, q: QuantizerBase, state_dict: dict, prefix: str) -> None:
        """Adapt ``state_dict`` before ``q`` loads it (e.g. fill in state an older checkpoint lacks)."""


class Estimator(Part):
    """How the quantized weight's value and gradient are formed from the rows and their scales."""

    def __call__(self, rows: Tensor, scale: Tensor, qp: int, clips: bool, noisy: bool) -> Tensor:
        """The fake-quantized ``(G, n)`` rows for ``(G,)`` scales; ``noisy``: a training forward
        (not hard rounding); ``clips``: see :meth:`Scale.clips`."""
        raise NotImplementedError
