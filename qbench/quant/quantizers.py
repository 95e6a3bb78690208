"""Weight quantizers (scale function x estimator) and the technique presets.

A :class:`WeightQuantizer` is an ``nn.Module`` mapping a float weight ``W`` to
its (fake-)quantized value.  It is attached to a model with
``torch.nn.utils.parametrize`` (see :mod:`qbench.quant.apply`), so it runs
every time the module reads its weight.  Its state (bits, flags) is plain
Python attributes; only the learned scales own a parameter (``step`` for LSQ,
``alpha`` for PACT, one per row), which ``model.parameters()`` and the
state_dict then carry (``<module>.parametrizations.<name>.0.step``).

Scales
    ``absmax`` / ``topk-lp`` / ``mse-clip``  functions of W (see :mod:`.scales`).
    ``learned`` (LSQ)  ``s`` a parameter, init ``2 mean|W_i| / sqrt(Qp)``; its gradient
                   is scaled by ``g = 1 / sqrt(N Qp)`` (N weights per scale).
    ``pact``       ``alpha`` a parameter (init ``max|W_i|``), ``s = alpha / Qp``, W
                   clamped to ``+-alpha``; alpha's gradient comes from the clamp only.
    At another bit width a learned LSQ scale keeps its clipping range ``s * Qp``
    (``s * Qp_train / Qp``); PACT's ``alpha`` is that range already.

Estimators
    ``round-ste``  forward ``s * clamp(round(W / s), -Qp, Qp)``, bit-for-bit equal
                   to ``torch.fake_quantize_per_channel_affine`` (same fp32
                   arithmetic, faster; a training forward may leave -0.0 where the
                   kernel gives +0.0, the same value); backward straight-through to ``W``
                   inside the clamp range and the LSQ gradient to ``s``
                   (``q - W/s`` inside the range, ``q = +-Qp`` outside).
    ``noise``      training forward ``W + s * u`` with fresh ``u ~ U(-1/2, 1/2)`` (16-bit on the CPU)
                   (or normal with the same variance); eval forward = ``round-ste``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .scales import (
    EPS,
    SCALE_FUNCTIONS,
    _cpu_kernels,
    _top_k_magnitudes,
    _topk_lp_norm,
    _topk_lp_scale_backward,
    check_granularity,
    lsq_init_scale,
    mse_clip_scale,
    rows_view,
)
from .techniques import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    ESTIMATORS,
    FLOAT_DTYPES,
    LEARNED_SCALES,
    NOISES,
    SCALE_ALIASES,
    SCALE_KINDS,
    SCALE_NAMES,
    TECHNIQUE_CONFIGS,
    TECHNIQUES,
)

__all__ = [
    "TECHNIQUES",
    "TECHNIQUE_CONFIGS",
    "LEARNED_SCALES",
    "grad_scale",
    "QuantSpec",
    "WeightQuantizer",
    "make_quantizer",
    "round_ste",
]

_INV_SQRT12 = 1.0 / math.sqrt(12.0)


def noise_like(rows: Tensor, noise: str) -> Tensor:
    """The noise estimator's ``u``: uniform on (-1/2, 1/2), or normal with the same variance 1/12.
    On the CPU the uniform noise has 16-bit resolution (:func:`_uniform_16bit`); on CUDA and in a
    compiled graph it is ``torch.rand``'s."""
    if noise == "normal":
        return torch.randn_like(rows).mul_(_INV_SQRT12)
    if rows.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.rand_like(rows).sub_(0.5)
    return _uniform_16bit(rows)


def _uniform_16bit(like: Tensor) -> Tensor:
    """Uniform noise on (-1/2, 1/2) shaped like ``like``: the midpoints ``(v + 1/2) / 2^16`` of the
    65536 int16 values ``v`` (mean 0, variance 1/12 to 1e-10), four to each 64-bit draw of numpy's
    PCG64. Why not ``torch.rand``: torch's CPU generator draws one 32-bit mt19937 number per value,
    serially, 3.3 ns a value here, ~5 % of a demo QAT step for its 0.49 M weights; this is 4x
    faster, and a step of s / 65536 is far below any rounding the estimator models. Seeded from
    torch's default generator, so ``torch.manual_seed`` (and a run's saved RNG state) repeats it.
    Where qbench.quant._cpu_kernels is built, the same values come from the generator's state in one
    C pass (numpy's draw loop and torch's three conversion passes otherwise)."""
    n = like.numel()
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    generator = np.random.PCG64(seed)
    if _cpu_kernels is not None and sys.byteorder == "little":
        # the same values from the generator's state in one C pass (qbench.quant._cpu_kernels)
        state = generator.state["state"]
        out = torch.empty(like.shape, dtype=torch.float32)
        _cpu_kernels.uniform_16bit(out.data_ptr(), n, *_halves(state["state"]), *_halves(state["inc"]))
        return out.to(like.dtype)
    raw = generator.random_raw((n + 3) // 4)  # uint64
    v = torch.from_numpy(raw.view(np.int16)[:n]).view(like.shape)
    # convert, then add in place: torch.add(int16, 0.5) casts element by element, 10x slower
    return v.to(torch.float32).add_(0.5).mul_(1.0 / 65536).to(like.dtype)


def _halves(value: int) -> tuple[int, int]:
    """A 128-bit int as its high and low 64 bits."""
    return value >> 64, value & (2**64 - 1)


def _check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"{what} must be an int in 2..8, got {bits!r}")
    return bits


