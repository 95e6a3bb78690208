"""Packed export of a model at a precision: the artifact whose size ``model_size_bits`` counts.

File layout (safetensors; tensor names are *original* parameter names):

* a quantized weight ``W`` of ``b`` bits, shape ``S``, ``G`` scales:
  ``"<name>:q"``      the integers ``q`` in ``[-Qp, Qp]``, row-major over ``S``:
                      ``b > 4``  int8, one per byte;
                      ``b <= 4`` uint8, two per byte (2- and 3-bit weights use 4-bit nibbles
                      too), two's-complement nibbles, element ``2i`` in the **low** nibble
                      (bits 0-3) and element ``2i + 1`` in the **high** nibble (bits 4-7) of
                      byte ``i``; an odd count is padded with a zero nibble;
  ``"<name>:scale"``  float32 ``(G,)``, one per quantization row (see :mod:`.scales`);
  dequantized ``W = (q.view(G, -1) * scale[:, None]).view(S)`` in float32, which is
  bit-for-bit the fake-quant forward of ``use_precision`` (same integers, same product);
* every other parameter and buffer: ``"<name>"`` in float32;
* metadata ``"qbench"``: JSON ``{"format", "precision", "nibble_order", "tensors":
  {name: {"bits", "shape", "granularity", "n_scales"}}, "aliases": {name: stored name}}``
  (tied weights are stored once; ``aliases`` maps the other names to it).

Learned LSQ/PACT scales are folded into ``:scale`` (at the exported bit width) and not
stored separately.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .apply import _find_quantizer, _weight_slots, original_name, use_precision
from .precision import PrecisionMap, parse_precision
from .quantizers import QuantSpec

__all__ = ["export_packed", "load_packed", "packed_size_bytes", "pack_int4", "unpack_int4", "FORMAT"]

FORMAT = "qbench-packed-v1"
NIBBLE_ORDER = "low-first"  # element 2i in bits 0-3, element 2i+1 in bits 4-7


def pack_int4(q: Tensor) -> Tensor:
    """Integers in [-8, 7] (any int dtype/shape) -> uint8 ``(ceil(numel / 2),)``, low nibble first."""
    flat = q.reshape(-1).to(torch.int16).bitwise_and(0xF).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_int4`: int8 ``(numel,)`` with the nibbles sign-extended."""
    nib = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)[:numel].to(torch.int16)
    return (nib - 16 * (nib >= 8)).to(torch.int8)


def _is_internal(name: str) -> bool:
    return "parametrizations" in name.split(".")


def export_packed(
    model: nn.Module,
    precision: PrecisionMap | str,
    spec: QuantSpec,
    path: str | os.PathLike,
) -> dict:
    """Write ``model`` evaluated at ``precision`` (the weights ``use_precision`` would
    quantize, with the same scales and integers) as a packed safetensors file.
    Returns the metadata written."""
    pmap = parse_precision(precision)
    tensors: dict[str, Tensor] = {}
    info: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    stored: dict[int, str] = {}  # id(tensor) -> name it is stored under (tied weights)
    with torch.no_grad(), use_precision(model, pmap, spec):
        for name, module, tname, tensor in _weight_slots(model):
            if id(tensor) in stored:
                aliases[name] = stored[id(tensor)]
                continue
            stored[id(tensor)] = name
            q = _find_quantizer(module, tname)
            if q is None or not q.enabled:
                tensors[name] = tensor.detach().float().contiguous()
                continue
            ints, scale = q.quantize_int(tensor)
            bits = q.bits
            tensors[f"{name}:q"] = pack_int4(ints) if bits <= 4 else ints.reshape(-1).contiguous()
            tensors[f"{name}:scale"] = scale.contiguous()
            info[name] = dict(
                bits=bits, shape=list(tensor.shape), granularity=q.granularity, n_scales=scale.numel()
            )
        for name, buf in model.named_buffers():
            if not _is_internal(name) and buf is not None:
                tensors[original_name(name)] = buf.detach().float().contiguous()
    meta = dict(format=FORMAT, precision=pmap.name, nibble_order=NIBBLE_ORDER, tensors=info, aliases=aliases)
    save_file({k: v.cpu() for k, v in tensors.items()}, str(path), metadata={"qbench": json.dumps(meta)})
    return meta


def load_packed(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a packed file into a plain float ``model`` (dequantized weights ``q * s``).
    Every parameter and buffer must be in the file (strict).  Returns the metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["qbench"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        values: dict[str, Tensor] = {}
        for name in f.keys():
            if ":" not in name:
                values[name] = f.get_tensor(name)
        for name, t in meta["tensors"].items():
            numel = torch.Size(t["shape"]).numel()
            raw = f.get_tensor(f"{name}:q")
            ints = unpack_int4(raw, numel) if t["bits"] <= 4 else raw
            scale = f.get_tensor(f"{name}:scale")
            values[name] = (ints.view(scale.numel(), -1).float() * scale.unsqueeze(1)).view(t["shape"])
    for alias, target in meta["aliases"].items():
        values[alias] = values[target]
    state = model.state_dict()
    missing = [k for k in state if original_name(k) not in values]
    if missing:
        raise KeyError(f"{path}: no tensor for {missing} (load_packed expects a plain float model)")
    model.load_state_dict({k: values[original_name(k)].to(v.dtype) for k, v in state.items()})
    return meta


def packed_size_bytes(path: str | os.PathLike) -> int:
    """Size of the packed file on disk (tensor data + the safetensors JSON header)."""
    return Path(path).stat().st_size
