"""Quantize all of a model's weights in a few batched passes instead of one pass per weight.

A QAT step fake-quantizes every weight once in the forward and once in the backward. Each
weight's quantizer is some fifteen small tensor ops and two autograd nodes; on the demo
Conformer (21 weights of 1.5k-37k values) their fixed per-op and Python cost, not the
arithmetic, is most of QAT's cost over float training. Quantizers that are configured alike
(technique, bits, options, mode) are therefore run as one: their ``(G_i, n)`` row views are
concatenated, quantized in one pass, and split back; rows shorter than the group's are
zero-padded when that adds little (:data:`PAD_BUDGET`; the demo Conformer's five row lengths
make two passes). On the CPU the weights of a pass are kept in one buffer of its rows, each
weight a view of it, so the concatenation is not redone every step (see ``_stored_rows``). The
passes of alike quantizers go to :meth:`WeightQuantizer.fake_quant_passes` together. Every
quantizer works row by row (a scale per row), so each weight gets the values and gradients it
would get alone: bit for bit for rows of the group's length (but for topk-lp's norm, whose
``pow`` may differ in the last bit between vectorised and scalar kernels), up to the order of
float sums for padded rows; only the noise estimator's draws come from one draw per group
instead of one per weight (same distribution, another order).

    with batched_quantization(model):
        loss = loss_fn(model(x))      # each quantized weight is read from its group's output
    loss.backward()

The group outputs are computed on entering the block, for one forward (and its backward): within
the block every read of a quantized weight returns that tensor (``nn.MultiheadAttention`` reads
``in_proj_weight`` more than once), as under ``torch.nn.utils.parametrize.cached()``. They are
placed in parametrize's cache, so a read costs a dictionary lookup instead of two module calls (25
reads a forward of the demo Conformer; ~1 % of its step). Changing a weight in place inside the
block is not seen until the next block.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

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
            for name, plist in module.parametrizations.items()
            if plist.is_tensor
        ]
        cached = _SLOTS[model] = (_generation, slots)
    # ModuleList's and Module's own dicts read directly: their __getitem__ / __getattr__ cost a few
    # us a call, every step for every weight
    for module, name, plist in cached[1]:
        quantizers = plist._modules
        if len(quantizers) == 1:
            q = next(iter(quantizers.values()))
            if isinstance(q, WeightQuantizer) and q.enabled:
                original = plist._parameters.get("original")
                yield module, name, q, original if original is not None else plist.original


def _prefill_parametrize_cache(outputs: dict[tuple[int, str], Tensor]) -> None:
    """Put the quantized weights into ``torch.nn.utils.parametrize``'s cache (active in the block):
    a private dict keyed ``(id(module), tensor name)``; where a torch version lays it out otherwise,
    reads fall back to the quantizers' forward, which returns the same tensors."""
    cache = getattr(parametrize, "_cache", None)
    if isinstance(cache, dict) and getattr(parametrize, "_cache_enabled", 0):
        cache.update(outputs)


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
#: at most this fraction of the group's values: each group costs some thirty tensor ops and their
#: Python, about what 60k values of arithmetic cost on the CPU. The demo Conformer's 5 groups of
#: row lengths 96, 384, 288, 240 and 15 become 2 this way (~10 % more values).
PAD_BUDGET = 0.25


def _pads(m: _Member) -> bool:
    """Zero padding changes nothing a quantizer computes from its row: zeros are below its largest
    magnitude, add nothing to its error sums and get no gradient; LSQ's gradient factor
    ``1 / sqrt(n Qp)`` is then one per row (on the CPU; CUDA's fused kernel takes one number)."""
    return m.quantizer.scale_fn != "learned" or not m.rows.is_cuda


