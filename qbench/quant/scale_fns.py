"""The scale functions a quantizer may use, one class each (see :class:`~qbench.quant.parts.Scale`).

``absmax``    ``max|W_i| / Qp``.
``topk-lp``   RAND: ``c ||top_k(|W_i|)||_p / Qp`` (options ``k``, ``p``, ``c``).
``mse-clip``  ``r_i max|W_i| / Qp`` with the ratio ``r_i`` searched for the least squared error;
              in training the search runs every ``clip_every`` forwards (no gradient).
``learned``   LSQ: ``s`` a parameter, init ``2 mean|W_i| / sqrt(Qp)``; its gradient is scaled by
              ``g = 1 / sqrt(N Qp)`` (N weights per scale). At another bit width it keeps its
              clipping range ``s * Qp`` (``s * Qp_train / Qp``).
``pact``      ``alpha`` a parameter (init ``max|W_i|``), ``s = alpha / Qp``, W clamped to
              ``+-alpha``; alpha's gradient comes from the clamp only (``alpha`` is the range
              at any bit width).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from .parts import Option, QuantizerBase, Scale
from .scales import EPS, absmax_scale, grad_scale, lsq_init_scale, mse_clip_scale, topk_lp_scale

__all__ = ["AbsMax", "TopkLp", "MseClip", "Learned", "Pact"]


class AbsMax(Scale):
    name = "absmax"
    pads = True

    def clips(self, q: QuantizerBase) -> bool:
        return False  # |W / s| <= Qp

    def scales(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        return absmax_scale(rows, q.qp, detach=q.detach_scale).float()


class TopkLp(Scale):
    name = "topk-lp"
    pads = True
    options = (
        Option("k", int, 2, "topk-lp: the number of largest weights of a row", ge=1, hashed_at_default=True),
        Option("p", float, 8.0, "topk-lp: the norm's order", gt=0, hashed_at_default=True),
        Option("c", float, 1.0, "topk-lp: the norm's multiplier", gt=0, hashed_at_default=True),
    )
    k: int
    p: float
    c: float

    def clips(self, q: QuantizerBase) -> bool:
        return self.c < 1  # the norm is at least the row's max

    def scales(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        s = topk_lp_scale(rows, q.qp, k=self.k, p=self.p, c=self.c, detach=q.detach_scale)
        return s.float()

    def min_row(self) -> tuple[str, int]:
        return "k", self.k

    def describe(self) -> str:
        return f"topk-lp(k={self.k},p={self.p:g}" + (f",c={self.c:g})" if self.c != 1 else ")")

    def label_options(self) -> list[str]:
        if (self.k, self.p, self.c) == (2, 8.0, 1.0):
            return []
        return [f"k={self.k}", f"p={self.p:g}"] + ([f"c={self.c:g}"] if self.c != 1 else [])


class MseClip(Scale):
    """In training (train mode, not hard, with autograd) the per-row ratio search runs on the
    first forward and every ``clip_every`` forwards after; in between the scale is the cached
    ratio times the current ``max|W_i| / Qp``. Evaluation always searches. The ratios and the count
    of forwards are buffers of the quantizer, so a resumed run continues as an uninterrupted one."""

    name = "mse-clip"
    aliases = ("clip",)
    has_gradient = False
    pads = True  # zeros add nothing to a row's error sums, nor to its max
    options = (Option("clip_every", int, 32, "mse-clip: training forwards between two ratio searches", ge=1),)
    clip_every: int

    def attach(self, q: QuantizerBase) -> None:
        q.clip_bits = q.bits  # the bit width the cached ratios were searched at
        q.clip_count = 0  # clip_calls as a Python int: the due check reads no device tensor (no sync)
        q.register_buffer("clip_ratio", torch.empty(0))
        q.register_buffer("clip_calls", torch.zeros((), dtype=torch.long))

    def init_from(self, q: QuantizerBase, rows: Tensor) -> None:
        q.clip_ratio = self._ratio(q, rows)

    @staticmethod
    def _ratio(q: QuantizerBase, rows: Tensor) -> Tensor:
        amax = rows.detach().abs().amax(dim=1).float().clamp_min(EPS)
        return (mse_clip_scale(rows, q.qp) * q.qp / amax).clamp(max=1.0)

    def _cached(self, q: QuantizerBase) -> bool:
        return self.clip_every > 1 and q.training and not q.hard and torch.is_grad_enabled()

    def prepare(self, q: QuantizerBase, rows: Tensor) -> None:
        if self._cached(q):
            self._count_forward(q, rows)

    def _count_forward(self, q: QuantizerBase, rows: Tensor) -> None:
        """One training forward: the ratio search if due (a branch on data: outside a compiled
        graph), then the count."""
        due = q.clip_ratio.numel() != rows.shape[0] or q.clip_count % self.clip_every == 0
        if due or q.clip_bits != q.bits:
            ratio = self._ratio(q, rows)
            if q.clip_ratio.shape == ratio.shape:
                q.clip_ratio.copy_(ratio)  # in place: a compiled graph keeps reading the buffer
            else:
                q.clip_ratio = ratio
            q.clip_bits = q.bits
        q.clip_calls.add_(1)
        q.clip_count += 1

    def scales(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        if not self._cached(q):
            return mse_clip_scale(rows, q.qp)
        if not q.prepared:  # a forward outside qbench.quant.batching: counted per read
            self._count_forward(q, rows)
        amax = rows.detach().abs().amax(dim=1).float()
        ratio = q.clip_ratio if len(group) <= 1 else torch.cat([m.clip_ratio for m in group])
        return (ratio * amax / q.qp).clamp_min(EPS)

    def label_options(self) -> list[str]:
        return []  # the search's cadence: runs at another cadence share the technique's leaderboard row

    def load_state(self, q: QuantizerBase, state_dict: dict, prefix: str) -> None:
        # a state_dict without the clip state searches on the next training forward
        state_dict.setdefault(prefix + "clip_ratio", q.clip_ratio.new_zeros(0))
        state_dict.setdefault(prefix + "clip_calls", q.clip_calls.new_zeros(()))
        q.clip_ratio = q.clip_ratio.new_empty(state_dict[prefix + "clip_ratio"].shape)  # its size to load
        q.clip_count = int(state_dict[prefix + "clip_calls"])


class _LearnedScale(Scale):
    """A scale that is a parameter of its quantizer (``param``), one value per row: empty until
    initialised from a weight (``init_from``, or lazily on the first forward), as only then is
    the number of rows known; ``train_bits`` is the bit width it is trained at."""

    param: ClassVar[str]  # every learned scale names its parameter

    def attach(self, q: QuantizerBase) -> None:
        q.train_bits = q.bits
        q.register_parameter(self.param, nn.Parameter(torch.empty(0)))

    def initialized(self, q: QuantizerBase) -> bool:
        return getattr(q, self.param).numel() > 0

    def init_from(self, q: QuantizerBase, rows: Tensor) -> None:
        # in place: the same Parameter object, so it can already sit in an optimizer
        getattr(q, self.param).data = self.initial(rows, 2 ** (q.train_bits - 1) - 1).to(rows.device)

    def initial(self, rows: Tensor, qp: int) -> Tensor:
        raise NotImplementedError

    def _rows(self, q: QuantizerBase, group: Sequence[QuantizerBase]) -> Tensor:
        if len(group) <= 1:
            return getattr(q, self.param)
        return torch.cat([getattr(m, self.param) for m in group])


class Learned(_LearnedScale):
    name = "learned"
    aliases = ("lsq",)
    param = "step"
    # pads stays False: the gradient factor 1 / sqrt(N Qp) depends on the row length N

    def initial(self, rows: Tensor, qp: int) -> Tensor:
        return lsq_init_scale(rows, qp)

    def scales(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        s = self._rows(q, group)
        if q.bits != q.train_bits:  # the same clipping range s * Qp at the other width
            s = s * ((2 ** (q.train_bits - 1) - 1) / q.qp)
        if q.detach_scale:
            return s.detach().clamp_min(EPS)
        s = s.clamp_min(EPS)
        if torch.is_grad_enabled() and s.requires_grad:
            s = grad_scale(s, 1.0 / math.sqrt(rows.shape[1] * q.qp))
        return s


class Pact(_LearnedScale):
    name = "pact"
    param = "alpha"
    pads = True  # zeros lie inside +-alpha: no gradient to alpha

    def initial(self, rows: Tensor, qp: int) -> Tensor:
        return rows.abs().amax(dim=1).float().clamp_min(EPS)

    def clips(self, q: QuantizerBase) -> bool:
        return False  # the rows are clamped to +-alpha = +-Qp s

    def _alpha(self, q: QuantizerBase, group: Sequence[QuantizerBase]) -> Tensor:
        a = self._rows(q, group).clamp_min(EPS)
        return a.detach() if q.detach_scale else a

    def clip_rows(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        a = self._alpha(q, group).unsqueeze(1).to(rows.dtype)
        return torch.clamp(rows, -a, a)

    def scales(self, q: QuantizerBase, rows: Tensor, group: Sequence[QuantizerBase] = ()) -> Tensor:
        return (self._alpha(q, group) / q.qp).detach()
