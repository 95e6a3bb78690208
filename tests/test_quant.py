"""Tests of qbench.quant (tiny tensors and models; CPU; runs in a few seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from qbench.quant import (
    TECHNIQUES,
    PrecisionMap,
    QuantSpec,
    WeightQuantizer,
    estimators,
    model_size_bits,
    original_name,
    parse_precision,
    quantize_,
    quantized_parameter_names,
    use_precision,
)
from qbench.quant.estimators import noise_like, round_ste
from qbench.quant.quantizers import make_quantizer
from qbench.quant.scales import EPS, absmax_scale, topk_lp_scale

QUANT_TECHNIQUES = ("ste", "pqn", "pqn-sg", "rand", "rand-ste")


def fq(w: torch.Tensor, s: torch.Tensor, bits: int) -> torch.Tensor:
    """Reference: PyTorch's per-channel fake quantization, symmetric, axis 0."""
    qp = 2 ** (bits - 1) - 1
    rows, s = w.detach().reshape(w.shape[0], -1), s.detach()
    zp = torch.zeros(rows.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(rows, s, zp, 0, -qp, qp).view(w.shape)


def absmax_ref(w: torch.Tensor, bits: int) -> torch.Tensor:
    return w.detach().reshape(w.shape[0], -1).abs().amax(1) / (2 ** (bits - 1) - 1)


class Tiny(nn.Module):
    """Names like the real models: encoder conv / ffn / norm, decoder embedding tied to the output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3)
        self.ffn = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 5, bias=False)

    def forward(self, x):  # x: (B, 4, T)
        h = self.conv(x).transpose(1, 2)
        return self.out(self.norm(self.ffn(h)))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert list(now) == list(snap)
    for k, v in snap.items():
        assert torch.equal(now[k], v), k
        assert now[k].dtype == v.dtype


# --------------------------------------------------------------------------- estimators


def test_ste_matches_fake_quantize_bit_for_bit():
    torch.manual_seed(0)
    w = (torch.rand(6, 40) * 2 - 1) * 0.8
    w[:, 0] = 0.875  # row max -> s = 0.875 / 7 = 0.125 exactly (a power of two)
    n = torch.arange(-7, 7, dtype=torch.float32)  # half-steps (n + 1/2) * s, exactly representable
    w[:, 1 : 1 + n.numel()] = (n + 0.5) * 0.125
    w[1, 20:] *= 1e-3  # tiny values
    w[2] = torch.randn(40) * 100.0  # another row with its own (inexact) scale
    q = make_quantizer(QuantSpec("ste", 4))
    s = q.scale(w)
    assert s[0].item() == 0.125
    out = q(w)
    assert torch.equal(out.view(torch.int32), fq(w, s, 4).view(torch.int32))  # sign of zero included
    # round half to even, as nearbyint: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2
    steps = out[0, 1 : 1 + n.numel()] / 0.125
    expected = torch.round(n + 0.5)
    assert torch.equal(steps, expected)
    assert steps.tolist()[7:10] == [0.0, 2.0, 2.0]  # n = 0, 1, 2
    # same scale, also through autograd: bit for bit, the sign of zero included
    wg = w.clone().requires_grad_()
    trained = q(wg).detach()
    assert torch.equal(trained.view(torch.int32), fq(w, s, 4).view(torch.int32))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_round_ste_bitwise_equal_to_fake_quantize_many_values(bits):
    torch.manual_seed(bits)
    qp = 2 ** (bits - 1) - 1
    w = torch.randn(64, 512) * 10 ** torch.empty(64, 1).uniform_(-6, 3)
    s = w.abs().amax(1) / qp * torch.empty(64).uniform_(0.3, 1.2)  # < 1: some values clamp
    w[:, :64] = (torch.randint(-qp - 2, qp + 2, (64, 64)) + 0.5) * s[:, None]  # half steps
    ref = fq(w, s, bits)
    out = round_ste(w.clone(), s, qp)
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
    out = round_ste(w.clone().requires_grad_(), s, qp).detach()  # training
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
    out = round_ste(w.clone().requires_grad_(), s.clone().requires_grad_(), qp).detach()  # and s learned
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))


def test_round_ste_gradients_are_straight_through_and_lsq():
    torch.manual_seed(1)
    w = torch.randn(3, 20, requires_grad=True)
    s = torch.tensor([0.1, 0.2, 0.05], requires_grad=True)  # some weights fall outside +-7 s
    g = torch.randn(3, 20)
    out = round_ste(w, s, 7)
    (out * g).sum().backward()
    x = w.detach() / s.detach()[:, None]
    inside = torch.round(x).abs() <= 7
    assert (~inside).any() and inside.any()
    assert torch.equal(w.grad, g * inside)
    q = torch.round(x).clamp(-7, 7)
    expected_s = (g * torch.where(inside, q - x, q)).sum(1)
    torch.testing.assert_close(s.grad, expected_s)


def test_absmax_scale_value_and_gradient_match_autograd_reference():
    torch.manual_seed(13)
    w0 = torch.randn(6, 10)
    w0[1, 3], w0[1, 7] = 5.0, -5.0  # a tie: the gradient is split
    w0[2, 4] = -6.0  # negative max
    g = torch.randn(6)
    grads = []
    for fn in (
        lambda w: make_quantizer(QuantSpec("ste", 4, float_dtype="float32")).scale(w),
        lambda w: w.abs().amax(1) / 7,
    ):
        w = w0.clone().requires_grad_()
        s = fn(w)
        (s * g).sum().backward()
        grads.append((s.detach(), w.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][1][1, 3] == g[1] / 14 and grads[0][1][1, 7] == -g[1] / 14
    w = w0.clone().requires_grad_()
    assert not make_quantizer(QuantSpec("pqn-sg", 4, float_dtype="float32")).scale(w).requires_grad


def _output_and_grad(fn, w0: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` on a fresh leaf copy of ``w0``: its output's bits and the gradient of sum(out * g)."""
    w = w0.clone().requires_grad_()
    out = fn(w)
    (out * g).sum().backward()
    return out.detach().view(torch.int32), w.grad


def _fixed_noise(monkeypatch, noise: torch.Tensor | None) -> None:
    if noise is not None:
        monkeypatch.setattr(estimators, "noise_like", lambda rows, kind: noise)


@pytest.mark.parametrize("estimator", ["round-ste", "noise"])
def test_absmax_quantizer_is_absmax_scale_then_estimator_bit_for_bit(estimator, monkeypatch):
    """ste and pqn train through absmax_scale followed by round-STE or the noise addcmul: values
    and gradients, with the scale gradient reaching each row's max (split between ties)."""
    torch.manual_seed(14)
    w0 = torch.randn(7, 33)
    w0[1, 3], w0[1, 7] = 2.5, -2.5  # a tie: the scale gradient is split between the two
    w0[2] = 0.0  # an all-zero row: the scale is clamped to EPS, no scale gradient
    w0[3, 5] = -4.0  # negative max
    g = torch.randn(7, 33)
    noise = torch.rand(7, 33) - 0.5 if estimator == "noise" else None
    _fixed_noise(monkeypatch, noise)

    def composed(w):
        s = absmax_scale(w, 7)
        return round_ste(w, s, 7, clips=False) if noise is None else torch.addcmul(w, s[:, None], noise)

    q = make_quantizer(QuantSpec("ste" if noise is None else "pqn", 4, float_dtype="float32")).train()
    out_q, grad_q = _output_and_grad(q, w0, g)
    out_r, grad_r = _output_and_grad(composed, w0, g)
    assert torch.equal(out_q, out_r) and torch.equal(grad_q, grad_r)
    assert grad_q[1, 3] != g[1, 3] and grad_q[1, 7] != g[1, 7]  # the tie got the scale gradient
    assert torch.equal(grad_q[2], g[2])  # zero row: straight through only


@pytest.mark.parametrize(
    "estimator, k, p, c",
    [("noise", 2, 8.0, 1.0), ("round-ste", 2, 8.0, 1.0), ("round-ste", 3, 4.0, 0.6), ("noise", 1, 8.0, 1.5)],
)
def test_topk_lp_quantizer_is_topk_lp_scale_then_estimator_bit_for_bit(estimator, k, p, c, monkeypatch):
    """rand and rand-ste train through topk_lp_scale followed by round-STE (clipping when c < 1)
    or the noise addcmul: values and gradients."""
    torch.manual_seed(16)
    w0 = torch.randn(8, 40)
    w0[1, 3], w0[1, 7] = 2.5, -2.5  # tied largest magnitudes: the first column comes first
    w0[2] = 0.0  # an all-zero row: the scale is clamped to EPS, no scale gradient
    w0[3, :6] = 1e-20  # |W|^p underflows without the division by the largest
    w0[4, 5] = -4.0  # negative max
    g = torch.randn(8, 40)
    noise = torch.rand(8, 40) - 0.5 if estimator == "noise" else None
    _fixed_noise(monkeypatch, noise)

    def composed(w):
        s = topk_lp_scale(w, 7, k=k, p=p, c=c)
        return round_ste(w, s, 7, clips=c < 1) if noise is None else torch.addcmul(w, s[:, None], noise)

    q = make_quantizer(
        QuantSpec("rand" if noise is not None else "rand-ste", 4, k=k, p=p, c=c, float_dtype="float32")
    ).train()
    out_q, grad_q = _output_and_grad(q, w0, g)
    out_r, grad_r = _output_and_grad(composed, w0, g)
    assert torch.equal(out_q, out_r) and torch.equal(grad_q, grad_r)
    assert (grad_q[1, [3, 7]] != g[1, [3, 7]]).all() or k == 1  # both tied weights got scale gradient
    if noise is not None:
        assert torch.equal(grad_q[2], g[2])  # zero row: straight through only


def test_pact_quantizer_is_clamp_then_round_ste_bit_for_bit():
    torch.manual_seed(15)
    w0 = torch.randn(6, 25)
    alpha0 = torch.rand(6) * 1.5 + 0.2  # some weights beyond +-alpha on every row
    g = torch.randn(6, 25)
    results = []
    for quantizer in (True, False):
        w, alpha = w0.clone().requires_grad_(), alpha0.clone().requires_grad_()
        if quantizer:
            q = make_quantizer(QuantSpec("pact", 4, float_dtype="float32"), weight=w0).train()
            with torch.no_grad():
                q.alpha.copy_(alpha0)
            out = q(w)
            alpha = q.alpha
        else:
            clamped = torch.clamp(w, -alpha.unsqueeze(1), alpha.unsqueeze(1))
            out = round_ste(clamped, (alpha / 7).detach(), 7, clips=False)
        (out * g).sum().backward()
        results.append((out.detach().view(torch.int32), w.grad, alpha.grad))
    for value, reference in zip(results[0], results[1], strict=True):
        assert torch.equal(value, reference)
    assert (results[0][2] != 0).all()  # alpha learns from the clipped weights


def test_rand_scale_formula_and_gradient_reaches_exactly_top_k():
    torch.manual_seed(2)
    k, p, c, bits = 3, 8.0, 1.5, 4
    qp = 2 ** (bits - 1) - 1
    w = torch.randn(5, 12, dtype=torch.float64).float().requires_grad_()
    q = make_quantizer(QuantSpec("rand", bits, k=k, p=p, c=c, float_dtype="float32"))
    s = q.scale(w)
    top = w.detach().abs().topk(k, dim=1)
    norm = top.values.pow(p).sum(1).pow(1 / p)
    torch.testing.assert_close(s, c * norm / qp)
    s.sum().backward()
    is_top = torch.zeros_like(w, dtype=torch.bool).scatter_(1, top.indices, True)
    assert torch.equal(w.grad != 0, is_top)
    analytic = (w.detach().abs() / norm[:, None]).pow(p - 1) * w.detach().sign() * c / qp
    torch.testing.assert_close(w.grad, torch.where(is_top, analytic, torch.zeros_like(analytic)))
    # defaults k=2, p=8, c=1 on a conv weight (channel = dim 0)
    wc = torch.randn(4, 3, 5)
    s2 = make_quantizer(QuantSpec("rand", 4, float_dtype="float32")).scale(wc)
    ref = wc.reshape(4, -1).abs().topk(2, dim=1).values.pow(8).sum(1).pow(1 / 8) / 7
    torch.testing.assert_close(s2, ref)


def test_rand_scale_is_safe_for_tiny_and_zero_weights():
    w = torch.randn(3, 8) * 1e-7  # |w|^8 underflows in float32
    w[1] = 0.0
    q = make_quantizer(QuantSpec("rand", 4, float_dtype="float32"))
    s = q.scale(w)
    ref = w[0].abs().double().topk(2).values.pow(8).sum().pow(1 / 8) / 7
    torch.testing.assert_close(s[0].double(), ref, rtol=1e-5, atol=0)
    assert (s > 0).all()
    q.eval()
    out = q(w)
    assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros(8))


