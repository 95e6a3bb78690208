"""Learned / searched scales: LSQ, PACT and MSE-clip (tiny tensors; CPU; a few seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qbench.quant import QuantSpec, model_size_bits, quantize_, quantizer_parameters, use_precision
from qbench.quant.quantizers import make_quantizer
from qbench.quant.scales import CLIP_GRID, mse_clip_scale


def _w(seed: int, shape=(5, 12)) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*shape)


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


# --------------------------------------------------------------------------- LSQ


@pytest.mark.parametrize("bits", [4, 8])
def test_lsq_matches_torch_learnable_fake_quant(bits):
    w0 = _w(0)
    qp = 2 ** (bits - 1) - 1
    q = make_quantizer(QuantSpec("lsq", bits, float_dtype="float32"), weight=w0).train()
    s0 = q.step.detach()
    torch.testing.assert_close(s0, 2 * w0.abs().mean(1) / math.sqrt(qp))  # LSQ init
    with torch.no_grad():
        q.step.mul_(0.5 if bits == 4 else 0.05)  # push some weights outside the range: both gradient branches
    g = torch.randn(5, 12)
    w = w0.clone().requires_grad_(True)
    out = q(w)
    (out * g).sum().backward()

    w_ref = w0.clone().requires_grad_(True)
    s_ref = q.step.detach().clone().requires_grad_(True)
    zp = torch.zeros(5)
    gf = 1.0 / math.sqrt(12 * qp)
    ref = torch._fake_quantize_learnable_per_channel_affine(w_ref, s_ref, zp, 0, -qp, qp, gf)
    (ref * g).sum().backward()
    assert (w0.abs() > qp * s_ref.detach()[:, None]).any()
    torch.testing.assert_close(out.detach(), ref.detach())
    torch.testing.assert_close(w.grad, w_ref.grad)
    torch.testing.assert_close(q.step.grad, s_ref.grad)


def test_lsq_lazy_init_on_first_forward():
    w = _w(1)
    q = make_quantizer(QuantSpec("lsq", 4))
    assert q.step.numel() == 0
    q(w)
    torch.testing.assert_close(q.step.detach(), 2 * w.abs().mean(1) / math.sqrt(7))


def test_lsq_eval_at_other_bits_keeps_clipping_range():
    torch.manual_seed(2)
    m = nn.Linear(12, 5, bias=False)
    spec = QuantSpec("lsq", 4, float_dtype="float32")  # fp32 scales: the formula exactly
    quantize_(m, spec)
    q = m.parametrizations.weight[0]
    w = m.parametrizations.weight.original.detach()
    s8 = q.step.detach() * 7 / 127
    with use_precision(m, "w8", spec):
        out = m.weight.detach()
    x = w * s8.reciprocal()[:, None]
    torch.testing.assert_close(out, torch.round(x).clamp(-127, 127) * s8[:, None])
    assert q.bits == 4  # restored
    with use_precision(m, "w4", spec):
        w4 = m.weight.detach()
    torch.testing.assert_close(
        w4, torch.round(w / q.step.detach()[:, None]).clamp(-7, 7) * q.step.detach()[:, None]
    )


# --------------------------------------------------------------------------- PACT


def test_pact_matches_autograd_of_direct_formula():
    w0 = _w(3)
    q = make_quantizer(QuantSpec("pact", 4, float_dtype="float32"), weight=w0).train()
    torch.testing.assert_close(q.alpha.detach(), w0.abs().amax(1))
    with torch.no_grad():
        q.alpha.mul_(0.7)  # some weights get clipped
    g = torch.randn(5, 12)
    w = w0.clone().requires_grad_(True)
    (q(w) * g).sum().backward()

    a = q.alpha.detach().clone().requires_grad_(True)
    wr = w0.clone().requires_grad_(True)
    wc = torch.minimum(torch.maximum(wr, -a[:, None]), a[:, None])
    s = (a / 7).detach()[:, None]
    ref = wc + (torch.round(wc / s).clamp(-7, 7) * s - wc).detach()  # round-STE
    (ref * g).sum().backward()
    torch.testing.assert_close(q(w0).detach(), ref.detach())
    torch.testing.assert_close(w.grad, wr.grad)
    torch.testing.assert_close(q.alpha.grad, a.grad)
    assert (q.alpha.grad != 0).all()
    # at 8 bits the same clip range alpha, finer steps
    q.bits = 8
    assert q.scale(w0).mul(127).allclose(q.alpha.detach())


# --------------------------------------------------------------------------- MSE clip


def _row_err(rows: torch.Tensor, s: torch.Tensor, qp: int) -> torch.Tensor:
    x = rows * s.reciprocal()[:, None]
    return (torch.round(x).clamp(-qp, qp) * s[:, None] - rows).square().sum(1)


@pytest.mark.parametrize("bits", [3, 4])
def test_clip_scale_beats_absmax_and_equals_brute_force(bits):
    torch.manual_seed(4)
    w = torch.randn(6, 16)
    w[0, 0] = 8.0  # an outlier: clipping pays off
    qp = 2 ** (bits - 1) - 1
    s = mse_clip_scale(w, qp)
    amax = w.abs().amax(1)
    assert (_row_err(w, s, qp) <= _row_err(w, amax / qp, qp) * (1 + 1e-6)).all()
    assert s[0] < amax[0] / qp
    for i in range(w.shape[0]):  # brute force, one row and one ratio at a time
        errs = [_row_err(w[i : i + 1], (c * amax[i] / qp).reshape(1), qp).item() for c in CLIP_GRID]
        best = CLIP_GRID[min(range(len(errs)), key=errs.__getitem__)]
        torch.testing.assert_close(s[i], best * amax[i] / qp)


def test_clip_quantizer_detaches_scale_and_is_straight_through():
    w = _w(5).requires_grad_(True)
    q = make_quantizer(QuantSpec("clip", 4)).train()
    out = q(w)
    out.sum().backward()
    s = q.scale(w.detach())
    x = w.detach() / s[:, None]
    assert torch.equal(w.grad, (torch.round(x).abs() <= 7).float())
    assert list(q.parameters()) == []


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("technique", ["lsq", "pact"])
def test_quantizer_parameters_state_dict_roundtrip(technique):
    torch.manual_seed(6)
    spec = QuantSpec(technique, 4)
    m = Tiny()
    quantize_(m, spec)
    qparams = quantizer_parameters(m)
    names = [n for n, _ in qparams]
    attr = "step" if technique == "lsq" else "alpha"
    assert names == [
        f"conv.parametrizations.weight.0.{attr}",
        f"attn.out_proj.parametrizations.weight.0.{attr}",
        f"attn.parametrizations.in_proj_weight.0.{attr}",
        f"ffn.parametrizations.weight.0.{attr}",
    ]
    ids = {id(p) for p in m.parameters()}
    assert all(id(p) in ids for _, p in qparams)
    assert [p.shape[0] for _, p in qparams] == [6, 6, 18, 8]
    # train the scales a bit so they differ from their init
    opt = torch.optim.SGD([p for _, p in qparams], lr=0.05)
    x = torch.randn(2, 4, 7)
    m(x).pow(2).sum().backward()
    opt.step()
    sd = m.state_dict()
    assert all(n in sd for n in names)

    torch.manual_seed(99)
    fresh = Tiny()
    quantize_(fresh, spec)
    fresh.load_state_dict(sd)
    m.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(m(x), fresh(x))
    # learned scales are not counted as float parameters on top of the per-row scales
    n_w = 6 * 12 + 18 * 6 + 6 * 6 + 8 * 6
    sizes = model_size_bits(m, "w4", spec)
    assert sizes["quantized_params"] == n_w
    assert sizes["total_bits"] == n_w * 4 + 38 * 16 + 16 * (6 + 18 + 6 + 8 + 8 + 8)


def test_quantizer_parameters_empty_for_functional_scales():
    m = Tiny()
    quantize_(m, QuantSpec("clip", 4))
    assert quantizer_parameters(m) == []
