"""Static training shapes (``train.pad_to_multiple``): batches of a fixed size whose time axes are
padded to a multiple of N, so that a compiled or CUDA-graph-captured step sees few shapes; and
variable-length rows held on the device, batched there by index (:class:`PackedRows`)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import torch

from qbench.device import to_device

__all__ = ["PackedRows", "batches_of", "padded_length", "pad_to"]


def batches_of(order: Sequence[int], size: int, full: bool = False) -> list[list[int]]:
    """``order`` cut into batches of ``size``; ``full``: the last, short batch filled up with the
    first items of ``order`` (again from its start if it is shorter than a batch), so every batch
    holds ``size`` items."""
    batches = [list(order[i : i + size]) for i in range(0, len(order), size)]
    if full and batches and len(batches[-1]) < size:
        missing = size - len(batches[-1])
        batches[-1] += [order[i % len(order)] for i in range(missing)]
    return batches


def padded_length(n: int, multiple: int, limit: int | None = None) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (at least one multiple; ``multiple=0``: ``n``),
    but not past ``limit`` where ``n`` fits in it."""
    if not multiple:
        return n
    out = max(1, -(-n // multiple)) * multiple
    return out if limit is None or n > limit else min(out, limit)


def pad_to(t: torch.Tensor, length: int, dim: int = 1, value: float = 0.0) -> torch.Tensor:
    """``t`` padded with ``value`` at the end of ``dim`` to ``length``."""
    extra = length - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_full(shape, value)], dim=dim)


class PackedRows:
    """Rows of shapes (T_i, ...) copied once to ``device`` as one flat tensor, in their dtype; a
    batch of them is gathered there by index, zero-padded, with no host copy of the data: the same
    values as ``pad_sequence`` of the rows (padded further to ``length``)."""

    def __init__(self, rows: Sequence[torch.Tensor], device: torch.device):
        self.device = device
        self.lengths = [r.shape[0] for r in rows]  # on the host: a batch's length needs no sync
        self.flat = torch.cat(list(rows)).to(device)
        self.starts = torch.tensor([0, *accumulate(self.lengths)][:-1], device=device)
        self.sizes = torch.tensor(self.lengths, device=device)

    def gather(self, idx: Sequence[int], length: int | None = None) -> torch.Tensor:
        """Rows ``idx`` as one (len(idx), length, ...) tensor, zeros after each row's end;
        ``length`` at least the longest row's (default: it)."""
        longest = max(self.lengths[i] for i in idx)
        length = longest if length is None else length
        if length < longest:
            raise ValueError(f"length {length} is below the longest row's {longest}")
        i = to_device(torch.tensor(idx), self.device)
        t = torch.arange(length, device=self.device)
        inside = t < self.sizes[i, None]  # (B, T)
        rows = self.flat[torch.where(inside, self.starts[i, None] + t, 0)]
        return rows.masked_fill(~inside.view(*inside.shape, *[1] * (rows.dim() - 2)), 0)
