"""Throughput of the demo models: training utterances (sentences) per second, evaluation real-time
factor, float32 eager vs bf16 autocast vs torch.compile, and the QAT step-time ratio per technique.

    .venv/bin/python benchmarks/throughput.py [--device cuda] [--compile] [--compile-mode reduce-overhead]
        [--pad-to-multiple N] [--optimizer-impl fused] [--recipe PATH] [--threads N] [--steps S]

ASR: the demo Conformer-CTC (recipes/demo.yaml; `--recipe PATH`: the model of another recipe, e.g.
recipes/asr-synthetic-gpu.yaml) on batches of synthetic 80-bin features of
3-4 s (300-400 frames), as benchmarks/quant_speed.py builds them. A training step is the engine's
(zero_grad, forward, CTC loss, backward, clipping, AdamW). Evaluation: eval-mode forward plus
greedy CTC decoding of a batch; real-time factor = compute seconds / audio seconds (10 ms
frames). MT: the Transformer of recipes/mt-synthetic.yaml on batches of random token ids
(12-20 source and target tokens), sentences per second.

Modes: `fp32` eager; `bf16` autocast (on the CPU too, where torch supports it, though qbench's
engine only uses it on CUDA: see the table); `compile` (torch.compile, inductor, float32, and with
bf16 on CUDA). Compiling on a CPU takes minutes, so there it is left out unless `--compile`.
The QAT ratio is a technique's step time over float's in the same mode, measured in rotating
rounds in this one run (median of per-round ratios). GPU utilisation is sampled every 0.1 s
during the timed training steps (torch.cuda.utilization, or nvidia-smi), averaged. On CUDA the
host syncs of one training step of each technique are counted too (torch.cuda's sync debug mode).
`--compile-mode reduce-overhead` compiles with CUDA graphs; `--pad-to-multiple N` pads the ASR
batch's frames and targets to a multiple of N, as the engine's `train.pad_to_multiple` does;
`--optimizer-impl fused` steps AdamW as `train.optimizer_impl: fused` does.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quant_speed import VOCAB, make_batch  # noqa: E402

from qbench.config import load_suite  # noqa: E402
from qbench.quant import QuantSpec, batched_quantization  # noqa: E402
from qbench.quant.techniques import TECHNIQUE_CONFIGS  # noqa: E402
from qbench.run.engine import attach_quantizers, make_optimizer  # noqa: E402
from qbench.tasks.asr import build_asr_model, ctc_greedy_decode  # noqa: E402
from qbench.tasks.buckets import pad_to, padded_length  # noqa: E402
from qbench.tasks.mt import PAD, TransformerMT  # noqa: E402
from qbench.tasks.tokenizers import CharTokenizer  # noqa: E402

TECHNIQUES = tuple(TECHNIQUE_CONFIGS)  # every preset that trains quantization-aware
MT_VOCAB = 1000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def amp(device: torch.device, mode: str):
    if mode.startswith("bf16") or (mode == "compile" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class GPUSampler:
    """Mean GPU utilisation (%) over a `with` block, sampled in a thread."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self._stop = device, [], threading.Event()

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - pynvml missing: ask nvidia-smi
            try:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                        "-i",
                        str(self.device.index or 0),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                return float(out.stdout.strip().splitlines()[0])
            except Exception:  # noqa: BLE001
                return None

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            v = self._read()
            if v is not None:
                self.samples.append(v)

    def __enter__(self):
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.device.type == "cuda":
            self._thread.join()
            if not self.samples:  # shorter than one tick: NVML's reading covers the last fraction of a second
                v = self._read()
                if v is not None:
                    self.samples.append(v)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


# ------------------------------------------------------------------ models and steps


#: torch.compile's mode for the "compile" rows (--compile-mode)
COMPILE_MODE: str | None = None
#: AdamW's implementation (--optimizer-impl; the engine's train.optimizer_impl)
OPTIMIZER_IMPL = "foreach"


def asr_model(recipe: Path):
    """The untrained Conformer-CTC of a recipe's `model:` section (the demo's: quant_speed's)."""
    return build_asr_model(load_suite(recipe).runs[0].model, VOCAB)


