"""Automatic mixed precision: Hutchinson traces, the budgeted assignment, the written map."""

import itertools
import json
import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from qbench.quant import QuantSpec, parse_precision, quantize_, use_precision
from qbench.quant.sensitivity import (
    AutoConfig,
    assign_bits,
    auto_precision_map,
    average_bits,
    fisher_traces,
    greedy_assign,
    hutchinson_traces,
    resolve_auto_maps,
)

_DATA = {}


def _loss_with(model, name, w):
    x, y = _DATA["xy"]
    return F.cross_entropy(torch.func.functional_call(model, {name: w}, (x,)), y)


@pytest.mark.parametrize("hvp", ["autograd", "finite-difference"])
def test_hutchinson_matches_the_exact_hessian_trace(hvp):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    _DATA["xy"] = (x, y)
    weights = [model[0].weight, model[2].weight]
    exact = []
    for w, name in zip(weights, ("0.weight", "2.weight"), strict=True):
        h = torch.autograd.functional.hessian(
            lambda t, name=name: _loss_with(model, name, t), w.detach().clone()
        )
        exact.append(float(h.reshape(w.numel(), w.numel()).diagonal().sum()))
    est, method = hutchinson_traces([lambda: F.cross_entropy(model(x), y)], weights, samples=400, hvp=hvp)
    assert method == hvp
    for e, t in zip(est, exact, strict=True):
        assert t > 0
        assert abs(e - t) / t < 0.10, (est, exact)


