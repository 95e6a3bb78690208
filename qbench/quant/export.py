"""Packed export of a model at a precision: the artifact whose size ``model_size_bits`` counts.

File layout (safetensors, format ``qbench-packed-v3``).  Tensors of one kind are concatenated
into one blob each, in the order the metadata lists them, so the header stays small (a
safetensors entry per tensor costs ~110 bytes of JSON: 14 kB for the demo Conformer):

* ``"q<b>"``    uint8, one blob per bit width ``b`` in 2..8: the integers in ``[-Qp, Qp]`` of every
                weight quantized to ``b`` bits as ``b``-bit two's complement, packed densely, least
                significant bit first (element ``i`` occupies bits ``b*i .. b*i + b - 1`` of the
                weight's bit stream, bit ``j`` of the stream being bit ``j % 8`` of byte
                ``j // 8``: for ``b = 4`` the low nibble holds the even element, for ``b = 8`` a
                byte is the int8); each weight starts on a byte (its last byte zero-padded);
* ``"scales"``  ``float_dtype`` (bfloat16 by default): every quantized weight's ``G`` scales,
                one per quantization row (see :mod:`.scales`);
* ``"floats"``  ``float_dtype``: every parameter kept float and every floating buffer
                (float32 for the ``float`` precision);
* ``"<name>"``  any non-floating buffer (e.g. BatchNorm's ``num_batches_tracked``), as it is.

Metadata ``"qbench"``: JSON ``{"format", "precision", "bit_order", "float_dtype",
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
from safetensors.torch import save, save_file
from torch import Tensor, nn

from .apply import find_quantizer, original_name, packed_weight_bytes, use_precision, weight_slots
from .precision import PrecisionMap, parse_precision
from .quantizers import QuantSpec
from .techniques import FLOAT_DTYPES

__all__ = [
    "FORMAT",
    "export_packed",
    "load_packed",
    "pack_bits",
    "packed_bytes",
    "packed_size_bytes",
    "read_packed_weights",
    "unpack_bits",
]

FORMAT = "qbench-packed-v3"
BIT_ORDER = "lsb-first"  # element i in bits b*i .. b*i+b-1 of the stream; stream bit j = bit j%8 of byte j//8


def pack_bits(q: Tensor, bits: int) -> Tensor:
    """Integers in ``[-2^(b-1), 2^(b-1) - 1]`` (any int dtype/shape) -> uint8
    ``(ceil(numel * bits / 8),)``: ``bits``-bit two's complement, least significant bit first.
    Written here because torch has no sub-byte packing but int4's nibbles."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2..8, not {bits}")
    flat = q.reshape(-1).to(torch.int16).bitwise_and((1 << bits) - 1)
    stream = ((flat.unsqueeze(1) >> torch.arange(bits, dtype=torch.int16)) & 1).reshape(-1)
    pad = -stream.numel() % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = torch.tensor([1 << j for j in range(8)], dtype=torch.int16)
    return (stream.view(-1, 8) * weights).sum(1).to(torch.uint8)


def unpack_bits(packed: Tensor, numel: int, bits: int) -> Tensor:
    """Inverse of :func:`pack_bits`: int8 ``(numel,)``, sign-extended."""
    stream = ((packed.to(torch.int16).unsqueeze(1) >> torch.arange(8, dtype=torch.int16)) & 1).reshape(-1)
    values = stream[: numel * bits].view(numel, bits)
    v = (values * torch.tensor([1 << j for j in range(bits)], dtype=torch.int16)).sum(1)
    return (v - (1 << bits) * (v >= (1 << (bits - 1)))).to(torch.int8)


def _is_internal(name: str) -> bool:
    return "parametrizations" in name.split(".")