def _groups(alike: dict[tuple, list[_Member]]) -> list[tuple[int, list[_Member]]]:
    """``(row length, members)`` of each pass: alike quantizers, by row length; a length's rows join
    a longer one's group, zero-padded, within :data:`PAD_BUDGET` (longest first, the shortest
    group that takes them)."""
    passes: list[tuple[int, list[_Member]]] = []
    for members in alike.values():
        by_width: dict[int, list[_Member]] = {}
        for m in members:
            by_width.setdefault(m.width, []).append(m)
        placed: list[tuple[int, list[_Member], list[int]]] = []  # (width, members, [values])
        for width in sorted(by_width, reverse=True):
            rows = sum(m.rows.shape[0] for m in by_width[width])
            host = None
            if _pads(members[0]):
                fits = [g for g in placed if (g[0] - width) * rows <= PAD_BUDGET * g[2][0]]
                host = min(fits, key=lambda g: g[0], default=None)
            if host is None:
                placed.append((width, list(by_width[width]), [width * rows]))
            else:
                host[1].extend(by_width[width])
                host[2][0] += host[0] * rows
        passes.extend((width, group) for width, group, _ in placed)
    return passes


# ---- the weights of a pass stored in its rows ----------------------------------------------------
# Concatenating a pass's weights every step (and zero-padding the shorter rows), then splitting the
# gradient back, cost ~1.5 % of a demo step on the CPU. There the weights of a pass are stored in one
# (G, width) buffer, each weight a view of its rows (the Parameter objects stay: the optimizer, the
# state_dict and hooks see no change; padding stays 0), and the pass reads that buffer. Anything
# that gives a weight new storage (load_state_dict(assign=True), .to(), param.data = ...) is seen
# by the data pointer check and the weight is copied into a new buffer on the next step.

_Layout = tuple[tuple[torch.Size, torch.Size], ...]  # per member: (its rows' shape, its shape)


class _Storage(NamedTuple):
    buffer: Tensor  # (G, width)
    layout: _Layout
    pointers: tuple[int, ...]  # each weight's data_ptr() when stored


#: model -> {(width, ids of the pass's weights): its storage}, the passes of the last step
_STORAGE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Storage]] = weakref.WeakKeyDictionary()


def _storable(m: _Member, width: int) -> bool:
    """A weight can be a view of a pass's rows if its rows fill them, or if its rows are its
    channels (per-channel: a view with a row stride of ``width``)."""
    return m.width == width or m.quantizer.granularity == "per-channel"


def _store(members: list[_Member], width: int) -> _Storage:
    """Copy the members' weights into one zero-padded (G, width) buffer and make each a view of it."""
    first = members[0].weight
    buffer = torch.zeros(sum(m.rows.shape[0] for m in members), width, dtype=first.dtype, device=first.device)
    start = 0
    with torch.no_grad():
        for m in members:
            n = m.rows.shape[0]
            buffer[start : start + n, : m.width].copy_(m.rows)
            view = buffer[start : start + n]
            if m.width != width:  # per-channel rows of a weight (C, ...): C rows of `width` apart
                shape = m.weight.shape
                strides = [width] + [math.prod(shape[i + 1 :]) for i in range(1, len(shape))]
                view = buffer.as_strided(shape, strides, buffer.storage_offset() + start * width)
            m.weight.data = view.view(m.weight.shape) if m.width == width else view
            start += n
    layout = tuple((m.rows.shape, m.weight.shape) for m in members)
    return _Storage(buffer, layout, tuple(m.weight.data_ptr() for m in members))


def _stored_rows(
    model: nn.Module, passes: list[tuple[int, list[_Member]]], used: dict
) -> list[Tensor | None]:
    """Each pass's rows read from its storage (made or renewed as needed; recorded in ``used``), or
    None for a pass that is not stored: one weight whose rows are all of it, a weight of another
    granularity padded, or weights off the CPU (measured there; CUDA's fused optimizers and DDP
    buckets would rather keep dense parameters)."""
    stored = _STORAGE.get(model, {})
    out: list[Tensor | None] = []
    for width, members in passes:
        if (
            (len(members) == 1 and members[0].width == width)
            or members[0].weight.device.type != "cpu"
            or not all(_storable(m, width) for m in members)
        ):
            out.append(None)
            continue
        key = (width, tuple(id(m.weight) for m in members))
        storage = stored.get(key)
        if storage is None or storage.pointers != tuple(m.weight.data_ptr() for m in members):
            storage = _store(members, width)
        used[key] = storage
        out.append(_PassRows.apply(storage.buffer, storage.layout, *(m.weight for m in members)))
    return out