def test_pqn_noise_within_half_step_fresh_each_forward_and_hard_in_eval():
    torch.manual_seed(3)
    w = torch.randn(8, 256)
    q = make_quantizer(QuantSpec("pqn", 4))
    s = q.scale(w)[:, None]
    a, b = q(w), q(w)
    for out in (a, b):
        err = (out - w).abs()
        assert (err <= s / 2 * (1 + 1e-6)).all()
        assert (err / s).amax() > 0.45  # the noise fills the half step
    assert not torch.equal(a, b)  # fresh noise every forward
    q.eval()
    e1, e2 = q(w), q(w)
    assert torch.equal(e1, e2) and torch.equal(e1, fq(w, s.squeeze(1), 4))
    # normal noise: same variance as U(-1/2, 1/2)
    qn = make_quantizer(QuantSpec("pqn", 4, noise="normal"))
    wn = torch.randn(64, 512)
    ratio = ((qn(wn) - wn) / qn.scale(wn)[:, None]).std().item()
    assert abs(ratio - 1 / math.sqrt(12)) < 0.01


def test_uniform_noise_is_torchs_draw():
    """The noise estimator draws torch.rand_like (on any device: the same stream as torch's)."""
    torch.manual_seed(21)
    u = noise_like(torch.empty(300, 1000), "uniform")
    torch.manual_seed(21)
    assert torch.equal(u, torch.rand(300, 1000) - 0.5)
    assert abs(u.mean().item()) < 2e-3 and abs(u.var().item() - 1 / 12) < 1e-3
    assert not torch.equal(u, noise_like(torch.empty(300, 1000), "uniform"))