@dataclass
class QuantSpec:
    """What to quantize during training, and how.

    A technique is a preset of (scale, estimator, scale gradient); ``scale``, ``estimator`` and
    ``scale_grad`` override its parts (``technique="custom"`` needs ``scale`` and ``estimator``).
    """

    technique: str = "float"  # one of TECHNIQUES
    bits: int = 4  # 2..8
    granularity: str = "per-channel"  # also "per-tensor", "per-group-N"
    k: int = 2  # topk-lp: number of largest weights
    p: float = 8.0  # topk-lp: norm order
    c: float = 1.0  # topk-lp: multiplier
    noise: str = "uniform"  # noise estimator: "uniform" or "normal" (same variance)
    clip_every: int = 32  # mse-clip: training forwards between two ratio searches
    include: tuple[str, ...] = DEFAULT_INCLUDE  # fnmatch globs on original parameter names
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # + every param with ndim < 2
    scale: str | None = None  # a SCALE_NAMES entry: overrides the preset's scale function
    estimator: str | None = None  # "round-ste" | "noise": overrides the preset's estimator
    scale_grad: bool | None = None  # False stops the gradient through the scale
    activations: int | None = None  # 8: dynamic per-token 8-bit fake quant of quantized layers' inputs
    # dtype of the scales and of every tensor kept float when evaluated/exported at a quantized
    # precision (bfloat16: what int4/int8 deployments store; float32: full precision)
    float_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.technique not in TECHNIQUES:
            raise ValueError(f"unknown technique {self.technique!r}; expected one of {TECHNIQUES}")
        _check_bits(self.bits)
        check_granularity(self.granularity)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        if not self.p > 0:
            raise ValueError(f"p must be > 0, got {self.p!r}")
        if not self.c > 0:
            raise ValueError(f"c must be > 0, got {self.c!r}")
        if self.noise not in NOISES:
            raise ValueError(f"unknown noise {self.noise!r}; expected one of {NOISES}")
        if isinstance(self.clip_every, bool) or not isinstance(self.clip_every, int) or self.clip_every < 1:
            raise ValueError(f"clip_every must be a positive int, got {self.clip_every!r}")
        if self.scale is not None and self.scale not in SCALE_NAMES:
            raise ValueError(f"unknown scale {self.scale!r}; expected one of {SCALE_NAMES}")
        if self.estimator is not None and self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; expected one of {ESTIMATORS}")
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
        if self.technique == "custom" and not (self.scale and self.estimator):
            raise ValueError("technique 'custom' needs both scale and estimator")
        if self.quantizer_options().get("scale_fn") == "mse-clip" and self.scale_grad:
            raise ValueError("the mse-clip scale has no gradient (scale_grad must be false or unset)")
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

    def describe(self) -> str:
        """``scale + estimator`` with the options that matter, e.g. ``topk-lp(k=2,p=8) + noise``."""
        o = self.quantizer_options()
        if not o:
            return "absmax + round-to-nearest (evaluation only)" if self.technique == "ptq" else "float"
        scale = o["scale_fn"]
        if scale == "topk-lp":
            scale += f"(k={self.k},p={self.p:g}" + (f",c={self.c:g})" if self.c != 1 else ")")
        if o.get("detach_scale") and scale != "mse-clip":
            scale += ", no scale grad"
        est = o["estimator"] + (f"({self.noise})" if o["estimator"] == "noise" else "")
        return f"{scale} + {est}"


