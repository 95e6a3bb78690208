"""Quantize all of a model's weights in a few batched passes instead of one pass per weight.

A QAT step fake-quantizes every weight once in the forward and once in the backward. Each
weight's quantizer is some fifteen small tensor ops; on the demo Conformer (21 weights of
1.5k-37k values) their fixed per-op and Python cost, not the arithmetic, is most of QAT's cost
over float training. Quantizers that are configured alike (technique, bits, options, mode) are
therefore run as one: their ``(G_i, n)`` row views are concatenated, quantized in one pass, and
split back; rows shorter than the group's are zero-padded when that adds little
(:data:`PAD_BUDGET`) and the scale function computes the same from padded rows
(:attr:`~qbench.quant.parts.Scale.pads`). Every quantizer works row by row (a scale per row), so
each weight gets the values and gradients it would get alone: bit for bit for rows of the group's
length (but for topk-lp's norm, whose ``pow`` may differ in the last bit between vectorised and
scalar kernels), up to the order of float sums for padded rows; only the noise estimator's draws
come from one draw per pass instead of one per weight (same distribution, another order).

    with batched_quantization(model):
        loss = loss_fn(model(x))      # each quantized weight is read from its group's output
    loss.backward()

The group outputs are computed on entering the block, for one forward (and its backward): within
the block every read of a quantized weight returns that tensor (``nn.MultiheadAttention`` reads
``in_proj_weight`` more than once), as under ``torch.nn.utils.parametrize.cached()``, which the
block enters. Changing a weight in place inside the block is not seen until the next block.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrize import ParametrizationList

from .quantizers import WeightQuantizer
from .scales import rows_view

__all__ = ["batched_quantization", "forget_attachments"]


#: model -> (generation, its parametrized slots (module, tensor name, parametrization list)):
#: walking every module each step costs more than quantizing the smallest weights. Attaching or
#: removing quantizers through qbench.quant (quantize_, use_precision) calls forget_attachments();
#: a quantizer registered by hand after the list was built is left out of the batch (it then
#: quantizes its weight itself when read).
_SLOTS: weakref.WeakKeyDictionary[nn.Module, tuple[int, list[tuple[nn.Module, str, ParametrizationList]]]] = (
    weakref.WeakKeyDictionary()
)
_generation = 0


def forget_attachments() -> None:
    """Quantizers were attached or removed somewhere: find them again on the next batched step."""
    global _generation
    _generation += 1


def _attached(model: nn.Module) -> Iterator[tuple[nn.Module, str, WeightQuantizer, Tensor]]:
    """``(module, tensor name, quantizer, weight)`` for every weight whose only parametrization is
    an enabled quantizer."""
    cached = _SLOTS.get(model)
    if cached is None or cached[0] != _generation:
        slots = [
            (module, name, plist)
            for module in model.modules()
            if parametrize.is_parametrized(module)
            # parametrize sets module.parametrizations at run time: nn.Module's type does not declare it
            for name, plist in cast(Mapping[str, ParametrizationList], module.parametrizations).items()
            if plist.is_tensor
        ]
        cached = _SLOTS[model] = (_generation, slots)
    for module, name, plist in cached[1]:
        if len(plist) == 1 and isinstance(plist[0], WeightQuantizer) and plist[0].enabled:
            yield module, name, plist[0], plist.original


class _Member(NamedTuple):
    """One quantized weight in a batched pass."""

    module: nn.Module
    name: str
    quantizer: WeightQuantizer
    weight: Tensor
    rows: Tensor  # (G, width) view of weight

    @property
    def width(self) -> int:
        return self.rows.shape[1]


#: A weight whose rows are shorter than a group's joins it padded with zeros when the padding adds
#: at most this fraction of the group's values: each group costs some fifteen tensor ops and their
#: Python, about what 60k values of arithmetic cost on the CPU. The demo Conformer's 5 groups of
#: row lengths 96, 384, 288, 240 and 15 become 2 this way (~10 % more values).
PAD_BUDGET = 0.25


def _groups(members: list[_Member]) -> list[tuple[int, list[_Member]]]:
    """``(row length, members)`` of each pass of alike quantizers, by row length; a length's rows
    join a longer one's group, zero-padded, within :data:`PAD_BUDGET` (longest first, the shortest
    group that takes them) where the scale function allows it."""
    by_width: dict[int, list[_Member]] = {}
    for m in members:
        by_width.setdefault(m.width, []).append(m)
    placed: list[tuple[int, list[_Member], list[int]]] = []  # (width, members, [values])
    for width in sorted(by_width, reverse=True):
        rows = sum(m.rows.shape[0] for m in by_width[width])
        host = None
        if members[0].quantizer.scale_fn.pads:
            fits = [g for g in placed if (g[0] - width) * rows <= PAD_BUDGET * g[2][0]]
            host = min(fits, key=lambda g: g[0], default=None)
        if host is None:
            placed.append((width, list(by_width[width]), [width * rows]))
        else:
            host[1].extend(by_width[width])
            host[2][0] += host[0] * rows
    return [(width, group) for width, group, _ in placed]


def _group_key(q: WeightQuantizer, rows: Tensor) -> tuple:
    """Quantizers with equal keys compute rows of equal length identically, so they may share one
    pass (rows of other lengths: see _groups)."""
    return (rows.dtype, rows.device, rows.requires_grad, *q.batch_key())


@contextmanager
def batched_quantization(model: nn.Module, enabled: bool = True):
    """Within the block, the model's quantized weights are those computed on entry, in one pass
    per group of alike quantizers (see the module docstring). ``enabled=False`` (under
    ``torch.compile``, which fuses each quantizer itself): the weights are quantized one by one
    inside the forward, and only each quantizer's per-forward preparation is done here, outside
    the compiled graph (:meth:`WeightQuantizer.prepare`: e.g. mse-clip's due search, a branch on
    data)."""
    alike: dict[tuple, list[_Member]] = {}
    prepared: list[WeightQuantizer] = []
    try:
        for module, name, q, w in _attached(model):
            rows = rows_view(w, q.granularity)
            q.prepare(rows)
            prepared.append(q)
            if enabled:
                alike.setdefault(_group_key(q, rows), []).append(_Member(module, name, q, w, rows))
        if not enabled:  # a compiled forward reads the weights through the quantizers
            yield model
            return
        for alike_members in alike.values():
            for width, members in _groups(alike_members):
                parts = [m.rows if m.width == width else F.pad(m.rows, (0, width - m.width)) for m in members]
                rows = parts[0] if len(parts) == 1 else torch.cat(parts)
                out = members[0].quantizer.fake_quant_rows(rows, tuple(m.quantizer for m in members))
                pieces = (out,) if len(members) == 1 else out.split([m.rows.shape[0] for m in members])
                for m, piece in zip(members, pieces, strict=True):
                    if m.width != width:
                        piece = piece[:, : m.width]  # noqa: PLW2901 (the padding off; reshape copies)
                    wq = piece if piece.shape == m.weight.shape else piece.reshape(m.weight.shape)
                    m.quantizer.set_batched(wq, m.weight)
        with parametrize.cached():
            yield model
    finally:
        for q in prepared:
            q.end_step()