def test_pqn_sg_stops_scale_gradient_pqn_does_not():
    torch.manual_seed(4)
    w0 = torch.randn(4, 16)
    is_max = torch.zeros_like(w0, dtype=torch.bool).scatter_(1, w0.abs().argmax(1, keepdim=True), True)
    grads = {}
    for tech in ("pqn", "pqn-sg"):
        w = w0.clone().requires_grad_()
        torch.manual_seed(5)
        make_quantizer(QuantSpec(tech, 4))(w).sum().backward()
        grads[tech] = w.grad
    # d(W + s u)/dW = 1, plus sum_j u_j * ds/dW at the row max when the scale is live
    assert torch.equal(grads["pqn-sg"], torch.ones_like(w0))
    torch.manual_seed(5)
    u = noise_like(w0, "uniform")  # the same draw
    expected = 1 + (u.sum(1, keepdim=True) * w0.sign() / 7) * is_max
    torch.testing.assert_close(grads["pqn"], expected)
    assert (grads["pqn"][is_max] != 1).all()
    assert torch.equal(grads["pqn"][~is_max], torch.ones((~is_max).sum().item()))


@pytest.mark.parametrize("technique", QUANT_TECHNIQUES)
@pytest.mark.parametrize("bits,levels", [(2, 3), (4, 15), (8, 255)])
def test_eval_levels_per_channel(technique, bits, levels):
    torch.manual_seed(6)
    w = torch.randn(3, 2000)
    q = make_quantizer(QuantSpec(technique, bits)).eval()
    out = q(w)
    for row in out:
        assert row.unique().numel() <= levels
    assert out[0].unique().numel() >= min(levels, 2 ** (bits - 1))  # really uses the grid