def _packed_tensors(
    model: nn.Module, precision: PrecisionMap | str, spec: QuantSpec
) -> tuple[dict[str, Tensor], dict]:
    """The tensors and metadata of the packed file of ``model`` at ``precision``."""
    pmap = parse_precision(precision)
    fdtype = torch.float32 if pmap.is_float else FLOAT_DTYPES[spec.float_dtype]
    ints_by_bits: dict[int, list[Tensor]] = {}
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
            ints_by_bits.setdefault(q.bits, []).append(pack_bits(ints.cpu(), q.bits))
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
    for bits, parts in sorted(ints_by_bits.items()):
        tensors[f"q{bits}"] = torch.cat(parts)
    if scales:
        tensors["scales"] = torch.cat([t.cpu() for t in scales]).to(fdtype)
    if floats:
        tensors["floats"] = torch.cat([t.cpu() for t in floats])
    meta = dict(
        format=FORMAT,
        precision=pmap.name,
        bit_order=BIT_ORDER,
        float_dtype=str(fdtype).removeprefix("torch."),
        quantized=quantized,
        floats=kept,
        aliases=aliases,
    )
    return {k: v.cpu().contiguous() for k, v in tensors.items()}, meta


def export_packed(
    model: nn.Module,
    precision: PrecisionMap | str,
    spec: QuantSpec,
    path: str | os.PathLike,
) -> dict:
    """Write ``model`` evaluated at ``precision`` (the weights ``use_precision`` would
    quantize, with the same scales and integers, and the float-kept tensors as it rounds them)
    as a packed safetensors file.  Returns the metadata written."""
    tensors, meta = _packed_tensors(model, precision, spec)
    save_file(tensors, str(path), metadata={"qbench": json.dumps(meta, separators=(",", ":"))})
    return meta


def packed_bytes(model: nn.Module, precision: PrecisionMap | str, spec: QuantSpec) -> int:
    """The size in bytes of the file :func:`export_packed` writes, header included (built in
    memory, not written): the leaderboard's packed size."""
    tensors, meta = _packed_tensors(model, precision, spec)
    return len(save(tensors, metadata={"qbench": json.dumps(meta, separators=(",", ":"))}))


def load_packed(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a packed file into a plain float ``model`` (dequantized weights ``q * s``).
    Every parameter and buffer must be in the file (strict).  Returns the metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["qbench"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        keys = set(f.keys())
        blob_keys = {"scales", "floats", *(f"q{b}" for b in range(2, 9))}
        blobs = {k: f.get_tensor(k) for k in keys & blob_keys}
        values: dict[str, Tensor] = {k: f.get_tensor(k) for k in keys - blob_keys}
    at = dict.fromkeys(blobs, 0)

    def take(key: str, n: int) -> Tensor:
        t = blobs[key][at[key] : at[key] + n]
        at[key] += n
        return t

    for name, shape, bits, _granularity, n_scales in meta["quantized"]:
        numel = math.prod(shape)
        ints = unpack_bits(take(f"q{bits}", packed_weight_bytes(numel, bits)), numel, bits)
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


def read_packed_weights(path: str | os.PathLike) -> list[tuple[str, int, Tensor, Tensor]]:
    """(name, bits, integers int8 in the weight's shape, fp32 scales (G,)) of every quantized
    weight of a packed file, in the file's order."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["qbench"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        blobs = {k: f.get_tensor(k) for k in f.keys() if k == "scales" or k in {f"q{b}" for b in range(2, 9)}}
    at = dict.fromkeys(blobs, 0)
    out = []
    for name, shape, bits, _granularity, n_scales in meta["quantized"]:
        numel, key = math.prod(shape), f"q{bits}"
        n = packed_weight_bytes(numel, bits)
        ints = unpack_bits(blobs[key][at[key] : at[key] + n], numel, bits).view(shape)
        at[key] += n
        scales = blobs["scales"][at["scales"] : at["scales"] + n_scales].float()
        at["scales"] += n_scales
        out.append((name, bits, ints, scales))
    return out


def packed_size_bytes(path: str | os.PathLike) -> int:
    """Size of the packed file on disk (tensor data + the safetensors JSON header)."""
    return Path(path).stat().st_size
