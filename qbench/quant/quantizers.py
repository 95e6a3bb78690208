"""The weight quantizer (a scale function composed with an estimator) and the spec of what to
quantize.

A :class:`WeightQuantizer` is an ``nn.Module`` mapping a float weight ``W`` to its (fake-)quantized
value. It is attached to a model with ``torch.nn.utils.parametrize`` (see :mod:`qbench.quant.apply`),
so it runs every time the module reads its weight. It views ``W`` as ``(G, n)`` rows (one scale per
row, see :mod:`.scales`), has its scale function (:mod:`.scale_fns`) compute the scales and its
estimator (:mod:`.estimators`) the quantized rows. Its state (bits, flags) is plain Python
attributes; a scale function's per-weight state is registered on it (LSQ's ``step`` and PACT's
``alpha`` parameters, one value per row; mse-clip's cached ratios), so ``model.parameters()`` and
the state_dict carry it (``<module>.parametrizations.<name>.0.step``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass

import torch
from torch import Tensor, nn

from .parts import Estimator, QuantizerBase, Scale
from .precision import PrecisionMap
from .scales import EPS, check_granularity, rows_view
from .techniques import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    ESTIMATORS,
    FLOAT_DTYPES,
    OPTIONS,
    SCALE_ALIASES,
    SCALE_NAMES,
    SCALES,
    TECHNIQUE_CONFIGS,
    TECHNIQUES,
)

__all__ = ["QuantSpec", "WeightQuantizer", "make_quantizer"]


def _check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"{what} must be an int in 2..8, got {bits!r}")
    return bits


#: the parts' options as keyword-only fields with their declared defaults (validated in QuantSpec)
_PartOptions = make_dataclass(
    "_PartOptions", [(o.name, o.type, field(default=o.default, kw_only=True)) for o in OPTIONS]
)


@dataclass
class QuantSpec(_PartOptions):  # type: ignore[valid-type, misc]
    """What to quantize during training, and how.

    A technique is a preset of (scale, estimator, scale gradient); ``scale``, ``estimator`` and
    ``scale_grad`` override its parts (``technique="custom"`` needs ``scale`` and ``estimator``).
    The parts' options (``k``, ``p``, ``c``, ``clip_every``, ``noise``, ...) are keyword fields
    declared by the parts themselves (qbench.quant.techniques.OPTIONS).
    """

    technique: str = "float"  # one of TECHNIQUES
    bits: int = 4  # 2..8
    granularity: str = "per-channel"  # also "per-tensor", "per-group-N"
    include: tuple[str, ...] = DEFAULT_INCLUDE  # fnmatch globs on original parameter names
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # + every param with ndim < 2
    scale: str | None = None  # a SCALE_NAMES entry: overrides the preset's scale function
    estimator: str | None = None  # an ESTIMATORS entry: overrides the preset's estimator
    scale_grad: bool | None = None  # False stops the gradient through the scale
    activations: int | None = None  # 8: dynamic per-token 8-bit fake quant of quantized layers' inputs
    # dtype of the scales and of every tensor kept float when evaluated/exported at a quantized
    # precision (bfloat16: what int4/int8 deployments store; float32: full precision)
    float_dtype: str = "bfloat16"
    # quantization-aware training at a mixed map: each selected weight at the map's bits (float
    # where the map says so); None: every selected weight at ``bits``
    precision: PrecisionMap | None = None

    def __post_init__(self) -> None:
        if self.technique not in TECHNIQUES:
            raise ValueError(f"unknown technique {self.technique!r}; expected one of {TECHNIQUES}")
        _check_bits(self.bits)
        check_granularity(self.granularity)
        for o in OPTIONS:
            setattr(self, o.name, o.check(getattr(self, o.name)))
        if self.scale is not None and self.scale not in SCALE_NAMES:
            raise ValueError(f"unknown scale {self.scale!r}; expected one of {SCALE_NAMES}")
        if self.estimator is not None and self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; expected one of {tuple(ESTIMATORS)}")
        if self.activations not in (None, 8):
            raise ValueError(f"activations must be None or 8 (a8), got {self.activations!r}")
        if self.float_dtype not in FLOAT_DTYPES:
            raise ValueError(f"float_dtype must be one of {tuple(FLOAT_DTYPES)}, got {self.float_dtype!r}")
        if self.technique in ("float", "ptq") and (
            self.scale or self.estimator or self.scale_grad is not None
        ):
            raise ValueError(
                f"technique {self.technique!r} attaches no quantizer: scale/estimator/scale_grad unused"
            )
        if self.precision is not None and (self.precision.auto is not None or self.precision.is_float):
            raise ValueError(f"precision {self.precision.name!r}: training needs a map of fixed bits")
        if self.technique == "custom" and not (self.scale and self.estimator):
            raise ValueError("technique 'custom' needs both scale and estimator")
        scale_fn = self.quantizer_options().get("scale_fn")
        if scale_fn is not None and not SCALES[scale_fn].has_gradient and self.scale_grad:
            raise ValueError(f"the {scale_fn} scale has no gradient (scale_grad must be false or unset)")
        # recipes (YAML/JSON) give lists; a bare string would be iterated per char
        for name in ("include", "exclude"):
            v = getattr(self, name)
            setattr(self, name, (v,) if isinstance(v, str) else tuple(v))

    @property
    def attaches(self) -> bool:
        """True when training attaches quantizers (every technique but float and ptq)."""
        return self.technique not in ("float", "ptq")

    def quantizer_options(self) -> dict:
        """``scale_fn``, ``estimator``, ``detach_scale`` of the preset with the overrides applied."""
        opts = dict(TECHNIQUE_CONFIGS.get(self.technique, {}))
        if self.scale is not None:
            opts["scale_fn"] = SCALE_ALIASES.get(self.scale, self.scale)
        if self.estimator is not None:
            opts["estimator"] = self.estimator
        if self.scale_grad is not None:
            opts["detach_scale"] = not self.scale_grad
        return opts

    def parts(self) -> tuple[Scale, Estimator]:
        """New instances of the scale function and the estimator, with this spec's options."""
        o = self.quantizer_options()
        if not o:
            raise ValueError(f"technique {self.technique!r} attaches no quantizer")
        scale = SCALES[o["scale_fn"]].from_settings(self)
        estimator = ESTIMATORS[o["estimator"]].from_settings(self)
        return scale, estimator  # type: ignore[return-value]

    def describe(self) -> str:
        """``scale + estimator`` with the options that matter, e.g. ``topk-lp(k=2,p=8) + noise(uniform)``."""
        o = self.quantizer_options()
        if not o:
            return "absmax + round-to-nearest (evaluation only)" if self.technique == "ptq" else "float"
        scale, estimator = self.parts()
        text = scale.describe()
        if o.get("detach_scale") and scale.has_gradient:
            text += ", no scale grad"
        return f"{text} + {estimator.describe()}"