# --------------------------------------------------------------------------- applying to models


def test_quantize_covers_mha_skips_norms_and_biases_and_keeps_parameters():
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True, dropout=0.0)
    params_before = {id(p): p for p in layer.parameters()}
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    in_proj = layer.self_attn.in_proj_weight
    spec = QuantSpec("ste", 4, float_dtype="float32")
    assert quantized_parameter_names(layer, spec) == [
        "self_attn.in_proj_weight",
        "self_attn.out_proj.weight",
        "linear1.weight",
        "linear2.weight",
    ]
    names = quantize_(layer, spec)
    assert sorted(names) == sorted(
        ["self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"]
    )
    assert not parametrize.is_parametrized(layer.norm1)
    assert not parametrize.is_parametrized(layer.self_attn, "in_proj_bias")
    assert {id(p) for p in layer.parameters()} == set(params_before)
    assert layer.self_attn.parametrizations.in_proj_weight.original is in_proj
    # names map back, and the quantized weight is what the module uses
    assert sorted({original_name(n) for n, _ in layer.named_parameters()}) == sorted(
        n for n, _ in nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).named_parameters()
    )
    torch.testing.assert_close(
        layer.self_attn.in_proj_weight, fq(in_proj.detach(), absmax_ref(in_proj, 4), 4)
    )
    # the optimizer created before quantize_ still trains the same tensors
    before = in_proj.detach().clone()
    x = torch.randn(2, 5, 16)
    layer(x).pow(2).sum().backward()
    assert in_proj.grad is not None and in_proj.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(in_proj.detach(), before)
    # eval / no-grad (MHA fast path) also reads the parametrized weights
    layer.eval()
    with torch.no_grad():
        assert torch.isfinite(layer(x)).all()
    # quantize_ again replaces, float/ptq attach nothing
    assert quantize_(layer, QuantSpec("rand", 3, float_dtype="float32")) == names
    assert len(layer.self_attn.parametrizations.in_proj_weight) == 1
    assert layer.self_attn.parametrizations.in_proj_weight[0].bits == 3
    assert (
        quantize_(Tiny(), QuantSpec("float", float_dtype="float32")) == []
        and quantize_(Tiny(), QuantSpec("ptq", float_dtype="float32")) == []
    )


