"""One training step of the demo Conformer: float vs every QAT technique, in one run.

    .venv/bin/python benchmarks/quant_speed.py [--threads N] [--rounds R] [--device cpu|cuda]
        [--techniques ste rand absmax+noise ...]

Techniques: float, the presets of qbench.quant.techniques (all of them by default), or parts spelled
``<scale>+<estimator>`` (a custom technique, e.g. ``learned+noise``).

A step is what the engine does: zero_grad, forward (quantized weights computed in batched groups,
qbench.quant.batching), CTC loss, backward, gradient clipping, AdamW step (learned lsq/pact
scales in the optimizer). Batch: 8 utterances of synthetic fbank-like
features (80 mel bins, 300-400 frames). Every technique gets its own copy of the same initial
model. Timing: rounds that visit the techniques in a rotating order; each visit times a float step
and a step of the technique back to back (which one first alternates), and the time ratio is the
median over all visits of (technique step / its float step): a shared machine's speed drifts by
+-10 % within seconds, and a pair 80 ms long sees the same speed. Beside it, a 95 % confidence
interval of that median (distribution-free: order statistics of the pairs). 120 rounds by
default: on the 2-core CPU the median of 30 pairs moved by +-1.5 % between runs, of 120 by
about +-0.5 %. Step time: the median of the technique's steps. Peak memory of a step: on CUDA torch.cuda.max_memory_allocated; on the
CPU the profiler's allocation events (peak of the running sum within a step) plus what lives
across steps (parameters, optimizer state, buffers). Both are over float's, measured in this run.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qbench.config import load_suite  # noqa: E402
from qbench.quant import QuantSpec, batched_quantization  # noqa: E402
from qbench.quant.techniques import TECHNIQUE_CONFIGS  # noqa: E402
from qbench.run.engine import attach_quantizers, make_optimizer  # noqa: E402
from qbench.tasks.asr import ConformerCTC  # noqa: E402

TECHNIQUES = ("float", *TECHNIQUE_CONFIGS)
VOCAB = 32


def demo_model() -> ConformerCTC:
    m = load_suite(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml").runs[0].model
    return ConformerCTC(
        m.n_mels,
        VOCAB,
        m.d_model,
        m.layers,
        m.heads,
        m.ffn_mult,
        m.conv_kernel,
        m.dropout,
        m.subsampling,
        utterance_cmn=m.feature_norm == "utterance",
    )


def make_batch(device: torch.device, batch: int = 8, n_mels: int = 80) -> dict:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(300, 401, (batch,), generator=g)
    feats = torch.randn(batch, int(lengths.max()), n_mels, generator=g) * 3.0 + 10.0
    tl = torch.randint(20, 40, (batch,), generator=g)
    targets = torch.randint(1, VOCAB, (int(tl.sum()),), generator=g)
    return {k: v.to(device) for k, v in dict(feats=feats, lengths=lengths, targets=targets, tl=tl).items()}


class Setup:
    def __init__(self, name: str, base: ConformerCTC, device: torch.device, spec: QuantSpec):
        self.name = name
        self.model = copy.deepcopy(base).to(device).train()
        self.opt = make_optimizer(self.model, 1e-4, 0.01)
        if name != "float":
            attach_quantizers(self.model, self.opt, spec)

    def step(self, b: dict) -> None:
        self.opt.zero_grad(set_to_none=True)
        with batched_quantization(self.model):  # as the engine's training step
            lp, ol = self.model(b["feats"], b["lengths"])
            loss = F.ctc_loss(lp.transpose(0, 1), b["targets"], ol, b["tl"], zero_infinity=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()

    def persistent_bytes(self) -> int:
        ts = {id(t): t for t in self.model.parameters()}
        ts.update({id(t): t for t in self.model.buffers()})
        for st in self.opt.state.values():
            ts.update({id(t): t for t in st.values() if torch.is_tensor(t)})
        return sum(t.numel() * t.element_size() for t in ts.values())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(s: Setup, b: dict, device: torch.device) -> int:
    if device.type == "cuda":
        s.opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        s.step(b)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    from torch.profiler import ProfilerActivity, profile

    s.opt.zero_grad(set_to_none=True)  # grads freed: the step starts from the persistent state
    base = s.persistent_bytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        s.step(b)
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    )
    run = peak = 0
    for _, n in events:
        run += n
        peak = max(peak, run)
    return base + peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=120,
        help="visits of every technique (default 120, ~2 min on 2 CPU cores)",
    )
    ap.add_argument(
        "--steps", type=int, default=1, help="timed (float, technique) pairs per technique per round"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--techniques", nargs="*", default=list(TECHNIQUES))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = demo_model()
    b = make_batch(device)
    names = ["float", *[t for t in args.techniques if t != "float"]]
    setups = {n: Setup(n, base, device, spec_of(n, args.bits)) for n in names}
    for s in setups.values():  # warm-up: lazy init, allocator, optimizer state
        for _ in range(3):
            s.step(b)
    sync(device)

    def timed(name: str) -> float:
        sync(device)
        t0 = time.perf_counter()
        setups[name].step(b)
        sync(device)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    techniques = names[1:]
    for r in range(args.rounds):
        for n in techniques[r % len(techniques) :] + techniques[: r % len(techniques)]:
            for _ in range(args.steps):
                if r % 2:
                    t_float, t_n = timed("float"), timed(n)
                else:
                    t_n, t_float = timed(n), timed("float")
                times["float"].append(t_float)
                times[n].append(t_n)
                ratios[n].append(t_n / t_float)
    ratios["float"] = [1.0]
    mem = {n: statistics.median(peak_bytes(setups[n], b, device) for _ in range(3)) for n in names}
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"demo Conformer, batch 8, w{args.bits}, {dev}, torch {torch.__version__}, "
        f"{args.rounds} rounds x {args.steps} step pairs"
    )
    print(
        f"{'technique':<10} {'step ms':>8} {'time/float':>10} {'95% CI':>13} {'peak MB':>8} {'mem/float':>9}"
    )
    for n in names:
        low, high = median_interval(ratios[n])
        print(
            f"{n:<10} {1e3 * statistics.median(times[n]):8.1f} {statistics.median(ratios[n]):10.3f} "
            f"{f'{low:.3f}-{high:.3f}':>13} {mem[n] / 2**20:8.1f} {mem[n] / mem['float']:9.3f}"
        )


def spec_of(name: str, bits: int) -> QuantSpec:
    """A preset's spec, or a custom technique's for ``<scale>+<estimator>`` ("float": unused)."""
    if "+" in name:
        scale, _, estimator = name.partition("+")
        return QuantSpec("custom", bits, scale=scale, estimator=estimator)
    return QuantSpec(name if name != "float" else "ste", bits)


def median_interval(values: list[float]) -> tuple[float, float]:
    """A 95 % confidence interval of the median of ``values``: the order statistics
    ``n/2 -+ 1.96 sqrt(n)/2`` (the binomial count of values below the median, normal approximation)."""
    v = sorted(values)
    half = math.ceil(1.96 * math.sqrt(len(v)) / 2)
    mid = len(v) // 2
    return v[max(0, mid - half)], v[min(len(v) - 1, mid + half)]


if __name__ == "__main__":
    main()