class _RoundSTE(torch.autograd.Function):
    """Round-to-nearest fake quantization of ``rows`` (G, n) with scales (G,).

    Forward: the arithmetic of ``torch.fake_quantize_per_channel_affine`` with
    zero point 0 -- ``x = W * (1/s)`` in fp32, round half to even (= nearbyint),
    clamp to [-Qp, Qp], times ``s``, ``+ 0.0`` (the kernel's integer cast turns -0.0 into
    +0.0) -- so the result is bit-identical to the kernel (see the
    tests) while several times faster than its CPU implementation. With a gradient to compute
    (training) the ``+ 0.0`` pass is skipped: the same values, -0.0 for some zeros.
    Backward: identity to ``rows`` inside the clamp range, LSQ gradient to
    ``scale`` (``q - W/s`` inside, ``q`` outside).
    ``clips=False`` promises that no ``W/s`` lies outside the range (absmax, PACT and c >= 1
    topk-lp scales): the clamp and the backward's range mask are then skipped (same values).
    """

    @staticmethod
    def forward(
        ctx, rows: Tensor, scale: Tensor, qp: int, clips: bool = True, grad_factor: float = 1.0
    ) -> Tensor:
        training = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        x, q, out = _round_rows(rows, scale.unsqueeze(1), qp, clips, signed_zeros=training)
        if training:
            ctx.save_for_backward(x, q if ctx.needs_input_grad[1] else None)
            ctx.qp, ctx.clips, ctx.grad_factor = qp, clips, grad_factor
        return out if out.dtype == rows.dtype else out.to(rows.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, q = ctx.saved_tensors
        grad_w = _in_range_grad(grad, x, ctx.qp) if ctx.clips else grad
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad_s = _round_scale_grad(grad, grad_w, x, q).squeeze(1)
            if isinstance(ctx.grad_factor, Tensor) or ctx.grad_factor != 1.0:
                grad_s = grad_s * ctx.grad_factor
        return (grad_w if ctx.needs_input_grad[0] else None), grad_s, None, None, None


def _round_rows(
    rows: Tensor, s: Tensor, qp: int, clips: bool, signed_zeros: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """``x = W / s``, ``q = round(x)`` (clamped to +-Qp when ``clips``) and ``s * q`` for ``(G, 1)``
    scales, with the arithmetic of ``torch.fake_quantize_per_channel_affine``. ``signed_zeros``: a
    weight that rounds to zero from below may come out as -0.0 (the kernel's integer cast gives
    +0.0): the same value, so a training forward skips the pass that clears the sign."""
    x = rows * s.reciprocal()
    q = torch.round(x)
    if clips:
        q.clamp_(-qp, qp)
    out = torch.mul(q, s if s.dtype == x.dtype else s.to(x.dtype))
    if not signed_zeros:
        # "+ 0.0" turns -0.0 into +0.0. Two passes: addcmul with a 0-dim zero as its first operand is
        # one, but 8x slower on the CPU (not vectorised). Not in place (`add_`, nor `mul_`/`addcmul_`
        # in the backwards): traced by torch.compile inside the autograd Functions those gave other
        # gradients than eager (by up to 549 with `add_`).
        out = out + 0.0
    return x, q, out


def _in_range_grad(grad: Tensor, x: Tensor, qp: int) -> Tensor:
    """The straight-through gradient to W: ``grad`` where ``round(x)`` lies in [-Qp, Qp]
    (``|x| < Qp + 1/2``: Qp is odd, so Qp + 1/2 rounds outwards), 0 outside. In-place ``lt_``
    keeps the mask as 0./1. floats: bool masks cost dtype conversions on the CPU."""
    return grad * x.abs().lt_(qp + 0.5)


def _round_scale_grad(grad: Tensor, grad_w: Tensor, x: Tensor, q: Tensor) -> Tensor:
    """LSQ's gradient to each row's scale, ``(G, 1)``: ``d(s q)/ds = q - W/s`` inside the range,
    ``q`` (= +-Qp) outside (where ``grad_w`` is 0)."""
    return torch.addcmul(grad * q, grad_w, x, value=-1.0).sum(dim=1, keepdim=True)


class _AbsMaxFakeQuant(torch.autograd.Function):
    """``s = max|W_i| / Qp`` and round-STE (``noise`` None) or the noise estimator ``W + s u`` on
    ``(G, n)`` fp32 rows, as one autograd node. The same values and gradients as
    ``absmax_scale`` followed by :class:`_RoundSTE` or the noise ``addcmul`` (bit for bit: same
    operations in the same order), in one Python forward and backward instead of two and with
    the two gradients to ``W`` summed in place: on the CPU each custom node's Python costs about
    as much as its arithmetic on a weight of 300k values. The scale gradient reaches the
    largest-magnitude weight of each row, split evenly between exact ties (as autograd's amax)."""

    @staticmethod
    def forward(ctx, rows: Tensor, qp: int, noise: Tensor | None, owned: bool = False) -> Tensor:
        amax = rows.abs().amax(dim=1, keepdim=True)
        s = (amax / qp).clamp_min_(EPS)
        if noise is None:  # absmax never clips: |W / s| <= Qp
            x, q, out = _round_rows(rows, s, qp, clips=False, signed_zeros=True)
            ctx.save_for_backward(rows, amax, x, q)
        else:
            out = torch.addcmul(rows, s, noise)
            ctx.save_for_backward(rows, amax, noise)
        ctx.qp, ctx.owned = qp, owned
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, amax, *rest = ctx.saved_tensors
        if len(rest) == 2:  # round-STE: straight through to W (no clipping), LSQ gradient to s
            grad_s = _round_scale_grad(grad, grad, *rest)
        else:  # noise: d(W + s u)/ds = u
            grad_s = (grad * rest[0]).sum(dim=1, keepdim=True)
        # through s = clamp_min(amax / Qp, EPS) (no gradient where clamped) to amax, then to the
        # row's largest |W|, split between ties
        grad_amax = (grad_s / ctx.qp).mul_(amax / ctx.qp >= EPS)
        at_max = rows.abs().eq_(amax)  # 0./1. floats
        coef = grad_amax / at_max.sum(dim=1, keepdim=True)
        signed_max = at_max.mul_(rows.sign())
        if ctx.owned:  # `grad` is ours to overwrite (see WeightQuantizer.fake_quant_passes)
            return grad.addcmul_(signed_max, coef), None, None, None
        return torch.addcmul(grad, signed_max, coef), None, None, None


class _TopkLpFakeQuant(torch.autograd.Function):
    """RAND's scale ``s = c ||top_k(|W_i|)||_p / Qp`` and round-STE or (``noisy``) the noise
    estimator on one or more ``(G_j, n_j)`` fp32 row tensors (the passes of qbench.quant.batching;
    their noise tensors follow them in ``tensors``), as one autograd node: the same values and
    gradients as ``topk_lp_scale`` followed by :class:`_RoundSTE` or the noise ``addcmul`` (same
    operations in the same order; the backward is autograd's, written out), without the dozen
    autograd nodes of the scale's small steps, with those steps done once for the top-k of all
    passes together (each small op costs ~10-20 us inside a training step, whatever its size),
    and with the top-k gradients added into the estimator's gradient to ``W`` instead of a zero
    tensor of their own (the gather's backward): into the incoming gradient itself where
    ``owned[j]`` (see :meth:`WeightQuantizer.fake_quant_passes`), else into a copy of it.
    ``clips``: see :class:`_RoundSTE`. Returns one output per pass."""

    @staticmethod
    def forward(
        ctx, qp: int, k: int, p: float, c: float, clips: bool, noisy: bool, owned: tuple, *tensors: Tensor
    ):
        passes = tensors[: len(tensors) // 2] if noisy else tensors
        noises = tensors[len(passes) :]
        idx = [_top_k_magnitudes(rows, k) for rows in passes]  # every pass has rows of >= k
        tops = [rows.gather(1, i) for rows, i in zip(passes, idx, strict=True)]
        top = tops[0] if len(tops) == 1 else torch.cat(tops)
        steps = _topk_lp_norm(top.abs(), qp, p, c)
        scale = steps.scale.unsqueeze(1)
        sizes = [rows.shape[0] for rows in passes]
        outs, saved = [], []
        for j, s in enumerate(scale.split(sizes) if len(passes) > 1 else (scale,)):
            if noisy:
                outs.append(torch.addcmul(passes[j], s, noises[j]))
            else:
                x, q, out = _round_rows(passes[j], s, qp, clips, signed_zeros=True)
                outs.append(out)
                saved += [x, q]
        ctx.save_for_backward(top, *idx, *(noises if noisy else saved))
        ctx.steps, ctx.sizes, ctx.noisy, ctx.owned = steps, sizes, noisy, owned
        ctx.qp, ctx.p, ctx.c, ctx.clips = qp, p, c, clips
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        top, *rest = ctx.saved_tensors
        n = len(grads)
        idx, rest = rest[:n], rest[n:]
        grad_ws, grad_ss = [], []
        for j, grad in enumerate(grads):
            # the top-k gradients are added in place below, into grad_w: round-STE's in-range
            # gradient of a clipping scale is a new tensor already; else `grad` itself where the
            # caller said it is ours (owned[j]), or a copy of it (a pass over the rows fewer)
            if not ctx.noisy and ctx.clips:
                grad_w = _in_range_grad(grad, rest[2 * j], ctx.qp)
            else:
                grad_w = grad if ctx.owned[j] else grad.clone()
            if ctx.noisy:  # d(W + s u)/ds = u
                grad_ss.append((grad * rest[j]).sum(dim=1, keepdim=True))
            else:  # round-STE: LSQ gradient to s
                grad_ss.append(_round_scale_grad(grad, grad_w, rest[2 * j], rest[2 * j + 1]))
            grad_ws.append(grad_w)
        grad_s = grad_ss[0] if n == 1 else torch.cat(grad_ss)
        grad_top = _topk_lp_scale_backward(grad_s.squeeze(1), ctx.steps, top.sgn(), ctx.qp, ctx.p, ctx.c)
        parts = grad_top.split(ctx.sizes) if n > 1 else (grad_top,)
        grad_rows = [g.scatter_add_(1, i, t) for g, i, t in zip(grad_ws, idx, parts, strict=True)]
        return None, None, None, None, None, None, None, *grad_rows, *([None] * n if ctx.noisy else ())


def _clamp_to_alpha(rows: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """``clamp(W, -alpha, alpha)`` and where it clipped: +1 above alpha, -1 below -alpha, 0 inside
    (one float tensor, saved for :func:`_clamp_to_alpha_grads`)."""
    # maximum then minimum in place: the same values as torch.clamp, whose tensor-bounds kernel is
    # not vectorised on the CPU (0.35 ms vs 0.07 ms for 3104 rows of 96)
    clamped = torch.maximum(rows, -alpha)
    torch.minimum(clamped, alpha, out=clamped)
    return clamped, (rows - clamped).sign_()


def _clamp_to_alpha_grads(
    grad: Tensor, outside: Tensor, alpha_grad: bool, in_place: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Gradients of the clamp: to W inside ``[-alpha, alpha]`` (bounds included), to alpha
    ``sum(grad * sign(W))`` over the row's weights outside (None unless ``alpha_grad``)."""
    g = grad * outside
    grad_alpha = g.sum(dim=1, keepdim=True) if alpha_grad else None
    if in_place:  # `grad` is the caller's to overwrite (see WeightQuantizer.fake_quant_passes)
        return grad.sub_(g.mul_(outside)), grad_alpha
    return grad - g * outside, grad_alpha  # grad * (1 - outside^2), exactly


class _ClampToAlpha(torch.autograd.Function):
    """PACT's ``clamp(W, -alpha, alpha)`` with ``(G, 1)`` bounds. Autograd's clamp with tensor
    bounds builds six boolean masks in its backward (slow on the CPU); this saves one float
    tensor of signs."""

    @staticmethod
    def forward(ctx, rows: Tensor, alpha: Tensor) -> Tensor:
        out, outside = _clamp_to_alpha(rows, alpha)
        ctx.save_for_backward(outside)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (outside,) = ctx.saved_tensors
        return _clamp_to_alpha_grads(grad, outside, ctx.needs_input_grad[1])


class _PactFakeQuant(torch.autograd.Function):
    """PACT's round-STE on ``(G, n)`` fp32 rows with ``(G, 1)`` clip values ``alpha``, as one
    autograd node: :class:`_ClampToAlpha` then :class:`_RoundSTE` with the detached scale
    ``alpha / Qp`` (which cannot clip), with the same values and gradients bit for bit, in one
    Python forward and backward instead of two."""

    @staticmethod
    def forward(ctx, rows: Tensor, alpha: Tensor, qp: int, owned: bool = False) -> Tensor:
        clamped, outside = _clamp_to_alpha(rows, alpha)
        _, _, out = _round_rows(clamped, (alpha / qp).detach(), qp, clips=False, signed_zeros=True)
        ctx.save_for_backward(outside)
        ctx.owned = owned
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (outside,) = ctx.saved_tensors
        return *_clamp_to_alpha_grads(grad, outside, ctx.needs_input_grad[1], ctx.owned), None, None


_ZERO_POINTS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _zero_points(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Cached all-zero int32 and float32 zero points of ``n`` channels (never written to)."""
    key = (n, device)
    zp = _ZERO_POINTS.get(key)
    if zp is None:
        zp = _ZERO_POINTS[key] = (
            torch.zeros(n, dtype=torch.int32, device=device),
            torch.zeros(n, dtype=torch.float32, device=device),
        )
    return zp


def round_ste(
    rows: Tensor, scale: Tensor, qp: int, grad_factor: float | Tensor = 1.0, clips: bool = True
) -> Tensor:
    """Functional round-STE on a ``(G, n)`` view with ``(G,)`` fp32 scales.

    On CUDA with autograd it runs PyTorch's fused kernels, one op forward and one backward:
    ``torch._fake_quantize_learnable_per_channel_affine`` when the scale needs a gradient (the
    LSQ gradient ``q - W/s`` inside the range, ``q`` outside, times ``grad_factor``),
    ``torch.fake_quantize_per_channel_affine`` when only ``rows`` does. Elsewhere the same
    arithmetic in plain ops (:class:`_RoundSTE`): on the CPU the fused kernels are slower
    (measured fwd+bwd on a 384x96 weight, one thread: 1.8 ms learnable kernel vs 1.1 ms, 0.8-1.1 ms
    plain kernel vs 0.5 ms). All paths give bit-identical values. ``clips=False``: see
    :class:`_RoundSTE`. Off CUDA ``grad_factor`` may also be one per row, ``(G,)``.
    """
    grad = torch.is_grad_enabled() and (rows.requires_grad or scale.requires_grad)
    fused = grad and rows.is_cuda and rows.dtype == torch.float32 and scale.dtype == torch.float32
    if not fused:
        return _RoundSTE.apply(rows, scale, qp, clips, grad_factor)
    zp_int, zp_float = _zero_points(rows.shape[0], rows.device)
    if scale.requires_grad:
        return torch._fake_quantize_learnable_per_channel_affine(
            rows, scale, zp_float, 0, -qp, qp, grad_factor
        )
    return torch.fake_quantize_per_channel_affine(rows, scale, zp_int, 0, -qp, qp)


class _GradScale(torch.autograd.Function):
    """Identity forward (bit-exact, unlike LSQ's ``(s - s g).detach() + s g``), gradient times ``g``."""

    @staticmethod
    def forward(ctx, x: Tensor, g: float) -> Tensor:
        ctx.g = g
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.g, None


def grad_scale(x: Tensor, g: float) -> Tensor:
    """``x`` with its gradient multiplied by ``g``."""
    return _GradScale.apply(x, g)


class WeightQuantizer(nn.Module):
    """Fake-quantizes one weight tensor: ``forward(W) -> Wq`` (same shape/dtype).

    Runtime switches (plain attributes, used by ``use_precision``):
    ``bits`` (mutable), ``enabled`` (False = identity), ``hard`` (True = hard
    rounding even in training mode), ``scale_dtype`` (None = the fp32 scales as computed;
    a dtype = scales rounded to it, e.g. bfloat16 as a packed export stores them; the
    gradient passes the rounding straight through).
    """

    def __init__(
        self,
        bits: int = 4,
        scale_fn: str = "absmax",
        estimator: str = "round-ste",
        *,
        granularity: str = "per-channel",
        k: int = 2,
        p: float = 8.0,
        c: float = 1.0,
        noise: str = "uniform",
        detach_scale: bool = False,
        clip_every: int = 1,
    ) -> None:
        super().__init__()
        if scale_fn not in SCALE_KINDS:
            raise ValueError(f"unknown scale function {scale_fn!r}; expected one of {SCALE_KINDS}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
        if noise not in NOISES:
            raise ValueError(f"unknown noise {noise!r}; expected one of {NOISES}")
        self.bits = _check_bits(bits)
        self.scale_fn = scale_fn
        self.estimator = estimator
        self.granularity = check_granularity(granularity)
        self.k, self.p, self.c = k, p, c
        self.noise = noise
        self.detach_scale = detach_scale
        self.enabled = True
        self.hard = False
        self.scale_dtype: torch.dtype | None = None
        # set by qbench.quant.batching for one forward: this weight's slice of its group's output
        self._batched: tuple[Tensor, Tensor, int] | None = None  # (output, source weight, its _version)
        # True between prepare() and the end of that forward: the per-forward work is done
        self.prepared = False
        if scale_fn == "mse-clip":
            # training: re-run the ratio search every clip_every forwards; the ratios and the
            # count are buffers, so a resumed run continues exactly as an uninterrupted one
            self.clip_every = clip_every
            self.clip_bits = bits
            self.register_buffer("clip_ratio", torch.empty(0))
            self.register_buffer("clip_calls", torch.zeros((), dtype=torch.long))
        self._scale_impl = SCALE_FUNCTIONS.get(scale_fn)
        self._scale_kwargs = {"k": k, "p": p, "c": c} if scale_fn == "topk-lp" else {}
        self._param_name = LEARNED_SCALES.get(scale_fn)
        if self._param_name is not None:
            # the bit width the parameter is trained at: evaluating at other bits rescales it
            self.train_bits = self.bits
            # empty until initialised from a weight (init_from / first forward): the
            # number of rows is only known then
            self.register_parameter(self._param_name, nn.Parameter(torch.empty(0)))

    @property
    def qp(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def _never_clips(self) -> bool:
        """No ``W/s`` can round beyond +-Qp: the scale is at least ``max|W_i| / Qp`` (absmax;
        topk-lp with c >= 1, whose norm is at least the max) or PACT clamped W to the range."""
        if self.scale_dtype is not None:  # a rounded scale may be smaller
            return False
        return self.scale_fn in ("absmax", "pact") or (self.scale_fn == "topk-lp" and self.c >= 1)

    @property
    def learned(self) -> nn.Parameter | None:
        """The learned scale parameter (``step`` or ``alpha``), None for functional scales."""
        return None if self._param_name is None else getattr(self, self._param_name)

    @property
    def initialized(self) -> bool:
        return self._param_name is None or self.learned.numel() > 0

    @torch.no_grad()
    def init_from(self, w: Tensor) -> WeightQuantizer:
        """(Re-)initialise a learned scale from weight ``w`` at ``train_bits``, in place
        (the same Parameter object, so it can already sit in an optimizer)."""
        if self.scale_fn == "mse-clip":
            rows = rows_view(w.detach(), self.granularity)
            amax = rows.abs().amax(dim=1).float().clamp_min(EPS)
            self.clip_ratio = (mse_clip_scale(rows, self.qp) * self.qp / amax).clamp(max=1.0)
        if self._param_name is not None:
            rows = rows_view(w.detach(), self.granularity)
            qp = 2 ** (self.train_bits - 1) - 1
            if self._param_name == "step":
                v = lsq_init_scale(rows, qp)
            else:
                v = rows.abs().amax(dim=1).float().clamp_min(EPS)
            self.learned.data = v.to(w.device)
        return self

    def scale(self, w: Tensor) -> Tensor:
        """Scales of ``w`` at the current bit width, shape ``(G,)``, float32."""
        return self._scales(rows_view(w, self.granularity))

    def _scales(self, rows: Tensor, group: tuple[WeightQuantizer, ...] = ()) -> Tensor:
        s, g = self._scale_and_factor(rows, group)
        return s if isinstance(g, float) and g == 1.0 else grad_scale(s, g)

    # `group`: the quantizers (all configured like this one) whose weights' rows are concatenated
    # in `rows`, in order (qbench.quant.batching); () = this quantizer's rows alone. Their
    # per-row state (learned scales, clip ratios) is concatenated the same way.

    def _learned_rows(self, group: tuple[WeightQuantizer, ...]) -> Tensor:
        return self.learned if len(group) <= 1 else torch.cat([q.learned for q in group])

    def _scale_and_factor(
        self, rows: Tensor, group: tuple[WeightQuantizer, ...] = ()
    ) -> tuple[Tensor, float]:
        """Scales and the factor their gradient is to be scaled by (LSQ's ``g``; 1 otherwise),
        so the fused kernel can apply it without a separate autograd op."""
        if self._param_name is None:
            if self.scale_fn == "mse-clip" and self.clip_every > 1:
                return self._cached_clip_scale(rows, group), 1.0
            s = self._scale_impl(rows, self.qp, detach=self.detach_scale, **self._scale_kwargs)
            return (s if s.dtype == torch.float32 else s.float()), 1.0
        if not self.initialized:
            self.init_from(rows)
        if self._param_name == "alpha":
            return self._alpha(group) / self.qp, 1.0
        s = self._learned_rows(group)
        if self.bits != self.train_bits:  # same clipping range s * Qp at the other width
            s = s * ((2 ** (self.train_bits - 1) - 1) / self.qp)
        if self.detach_scale:
            return s.detach().clamp_min(EPS), 1.0
        g = 1.0
        if torch.is_grad_enabled() and s.requires_grad:
            g = self._lsq_grad_factor(rows, group)
        return s.clamp_min(EPS), g

    def _lsq_grad_factor(self, rows: Tensor, group: tuple[WeightQuantizer, ...]) -> float | Tensor:
        """LSQ's ``g = 1 / sqrt(N Qp)``, N the weights per scale: a float, or one per row ``(G,)``
        where qbench.quant.batching padded some members' rows to the group's length (their own
        length is the one their :meth:`prepare` saw)."""
        n = rows.shape[1]
        lengths = [q.__dict__.get("_rows_n", n) for q in group]
        if all(m == n for m in lengths):
            return 1.0 / math.sqrt(n * self.qp)
        # the same every step: kept (keyed by what it is computed from) instead of ~30 small ops
        key = (
            tuple((q.learned.numel(), m) for q, m in zip(group, lengths, strict=True)),
            self.qp,
            rows.device,
        )
        cached = self.__dict__.get("_lsq_factors")
        if cached is None or cached[0] != key:
            factors = torch.cat([torch.full((rows_i,), 1.0 / math.sqrt(m * self.qp)) for rows_i, m in key[0]])
            cached = self.__dict__["_lsq_factors"] = (key, factors.to(rows.device))
        return cached[1]

    def prepare(self, rows: Tensor) -> None:
        """The per-forward work that cannot sit in a compiled graph, done before a training forward
        (qbench.quant.batching; ``prepared`` until it ends): a learned scale's lazy
        initialisation; for mse-clip, the ratio search when due (a data-dependent branch) and
        the count of forwards."""
        if not self.initialized:
            self.init_from(rows)
        self.__dict__["_rows_n"] = rows.shape[1]  # its own row length, should its rows be padded
        if self.scale_fn == "mse-clip" and self._clip_cached():
            self._count_clip_forward(rows)
        self.__dict__["prepared"] = True  # per step: see end_step

    def end_step(self) -> None:
        """Forget this forward's batched output and preparation (qbench.quant.batching). Both are
        plain attributes written each step straight into ``__dict__``: ``nn.Module.__setattr__``'s
        checks cost ~5 us a call, ~0.4 ms a step of the demo Conformer."""
        self.__dict__["_batched"] = None
        self.__dict__["prepared"] = False

    def set_batched(self, out: Tensor, source: Tensor) -> None:
        """This forward's output for weight ``source``, computed with its group (see forward)."""
        self.__dict__["_batched"] = (out, source, source._version)

    def _clip_cached(self) -> bool:
        return self.clip_every > 1 and self.training and not self.hard and torch.is_grad_enabled()

    def _count_clip_forward(self, rows: Tensor) -> None:
        """One training forward of mse-clip: the ratio search if due, then the count."""
        self._refresh_clip_ratio(rows)
        self.clip_calls.add_(1)

    def _refresh_clip_ratio(self, rows: Tensor) -> None:
        due = self.clip_ratio.numel() != rows.shape[0] or int(self.clip_calls) % self.clip_every == 0
        if due or self.clip_bits != self.bits:
            amax = rows.detach().abs().amax(dim=1).float()
            ratio = (mse_clip_scale(rows, self.qp) * self.qp / amax.clamp_min(EPS)).clamp(max=1.0)
            if self.clip_ratio.shape == ratio.shape:
                self.clip_ratio.copy_(ratio)  # in place: a compiled graph keeps reading the buffer
            else:
                self.clip_ratio = ratio
            self.clip_bits = self.bits

    def _cached_clip_scale(self, rows: Tensor, group: tuple[WeightQuantizer, ...]) -> Tensor:
        """mse-clip in training: the per-row ratio search runs on the first forward and every
        ``clip_every`` training forwards after; in between the scale is the cached ratio times
        the current ``max|W_i| / Qp``. Evaluation (eval mode or ``hard``) always searches."""
        if not self._clip_cached():
            return mse_clip_scale(rows, self.qp)
        if not self.prepared:  # a forward outside qbench.quant.batching: counted per read
            self._count_clip_forward(rows)
        amax = rows.detach().abs().amax(dim=1).float()
        ratio = self.clip_ratio if len(group) <= 1 else torch.cat([q.clip_ratio for q in group])
        return (ratio * amax / self.qp).clamp_min(EPS)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.scale_fn == "mse-clip":  # checkpoints from before the cached search: search again
            for name in ("clip_ratio", "clip_calls"):
                state_dict.setdefault(
                    prefix + name, getattr(self, name).new_zeros(0 if name == "clip_ratio" else ())
                )
            self.clip_ratio = state_dict[prefix + "clip_ratio"].new_empty(
                state_dict[prefix + "clip_ratio"].shape
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _alpha(self, group: tuple[WeightQuantizer, ...] = ()) -> Tensor:
        a = self._learned_rows(group).clamp_min(EPS)
        return a.detach() if self.detach_scale else a

    def _stored(self, s: Tensor) -> Tensor:
        """``s`` rounded to ``scale_dtype`` (straight-through), as fp32."""
        if self.scale_dtype is None or self.scale_dtype == torch.float32:
            return s
        r = s.detach().to(self.scale_dtype).float().clamp_min_(EPS)
        return r if not s.requires_grad else s + (r - s).detach()

    def _clipped_rows_and_scale(
        self, rows: Tensor, group: tuple[WeightQuantizer, ...] = ()
    ) -> tuple[Tensor, Tensor]:
        """The ``(G, n)`` rows to round and their ``(G,)`` scales; PACT clamps the rows
        to ``+-alpha`` (alpha's only gradient path) and detaches the scale."""
        if self._param_name == "alpha":
            if not self.initialized:
                self.init_from(rows)
            alpha = self._alpha(group)
            rows = _ClampToAlpha.apply(rows, alpha.unsqueeze(1).to(rows.dtype))
            return rows, self._stored((alpha / self.qp).detach())
        return rows, self._stored(self._scales(rows, group))

    @torch.no_grad()
    def quantize_int(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Integers ``q`` (int8, ``(G, n)``) and fp32 scales ``s`` (``(G,)``) of the hard
        (eval) forward at the current bits: ``forward(w) == (q * s).view(w.shape)``."""
        rows, s = self._clipped_rows_and_scale(rows_view(w, self.granularity))
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

    def fake_quant_rows(
        self, rows: Tensor, group: tuple[WeightQuantizer, ...] = (), owned: bool = False
    ) -> Tensor:
        """The forward on ``(G, n)`` rows: this weight's own, or the rows of ``group``'s weights
        concatenated (qbench.quant.batching: quantizers configured alike share one pass).
        ``owned``: see :meth:`fake_quant_passes`'s ``split``."""
        if self._param_name == "step" and self.estimator == "round-ste" and self.scale_dtype is None:
            s, g = self._scale_and_factor(rows, group)  # LSQ: the fused kernel applies the gradient factor
            return round_ste(rows, s, self.qp, g)
        noisy = self.estimator == "noise" and self.training and not self.hard
        if self._fuses(rows):  # on the CPU, one autograd node for scale and estimator
            if self.scale_fn == "absmax":
                return _AbsMaxFakeQuant.apply(
                    rows, self.qp, noise_like(rows, self.noise) if noisy else None, owned
                )
            if self.scale_fn == "topk-lp" and rows.shape[1] >= self.k:
                return self.fake_quant_passes([rows], [group])[0]
            if not noisy:  # pact
                return _PactFakeQuant.apply(rows, self._alpha(group).unsqueeze(1), self.qp, owned)
        rows, s = self._clipped_rows_and_scale(rows, group)
        if noisy:
            return torch.addcmul(rows, s.unsqueeze(1).to(rows.dtype), noise_like(rows, self.noise))
        return round_ste(rows, s, self.qp, clips=not self._never_clips)

    def fake_quant_passes(
        self,
        passes: list[Tensor],
        groups: list[tuple[WeightQuantizer, ...]],
        split: tuple[bool, ...] | None = None,
    ) -> list[Tensor]:
        """:meth:`fake_quant_rows` of several ``(G_j, n_j)`` row tensors of quantizers configured like
        this one (qbench.quant.batching's passes of rows of different lengths): topk-lp's fused
        node takes them all at once (its per-row steps run once), the others pass by pass.
        ``split[j]``: the caller only splits output j into pieces (``Tensor.split``), so the gradient
        reaching it is a new tensor that nothing else holds, which the fused nodes (on the CPU)
        then write their gradient into instead of a new tensor: a training step's fresh tensors
        are cold in the caches (PACT 1 %, two in-process A/B runs)."""
        owned = split or (False,) * len(passes)
        if (
            self.scale_fn == "topk-lp"
            and self._fuses(passes[0])
            and all(x.shape[1] >= self.k for x in passes)
        ):
            noisy = self.estimator == "noise" and self.training and not self.hard
            noises = [noise_like(x, self.noise) for x in passes] if noisy else []
            clips = not self._never_clips
            outs = _TopkLpFakeQuant.apply(
                self.qp, self.k, self.p, self.c, clips, noisy, owned, *passes, *noises
            )
            return list(outs)
        return [self.fake_quant_rows(x, g, o) for x, g, o in zip(passes, groups, owned, strict=True)]

    def _fuses(self, rows: Tensor) -> bool:
        """In training on the CPU, an absmax or topk-lp scale with its gradient or an initialised
        PACT clip go through one fused autograd node (:class:`_AbsMaxFakeQuant`,
        :class:`_TopkLpFakeQuant`, :class:`_PactFakeQuant`). On CUDA the round goes to PyTorch's
        fused kernels instead."""
        return (
            (
                self.scale_fn in ("absmax", "topk-lp")
                and not self.detach_scale
                or self.scale_fn == "pact"
                and self.initialized
            )
            and self.scale_dtype is None
            and rows.dtype == torch.float32
            and not rows.is_cuda
            and rows.requires_grad
            and torch.is_grad_enabled()
        )

    def extra_repr(self) -> str:
        parts = [
            f"bits={self.bits}",
            f"scale_fn={self.scale_fn}",
            f"estimator={self.estimator}",
            f"granularity={self.granularity}",
        ]
        if self.scale_fn == "topk-lp":
            parts.append(f"k={self.k}, p={self.p}, c={self.c}")
        if self.estimator == "noise":
            parts.append(f"noise={self.noise}")
        if self.detach_scale:
            parts.append("detach_scale=True")
        if self.scale_dtype is not None:
            parts.append(f"scale_dtype={self.scale_dtype}")
        if self._param_name is not None and self.train_bits != self.bits:
            parts.append(f"train_bits={self.train_bits}")
        if not self.enabled:
            parts.append("enabled=False")
        if self.hard:
            parts.append("hard=True")
        return ", ".join(parts)


def make_quantizer(spec: QuantSpec, bits: int | None = None, weight: Tensor | None = None) -> WeightQuantizer:
    """The quantizer a technique preset attaches to one weight (a learned scale is
    initialised from ``weight`` when given, else lazily on the first forward)."""
    if not spec.attaches:
        raise ValueError(f"technique {spec.technique!r} attaches no quantizer")
    q = WeightQuantizer(
        spec.bits if bits is None else bits,
        granularity=spec.granularity,
        k=spec.k,
        p=spec.p,
        c=spec.c,
        noise=spec.noise,
        clip_every=spec.clip_every,
        **spec.quantizer_options(),
    )
    return q if weight is None else q.init_from(weight)
