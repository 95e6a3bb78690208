"""Batched quantization (qbench.quant.batching): alike quantizers share one pass, and every weight
gets exactly the values and gradients it gets when quantized alone."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import qbench.quant.estimators as estimators
from qbench.quant import QuantSpec, batched_quantization, find_quantizers, quantize_, quantizer_parameters
from qbench.quant.quantizers import WeightQuantizer


class Net(nn.Module):
    """Weights with rows of 16 (five, the attention's fused in_proj among them) and of 32 (one)."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.mix = nn.Linear(16, 16)
        self.conv = nn.Conv1d(16, 16, 1)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):  # (B, T, 16)
        h = self.down(torch.relu(self.up(x))) + self.mix(x)
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.attn(h, h, h, need_weights=False)[0]


class Widths(nn.Module):
    """Rows of 32 (64 of them), and of 30 (a Linear's 32 and a Conv1d's 8): the shorter rows join
    the pass of the longer ones, zero-padded (80 padding values for 2048)."""

    def __init__(self):
        super().__init__()
        self.big = nn.Linear(32, 64)
        self.small = nn.Linear(30, 32)
        self.conv = nn.Conv1d(10, 8, 3, padding=1)

    def forward(self, x):  # (B, T, 32)
        c = self.conv(x[..., :10].transpose(1, 2)).transpose(1, 2)
        return torch.cat([self.big(x), self.small(x[..., :30]), c], dim=-1)


def _trained(technique: str, batched: bool, steps: int = 3, model_cls=Net, **spec):
    torch.manual_seed(0)
    model = model_cls()
    quantize_(model, QuantSpec(technique=technique, bits=4, **spec))
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    x = torch.randn(2, 5, 32 if model_cls is Widths else 16, generator=torch.Generator().manual_seed(1))
    outs, grads = [], []
    for _ in range(steps):
        opt.zero_grad()
        # the reference: each weight quantized alone, once per forward (parametrize.cached: the
        # attention reads in_proj_weight more than once, which would run mse-clip's counter faster)
        with batched_quantization(model) if batched else parametrize.cached():
            y = model(x)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in params])
        opt.step()
    return model, outs, grads


def _fixed_noise(monkeypatch):
    """Noise that does not depend on how the draws are split: the batched and the per-weight forward
    then compute the same thing, which is what is compared (the draws' order is all that differs)."""
    monkeypatch.setattr(estimators, "noise_like", lambda rows, noise: torch.full_like(rows, 0.3))


@pytest.mark.parametrize(
    "technique,spec",
    [
        ("ste", {}),
        ("pqn", {}),
        ("pqn-sg", {}),
        ("rand", {}),
        ("rand-ste", {}),
        ("lsq", {}),
        ("pact", {}),
        ("clip", {"clip_every": 2}),
        ("ste", {"granularity": "per-group-8"}),
        ("pqn", {"granularity": "per-tensor", "noise": "normal"}),
    ],
)
def test_batched_training_equals_weight_by_weight(technique, spec, monkeypatch):
    _fixed_noise(monkeypatch)
    m1, out1, g1 = _trained(technique, batched=False, **spec)
    m2, out2, g2 = _trained(technique, batched=True, **spec)

    def same(a, b):
        if technique.startswith("rand"):
            # topk-lp's norm runs pow, whose vectorised and scalar kernels (which one an element
            # gets depends on its position in the tensor, and batching runs the norms of all
            # passes as one tensor) may differ in the last bit; outputs near 0 show it as ~2e-8
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(a, b)

    for a, b in zip(out1, out2, strict=True):
        same(a, b)
    for step1, step2 in zip(g1, g2, strict=True):
        for a, b in zip(step1, step2, strict=True):
            same(a, b)
    s1, s2 = m1.state_dict(), m2.state_dict()  # learned scales, clip ratios and counters too
    assert s1.keys() == s2.keys()
    for k in s1:
        same(s1[k], s2[k])
    if technique in ("lsq", "pact"):
        assert len(quantizer_parameters(m2)) == 6 and all(
            p.grad is not None for _, p in quantizer_parameters(m2)
        )


def test_alike_quantizers_share_one_pass_and_each_weight_is_computed_once(monkeypatch):
    torch.manual_seed(0)
    model = Net()
    quantize_(model, QuantSpec(technique="ste", bits=4))
    calls = []
    original = WeightQuantizer.fake_quant_rows

    def spy(self, rows, group=()):
        calls.append((rows.shape, len(group)))
        return original(self, rows, group)

    monkeypatch.setattr(WeightQuantizer, "fake_quant_rows", spy)
    x = torch.randn(2, 5, 16)
    model(x)
    alone = len(calls)
    assert alone > 6  # nn.MultiheadAttention reads in_proj_weight more than once
    calls.clear()
    with batched_quantization(model):
        model(x)
    # rows of 16: up, mix, conv, in_proj, out_proj (32+16+16+48+16 rows); rows of 32: down
    assert sorted(calls) == [(torch.Size([16, 32]), 1), (torch.Size([128, 16]), 5)]


