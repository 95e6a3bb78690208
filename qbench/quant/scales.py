"""Scale functions and quantization-group layout.

Every weight is viewed as a 2-D tensor of *rows* ``(G, n)``: one row per
quantization group, one scale per row.  The granularity decides the view:

* ``per-channel``   -> ``(C, numel / C)``: row i = output channel i (dim 0 of a
  Linear / Conv / Embedding weight, or of ``MultiheadAttention.in_proj_weight``);
* ``per-tensor``    -> ``(1, numel)``;
* ``per-group-N``   -> ``(numel / N, N)``: N consecutive weights of an output
  channel share a scale (the flattened row length must be divisible by N).

All scale functions reduce along dim 1 of that view, so they are vectorised per
tensor (no Python loop over channels) and work for every granularity alike.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SCALE_FUNCTIONS",
    "EPS",
    "absmax_scale",
    "topk_lp_scale",
    "mse_clip_scale",
    "lsq_init_scale",
    "CLIP_GRID",
    "fake_quant_rows",
    "check_granularity",
    "group_size",
    "num_scales",
    "rows_view",
]

#: Smallest scale ever returned (guards all-zero channels against 0 * inf).
EPS = 1e-12

GROUP_RE = re.compile(r"per-group-(\d+)")


def check_granularity(granularity: str) -> str:
    """Validate a granularity string; returns it unchanged."""
    if granularity in ("per-channel", "per-tensor"):
        return granularity
    m = GROUP_RE.fullmatch(granularity)
    if m and int(m.group(1)) >= 1:
        return granularity
    raise ValueError(
        f"unknown granularity {granularity!r}; expected 'per-channel', 'per-tensor' or 'per-group-N' (N >= 1)"
    )


def group_size(shape: torch.Size | tuple[int, ...], granularity: str) -> int:
    """Number of weights sharing one scale (the row length of the view)."""
    numel = math.prod(shape)
    if granularity == "per-channel":
        return numel // shape[0] if shape[0] else 0
    if granularity == "per-tensor":
        return numel
    m = GROUP_RE.fullmatch(granularity)
    if m is None:
        check_granularity(granularity)  # raises
    n = int(m.group(1))
    row = numel // shape[0] if shape[0] else 0
    if row % n:
        raise ValueError(
            f"{granularity}: channel length {row} of a weight of shape {tuple(shape)} "
            f"is not divisible by the group size {n}"
        )
    return n


def num_scales(shape: torch.Size | tuple[int, ...], granularity: str) -> int:
    """How many scales (rows) a weight of ``shape`` has at ``granularity``."""
    numel = math.prod(shape)
    n = group_size(shape, granularity)
    return numel // n if n else 0


def rows_view(w: Tensor, granularity: str) -> Tensor:
    """``w`` as ``(G, n)`` rows, one scale per row (``w`` itself or a view when ``w`` is contiguous)."""
    if granularity == "per-channel":  # fast path: the common case
        # a 2-D weight is its own rows (a reshape would be one more autograd node each step)
        return w if w.dim() == 2 else w.reshape(w.shape[0], -1)
    return w.reshape(-1, group_size(w.shape, granularity))


class _AbsMax(torch.autograd.Function):
    """Row-wise ``max |W|`` with a lean backward (autograd's abs + amax backward
    costs ~6 full-size passes with bool masks on CPU; this is 4 float passes).
    Same gradient as ``rows.abs().amax(1)``: split evenly between exact ties."""

    @staticmethod
    def forward(ctx, rows: Tensor) -> Tensor:
        amax = rows.abs().amax(dim=1)
        ctx.save_for_backward(rows, amax)
        return amax

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        rows, amax = ctx.saved_tensors
        at_max = rows.abs().eq_(amax.unsqueeze(1))  # in place: 0./1. floats, no bool mask
        coef = grad / at_max.sum(dim=1)
        # sign(W) * grad / n_ties (sign and mul_: copysign is twice as slow on the CPU)
        return at_max.mul_(rows.sign()).mul_(coef.unsqueeze(1))


def absmax_scale(rows: Tensor, qp: int, *, detach: bool = False) -> Tensor:
    """``s_i = max_j |W_ij| / Qp``, shape ``(G,)``.

    The gradient flows to the largest-magnitude weight of each row (split evenly
    between exact ties); ``detach=True`` stops it (the scale is a constant).
    """
    if detach or not (rows.requires_grad and torch.is_grad_enabled()):
        amax = rows.detach().abs().amax(dim=1)
    else:
        amax = _AbsMax.apply(rows)
    return (amax / qp).clamp_min(EPS)


try:  # compiled at install where a C compiler is at hand (setup.py); else torch's ops below
    from . import _cpu_kernels
except ImportError:  # pragma: no cover - depends on the install
    _cpu_kernels = None


def _top_k_magnitudes(rows: Tensor, k: int) -> Tensor:
    """Columns of the k largest ``|W|`` of each row of ``rows`` (not changed), largest first: what
    :func:`_top_k_indices` of ``rows.abs()`` gives, the same columns for ties and NaN. For k <= 3 on
    fp32 CPU rows, one pass of qbench.quant._cpu_kernels (C, SIMD) instead of abs and k ``max`` passes:
    0.3 vs 1.0 ms for the demo Conformer's two passes isolated, 0.3-0.5 ms of a rand step."""
    if (
        _cpu_kernels is not None
        and k <= 3
        and rows.dtype == torch.float32
        and rows.device.type == "cpu"
        and rows.dim() == 2
        and rows.stride(1) == 1
        and rows.stride(0) >= rows.shape[1] >= k
        and not torch.compiler.is_compiling()
    ):
        out = torch.empty(rows.shape[0], k, dtype=torch.int64)
        _cpu_kernels.top_k_rows(
            rows.data_ptr(), out.data_ptr(), rows.shape[0], rows.shape[1], rows.stride(0), k
        )
        return out
    return _top_k_indices(rows.detach().abs(), k)