def test_quantize_conformer_smoke():
    torchaudio = pytest.importorskip("torchaudio")
    torch.manual_seed(8)
    model = torchaudio.models.Conformer(
        input_dim=16, num_heads=2, ffn_dim=32, num_layers=1, depthwise_conv_kernel_size=3
    )
    names = quantize_(model, QuantSpec("rand", 4))
    assert "conformer_layers.0.self_attn.in_proj_weight" in names
    assert "conformer_layers.0.conv_module.sequential.2.weight" in names  # depthwise conv
    assert not any("norm" in n or "bias" in n for n in names)
    assert all(
        torch.is_tensor(
            model.get_parameter(
                n.rsplit(".", 1)[0] + ".parametrizations." + n.rsplit(".", 1)[1] + ".original"
            )
        )
        for n in names
    )
    x, lengths = torch.randn(2, 10, 16), torch.tensor([10, 7])
    out, _ = model(x, lengths)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_use_precision_restores_float_model_exactly_even_on_exception():
    torch.manual_seed(9)
    model = Tiny()
    spec = QuantSpec("ptq", 4, float_dtype="float32")  # fp32 scales: compare with fake_quantize
    snap, params = _snapshot(model), list(model.parameters())
    x = torch.randn(2, 4, 7)
    ref = model(x)
    with use_precision(model, "w4", spec):
        assert parametrize.is_parametrized(model.ffn, "weight")
        assert not parametrize.is_parametrized(model.norm)
        w = model.ffn.parametrizations.weight.original
        assert torch.equal(model.ffn.weight, fq(w, absmax_ref(w, 4), 4))
        assert not torch.equal(model(x), ref)
    _assert_same_state(model, snap)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert type(model.ffn) is nn.Linear
    assert torch.equal(model(x), ref)
    with pytest.raises(RuntimeError, match="boom"):
        with use_precision(model, "w2", spec):
            raise RuntimeError("boom")
    _assert_same_state(model, snap)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def test_use_precision_restores_quantized_model_exactly_even_on_exception():
    torch.manual_seed(10)
    model = Tiny()
    spec = QuantSpec("pqn", 4)
    quantize_(model, spec)
    snap = _snapshot(model)
    qs = [m for m in model.modules() if isinstance(m, WeightQuantizer)]
    state = [(q.bits, q.enabled, q.hard, q.training) for q in qs]
    for prec in ("w8", "float", "w2"):
        with pytest.raises(ValueError):
            with use_precision(model, prec, spec):
                assert all(q.hard or not q.enabled for q in qs)
                raise ValueError
        _assert_same_state(model, snap)
        assert [(q.bits, q.enabled, q.hard, q.training) for q in qs] == state
    with use_precision(model, "w8", spec):
        pass
    assert [(q.bits, q.enabled, q.hard, q.training) for q in qs] == state
    assert model.training and qs[0].training  # still noisy in training mode
    assert not torch.equal(model.ffn.weight, model.ffn.weight)