class _PassRows(torch.autograd.Function):
    """A stored pass's buffer as the rows to quantize; its gradient goes to the weights (the padding
    cut off), as the backward of concatenating their rows would."""

    @staticmethod
    def forward(ctx, buffer: Tensor, layout: _Layout, *weights: Tensor) -> Tensor:
        ctx.layout, ctx.width = layout, buffer.shape[1]
        return buffer.view_as(buffer)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pieces = grad.split([rows[0] for rows, _ in ctx.layout])
        grads = [
            p.view(shape) if rows[1] == ctx.width else p[:, : rows[1]].reshape(shape)
            for p, (rows, shape) in zip(pieces, ctx.layout, strict=True)
        ]
        return None, None, *grads


def _group_key(q: WeightQuantizer, rows: Tensor) -> tuple:
    """Quantizers with equal keys compute rows of equal length identically, so they may share one
    pass (rows of other lengths: see _groups)."""
    # attributes read from the instance dict: an attribute a quantizer lacks (train_bits of a
    # functional scale) would cost a raised AttributeError inside nn.Module.__getattr__ (~3 us)
    d = q.__dict__
    learned = None if d["_param_name"] is None else q._parameters[d["_param_name"]]
    return (
        rows.dtype,
        rows.device,
        rows.requires_grad,
        learned is not None and learned.requires_grad,
        d["training"],
        d["hard"],
        d["bits"],
        d["scale_fn"],
        d["estimator"],
        d["k"],
        d["p"],
        d["c"],
        d["noise"],
        d["detach_scale"],
        d["scale_dtype"],
        d.get("train_bits"),
        d.get("clip_every"),
    )


@contextmanager
def batched_quantization(model: nn.Module, enabled: bool = True):
    """Within the block, the model's quantized weights are those computed on entry, in one pass
    per group of alike quantizers (see the module docstring). ``enabled=False`` (under
    ``torch.compile``, which fuses each quantizer itself): the weights are quantized one by one
    inside the forward, and only each quantizer's per-forward preparation is done here, outside
    the compiled graph (:meth:`WeightQuantizer.prepare`: mse-clip's due search, a branch on data)."""
    alike: dict[tuple, list[_Member]] = {}
    prepared: list[WeightQuantizer] = []
    try:
        for module, name, q, w in _attached(model):
            rows = rows_view(w, q.granularity)
            q.prepare(rows)
            prepared.append(q)
            if enabled:
                alike.setdefault(_group_key(q, rows), []).append(_Member(module, name, q, w, rows))
        outputs: dict[tuple[int, str], Tensor] = {}
        used: dict[tuple, _Storage] = {}
        for key, alike_members in alike.items():
            passes = _groups({key: alike_members})  # (row length, members) of each pass
            groups, inputs = [], []
            for (width, members), rows in zip(passes, _stored_rows(model, passes, used), strict=True):
                groups.append(tuple(m.quantizer for m in members))
                if rows is None:
                    parts = [
                        m.rows if m.width == width else F.pad(m.rows, (0, width - m.width)) for m in members
                    ]
                    rows = parts[0] if len(parts) == 1 else torch.cat(parts)  # noqa: PLW2901
                inputs.append(rows)
            # all passes of alike quantizers in one call: a fused node does their per-row steps once
            for (width, members), out in zip(
                passes,
                groups[0][0].fake_quant_passes(
                    inputs, groups, tuple(len(members) > 1 for _, members in passes)
                ),
                strict=True,
            ):
                pieces = (out,) if len(members) == 1 else out.split([m.rows.shape[0] for m in members])
                for m, piece in zip(members, pieces, strict=True):
                    if m.width != width:
                        piece = piece[:, : m.width]  # noqa: PLW2901 (the padding off; reshape copies)
                    wq = piece if piece.shape == m.weight.shape else piece.reshape(m.weight.shape)
                    m.quantizer.set_batched(wq, m.weight)
                    outputs[(id(m.module), m.name)] = wq
        if not enabled:  # a compiled forward reads the weights through the quantizers
            yield model
            return
        _STORAGE[model] = used  # the storages of passes that no longer exist are let go
        with parametrize.cached():
            _prefill_parametrize_cache(outputs)
            yield model
    finally:
        for q in prepared:
            q.end_step()
