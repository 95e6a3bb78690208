"""Optional 8-bit dynamic per-token fake quantization of the inputs of quantized layers (``a8``).

W4A8 / W8A8: each token's input vector ``x`` (last dimension) to a quantized ``nn.Linear``, or
the query/key/value inputs of an ``nn.MultiheadAttention`` whose ``in_proj_weight`` is quantized,
is replaced by ``s * clamp(round(x / s), -127, 127)`` with ``s = max|x| / 127`` computed per token
at run time (nothing learned, nothing stored). The gradient passes straight through (``s`` is
the absmax, so nothing is clipped). Attached as forward pre-hooks, so any model works unchanged;
``MultiheadAttention.out_proj`` is not covered (the attention calls ``F.linear`` on its weight
directly, not the module).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .scales import EPS

__all__ = ["ActQuantizer", "fake_quant_per_token", "find_act_quantizers", "attach_act_quantizer"]

_ATTR = "_qbench_act_quant"


class _PerToken(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, qp: int) -> Tensor:
        s = x.detach().abs().amax(dim=-1, keepdim=True).div_(qp).clamp_min_(EPS)
        return torch.round(x * s.reciprocal()).clamp_(-qp, qp).mul_(s)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def fake_quant_per_token(x: Tensor, bits: int = 8) -> Tensor:
    """Symmetric per-token (last dimension) absmax fake quantization, straight-through gradient."""
    return _PerToken.apply(x, 2 ** (bits - 1) - 1)


class ActQuantizer:
    """A forward pre-hook quantizing a module's floating inputs; ``enabled``/``bits`` switch at run time."""

    def __init__(self, bits: int = 8) -> None:
        self.bits = bits
        self.enabled = True
        self.handle: RemovableHandle | None = None  # set when attached to a module

    def _q(self, x, seen: dict):
        if not (torch.is_tensor(x) and x.is_floating_point()):
            return x
        if id(x) not in seen:  # self-attention passes one tensor three times: quantize it once
            seen[id(x)] = fake_quant_per_token(x, self.bits)
        return seen[id(x)]

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        if not self.enabled:
            return None
        seen: dict = {}
        if isinstance(module, nn.MultiheadAttention):
            args = tuple(self._q(a, seen) if i < 3 else a for i, a in enumerate(args))
            kwargs = {k: self._q(v, seen) if k in ("query", "key", "value") else v for k, v in kwargs.items()}
        else:
            args = (self._q(args[0], seen), *args[1:]) if args else args
            if "input" in kwargs:
                kwargs = {**kwargs, "input": self._q(kwargs["input"], seen)}
        return args, kwargs

    def __repr__(self) -> str:
        return f"ActQuantizer(bits={self.bits}, enabled={self.enabled})"


def attach_act_quantizer(module: nn.Module, bits: int = 8) -> ActQuantizer:
    """Attach (or return the attached) activation quantizer of ``module``."""
    aq = getattr(module, _ATTR, None)
    if aq is None:
        aq = ActQuantizer(bits)
        aq.handle = module.register_forward_pre_hook(aq, with_kwargs=True)
        object.__setattr__(module, _ATTR, aq)  # a plain attribute: not a submodule, not in state_dict
    aq.bits = bits
    return aq


def detach_act_quantizer(module: nn.Module) -> None:
    aq = getattr(module, _ATTR, None)
    if aq is not None:
        aq.handle.remove()
        object.__delattr__(module, _ATTR)


def find_act_quantizers(model: nn.Module) -> dict[str, ActQuantizer]:
    """Module name -> attached :class:`ActQuantizer`."""
    return {n: m.__dict__[_ATTR] for n, m in model.named_modules() if _ATTR in m.__dict__}


def act_target(module: nn.Module, tname: str) -> bool:
    """Whether quantizing ``module.<tname>`` makes the module's inputs activation-quantized."""
    if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return False  # MultiheadAttention.out_proj: the attention calls F.linear on its weight
    return (isinstance(module, nn.Linear) and tname == "weight") or (
        isinstance(module, nn.MultiheadAttention) and tname == "in_proj_weight"
    )
