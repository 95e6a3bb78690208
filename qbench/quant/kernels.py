"""Evaluation on real integer kernels: inside `use_precision`, every plain ``nn.Linear`` whose
weight is quantized to 8 or 4 bits per channel runs through torch's weight-only integer matmul on
the CPU (``_weight_int8pack_mm``; ``_weight_int4pack_mm_for_cpu``) with the integers and scales
the packed export stores; every other quantized weight (convolutions, embeddings, attention's
fused projections, other widths, and for now every weight of a model on a GPU) stays the stored
integers times their scales, dequantized once per evaluation (``use_precision(cache=True)``).
So do the Linear layers of ``nn.TransformerEncoderLayer``, whose forward reads their weights.

The module swap follows torchao's ``quantize_``: the Linear is replaced in its parent by a module
holding the packed weight, and put back on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .apply import find_quantizer

__all__ = ["Int4WeightLinear", "Int8WeightLinear", "KernelUse", "integer_kernels"]

INT4_GROUP_SIZES = (256, 128, 64, 32)  # what torch's int4 kernels accept, largest first


class Int8WeightLinear(nn.Module):
    """y = x @ (q * s)^T + b through ``torch.ops.aten._weight_int8pack_mm`` (q int8 [out, in])."""

    def __init__(self, q: Tensor, scales: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features = q.shape[0]
        self.register_buffer("q", q.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.float().contiguous())
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.aten._weight_int8pack_mm(flat, self.q, self.scales.to(x.dtype))
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int4WeightLinear(nn.Module):
    """y = x @ (q * s)^T + b through torch's int4 weight-only kernel: the signed 4-bit integers
    shifted to unsigned (q + 8, zero point 0), the per-channel scale repeated over groups of
    `group_size` input features (the kernel's granularity)."""

    def __init__(self, q: Tensor, scales: Tensor, bias: Tensor | None, group_size: int) -> None:
        super().__init__()
        n, k = q.shape
        self.out_features, self.group_size = n, group_size
        unsigned = (q.to(torch.int32) + 8).contiguous()  # the kernel reads (u - 8) * s + zero
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned, 1)
        sz = torch.zeros(k // group_size, n, 2)
        sz[:, :, 0] = scales.float().unsqueeze(0)  # zero point 0: symmetric
        self.register_buffer("packed", packed)
        self.register_buffer("scale_and_zero", sz)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat, self.packed, self.group_size, self.scale_and_zero
        )
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


@dataclass
class KernelUse:
    """How many Linear layers each path took inside :func:`integer_kernels`."""

    int8: list[str] = field(default_factory=list)
    int4: list[str] = field(default_factory=list)
    dequantized: list[str] = field(default_factory=list)  # quantized Linears no kernel takes

    def summary(self) -> str:
        return f"int8 {len(self.int8)}, int4 {len(self.int4)}, dequantized {len(self.dequantized)}"


def _group_size(in_features: int) -> int | None:
    return next((g for g in INT4_GROUP_SIZES if in_features % g == 0), None)


@contextmanager
def integer_kernels(model: nn.Module) -> Iterator[KernelUse]:
    """Swap the model's plain Linear layers quantized at 8 or 4 bits per channel for the integer
    kernel modules (use inside ``use_precision``, which sets each quantizer's bits and scales);
    everything is put back on exit."""
    use = KernelUse()
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    # nn.TransformerEncoderLayer reads its Linear layers' weights for its fused fast path: kept
    read_as_weights = {
        id(child)
        for m in model.modules()
        if isinstance(m, nn.TransformerEncoderLayer)
        for child in m.children()
    }
    try:
        for name, module in list(model.named_modules()):
            # MHA reads its out_proj (a Linear subclass) as a weight, never calls it: left alone
            if not isinstance(module, nn.Linear) or isinstance(module, NonDynamicallyQuantizableLinear):
                continue
            q = find_quantizer(module, "weight")
            if q is None or not q.enabled:
                continue
            if id(module) in read_as_weights:
                use.dequantized.append(name)
                continue
            weight = module.parametrizations["weight"].original  # type: ignore[index,union-attr]
            group = _group_size(module.in_features)
            # torch's CPU int4 kernel: in_features in groups of 32-256, out_features in 16s
            kernel_ok = q.bits == 8 or (q.bits == 4 and group is not None and module.out_features % 16 == 0)
            if q.granularity != "per-channel" or not kernel_ok or weight.is_cuda:
                use.dequantized.append(name)
                continue
            ints, scales = q.quantize_int(weight)
            kernel: nn.Module
            if q.bits == 8:
                kernel = Int8WeightLinear(ints, scales, module.bias)
                use.int8.append(name)
            else:
                assert group is not None
                kernel = Int4WeightLinear(ints, scales, module.bias, group)
                use.int4.append(name)
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, kernel)
            swapped.append((parent, attr, module))
        yield use
    finally:
        for parent, attr, module in reversed(swapped):
            setattr(parent, attr, module)
