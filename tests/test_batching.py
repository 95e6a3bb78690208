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


# ---------------------------------------------------------------- train.pad_to_multiple: static shapes


def test_bucketed_batches_are_full_and_padded_to_the_multiple():
    from qbench.tasks.buckets import batches_of, pad_to, padded_length

    assert batches_of(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches_of(list(range(10)), 4, full=True)[-1] == [8, 9, 0, 1]
    assert batches_of([5, 6], 5, full=True) == [[5, 6, 5, 6, 5]]
    assert [padded_length(n, 8) for n in (0, 1, 8, 9)] == [8, 8, 8, 16]
    assert padded_length(13, 0) == 13 and padded_length(13, 8, limit=14) == 14
    assert padded_length(15, 8, limit=14) == 16  # longer than the limit already: rounded up as usual
    t = torch.ones(2, 3)
    assert torch.equal(pad_to(t, 5, value=7.0), torch.tensor([[1, 1, 1, 7, 7.0]] * 2))


def test_padded_translation_batches_keep_the_loss(tmp_path, results):
    """MT masks every padded position (source keys, target positions are causal and unscored):
    padding both axes to a multiple of 16 leaves the loss as it was, to float rounding."""
    from qbench.config import load_suite
    from qbench.tasks import build_task
    from tests.test_distributed import TINY_MT

    path = tmp_path / "mt.yaml"
    path.write_text(TINY_MT.replace("grid: {quant.technique: [ste, rand]}\n", ""))
    recipe = load_suite(path, ["train.pad_to_multiple=16"]).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    torch.manual_seed(0)
    model = task.build_model().train()
    batches = task._epoch_batches(0)
    assert all(len(b) == recipe.train.batch_size for b in batches)  # the short one filled up
    cpu = torch.device("cpu")
    padded_any = False
    for idx in batches:
        plain, padded = task._collate("train", idx, cpu), task._collate("train", idx, cpu, 16)
        for key in ("src", "tgt_in", "tgt_out"):
            assert padded[key].shape[1] % 16 == 0 or padded[key].shape[1] == task.model_cfg.max_len
            width = plain[key].shape[1]
            assert torch.equal(padded[key][:, :width], plain[key]) and (padded[key][:, width:] == 0).all()
            padded_any |= padded[key].shape[1] > width
        torch.manual_seed(1)
        expected = task.loss(model, plain)
        torch.manual_seed(1)
        assert task.loss(model, padded).item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert padded_any


def test_padded_speech_batches_keep_the_ctc_targets(tmp_path, results):
    """ASR: with train.pad_to_multiple the frames are zero-padded to a multiple and the targets
    become (B, S) rows padded with blanks, which CTC reads as the concatenated targets (the same
    loss). The Conformer itself is not invariant to frame padding (its convolutions and batch norm
    see padded frames), so a run with the key set is another run (its own run id)."""
    from qbench.config import load_suite
    from qbench.tasks import build_task
    from tests.conftest import tiny_recipe

    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml"), ["train.pad_to_multiple=64"]).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    torch.manual_seed(0)
    model = task.build_model().train()
    cpu = torch.device("cpu")
    for step in range(3):
        idx = task._epoch_batches(0)[step]
        plain, padded = task._collate("train", idx, cpu), task._collate("train", idx, cpu, 64)
        width = plain["feats"].shape[1]
        assert padded["feats"].shape[1] % 64 == 0 and padded["feats"].shape[1] >= width
        assert (
            torch.equal(padded["feats"][:, :width], plain["feats"])
            and (padded["feats"][:, width:] == 0).all()
        )
        assert torch.equal(padded["lengths"], plain["lengths"])
        rows = padded["targets"]
        assert rows.dim() == 2 and rows.shape[1] % 64 == 0
        lengths = padded["target_lengths"].tolist()
        assert torch.equal(torch.cat([r[:n] for r, n in zip(rows, lengths, strict=True)]), plain["targets"])
        assert all((r[n:] == 0).all() for r, n in zip(rows, lengths, strict=True))  # blanks
        # the same frames, targets as rows: the same loss (dropout and SpecAugment drawn alike)
        torch.manual_seed(step)
        expected = task.loss(model, plain)
        torch.manual_seed(step)
        got = task.loss(model, {**plain, "targets": rows})
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)
