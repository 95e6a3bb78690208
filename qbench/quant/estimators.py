"""The estimators a quantizer may use, one class each (see :class:`~qbench.quant.parts.Estimator`).

``round-ste``  forward ``s * clamp(round(W / s), -Qp, Qp)``, bit for bit the values of
               ``torch.fake_quantize_per_channel_affine``; backward straight through to ``W``
               inside the clamp range, and LSQ's gradient to ``s`` (``q - W/s`` inside the
               range, ``q = +-Qp`` outside).
``noise``      training forward ``W + s * u`` with fresh ``u ~ U(-1/2, 1/2)`` (``noise: normal``:
               normal with the same variance 1/12), drawn from torch's generator on any device;
               hard rounding (round-STE) in evaluation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .parts import Estimator, Option

__all__ = ["RoundSTE", "Noise", "round_ste", "noise_like"]

_INV_SQRT12 = 1.0 / math.sqrt(12.0)


def round_ste(rows: Tensor, scale: Tensor, qp: int, clips: bool = True) -> Tensor:
    """Round-to-nearest fake quantization of ``(G, n)`` rows with ``(G,)`` fp32 scales, in plain
    autograd ops, on any device.

    Values: the arithmetic of ``torch.fake_quantize_per_channel_affine`` with zero point 0 --
    ``x = W * (1/s)`` in fp32, round half to even, clamp to ``[-Qp, Qp]``, times ``s``, and
    ``+0.0`` where the kernel's integer cast turns -0.0 into +0.0 -- so the result equals the
    kernel's bit for bit. The gradients ride on terms whose value is exactly zero (``t -
    t.detach()``): ``W * inside`` gives ``W`` the straight-through gradient, ``s * c`` with ``c =
    q - x`` inside the range and ``q`` outside gives ``s`` LSQ's gradient. ``clips=False`` promises
    that no ``W / s`` rounds beyond ``+-Qp`` (the scale is at least ``max|W_i| / Qp``): the clamp
    and the range mask are then skipped (the same values).
    """
    s = scale.detach().unsqueeze(1)
    x = rows.detach() * s.reciprocal()
    q = torch.round(x)
    if clips:
        q = q.clamp_(-qp, qp)
    out = q * s.to(x.dtype)
    grad_w = torch.is_grad_enabled() and rows.requires_grad
    grad_s = torch.is_grad_enabled() and scale.requires_grad
    if clips and (grad_w or grad_s):
        inside = x.abs().lt_(qp + 0.5)  # round(x) in [-Qp, Qp] (Qp + 1/2 rounds outwards); 0./1.
    if grad_w:
        t = rows * inside if clips else rows
        out = out + (t - t.detach())
    if grad_s:
        c = torch.addcmul(q, x, inside, value=-1.0) if clips else q - x
        u = scale.unsqueeze(1) * c
        out = out + (u - u.detach())
    if not (grad_w or grad_s):
        out = out + 0.0  # -0.0 -> +0.0, as the kernel (the terms above add +0.0 already)
    return out if out.dtype == rows.dtype else out.to(rows.dtype)


def noise_like(rows: Tensor, noise: str) -> Tensor:
    """The noise estimator's ``u``: uniform on (-1/2, 1/2), or normal with the same variance 1/12,
    from torch's generator of ``rows``' device."""
    if noise == "normal":
        return torch.randn_like(rows).mul_(_INV_SQRT12)
    return torch.rand_like(rows).sub_(0.5)


class RoundSTE(Estimator):
    name = "round-ste"

    def __call__(self, rows: Tensor, scale: Tensor, qp: int, clips: bool, noisy: bool) -> Tensor:
        return round_ste(rows, scale, qp, clips)


class Noise(Estimator):
    name = "noise"
    options = (
        Option(
            "noise",
            str,
            "uniform",
            "noise estimator: the noise's distribution (normal: the variance of the uniform)",
            choices=("uniform", "normal"),
            hashed_at_default=True,
        ),
    )
    noise: str

    def __call__(self, rows: Tensor, scale: Tensor, qp: int, clips: bool, noisy: bool) -> Tensor:
        if not noisy:
            return round_ste(rows, scale, qp, clips)
        return torch.addcmul(rows, scale.unsqueeze(1).to(rows.dtype), noise_like(rows, self.noise))

    def describe(self) -> str:
        return f"noise({self.noise})"

    def label_options(self) -> list[str]:
        return [self.noise] if self.noise != "uniform" else []
