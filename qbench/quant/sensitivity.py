"""Automatic mixed precision: bits per layer from a second-order sensitivity under a size budget.

A recipe names an automatic map among its ``precisions:``::

    precisions:
      auto5: {auto: {budget_bits: 5.0, sensitivity: hessian, bits: [4, 8]}}

After training, each quantized weight tensor ("layer") ``l`` with ``n_l`` weights gets a
sensitivity per candidate bit width ``b`` (Xu et al., arXiv 2112.11540; HAWQ-V2)::

    Omega_l(b) = tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2

``tr(H_l)`` is the trace of the loss Hessian's diagonal block of layer ``l`` at the trained
(float, latent) weights, estimated by Hutchinson's method ``E[v^T H v]`` with Rademacher ``v``
drawn jointly for all layers (so one Hessian-vector product per sample serves every block) on a
few training batches; ``sensitivity: fisher`` uses the cheaper empirical Fisher trace (the sum of
squared batch gradients) instead. ``Q_b`` is the technique's own quantizer at ``b`` bits, exactly
as :func:`~qbench.quant.use_precision` evaluates it. Then the assignment minimising
``sum_l Omega_l(b_l)`` subject to ``sum_l n_l b_l <= budget_bits * sum_l n_l`` is found exactly by
dynamic programming (a multiple-choice knapsack over layers; costs are rounded *up* when the table
would be large, so the budget always holds).

Hessian-vector products use double backward (``torch.autograd.grad(..., create_graph=True)``).
Losses without a double backward (PyTorch's CTC loss has none) fall back to central differences
of gradients, ``Hv ~ (g(w + e v) - g(w - e v)) / 2e``; the map file records which was used.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from qbench.io import atomic_write_json

from .apply import find_quantizer, is_selected, use_precision, weight_slots
from .precision import AutoConfig, is_auto, parse_precision

__all__ = [
    "AutoConfig",
    "is_auto",
    "hutchinson_traces",
    "fisher_traces",
    "quantization_perturbations",
    "assign_bits",
    "greedy_assign",
    "auto_precision_map",
    "resolve_auto_maps",
]

# ------------------------------------------------------------------ trace estimates


def _rademacher(t: Tensor, gen: torch.Generator) -> Tensor:
    v = torch.randint(0, 2, t.shape, generator=gen, dtype=torch.int8).to(t.device, t.dtype)
    return v.mul_(2).sub_(1)


def _hvp_autograd(loss: Tensor, params: Sequence[Tensor]):
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(vs: Sequence[Tensor]) -> list[Tensor]:
        return list(torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True))

    return hvp


def _hvp_finite_difference(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], rel_eps: float):
    """Central differences of gradients along ``v`` (for losses without a double backward).
    The step is ``rel_eps`` times the RMS of the weights (a Rademacher v has unit entries)."""
    with torch.no_grad():
        sq = sum(float(p.detach().float().pow(2).sum()) for p in params)
        n = sum(p.numel() for p in params)
    eps = rel_eps * max(math.sqrt(sq / max(n, 1)), 1e-8)

    def grad_at(vs: Sequence[Tensor], sign: float) -> list[Tensor]:
        with torch.no_grad():
            for p, v in zip(params, vs, strict=True):
                p.add_(v, alpha=sign * eps)
        try:
            return [g.detach() for g in torch.autograd.grad(loss_fn(), params)]
        finally:
            with torch.no_grad():
                for p, v in zip(params, vs, strict=True):
                    p.sub_(v, alpha=sign * eps)

    def hvp(vs: Sequence[Tensor]) -> list[Tensor]:
        plus, minus = grad_at(vs, 1.0), grad_at(vs, -1.0)
        return [(a - b) / (2 * eps) for a, b in zip(plus, minus, strict=True)]

    return hvp


def hutchinson_traces(
    loss_fns: Sequence[Callable[[], Tensor]],
    params: Sequence[Tensor],
    samples: int = 8,
    seed: int = 0,
    hvp: str = "auto",
    rel_eps: float = 1e-3,
) -> tuple[list[float], str]:
    """Hutchinson estimates of ``tr(H_l)`` for each tensor in ``params`` (the diagonal blocks of
    the Hessian of the mean of the losses), ``samples`` Rademacher vectors per loss.

    ``loss_fns`` are deterministic closures (one per batch). ``hvp``: ``"autograd"`` (double
    backward), ``"finite-difference"``, or ``"auto"`` (autograd, falling back to finite differences
    when the loss has no double backward). Returns the traces and the method used."""
    if hvp not in ("auto", "autograd", "finite-difference"):
        raise ValueError(f"hvp must be auto, autograd or finite-difference, got {hvp!r}")
    if hvp == "auto":
        try:
            return hutchinson_traces(loss_fns, params, samples, seed, "autograd", rel_eps)
        except RuntimeError as e:  # e.g. "derivative for aten::_ctc_loss_backward is not implemented"
            if "not implemented" not in str(e):
                raise
            return hutchinson_traces(loss_fns, params, samples, seed, "finite-difference", rel_eps)
    gen = torch.Generator().manual_seed(seed)
    totals = [0.0] * len(params)
    for loss_fn in loss_fns:
        if hvp == "autograd":
            product = _hvp_autograd(loss_fn(), params)
        else:
            product = _hvp_finite_difference(loss_fn, params, rel_eps)
        for _ in range(samples):
            vs = [_rademacher(p, gen) for p in params]
            for i, (v, hv) in enumerate(zip(vs, product(vs), strict=True)):
                totals[i] += float((v * hv).sum())
        del product
    denom = samples * len(loss_fns)
    return [t / denom for t in totals], hvp


def fisher_traces(loss_fns: Sequence[Callable[[], Tensor]], params: Sequence[Tensor]) -> list[float]:
    """Empirical Fisher trace per tensor: the squared batch gradient summed over the tensor,
    averaged over the batches (a cheap stand-in for the Hessian trace: one backward per batch)."""
    totals = [0.0] * len(params)
    for loss_fn in loss_fns:
        grads = torch.autograd.grad(loss_fn(), params)
        for i, g in enumerate(grads):
            totals[i] += float(g.detach().float().pow(2).sum())
    return [t / len(loss_fns) for t in totals]


# ------------------------------------------------------------------ perturbations


@dataclass
class Layer:
    names: list[str]  # original parameter names (several when the tensor is tied)
    tensor: Tensor  # the float (latent) weight
    module: nn.Module
    tname: str

    @property
    def params(self) -> int:
        return self.tensor.numel()


def quantized_layers(model: nn.Module, spec) -> list[Layer]:
    """Every weight tensor that a quantized precision quantizes (an attached quantizer, or
    selected by ``spec`` on a float/ptq model), once per tensor."""
    out: dict[int, Layer] = {}
    for name, module, tname, tensor in weight_slots(model):
        if find_quantizer(module, tname) is None and not is_selected(name, tensor, spec):
            continue
        if id(tensor) in out:
            out[id(tensor)].names.append(name)
        else:
            out[id(tensor)] = Layer([name], tensor, module, tname)
    return list(out.values())


@torch.no_grad()
def quantization_perturbations(model: nn.Module, spec, layers: Sequence[Layer], bits: Sequence[int]):
    """``||Q_b(W_l) - W_l||^2`` per layer and bit width, with ``Q_b`` what ``use_precision(model,
    "w<b>")`` evaluates (the technique's scale function, stored-scale rounding included)."""
    out: list[dict[int, float]] = [dict() for _ in layers]
    for b in bits:
        with use_precision(model, f"w{b}", spec):
            for i, layer in enumerate(layers):
                wq = getattr(layer.module, layer.tname)
                out[i][b] = float((wq.float() - layer.tensor.detach().float()).pow(2).sum())
    return out


# ------------------------------------------------------------------ assignment


def assign_bits(
    sizes: Sequence[int],
    sensitivities: Sequence[Mapping[int, float]],
    budget_bits: float,
    max_states: int = 200_000,
) -> list[int]:
    """Bits per layer minimising ``sum_l sensitivities[l][b_l]`` subject to
    ``sum_l sizes[l] * b_l <= budget_bits * sum_l sizes[l]``: exact dynamic programming over
    layers (multiple-choice knapsack). When the table would exceed ``max_states`` capacity units,
    costs are rounded up to a coarser unit: the result is then optimal for the rounded costs and
    still within the true budget."""
    if len(sizes) != len(sensitivities):
        raise ValueError("one sensitivity mapping per layer is needed")
    if not sizes:
        return []
    total = sum(sizes)
    capacity = math.floor(budget_bits * total + 1e-9)
    unit = math.gcd(*sizes)
    if capacity // unit > max_states:
        unit = math.ceil(capacity / max_states)
    cap_units = capacity // unit
    inf = float("inf")
    dp = np.full(cap_units + 1, inf)
    dp[0] = 0.0
    choices = []
    for n, sens in zip(sizes, sensitivities, strict=True):
        new = np.full(cap_units + 1, inf)
        pick = np.full(cap_units + 1, -1, dtype=np.int16)
        for b in sorted(sens):
            c = math.ceil(n * b / unit)
            if c > cap_units:
                continue
            cand = np.full(cap_units + 1, inf)
            cand[c:] = dp[: cap_units + 1 - c] + float(sens[b])
            better = cand < new
            new[better] = cand[better]
            pick[better] = b
        dp = new
        choices.append(pick)
    if not np.isfinite(dp).any():
        raise ValueError(
            f"no assignment fits a budget of {budget_bits} bits per weight "
            f"(the smallest choice costs {sum(n * min(s) for n, s in zip(sizes, sensitivities, strict=True)) / total:.3f})"
        )
    j = int(np.argmin(dp))
    out = []
    for n, pick in zip(reversed(sizes), reversed(choices), strict=True):
        b = int(pick[j])
        out.append(b)
        j -= math.ceil(n * b / unit)
    return out[::-1]


def greedy_assign(
    sizes: Sequence[int], sensitivities: Sequence[Mapping[int, float]], budget_bits: float
) -> list[int]:
    """The baseline: every layer at its smallest width, then repeatedly the upgrade to the next
    width with the largest sensitivity drop per extra bit that still fits the budget."""
    capacity = budget_bits * sum(sizes)
    bits = [min(s) for s in sensitivities]
    used = sum(n * b for n, b in zip(sizes, bits, strict=True))
    if used > capacity + 1e-9:
        raise ValueError(f"no assignment fits a budget of {budget_bits} bits per weight")
    while True:
        best, best_gain = None, 0.0
        for i, (n, sens) in enumerate(zip(sizes, sensitivities, strict=True)):
            higher = [b for b in sorted(sens) if b > bits[i]]
            if not higher:
                continue
            nb = higher[0]
            extra = n * (nb - bits[i])
            gain = (sens[bits[i]] - sens[nb]) / extra
            if used + extra <= capacity + 1e-9 and gain > best_gain:
                best, best_gain = (i, nb, extra), gain
        if best is None:
            return bits
        i, nb, extra = best
        bits[i], used = nb, used + extra


# ------------------------------------------------------------------ the whole pass


def auto_precision_map(
    model: nn.Module,
    spec,
    cfg: AutoConfig,
    loss_fns: Sequence[Callable[[], Tensor]],
    name: str = "auto",
    seed: int = 0,
) -> dict:
    """Sensitivities and the chosen bits of every quantized layer of ``model``.

    The estimate is taken at the float (latent) weights with quantizers disabled and the model in
    eval mode (no dropout); ``loss_fns`` are deterministic closures over training batches.
    Returns a JSON-ready report whose ``"map"`` is a named precision map (``parse_precision``)."""
    t0 = time.perf_counter()
    layers = quantized_layers(model, spec)
    if not layers:
        raise ValueError(f"precision map {name!r}: the model has no quantized weights to assign bits to")
    params = [layer.tensor for layer in layers]
    was_training = model.training
    flags = [p.requires_grad for p in params]
    model.eval()
    try:
        for p in params:
            p.requires_grad_(True)
        with use_precision(model, "float", spec):
            if cfg.sensitivity == "hessian":
                traces, hvp = hutchinson_traces(loss_fns, params, cfg.samples, seed=seed)
            else:
                traces, hvp = fisher_traces(loss_fns, params), None
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    perturb = quantization_perturbations(model, spec, layers, cfg.bits)
    sizes = [layer.params for layer in layers]
    sens = [
        {b: t / n * d for b, d in pert.items()} for t, n, pert in zip(traces, sizes, perturb, strict=True)
    ]
    bits = assign_bits(sizes, sens, cfg.budget_bits)
    greedy = greedy_assign(sizes, sens, cfg.budget_bits)
    total = sum(sizes)

    def summary(assignment: list[int]) -> dict:
        return {
            "average_bits": sum(n * b for n, b in zip(sizes, assignment, strict=True)) / total,
            "total_sensitivity": sum(s[b] for s, b in zip(sens, assignment, strict=True)),
        }

    named: dict[str, int | None] = {"default": None}
    for layer, b in zip(layers, bits, strict=True):
        for n in layer.names:
            named[n] = b
    return {
        "name": name,
        "config": {**asdict(cfg), "bits": list(cfg.bits)},
        "hvp": hvp,
        **summary(bits),
        "greedy": summary(greedy),
        "seconds": time.perf_counter() - t0,
        "layers": [
            {
                "name": layer.names[0],
                "tied": layer.names[1:],
                "params": n,
                "trace": t,
                "perturbation": {str(b): d for b, d in pert.items()},
                "sensitivity": {str(b): s[b] for b in sorted(s)},
                "bits": b,
                "greedy_bits": g,
            }
            for layer, n, t, pert, s, b, g in zip(
                layers, sizes, traces, perturb, sens, bits, greedy, strict=True
            )
        ],
        "map": named,
    }


def _task_loss_fns(
    task, model: nn.Module, n_batches: int, device: torch.device
) -> list[Callable[[], Tensor]]:
    """Deterministic loss closures over the task's first training batches: any augmentation the
    task's loss draws is drawn from a fixed seed each call (finite differences need that)."""
    fns: list[Callable[[], Tensor]] = []
    for i in range(n_batches):
        batch = task.train_batch(i, device)

        def fn(batch=batch, i=i) -> Tensor:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(10_000 + i)
                return task.loss(model, batch).float()

        fns.append(fn)
    return fns


def resolve_auto_maps(
    named_maps: Mapping[str, Mapping],
    wanted: Sequence[str],
    model: nn.Module,
    spec,
    task,
    device: torch.device,
    out_dir: Path,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Mapping]:
    """``named_maps`` with every automatic map in ``wanted`` replaced by the concrete map chosen
    for this trained model; each choice is written to ``out_dir/<name>.json`` (and read back from
    there when the same settings were resolved before, so a re-evaluation uses the same map)."""
    out = dict(named_maps)
    for name in wanted:
        spec_map = named_maps.get(name)
        if not is_auto(spec_map):
            continue
        cfg = AutoConfig.parse(name, spec_map)
        f = out_dir / f"{name}.json"
        report = None
        if f.is_file():
            old = json.loads(f.read_text())
            if old.get("config") == {**asdict(cfg), "bits": list(cfg.bits)}:
                report = old
        if report is None:
            fns = _task_loss_fns(task, model, cfg.batches, device)
            report = auto_precision_map(model, spec, cfg, fns, name=name, seed=seed)
            atomic_write_json(f, report)
        if log:
            log(
                f"precision {name}: {cfg.sensitivity} sensitivities -> {report['average_bits']:.3f} average bits "
                f"(budget {cfg.budget_bits}; greedy {report['greedy']['average_bits']:.3f} bits, sensitivity "
                f"{report['total_sensitivity']:.4g} vs greedy {report['greedy']['total_sensitivity']:.4g}) -> {f}"
            )
        out[name] = report["map"]
    return out


def average_bits(model: nn.Module, spec, precision) -> float | None:
    """Average bits per quantized weight (weighted by parameter count) of a precision map on
    ``model``; None when it quantizes nothing."""
    pmap = parse_precision(precision)
    num = den = 0
    for layer in quantized_layers(model, spec):
        b = pmap.bits_for(layer.names[0])
        if b is not None:
            num += b * layer.params
            den += layer.params
    return num / den if den else None


def written_maps(run_dir: Path, named_maps: Mapping[str, Mapping]) -> dict[str, Mapping]:
    """``named_maps`` with each automatic map replaced by the one a finished run chose (its
    ``precision_maps/<name>.json``); automatic maps the run did not resolve stay as they are."""
    out = dict(named_maps)
    for name, spec in named_maps.items():
        f = Path(run_dir) / "precision_maps" / f"{name}.json"
        if is_auto(spec) and f.is_file():
            out[name] = json.loads(f.read_text())["map"]
    return out
