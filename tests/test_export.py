"""Packed export: reloading gives exactly the fake-quant evaluation; the file has the counted size."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

from qbench.quant import (
    QuantSpec,
    export_packed,
    load_packed,
    model_size_bits,
    packed_size_bytes,
    quantize_,
    use_precision,
)
from qbench.quant.export import pack_bits, unpack_bits


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3)
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.ffn = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):  # (B, 4, T)
        h = self.conv(x).transpose(1, 2)
        h = self.attn(h, h, h, need_weights=False)[0]
        return self.norm(self.ffn(h))


def _data_bytes(path) -> int:
    """File size minus the safetensors header (8-byte length + JSON)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return packed_size_bytes(path) - 8 - n


def test_int4_packing_roundtrip_and_nibble_order():
    q = torch.tensor([-7, 7, 0, -1, 3], dtype=torch.int8)
    packed = pack_bits(q, 4)
    assert packed.dtype == torch.uint8 and packed.tolist() == [0x79, 0xF0, 0x03]  # low nibble first
    assert torch.equal(unpack_bits(packed, 5, 4), q)


@pytest.mark.parametrize("bits", range(2, 9))
def test_dense_packing_roundtrips_every_width_in_ceil_bits_over_8_bytes(bits):
    torch.manual_seed(bits)
    for n in (1, 7, 8, 37, 1000):
        r = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n,), dtype=torch.int8)
        packed = pack_bits(r, bits)
        assert packed.numel() == (n * bits + 7) // 8
        assert torch.equal(unpack_bits(packed, n, bits), r)
    # bit order: least significant first, element i at bits b*i..b*i+b-1 of the stream
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.int8), bits)[0] == 1
    assert torch.equal(
        pack_bits(torch.tensor([-1, 5], dtype=torch.int8), 8), torch.tensor([255, 5], dtype=torch.uint8)
    )
    three = pack_bits(torch.tensor([3, -4, 1], dtype=torch.int8), 3)  # 011, 100, 001 -> 0b001100011
    assert three.tolist() == [0b01100011, 0b0]


@pytest.mark.parametrize("technique", ["ptq", "ste", "lsq", "pact", "clip", "rand"])
@pytest.mark.parametrize("precision", ["w4", "w8"])
def test_reload_equals_fake_quant_eval(tmp_path, technique, precision):
    torch.manual_seed(0)
    spec = QuantSpec(technique, 4)
    model = Tiny()
    quantize_(model, spec)
    model.eval()
    x = torch.randn(2, 4, 9)
    with torch.no_grad(), use_precision(model, precision, spec):
        expected = model(x)
    path = tmp_path / "m.safetensors"
    meta = export_packed(model, precision, spec, path)
    torch.manual_seed(1)
    plain = Tiny().eval()
    assert load_packed(plain, path) == meta
    with torch.no_grad():
        assert torch.equal(plain(x), expected)
    bits = 4 if precision == "w4" else 8
    assert {t[2] for t in meta["quantized"]} == {bits}
    assert {t[0] for t in meta["quantized"]} == {
        "conv.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "ffn.weight",
    }
    assert json.loads(json.dumps(meta)) == meta
    # data = exactly the counted bits (all quantized sizes are even); the rest is the header
    assert _data_bytes(path) * 8 == model_size_bits(model, precision, spec)["total_bits"]


def test_sizes_w4_smaller_than_w8_smaller_than_float(tmp_path):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    spec = QuantSpec("ptq", 4)
    sizes = {}
    for p in ("w4", "w8", "float"):
        export_packed(model, p, spec, tmp_path / f"{p}.safetensors")
        sizes[p] = packed_size_bytes(tmp_path / f"{p}.safetensors")
        counted = model_size_bits(model, p, spec)["total_bits"] // 8
        assert counted <= sizes[p] <= counted + 2048  # header overhead only
    assert sizes["w4"] < sizes["w8"] < sizes["float"]
    plain = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    load_packed(plain, tmp_path / "float.safetensors")
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_tied_weights_stored_once_and_missing_keys_raise(tmp_path):
    emb = nn.Embedding(10, 8)
    out = nn.Linear(8, 10, bias=False)
    out.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "out": out})
    spec = QuantSpec("ptq", 4)
    meta = export_packed(model, "w4", spec, tmp_path / "t.safetensors")
    assert [t[0] for t in meta["quantized"]] == ["emb.weight"]
    assert meta["aliases"] == {"out.weight": "emb.weight"}
    emb2, out2 = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
    load_packed(nn.ModuleDict({"emb": emb2, "out": out2}), tmp_path / "t.safetensors")
    assert torch.equal(emb2.weight, out2.weight)
    with pytest.raises(KeyError):
        load_packed(nn.ModuleDict({"emb": emb2, "other": nn.Linear(2, 2)}), tmp_path / "t.safetensors")