def _top_k_indices(a: Tensor, k: int) -> Tensor:
    """Columns of the k largest entries of each row of ``a`` (a fresh tensor: it is overwritten),
    largest first. For k <= 3, k max passes: on the CPU ``torch.topk(2)`` of 2912 rows of 96
    took 1.7 ms, two ``max(dim)`` passes 0.4 ms (2 threads; ``argmax`` is twice as slow as
    ``max``); from k = 4 on topk is as fast."""
    if k > 3:
        return a.topk(k, dim=1, sorted=True).indices
    cols = []
    for i in range(k):
        cols.append(a.max(dim=1, keepdim=True).indices)
        if i + 1 < k:
            a.scatter_(1, cols[-1], -1.0)  # below any |W|: the next pass finds the next largest
    return cols[0] if k == 1 else torch.cat(cols, dim=1)


def topk_lp_scale(
    rows: Tensor,
    qp: int,
    *,
    k: int = 2,
    p: float = 8.0,
    c: float = 1.0,
    detach: bool = False,
) -> Tensor:
    """RAND scale ``s_i = c * ||top_k(|W_i|)||_p / Qp``, shape ``(G,)``.

    Plain autograd through ``topk`` and the norm: the gradient reaches exactly
    the k largest-magnitude weights of each row, weighted by
    ``(|W| / ||.||_p)^(p-1) * sign(W) * c / Qp``.
    """
    if detach:
        rows = rows.detach()
    k = min(k, rows.shape[1])
    # select on a detached |W|, then gather the k weights: autograd only sees the
    # (G, k) gather (backward = one scatter) instead of abs/topk over the full tensor
    idx = _top_k_magnitudes(rows, k)  # column 0 = argmax
    return _topk_lp_norm(rows.gather(1, idx).abs(), qp, p, c).scale


class _TopkLpNorm(NamedTuple):
    """The steps of RAND's scale from the k largest ``|W|`` of each row, kept for its backward."""

    m: Tensor  # (G, 1) the largest, detached
    ratio: Tensor  # (G, k) top / m
    total: Tensor  # (G,) sum of ratio^p
    clamped: Tensor  # (G,) total, at least 1
    unclamped_scale: Tensor  # (G,) c * norm / Qp
    scale: Tensor  # (G,) at least EPS