def test_use_precision_bits_float_and_mixed_maps():
    torch.manual_seed(11)
    model = Tiny()
    spec = QuantSpec("ste", 4, float_dtype="float32")  # fp32 scales: compare with fake_quantize
    quantize_(model, spec)
    conv_w = model.conv.parametrizations.weight.original
    ffn_w = model.ffn.parametrizations.weight.original
    assert torch.equal(model.ffn.weight, fq(ffn_w, absmax_ref(ffn_w, 4), 4))
    with use_precision(model, "w8", spec):
        assert torch.equal(model.ffn.weight, fq(ffn_w, absmax_ref(ffn_w, 8), 8))
        assert torch.equal(model.conv.weight, fq(conv_w, absmax_ref(conv_w, 8), 8))
        assert not torch.equal(model.ffn.weight, fq(ffn_w, absmax_ref(ffn_w, 4), 4))
    with use_precision(model, "float", spec):
        assert torch.equal(model.ffn.weight, ffn_w) and torch.equal(model.conv.weight, conv_w)
    maps = {"conv8": {"default": 4, "*.conv*": 8, "out.*": "float"}}
    with use_precision(model, parse_precision("conv8", maps), spec):
        assert torch.equal(model.conv.weight, fq(conv_w, absmax_ref(conv_w, 8), 8))
        assert torch.equal(model.ffn.weight, fq(ffn_w, absmax_ref(ffn_w, 4), 4))
        assert torch.equal(model.out.weight, model.out.parametrizations.weight.original)
    # noise model in train mode: evaluated with hard rounding, own scale function
    rmodel = Tiny()
    quantize_(rmodel, QuantSpec("rand", 4))
    rq = rmodel.ffn.parametrizations.weight[0]
    rw = rmodel.ffn.parametrizations.weight.original
    with use_precision(rmodel, "w8", spec):
        s8 = rw.detach().abs().topk(2, dim=1).values.pow(8).sum(1).pow(1 / 8) / 127
        torch.testing.assert_close(rq.scale(rw), s8)
        assert torch.equal(rmodel.ffn.weight, fq(rw, rq.scale(rw), 8))
        assert torch.equal(rmodel.ffn.weight, rmodel.ffn.weight)  # no noise
    # cache=True: computed once for the block
    with torch.no_grad(), use_precision(model, "w4", spec, cache=True):
        assert model.ffn.weight is model.ffn.weight