class ASRSetup:
    def __init__(self, base, technique: str, device: torch.device, mode: str, bits: int = 4):
        self.model = copy.deepcopy(base).to(device).train()
        self.opt = make_optimizer(self.model, 1e-4, 0.01, OPTIMIZER_IMPL)
        if technique != "float":
            attach_quantizers(self.model, self.opt, QuantSpec(technique, bits))
        self.device, self.mode = device, mode
        self.forward = torch.compile(self.model, mode=COMPILE_MODE) if mode == "compile" else self.model

    def step(self, b: dict) -> None:
        self.opt.zero_grad(set_to_none=True)
        with amp(self.device, self.mode), batched_quantization(self.model, self.mode != "compile"):
            lp, ol = self.forward(b["feats"], b["lengths"])
            loss = F.ctc_loss(lp.transpose(0, 1), b["targets"], ol, b["tl"], zero_infinity=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()

    @torch.no_grad()
    def decode(self, b: dict) -> list[str]:
        self.model.eval()
        with amp(self.device, self.mode):
            lp, ol = self.model(b["feats"], b["lengths"])
        self.model.train()
        tokenizer = CharTokenizer()  # the demo model's vocabulary is larger: decode the units it has
        return ctc_greedy_decode(lp[..., : tokenizer.size], ol, tokenizer)


def mt_model() -> TransformerMT:
    m = load_suite(ROOT / "recipes" / "mt-synthetic.yaml").runs[0].model
    return TransformerMT(
        MT_VOCAB, m.d_model, m.encoder_layers, m.decoder_layers, m.heads, m.ffn_mult, m.dropout, m.max_len
    )


def mt_batch(device: torch.device, batch: int) -> dict:
    g = torch.Generator().manual_seed(0)

    def tokens(lo, hi):
        lengths = torch.randint(lo, hi + 1, (batch,), generator=g)
        t = torch.randint(4, MT_VOCAB, (batch, int(lengths.max())), generator=g)
        t[torch.arange(t.shape[1])[None, :] >= lengths[:, None]] = PAD
        return t

    src, tgt = tokens(12, 20), tokens(12, 20)
    return {"src": src.to(device), "tgt_in": tgt[:, :-1].to(device), "tgt_out": tgt[:, 1:].to(device)}


class MTSetup(ASRSetup):
    def step(self, b: dict) -> None:
        self.opt.zero_grad(set_to_none=True)
        with amp(self.device, self.mode), batched_quantization(self.model, self.mode != "compile"):
            logits = self.forward(b["src"], b["tgt_in"])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(), ignore_index=PAD)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()


# ------------------------------------------------------------------ timing


def time_steps(fn, device: torch.device, steps: int) -> float:
    """Median seconds per call over `steps` calls."""
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pad_batch(b: dict, multiple: int) -> dict:
    """The ASR batch with frames and targets padded to a multiple (targets as (B, S) rows)."""
    if not multiple:
        return b
    feats = pad_to(b["feats"], padded_length(b["feats"].shape[1], multiple))
    rows = torch.nn.utils.rnn.pad_sequence(list(b["targets"].split(b["tl"].tolist())), batch_first=True)
    return {**b, "feats": feats, "targets": pad_to(rows, padded_length(rows.shape[1], multiple))}


