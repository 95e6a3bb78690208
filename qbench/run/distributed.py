"""Data-parallel training over torch.distributed, started by torchrun with no recipe change:

    torchrun --nproc-per-node N -m qbench run RECIPE

Every rank runs the same suite and the same runs. Per training step each rank takes its share of
the step's global batch (`train.batch_size` stays the global batch, so a recipe means the same run
on one process or on many), and gradients are summed across ranks before clipping and the
optimizer step. Evaluation batches are shared out and the hypotheses gathered, so every rank
scores the whole split. Only rank 0 writes: run folders, checkpoints, the shared warm-up, the
index and the console.

**Same result as one process.** Each rank's loss is its shard's *sum* of per-item losses divided
by the *global* normaliser (utterances for CTC, target tokens for MT; see the tasks' `loss_norm`),
and the all-reduce sums the gradients, so the summed gradient is the one-process gradient of the
global batch whatever the shard sizes. Left over are float rounding (the sum is formed in another
order) and what is per-shard by nature: batch statistics of BatchNorm (the Conformer's
convolution module; as in plain DDP, not synchronised) and the padding of each shard.

**Quantizer state stays consistent.** All ranks build the model from the same seed, and rank 0's
start point (checkpoint, shared warm-up) is broadcast; identical gradients keep weights, learned
scales (LSQ, PACT) and their optimizer state identical; `check_in_sync` verifies that at the end
of training. The quantization noise (PQN, RAND) must also be one draw for the whole global batch:
each step the quantized weights are computed once, under `parametrize.cached()`, from a generator
seeded by (seed, step) alike on every rank, while dropout and SpecAugment draw from a stream
seeded by (seed, step, rank). A distributed run is thus a pure function of (seed, step, world
size) and resumes exactly from rank 0's checkpoint.

**Gradients are all-reduced by hand rather than by DistributedDataParallel**: QAT attaches
quantizers mid-run (torch.nn.utils.parametrize renames weights and adds learned scales), which
would mean re-wrapping DDP; parameters without a gradient (a frozen scale) would need
`find_unused_parameters`; a rank whose shard is empty (the last, short batch of an epoch) must
still take part; and the quantized weights are computed outside the module's forward. One
flattened all-reduce per step does all of that; what it gives up is DDP's overlap of
communication with the backward pass.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from qbench.config import stable_hash
from qbench.device import resolve_device, threads_from_env
from qbench.progress import console
from qbench.quant.batching import batched_quantization

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This rank's share of a list: every `world`-th item from `rank` (strided, so a list sorted by
    length gives every rank a similar amount of work)."""

    rank: int = 0
    world: int = 1

    def take(self, items: Sequence[T]) -> list[T]:
        return list(items[self.rank :: self.world])

    def gather(self, part: dict) -> dict:
        """Merge every rank's dict (disjoint keys), on every rank."""
        if self.world == 1:
            return dict(part)
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part)
        merged: dict = {}
        for p in parts:
            merged.update(p)
        return merged


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world)

    # ------------------------------------------------------------ collectives (no-ops alone)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return cast(T, box[0])  # rank 0's object, never None

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def all_reduce_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Sum the gradients of all ranks, in one flattened all-reduce. A parameter has a gradient
        afterwards iff it had one on some rank (None stays None, as AdamW skips those)."""
        if not self.enabled or not params:
            return
        p0 = params[0]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=p0.dtype, device=p0.device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [present])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n
        for p, has in zip(params, (flat[offset:] > 0).tolist(), strict=True):
            if not has:
                p.grad = None

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers on every rank: BatchNorm's running statistics are gathered from each
        rank's shard, so without this the ranks would evaluate (and checkpoint) different models.
        DDP does the same before every forward (broadcast_buffers); here, before each evaluation."""
        if self.enabled:
            for b in model.buffers():
                dist.broadcast(b.data, src=0)

    def check_in_sync(self, model: nn.Module) -> None:
        """Raise if any rank's parameters differ from rank 0's (per-tensor checksums)."""
        if not self.enabled:
            return
        tensors = [p.detach() for p in model.parameters()]
        sums = torch.stack(
            [t.detach().double().sum() for t in tensors] + [torch.zeros((), dtype=torch.double)]
        )
        ref = sums.clone()
        dist.broadcast(ref, src=0)
        bad = torch.tensor(float(not torch.equal(sums, ref)), device=sums.device)
        dist.all_reduce(bad)
        if bad.item():
            raise RuntimeError("data-parallel ranks hold different weights after training")

    # ------------------------------------------------------------ randomness of one step

    @contextlib.contextmanager
    def step(self, model: nn.Module, seed: int, step: int, batched: bool = True) -> Iterator[None]:
        """Around one training step's forward: the quantized weights computed once, in batched
        groups (qbench.quant.batching; ``batched=False`` under torch.compile); distributed, from a
        noise stream shared by all ranks, then a per-rank stream for dropout and augmentation (see
        the module docstring)."""
        if not self.enabled:
            with batched_quantization(model, enabled=batched):
                yield
            return
        torch.manual_seed(_seed(seed, step, "quantizer"))
        with batched_quantization(model, enabled=batched), parametrize.cached():
            for module in model.modules():
                if parametrize.is_parametrized(module):
                    for name in cast(nn.ModuleDict, module.parametrizations):
                        getattr(module, name)
            torch.manual_seed(_seed(seed, step, self.rank))
            yield


def _seed(*parts: Any) -> int:
    return int(stable_hash(["qbench-ddp", *map(str, parts)])[:15], 16)


_ENV = DistEnv()


def current() -> DistEnv:
    """This process's place in the data-parallel group (rank 0 of 1 without torchrun)."""
    return _ENV


def launched() -> bool:
    """Started by torchrun (or anything else that sets WORLD_SIZE > 1)?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> tuple[DistEnv, str]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT):
    nccl on CUDA with one GPU per local rank, gloo on the CPU. Returns the environment and the
    device this rank uses. Without torchrun: one process, the device as asked."""
    global _ENV
    if not launched():
        return _ENV, device
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        device_id = dev if backend == "nccl" else None
        dist.init_process_group(backend, timeout=timedelta(minutes=30), device_id=device_id)
    threads = threads_from_env()
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    _ENV = DistEnv(rank, world, local, backend)
    if rank != 0:
        console.quiet = True  # one console: rank 0's
    return _ENV, str(dev)


def shutdown() -> None:
    global _ENV
    if dist.is_initialized():
        dist.destroy_process_group()
    _ENV = DistEnv()


class MuteRun:
    """A run folder as ranks other than 0 see it: reads pass through, writes do nothing."""

    def __init__(self, run):
        self._run = run

    def __getattr__(self, name: str):
        return getattr(self._run, name)

    def start(self, *args, **kwargs) -> None:
        pass

    def log(self, *args, **kwargs) -> None:
        pass

    def set_status(self, *args, **kwargs) -> None:
        pass

    def write_hypotheses(self, *args, **kwargs) -> None:
        pass

    def write_metrics(self, *args, **kwargs) -> None:
        pass
