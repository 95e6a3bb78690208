"""Static training shapes (``train.pad_to_multiple``): batches of a fixed size whose time axes are
padded to a multiple of N, so that a compiled or CUDA-graph-captured step sees few shapes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["batches_of", "padded_length", "pad_to"]


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