def syncs_per_step(setup: ASRSetup, b: dict) -> int | None:
    """Host syncs torch.cuda reports in one training step (CUDA only)."""
    if setup.device.type != "cuda":
        return None
    sync(setup.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            setup.step(b)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def qat_ratios(setups: dict, b: dict, device: torch.device, rounds: int, steps: int) -> dict[str, float]:
    """Each technique's step time over float's, median of per-round ratios (rotating order)."""
    names = list(setups)
    ratios: dict[str, list[float]] = {n: [] for n in names if n != "float"}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        t = {n: time_steps(lambda s=setups[n]: s.step(b), device, steps) for n in order}
        for n in ratios:
            ratios[n].append(t[n] / t["float"])
    return {n: statistics.median(v) for n, v in ratios.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile: more)")
    ap.add_argument("--batch", type=int, default=8, help="ASR utterances per batch (MT: 4x sentences)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the QAT ratio measurement")
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include torch.compile (default: on CUDA yes, on the CPU no)",
    )
    ap.add_argument("--techniques", nargs="*", default=list(TECHNIQUES))
    ap.add_argument(
        "--skip-bf16", action="store_true", help="leave out the bf16 mode (fp32 stays: it is the reference)"
    )
    ap.add_argument(
        "--compile-techniques",
        nargs="*",
        default=None,
        help="techniques whose QAT ratio is also measured compiled (default: all; each compiles for tens of seconds)",
    )
    ap.add_argument("--no-mt", action="store_true")
    ap.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile's mode (reduce-overhead: CUDA graphs)",
    )
    ap.add_argument(
        "--pad-to-multiple", type=int, default=0, help="pad the ASR batch's time axes to a multiple"
    )
    ap.add_argument("--optimizer-impl", default="foreach", choices=["foreach", "fused"], help="AdamW's")
    ap.add_argument(
        "--recipe", type=Path, default=ROOT / "recipes" / "demo.yaml", help="the ASR model's recipe"
    )
    args = ap.parse_args()
    global COMPILE_MODE, OPTIMIZER_IMPL
    COMPILE_MODE, OPTIMIZER_IMPL = args.compile_mode, args.optimizer_impl
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_compile = device.type == "cuda" if args.compile is None else args.compile
    modes = ["fp32"] + ([] if args.skip_bf16 else ["bf16"]) + (["compile"] if use_compile else [])
    torch.manual_seed(0)
    asr_base, mt_base = asr_model(args.recipe), mt_model()
    b = pad_batch(make_batch(device, batch=args.batch), args.pad_to_multiple)
    audio_seconds = float(b["lengths"].sum()) * 0.01
    mb = mt_batch(device, 4 * args.batch)

    print(
        f"device: {device}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f" ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
        )
    )
    print(
        f"torch {torch.__version__}; ASR Conformer of {args.recipe.name}, batch {args.batch} x {audio_seconds / args.batch:.1f} s; "
        f"MT batch {4 * args.batch} sentences; {args.steps} timed steps (median); "
        f"compile mode {args.compile_mode or 'default'}; AdamW {args.optimizer_impl}; "
        f"frames padded to {tuple(b['feats'].shape)}\n"
    )
    rows, qat, syncs = [], {}, {}
    for mode in modes:
        try:
            s = ASRSetup(asr_base, "float", device, mode)
            for _ in range(args.warmup + (2 if mode == "compile" else 0)):
                s.step(b)
            with GPUSampler(device) as gpu:
                t_step = time_steps(lambda s=s: s.step(b), device, args.steps)
            s.decode(b)
            t_dec = time_steps(lambda s=s: s.decode(b), device, args.steps)
            mt_rate = None
            if not args.no_mt:
                m = MTSetup(mt_base, "float", device, mode)
                for _ in range(args.warmup + (2 if mode == "compile" else 0)):
                    m.step(mb)
                mt_rate = 4 * args.batch / time_steps(lambda m=m: m.step(mb), device, args.steps)
            rows.append((mode, args.batch / t_step, t_dec / audio_seconds, mt_rate, gpu.mean, t_step))
            techniques = args.techniques
            if mode == "compile" and args.compile_techniques is not None:
                techniques = [t for t in args.techniques if t in args.compile_techniques]
            setups = {"float": s} | {t: ASRSetup(asr_base, t, device, mode) for t in techniques}
            for t in techniques:
                for _ in range(args.warmup + (2 if mode == "compile" else 0)):
                    setups[t].step(b)
            qat[mode] = qat_ratios(setups, b, device, args.rounds, args.steps)
            syncs[mode] = {t: syncs_per_step(setups[t], b) for t in setups}
        except Exception as e:  # noqa: BLE001 - a mode the device does not support: say so, go on
            rows.append((mode, None, None, None, None, None))
            print(f"{mode}: not measured: {type(e).__name__}: {str(e).splitlines()[0][:200]}")

    fp32 = rows[0][5]
    print(
        "| mode | ASR train utt/s | ASR step ms | speed-up vs fp32 | ASR eval RTF | MT train sent/s | GPU util % |"
    )
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    for mode, ups, rtf, mts, util, step in rows:
        print(
            f"| {mode} | {fmt(ups, '.1f')} | {fmt(step and step * 1e3, '.0f')} | "
            f"{fmt(step and fp32 / step, '.2f')} | {fmt(rtf, '.2e')} | {fmt(mts, '.1f')} | {fmt(util, '.0f')} |"
        )
    if not use_compile:
        print(
            "| compile | skipped: inductor compilation takes minutes on a CPU (--compile to include) | | | | | |"
        )
    print("\nQAT step time / float step time (ASR, same mode, this run):\n")
    print("| technique | " + " | ".join(qat) + " |")
    print("|---|" + "---|" * len(qat))
    for t in args.techniques:
        print(f"| {t} | " + " | ".join(f"{qat[m][t]:.2f}" if t in qat[m] else "n/a" for m in qat) + " |")
    if device.type == "cuda" and syncs:
        print("\nHost syncs in one training step (torch.cuda.set_sync_debug_mode):\n")
        print("| technique | " + " | ".join(syncs) + " |")
        print("|---|" + "---|" * len(syncs))
        for t in ["float", *args.techniques]:
            print(f"| {t} | " + " | ".join(str(syncs[m].get(t, "n/a")) for m in syncs) + " |")


if __name__ == "__main__":
    main()