def test_hutchinson_falls_back_to_finite_differences_for_ctc():
    """PyTorch's CTC loss has no double backward: auto mode says it used finite differences,
    and still agrees with an estimate from the same closures (positive, finite)."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 5)
    x = torch.randn(12, 2, 4)

    def loss():
        lp = lin(x).log_softmax(-1)
        return F.ctc_loss(lp, torch.tensor([1, 2, 3, 1]), torch.tensor([12, 12]), torch.tensor([2, 2]))

    est, method = hutchinson_traces([loss], [lin.weight], samples=50)
    assert method == "finite-difference"
    assert est[0] > 0 and est[0] < float("inf")
    # the trace of the Gauss-Newton-like curvature of a convex-in-logits loss is of the size of
    # the squared-input scale: compare with the Fisher trace's order of magnitude
    fisher = fisher_traces([loss], [lin.weight])[0]
    assert 1e-4 < est[0] / max(fisher, 1e-12) < 1e4


def test_assignment_respects_the_budget_and_is_optimal():
    rng = random.Random(0)
    for _ in range(30):
        n_layers = rng.randint(2, 5)
        sizes = [rng.choice([8, 16, 24, 40]) for _ in range(n_layers)]
        sens = []
        for _ in range(n_layers):
            s8 = rng.random()
            s4 = s8 + rng.random() * 3
            s2 = s4 + rng.random() * 10
            sens.append({2: s2, 4: s4, 8: s8})
        budget = rng.uniform(2.0, 8.0)
        bits = assign_bits(sizes, sens, budget)
        used = sum(n * b for n, b in zip(sizes, bits, strict=True))
        assert used <= budget * sum(sizes) + 1e-9
        # brute force
        best = min(
            sum(s[b] for s, b in zip(sens, combo, strict=True))
            for combo in itertools.product((2, 4, 8), repeat=n_layers)
            if sum(n * b for n, b in zip(sizes, combo, strict=True)) <= budget * sum(sizes) + 1e-9
        )
        got = sum(s[b] for s, b in zip(sens, bits, strict=True))
        assert got == pytest.approx(best)
        greedy = greedy_assign(sizes, sens, budget)
        assert sum(n * b for n, b in zip(sizes, greedy, strict=True)) <= budget * sum(sizes) + 1e-9
        assert got <= sum(s[b] for s, b in zip(sens, greedy, strict=True)) + 1e-9


def test_assignment_beats_greedy_where_greedy_is_myopic():
    # Layer A (small) has the best drop per bit, but upgrading it leaves no room for B, whose
    # total drop is larger: greedy takes A, the exact assignment takes B.
    sizes = [10, 30]
    sens = [{4: 2.0, 8: 0.0}, {4: 5.0, 8: 0.0}]
    budget = (10 * 4 + 30 * 8) / 40  # exactly room for B at 8 bits
    greedy = greedy_assign(sizes, sens, budget)
    exact = assign_bits(sizes, sens, budget)
    assert greedy == [8, 4] and exact == [4, 8]
    assert sum(s[b] for s, b in zip(sens, exact, strict=True)) < sum(
        s[b] for s, b in zip(sens, greedy, strict=True)
    )


def test_coarse_units_still_respect_the_budget():
    sizes = [1001, 2003, 997, 50021]
    sens = [{4: 3.0, 8: 1.0}, {4: 9.0, 8: 0.5}, {4: 4.0, 8: 0.1}, {4: 2.0, 8: 1.9}]
    bits = assign_bits(sizes, sens, 4.3, max_states=50)
    assert sum(n * b for n, b in zip(sizes, bits, strict=True)) <= 4.3 * sum(sizes)


def test_auto_config_errors_name_the_map():
    with pytest.raises(ValueError, match="auto4.*budget_bits"):
        AutoConfig.parse("auto4", {"auto": {"sensitivity": "hessian"}})
    with pytest.raises(ValueError, match="auto4.*sensitivity"):
        AutoConfig.parse("auto4", {"auto": {"budget_bits": 5, "sensitivity": "magic"}})
    with pytest.raises(ValueError, match="below the smallest"):
        AutoConfig.parse("auto4", {"auto": {"budget_bits": 3, "bits": [4, 8]}})
    pmap = parse_precision("a", {"a": {"auto": {"budget_bits": 5}}})
    assert pmap.auto == AutoConfig(5.0) and not pmap.is_float
    with pytest.raises(ValueError, match="automatic"):
        pmap.bits_for("x.weight")


@pytest.mark.parametrize("method", ["hessian", "fisher"])
def test_auto_map_is_within_budget_written_and_usable(tmp_path, method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    spec = QuantSpec("ste", bits=4)
    quantize_(model, spec)
    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))

    class Task:
        def train_batch(self, step, device):
            g = torch.Generator().manual_seed(step)
            idx = torch.randint(0, 64, (16,), generator=g)
            return x[idx], y[idx]

        def loss(self, m, batch):
            return F.cross_entropy(m(batch[0]), batch[1])

    maps = {
        "auto5": {"auto": {"budget_bits": 5.0, "sensitivity": method, "samples": 4}},
        "hand": {"default": 4},
    }
    out = resolve_auto_maps(maps, ["auto5", "hand"], model, spec, Task(), torch.device("cpu"), tmp_path)
    report = json.loads((tmp_path / "auto5.json").read_text())
    assert report["average_bits"] <= 5.0 + 1e-9
    assert report["total_sensitivity"] <= report["greedy"]["total_sensitivity"] + 1e-12
    assert {layer["bits"] for layer in report["layers"]} <= {4, 8}
    assert report["hvp"] == ("autograd" if method == "hessian" else None)
    pmap = parse_precision("auto5", out)
    assert out["hand"] == maps["hand"]
    assert average_bits(model, spec, pmap) == pytest.approx(report["average_bits"])
    for layer in report["layers"]:
        assert pmap.bits_for(layer["name"]) == layer["bits"]
        assert layer["trace"] > 0 if method == "fisher" else True
    with use_precision(model, pmap, spec):
        assert torch.isfinite(model(x)).all()
    # the sensitivity ranks 4 bits worse than 8 for every layer
    for layer in report["layers"]:
        assert layer["perturbation"]["4"] > layer["perturbation"]["8"]
    # resolved again: read back, not recomputed
    (tmp_path / "auto5.json").write_text(json.dumps({**report, "map": {"default": 8}}))
    again = resolve_auto_maps(maps, ["auto5"], model, spec, Task(), torch.device("cpu"), tmp_path)
    assert again["auto5"] == {"default": 8}


def test_auto_map_pass_leaves_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    spec = QuantSpec("rand", bits=4)
    quantize_(model, spec)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    cfg = AutoConfig(5.0, "hessian", (2, 4, 8), samples=2, batches=1)
    report = auto_precision_map(model, spec, cfg, [lambda: F.mse_loss(model(x), y)])
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert report["average_bits"] <= 5.0