def test_reads_inside_the_block_return_the_weights_computed_on_entry():
    torch.manual_seed(0)
    model = Net()
    quantize_(model, QuantSpec(technique="ste", bits=4))
    q = find_quantizers(model)["mix.weight"]
    w = model.mix.parametrizations.weight.original
    with batched_quantization(model):
        entry = model.mix.weight
        assert model.mix.weight is entry  # every read: the same tensor, from parametrize's cache
        assert torch.equal(entry, q(w))
        with torch.no_grad():
            w.mul_(2.0)
        assert model.mix.weight is entry  # as under parametrize.cached(): seen in the next block
    assert q._batched is None  # nothing kept after the block
    after = model.mix.weight
    assert torch.equal(after, q(w)) and not torch.equal(after, entry)


def test_disabled_quantizers_are_left_alone():
    torch.manual_seed(0)
    model = Net()
    spec = QuantSpec(technique="ste", bits=4)
    quantize_(model, spec)
    find_quantizers(model)["up.weight"].enabled = False
    reference = copy.deepcopy(model)
    x = torch.randn(2, 5, 16)
    with batched_quantization(model):
        assert torch.equal(model.up.weight, model.up.parametrizations.weight.original)
        assert torch.equal(model(x), reference(x))


def test_quantizers_attached_or_replaced_after_a_batched_step_are_batched_from_then_on(monkeypatch):
    torch.manual_seed(0)
    model = Net()
    quantize_(model, QuantSpec(technique="ste", bits=4, include=("up.weight",)))
    x = torch.randn(2, 5, 16)
    with batched_quantization(model):  # builds the list of attached quantizers
        model(x)
    quantize_(model, QuantSpec(technique="pqn", bits=4))  # replaces up's, attaches the others
    calls = []
    original = WeightQuantizer.fake_quant_rows

    def spy(self, rows, group=()):
        calls.append((self.estimator.name, rows.shape[0]))
        return original(self, rows, group)

    monkeypatch.setattr(WeightQuantizer, "fake_quant_rows", spy)
    with batched_quantization(model):
        model(x)
    assert sorted(calls) == [("noise", 16), ("noise", 128)]  # every weight, and up's new quantizer


@pytest.mark.parametrize("technique", ["ste", "pqn", "rand", "rand-ste", "pact", "clip", "lsq"])
def test_zero_padded_rows_train_as_weight_by_weight(technique, monkeypatch):
    """Shorter rows padded into a longer pass get their values and gradients (up to the order of
    float sums over the longer rows). LSQ's rows are not padded: its gradient factor 1/sqrt(n Qp)
    depends on the row length n."""
    _fixed_noise(monkeypatch)
    calls = []
    original = WeightQuantizer.fake_quant_rows

    def spy(self, rows, group=()):
        calls.append(tuple(rows.shape))
        return original(self, rows, group)

    m1, out1, g1 = _trained(technique, batched=False, model_cls=Widths, steps=2)
    monkeypatch.setattr(WeightQuantizer, "fake_quant_rows", spy)
    m2, out2, g2 = _trained(technique, batched=True, model_cls=Widths, steps=2)
    per_step = calls[: len(calls) // 2]
    assert per_step == ([(64, 32), (40, 30)] if technique == "lsq" else [(104, 32)])
    first = [*out1, *sum(g1, []), *m1.state_dict().values()]
    second = [*out2, *sum(g2, []), *m2.state_dict().values()]
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_batched_training_sees_new_weight_storage_and_checkpoints_round_trip(tmp_path):
    """A weight given new storage between steps trains on (the same Parameter objects throughout);
    a batched model's checkpoint reloads to the same outputs."""
    _, out_ref, grads_ref = _trained("ste", batched=False, model_cls=Widths, steps=3)
    torch.manual_seed(0)
    model = Widths()
    quantize_(model, QuantSpec(technique="ste", bits=4))
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    small = model.small.parametrizations.weight.original
    for step in range(3):
        if step == 2:  # new storage for one weight: stored again, nothing lost
            with torch.no_grad():
                small.data = small.data.clone()
        opt.zero_grad()
        with batched_quantization(model):
            y = model(x)
        y.square().mean().backward()
        # as weight by weight, up to the order of float sums over padded rows (see above)
        torch.testing.assert_close(y, out_ref[step], rtol=1e-5, atol=1e-7)
        for p, g in zip(params, grads_ref[step], strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
        assert list(model.parameters()) == params  # the same Parameter objects
        opt.step()
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    fresh = Widths()
    quantize_(fresh, QuantSpec(technique="ste", bits=4))
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    with torch.no_grad(), batched_quantization(fresh):
        y_fresh = fresh(x)
    with torch.no_grad(), batched_quantization(model):
        assert torch.equal(y_fresh, model(x))