def _part(kind: str, registry: dict, value, aliases: dict[str, str], options: dict):
    """A part instance: ``value`` itself, or the registered class of that name with ``options``."""
    if not isinstance(value, str):
        return value
    cls = registry.get(aliases.get(value, value))
    if cls is None:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {tuple(registry)}")
    return cls(**{o.name: options.pop(o.name) for o in cls.options if o.name in options})


class WeightQuantizer(QuantizerBase):
    """Fake-quantizes one weight tensor: ``forward(W) -> Wq`` (same shape/dtype).

    ``scale_fn`` and ``estimator``: parts (qbench.quant.parts) or their registered names, the
    latter built with their ``**options``. Runtime switches (plain attributes, used by
    ``use_precision``): ``bits`` (mutable), ``enabled`` (False = identity), ``hard`` (True = hard
    rounding even in training mode), ``scale_dtype`` (None = the fp32 scales as computed; a dtype
    = scales rounded to it, e.g. bfloat16 as a packed export stores them; the gradient passes the
    rounding straight through). ``train_bits``: the bit width it was made for (a learned scale
    is trained at it).
    """

    def __init__(
        self,
        bits: int = 4,
        scale_fn: str | Scale = "absmax",
        estimator: str | Estimator = "round-ste",
        *,
        granularity: str = "per-channel",
        detach_scale: bool = False,
        **options,
    ) -> None:
        super().__init__()
        self.bits = _check_bits(bits)
        self.train_bits = bits
        self.scale_fn: Scale = _part("scale function", SCALES, scale_fn, SCALE_ALIASES, options)
        self.estimator: Estimator = _part("estimator", ESTIMATORS, estimator, {}, options)
        if options:
            raise TypeError(f"options {sorted(options)} belong to neither {scale_fn} nor {estimator}")
        self.granularity = check_granularity(granularity)
        self.detach_scale = detach_scale
        self.enabled = True
        self.hard = False
        self.scale_dtype: torch.dtype | None = None
        # set by qbench.quant.batching for one forward: this weight's slice of its group's output
        self._batched: tuple[Tensor, Tensor, int] | None = None  # (output, source weight, its _version)
        # True between prepare() and the end of that forward: the per-forward work is done
        self.prepared = False
        self.scale_fn.attach(self)

    @property
    def learned(self) -> nn.Parameter | None:
        """The learned scale parameter (``step`` or ``alpha``), None for functional scales."""
        name = self.scale_fn.param
        return None if name is None else getattr(self, name)

    @property
    def initialized(self) -> bool:
        return self.scale_fn.initialized(self)

    @torch.no_grad()
    def init_from(self, w: Tensor) -> WeightQuantizer:
        """(Re-)initialise the scale function's state from weight ``w``, in place."""
        self.scale_fn.init_from(self, rows_view(w.detach(), self.granularity))
        return self

    def _init_lazily(self, rows: Tensor) -> None:
        if not self.scale_fn.initialized(self):
            with torch.no_grad():
                self.scale_fn.init_from(self, rows.detach())

    def scale(self, w: Tensor) -> Tensor:
        """Scales of ``w`` at the current bit width, shape ``(G,)``, float32."""
        return self.rows_and_scales(rows_view(w, self.granularity))[1]

    def rows_and_scales(self, rows: Tensor, group: Sequence[WeightQuantizer] = ()) -> tuple[Tensor, Tensor]:
        """The ``(G, n)`` rows the estimator quantizes (PACT clamps them) and their ``(G,)`` scales,
        rounded to ``scale_dtype``. ``group``: see :meth:`fake_quant_rows` (batching prepared its
        members, each from its own rows)."""
        if not group:
            self._init_lazily(rows)
        rows = self.scale_fn.clip_rows(self, rows, group)
        return rows, self._stored(self.scale_fn.scales(self, rows, group))

    def _stored(self, s: Tensor) -> Tensor:
        """``s`` rounded to ``scale_dtype`` (straight-through), as fp32."""
        if self.scale_dtype is None or self.scale_dtype == torch.float32:
            return s
        r = s.detach().to(self.scale_dtype).float().clamp_min_(EPS)
        return r if not s.requires_grad else s + (r - s).detach()

    def fake_quant_rows(self, rows: Tensor, group: Sequence[WeightQuantizer] = ()) -> Tensor:
        """The forward on ``(G, n)`` rows: this weight's own, or (``group``: the quantizers,
        configured like this one, whose weights' rows are concatenated in ``rows``, in order) the
        rows of a pass of qbench.quant.batching."""
        rows, s = self.rows_and_scales(rows, group)
        clips = self.scale_fn.clips(self) or self.scale_dtype is not None  # a rounded scale may be smaller
        return self.estimator(rows, s, self.qp, clips, noisy=self.training and not self.hard)

    @torch.no_grad()
    def quantize_int(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Integers ``q`` (int8, ``(G, n)``) and fp32 scales ``s`` (``(G,)``) of the hard
        (eval) forward at the current bits: ``forward(w) == (q * s).view(w.shape)``."""
        rows, s = self.rows_and_scales(rows_view(w, self.granularity))
        q = torch.round(rows * s.reciprocal().unsqueeze(1)).clamp_(-self.qp, self.qp)
        return q.to(torch.int8), s.float()

    def forward(self, w: Tensor) -> Tensor:
        if not self.enabled:
            return w
        if self._batched is not None:
            out, source, version = self._batched
            if source is w and w._version == version:  # computed with its group for this forward
                return out
        return self.fake_quant_rows(rows_view(w, self.granularity)).view(w.shape)

    # ---- qbench.quant.batching's per-forward protocol

    def batch_key(self) -> tuple:
        """Quantizers with equal keys compute rows of equal length identically (so one pass may
        hold the rows of several)."""
        learned = self.learned
        return (
            learned is not None and learned.requires_grad,
            self.training,
            self.hard,
            self.bits,
            self.train_bits,
            self.detach_scale,
            self.scale_dtype,
            self.scale_fn.key(),
            self.estimator.key(),
        )

    def prepare(self, rows: Tensor) -> None:
        """The per-forward work that cannot sit in a compiled graph, done before a training forward
        (``prepared`` until :meth:`end_step`): lazy initialisation, the scale function's own."""
        self._init_lazily(rows)
        self.scale_fn.prepare(self, rows)
        self.prepared = True

    def set_batched(self, out: Tensor, source: Tensor) -> None:
        """This forward's output for weight ``source``, computed with its group (see forward)."""
        self._batched = (out, source, source._version)

    def end_step(self) -> None:
        """Forget this forward's batched output and preparation."""
        self._batched = None
        self.prepared = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.scale_fn.load_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        parts = [
            f"bits={self.bits}",
            f"scale_fn={self.scale_fn.describe()}",
            f"estimator={self.estimator.describe()}",
            f"granularity={self.granularity}",
        ]
        if self.detach_scale:
            parts.append("detach_scale=True")
        if self.scale_dtype is not None:
            parts.append(f"scale_dtype={self.scale_dtype}")
        if self.train_bits != self.bits:
            parts.append(f"train_bits={self.train_bits}")
        if not self.enabled:
            parts.append("enabled=False")
        if self.hard:
            parts.append("hard=True")
        return ", ".join(parts)


def make_quantizer(spec: QuantSpec, bits: int | None = None, weight: Tensor | None = None) -> WeightQuantizer:
    """The quantizer a technique preset attaches to one weight (its scale function's state is
    initialised from ``weight`` when given, else lazily on the first forward), with its scales
    rounded to ``spec.float_dtype`` as the export stores them."""
    if not spec.attaches:
        raise ValueError(f"technique {spec.technique!r} attaches no quantizer")
    scale, estimator = spec.parts()
    q = WeightQuantizer(
        spec.bits if bits is None else bits,
        scale,
        estimator,
        granularity=spec.granularity,
        detach_scale=spec.quantizer_options().get("detach_scale", False),
    )
    # Training rounds its scales to the dtype the packed export stores them in (straight-through
    # for the gradient), so the integer grid trained on is the one evaluated and shipped.
    store = FLOAT_DTYPES[spec.float_dtype]
    q.scale_dtype = None if store == torch.float32 else store
    return q if weight is None else q.init_from(weight)
