"""The scale functions' arithmetic and the quantization-group layout.

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

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "absmax_scale",
    "topk_lp_scale",
    "mse_clip_scale",
    "lsq_init_scale",
    "grad_scale",
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
        raise AssertionError(f"check_granularity accepted {granularity!r}")  # unreachable
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


def absmax_scale(rows: Tensor, qp: int, *, detach: bool = False) -> Tensor:
    """``s_i = max_j |W_ij| / Qp``, shape ``(G,)``.

    The gradient flows to the largest-magnitude weight of each row (split evenly
    between exact ties, as autograd's ``amax``); ``detach=True`` stops it (the scale is a constant).
    """
    if detach:
        rows = rows.detach()
    return (rows.abs().amax(dim=1) / qp).clamp_min(EPS)


def _top_k_indices(a: Tensor, k: int) -> Tensor:
    """Columns of the k largest entries of each row of ``a`` (a fresh tensor: it is overwritten),
    largest first. For k <= 3, k ``max`` passes (on the CPU faster than ``topk`` for so few)."""
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

    Plain autograd through the gather and the norm: the gradient reaches exactly
    the k largest-magnitude weights of each row, weighted by
    ``(|W| / ||.||_p)^(p-1) * sign(W) * c / Qp``.
    """
    if detach:
        rows = rows.detach()
    k = min(k, rows.shape[1])
    # select on a detached |W|, then gather the k weights: autograd only sees the
    # (G, k) gather (backward = one scatter) instead of abs/topk over the full tensor
    idx = _top_k_indices(rows.detach().abs(), k)  # column 0 = argmax
    top = rows.gather(1, idx).abs()
    # ||v||_p = m * ||v / m||_p with m = max (a constant: the identity holds for any
    # m, so the gradient is unchanged) avoids under/overflow of |v|^p for p = 8.
    m = top[:, :1].detach().clamp_min(torch.finfo(top.dtype).tiny)
    # Written out (rows of k values need no general norm kernel). The sum is >= 1 (its first term
    # is (m/m)^p) but for an all-zero row, whose clamp keeps pow's gradient at 0 finite.
    norm = m.squeeze(1) * (top / m).pow(p).sum(dim=1).clamp_min(1.0).pow(1.0 / p)
    if c != 1.0:
        norm = norm * c
    return (norm / qp).clamp_min(EPS)


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


#: Clipping ratios the mse-clip search tries (0.50 .. 1.00 in 0.01 steps; 1.0 exactly = absmax).
CLIP_GRID: Tensor = torch.arange(50, 101, dtype=torch.float64).div(100).float()

#: Elements (grid points x weights) evaluated at once by the clip search: bounds its memory.
_CLIP_CHUNK_ELEMS = 1 << 22


def fake_quant_rows(rows: Tensor, scale: Tensor, qp: int) -> Tensor:
    """``s * clamp(round(W / s))`` with round-STE's arithmetic (qbench.quant.estimators), scales
    broadcast against rows from the right: ``(..., G)`` scales for ``(G, n)`` rows."""
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