# --------------------------------------------------------------------------- precision maps and size


def test_parse_precision_valid_and_errors():
    assert parse_precision("float", {}).is_float
    assert parse_precision("w4", {}).bits_for("enc.x.weight") == 4
    assert parse_precision("w2").default == 2 and parse_precision("w8").default == 8
    maps = {"mixed": {"default": 4, "encoder.*.conv*": 8, "encoder.*": 6, "decoder.*": None}}
    pm = parse_precision("mixed", maps)
    assert pm.bits_for("encoder.layers.0.conv.weight") == 8  # most specific wins
    assert pm.bits_for("encoder.layers.0.ffn.weight") == 6
    assert pm.bits_for("decoder.embed.weight") is None
    assert pm.bits_for("head.weight") == 4
    assert PrecisionMap("p", 4, (("*", 2), ("*", 3))).bits_for("a.b") == 2  # ties: first
    for bad in ("w9", "w1", "w0", "w16", "int4", "fp16", "", "mixed2"):
        with pytest.raises(ValueError):
            parse_precision(bad, maps)
    with pytest.raises(ValueError, match="mixed"):
        parse_precision("nope", maps)  # the message lists the known maps
    for bad_map in (
        {"default": 9},
        {"default": 4, "a.*": 1},
        {"a.*": "w12"},
        {"a.*": True},
        {"default": 4.0},
    ):
        with pytest.raises(ValueError):
            parse_precision("bad", {"bad": bad_map})
    with pytest.raises(ValueError):
        QuantSpec("lsq-2")  # unknown technique
    with pytest.raises(ValueError):
        QuantSpec("ste", bits=9)


def test_model_size_bits_hand_computed():
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    # bfloat16 (default): 16-bit scales and float-kept parameters at a quantized precision
    bf = model_size_bits(model, "w4", QuantSpec("ptq", 4))
    assert bf["total_bits"] == 192 * 4 + (16 + 4) * 16 + 52 * 16 and bf["float32_bits"] == 244 * 32
    spec = QuantSpec("ptq", 4, float_dtype="float32")
    # quantized: 16x8 + 4x16 = 192 weights at 4 bits, 16 + 4 fp32 scales;
    # float: biases 16 + 4, LayerNorm 16 + 16 = 52 parameters at 32 bits
    expected = 192 * 4 + (16 + 4) * 32 + 52 * 32
    size = model_size_bits(model, "w4", spec)
    assert size == dict(total_bits=expected, float32_bits=244 * 32, quantized_params=192, float_params=52)
    assert model_size_bits(model, "float", spec)["total_bits"] == 244 * 32
    assert model_size_bits(model, None, spec)["total_bits"] == 244 * 32  # ptq model as trained
    # same figures once quantizers are attached (original names, each parameter once)
    quantize_(model, QuantSpec("ste", 4))
    assert model_size_bits(model, "w4", spec) == size
    assert model_size_bits(model, None, spec) == size
    mixed = PrecisionMap("m", 4, (("0.*", 8),))
    assert model_size_bits(model, mixed, spec)["total_bits"] == 128 * 8 + 64 * 4 + 20 * 32 + 52 * 32
    # tied weights counted once
    emb = nn.Embedding(10, 6)
    head = nn.Linear(6, 10, bias=False)
    head.weight = emb.weight
    tied = nn.ModuleDict({"emb": emb, "head": head})
    assert model_size_bits(tied, "w4", spec) == dict(
        total_bits=60 * 4 + 10 * 32, float32_bits=60 * 32, quantized_params=60, float_params=0
    )