def _topk_lp_norm(top: Tensor, qp: int, p: float, c: float) -> _TopkLpNorm:
    """``c * ||top||_p / Qp`` for ``(G, k)`` magnitudes ``top``, largest first, and its steps."""
    # ||v||_p = m * ||v / m||_p with m = max (a constant: the identity holds for any
    # m, so the gradient is unchanged) avoids under/overflow of |v|^p for p = 8.
    m = top[:, :1].detach().clamp_min(torch.finfo(top.dtype).tiny)
    # Written out: linalg.vector_norm over rows of k values costs 4x as much on the CPU (forward
    # and backward). The sum is >= 1 (its first term is (m/m)^p) but for an all-zero row, whose
    # clamp keeps pow's gradient at 0 finite.
    ratio = top / m
    total = ratio.pow(p).sum(dim=1)
    clamped = total.clamp_min(1.0)
    norm = m.squeeze(1) * clamped.pow(1.0 / p)
    if c != 1.0:
        norm = norm * c
    unclamped = norm / qp
    return _TopkLpNorm(m, ratio, total, clamped, unclamped, unclamped.clamp_min(EPS))


def _topk_lp_scale_backward(
    grad: Tensor, steps: _TopkLpNorm, top_signs: Tensor, qp: int, p: float, c: float
) -> Tensor:
    """The gradient of :func:`_topk_lp_norm`'s scale to the ``(G, k)`` top weights (signed by
    ``top_signs``, their ``sgn``), from ``grad`` ``(G,)``: autograd's backward of each step,
    written out with the same operations in the same order (bit for bit)."""
    g = torch.where(steps.unclamped_scale >= EPS, grad, 0.0)  # clamp_min
    g = g / qp
    if c != 1.0:
        g = g * c
    g = g * steps.m.squeeze(1)
    g = g * ((1.0 / p) * steps.clamped.pow(1.0 / p - 1))  # pow
    g = torch.where(steps.total >= 1.0, g, 0.0)  # clamp_min
    g = g.unsqueeze(1).expand(steps.ratio.shape)  # sum
    g = g * (p * steps.ratio.pow(p - 1))  # pow
    return g / steps.m * top_signs  # division by m, abs


#: Clipping ratios the mse-clip search tries (0.50 .. 1.00 in 0.01 steps; 1.0 exactly = absmax).
CLIP_GRID: Tensor = torch.arange(50, 101, dtype=torch.float64).div(100).float()

#: Elements (grid points x weights) evaluated at once by the clip search: bounds its memory.
_CLIP_CHUNK_ELEMS = 1 << 22


def fake_quant_rows(rows: Tensor, scale: Tensor, qp: int) -> Tensor:
    """``s * clamp(round(W / s))`` with the arithmetic of ``_RoundSTE`` (scales broadcast
    against rows from the right: ``(..., G)`` scales for ``(G, n)`` rows)."""
    s = scale.unsqueeze(-1)
    return torch.round(rows * s.reciprocal()).clamp_(-qp, qp).mul_(s)


def mse_clip_scale(rows: Tensor, qp: int, *, detach: bool = True, grid: Tensor | None = None) -> Tensor:
    """``s_i = c_i * max|W_i| / Qp`` with ``c_i`` from ``grid`` minimising the row's squared
    quantization error at ``qp``; shape ``(G,)``, always detached (no gradient to the scale).

    Vectorised over rows; the grid is evaluated in chunks of grid points so memory stays
    ``O(numel * chunk)``.  Ties go to the smallest ratio (``argmin`` takes the first).
    """
    rows = rows.detach()
    grid = (CLIP_GRID if grid is None else grid).to(rows.device, torch.float32)
    amax = rows.abs().amax(dim=1).float()
    r32 = rows.float()
    chunk = max(1, _CLIP_CHUNK_ELEMS // max(1, rows.numel()))
    errs = []
    for start in range(0, grid.numel(), chunk):  # loop over grid chunks, not channels
        s = (grid[start : start + chunk, None] * amax / qp).clamp_min(EPS)  # (K, G)
        errs.append((fake_quant_rows(r32, s, qp) - r32).square_().sum(dim=-1))  # (K, G)
    best = torch.cat(errs).argmin(dim=0)  # (G,)
    return (grid[best] * amax / qp).clamp_min(EPS)


def lsq_init_scale(rows: Tensor, qp: int) -> Tensor:
    """LSQ initial step size ``2 * mean|W_i| / sqrt(Qp)``, shape ``(G,)``, detached fp32."""
    return (2.0 * rows.detach().abs().float().mean(dim=1) / math.sqrt(qp)).clamp_min(EPS)


#: name -> function(rows, qp, **options) -> (G,) scales (functions of W; the learned
#: "learned" (LSQ) and "pact" scales are parameters of the quantizer instead)
SCALE_FUNCTIONS = {
    "absmax": absmax_scale,
    "topk-lp": topk_lp_scale,
    "mse-clip": mse_clip_scale,
}
