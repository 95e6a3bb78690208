"""Packed export of a model at a precision: the artifact whose size ``model_size_bits`` counts.

File layout (safetensors, format ``qbench-packed-v2``).  Tensors of one kind are concatenated
into one blob each, in the order the metadata lists them, so the header stays small (a
safetensors entry per tensor costs ~110 bytes of JSON: 14 kB for the demo Conformer):

* ``"q4"``      uint8: the integers in ``[-Qp, Qp]`` of every weight quantized to ``b <= 4`` bits,
                two's-complement nibbles, two per byte, element ``2i`` in the **low** nibble
                (bits 0-3) and ``2i + 1`` in the **high** nibble of byte ``i``; each weight
                starts on a byte (an odd count is padded with a zero nibble);
* ``"q8"``      int8: the integers of every weight quantized to ``4 < b <= 8`` bits;
* ``"scales"``  ``float_dtype`` (bfloat16 by default): every quantized weight's ``G`` scales,
                one per quantization row (see :mod:`.scales`);
* ``"floats"``  ``float_dtype``: every parameter kept float and every floating buffer
                (float32 for the ``float`` precision);
* ``"<name>"``  any non-floating buffer (e.g. BatchNorm's ``num_batches_tracked``), as it is.

Metadata ``"qbench"``: JSON ``{"format", "precision", "nibble_order", "float_dtype",
"quantized": [[name, shape, bits, granularity, n_scales], ...], "floats": [[name, shape], ...],
"aliases": {name: stored name}}`` (tied weights are stored once).  A weight dequantizes to
``W = (q.view(G, -1).float() * scale.float()[:, None]).view(shape)``, bit-for-bit the fake-quant
forward of ``use_precision`` (same integers, same bfloat16-representable scales, same product),
and the float-kept tensors are exactly the values ``use_precision`` evaluates with.
Learned LSQ/PACT scales are folded into the scales (at the exported bit width).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .apply import find_quantizer, original_name, use_precision, weight_slots
from .precision import PrecisionMap, parse_precision
from .quantizers import QuantSpec
from .techniques import FLOAT_DTYPES

__all__ = ["export_packed", "load_packed", "packed_size_bytes", "pack_int4", "unpack_int4", "FORMAT"]

FORMAT = "qbench-packed-v2"
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
    quantize, with the same scales and integers, and the float-kept tensors as it rounds them)
    as a packed safetensors file.  Returns the metadata written."""
    pmap = parse_precision(precision)
    fdtype = torch.float32 if pmap.is_float else FLOAT_DTYPES[spec.float_dtype]
    q4: list[Tensor] = []
    q8: list[Tensor] = []
    scales: list[Tensor] = []
    floats: list[Tensor] = []
    others: dict[str, Tensor] = {}
    quantized: list[list] = []
    kept: list[list] = []
    aliases: dict[str, str] = {}
    stored: dict[int, str] = {}  # id(tensor) -> name it is stored under (tied weights)
    with torch.no_grad(), use_precision(model, pmap, spec):
        for name, module, tname, tensor in weight_slots(model):
            if id(tensor) in stored:
                aliases[name] = stored[id(tensor)]
                continue
            stored[id(tensor)] = name
            q = find_quantizer(module, tname)
            if q is None or not q.enabled:
                floats.append(tensor.detach().reshape(-1).to(fdtype))
                kept.append([name, list(tensor.shape)])
                continue
            ints, scale = q.quantize_int(tensor)
            (q4 if q.bits <= 4 else q8).append(pack_int4(ints) if q.bits <= 4 else ints.reshape(-1))
            scales.append(scale.to(fdtype))
            quantized.append([name, list(tensor.shape), q.bits, q.granularity, scale.numel()])
        for name, buf in model.named_buffers():
            if _is_internal(name) or buf is None:
                continue
            name = original_name(name)
            if buf.is_floating_point():
                floats.append(buf.detach().reshape(-1).to(fdtype))
                kept.append([name, list(buf.shape)])
            else:
                others[name] = buf.detach().contiguous()
    tensors = dict(others)
    for key, parts, dtype in (("q4", q4, torch.uint8), ("q8", q8, torch.int8), ("scales", scales, fdtype)):
        if parts:
            tensors[key] = torch.cat([t.cpu() for t in parts]).to(dtype)
    if floats:
        tensors["floats"] = torch.cat([t.cpu() for t in floats])
    meta = dict(
        format=FORMAT,
        precision=pmap.name,
        nibble_order=NIBBLE_ORDER,
        float_dtype=str(fdtype).removeprefix("torch."),
        quantized=quantized,
        floats=kept,
        aliases=aliases,
    )
    save_file(
        {k: v.cpu().contiguous() for k, v in tensors.items()},
        str(path),
        metadata={"qbench": json.dumps(meta, separators=(",", ":"))},
    )
    return meta


def load_packed(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a packed file into a plain float ``model`` (dequantized weights ``q * s``).
    Every parameter and buffer must be in the file (strict).  Returns the metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["qbench"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        keys = set(f.keys())
        blobs = {k: f.get_tensor(k) for k in ("q4", "q8", "scales", "floats") if k in keys}
        values: dict[str, Tensor] = {k: f.get_tensor(k) for k in keys if k not in blobs}
    at = dict.fromkeys(blobs, 0)

    def take(key: str, n: int) -> Tensor:
        t = blobs[key][at[key] : at[key] + n]
        at[key] += n
        return t

    for name, shape, bits, _granularity, n_scales in meta["quantized"]:
        numel = math.prod(shape)
        ints = unpack_int4(take("q4", (numel + 1) // 2), numel) if bits <= 4 else take("q8", numel)
        scale = take("scales", n_scales).float()
        values[name] = (ints.view(n_scales, -1).float() * scale.unsqueeze(1)).view(shape)
    for name, shape in meta["floats"]:
        values[name] = take("floats", math.prod(shape)).float().view(shape)
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
