"""Device choice and mixed precision: CUDA with bf16 autocast when there is a GPU, the CPU otherwise."""

from __future__ import annotations

import contextlib
import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: qbench trains on cpu or cuda (auto picks)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    return device


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy; to a GPU from pinned memory without blocking, so the copy of the next
    batch overlaps the work queued for this one."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def autocast(device: torch.device, precision: str = "bf16"):
    """``precision="bf16"``: bf16 autocast on CUDA; on the CPU a no-op, since bf16 matmuls there are
    slower than fp32. ``"fp32"``: a no-op everywhere (recipes' ``train.precision``)."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be bf16 or fp32, got {precision!r}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def threads_from_env() -> int | None:
    """QBENCH_THREADS: torch threads per process (unset or empty: torch's default)."""
    value = os.environ.get("QBENCH_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"QBENCH_THREADS={value!r}: expected a whole number of threads, at least 1")
    return int(value)


def busy_machine_warning(jobs: int = 1) -> str | None:
    """A warning when the machine is already busier than its cores (1-minute load average): torch's
    threads then spin against other processes and training runs several times slower."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    if load <= cores:
        return None
    return (
        f"warning: this machine's load ({load:.1f}) already exceeds its {cores} cores; training will be "
        f"slow (torch threads compete): wait, lower --jobs ({jobs}) or set QBENCH_THREADS=1"
    )