def test_granularity_per_tensor_and_per_group():
    torch.manual_seed(12)
    w = torch.randn(4, 16)
    qt = make_quantizer(QuantSpec("ste", 4, granularity="per-tensor", float_dtype="float32")).eval()
    assert qt.scale(w).shape == (1,)
    assert qt(w).unique().numel() <= 15
    torch.testing.assert_close(qt.scale(w), w.abs().max().reshape(1) / 7)
    qg = make_quantizer(QuantSpec("ste", 4, granularity="per-group-8", float_dtype="float32")).eval()
    assert qg.scale(w).shape == (8,)
    out = qg(w)
    assert out.shape == w.shape
    assert torch.equal(out.reshape(8, 8), fq(w.reshape(8, 8), absmax_ref(w.reshape(8, 8), 4), 4))
    m = nn.Linear(16, 4, bias=False)
    assert (
        model_size_bits(m, "w4", QuantSpec("ptq", 4, granularity="per-group-8"))["total_bits"]
        == 64 * 4 + 8 * 16
    )
    with pytest.raises(ValueError):
        QuantSpec("ste", granularity="per-row", float_dtype="float32")
    with pytest.raises(ValueError):
        make_quantizer(QuantSpec("ste", 4, granularity="per-group-5", float_dtype="float32"))(w)


def test_original_name_and_selection():
    assert original_name("a.b.parametrizations.weight.original") == "a.b.weight"
    assert original_name("parametrizations.in_proj_weight.original") == "in_proj_weight"
    assert original_name("a.parametrizations.weight.original0") == "a.weight"
    assert original_name("a.b.weight") == "a.b.weight"
    assert quantized_parameter_names(Tiny(), QuantSpec("ste")) == ["conv.weight", "ffn.weight", "out.weight"]
    assert quantized_parameter_names(nn.Linear(3, 4), QuantSpec("ste")) == ["weight"]  # top level
    assert set(TECHNIQUES) == {
        "float",
        "ptq",
        "ste",
        "pqn",
        "pqn-sg",
        "rand",
        "rand-ste",
        "lsq",
        "pact",
        "clip",
        "custom",
    }


@pytest.mark.parametrize("technique", ["ste", "lsq", "pact", "clip"])
def test_per_group_on_fused_in_proj_weight(technique):
    torch.manual_seed(14)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    spec = QuantSpec(technique, 4, granularity="per-group-4")
    quantize_(mha, spec)
    q = mha.parametrizations.in_proj_weight[0]
    w = mha.parametrizations.in_proj_weight.original.detach()  # (24, 8) -> 48 groups of 4
    assert q.scale(w).shape == (48,)
    if q.learned is not None:
        assert q.learned.shape == (48,)
    mha.eval()
    out = mha.in_proj_weight.detach()
    assert torch.equal(out.reshape(48, 4), fq(w.reshape(48, 4), q.scale(w), 4))
    assert (
        model_size_bits(mha, None, spec)["total_bits"]
        == (24 * 8 + 8 * 8) * 4 + (48 + 16) * 32 + (24 + 8) * 32  # None: as trained, fp32
    )
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        assert torch.isfinite(mha(x, x, x)[0]).all()


def test_rand_scale_of_an_all_zero_row_has_a_finite_gradient():
    """An embedding's padding row is all zeros: its scale is the floor, and no NaN reaches W."""
    w = torch.randn(3, 10)
    w[1] = 0.0
    w.requires_grad_()
    s = make_quantizer(QuantSpec("rand", 4, float_dtype="float32")).scale(w)
    s.sum().backward()
    assert s[1] == EPS and w.grad.isfinite().all() and (w.grad[1] == 0).all()
