"""Attach quantizers to a model, evaluate it at another precision, and count its packed size.

Why ``torch.nn.utils.parametrize``: it wraps *any* tensor attribute of *any*
module (torchaudio's Conformer, ``nn.MultiheadAttention``'s fused
``in_proj_weight``, ``nn.Transformer``, embeddings) without rewriting or
subclassing modules, keeps the original ``nn.Parameter`` object (so optimizers
and tied weights keep working when quantization starts mid-training), makes the
quantizer a submodule (``model.train()/eval()`` reach it), and is removable
exactly (``leave_parametrized=False`` gives back the untouched parameter).

Cost: parametrize renames state_dict keys to ``<module>.parametrizations.<name>.original``;
:func:`original_name` maps them back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrize import ParametrizationList

from .activations import act_target, attach_act_quantizer, detach_act_quantizer, find_act_quantizers
from .batching import forget_attachments
from .precision import PrecisionMap, name_matches, parse_precision
from .quantizers import QuantSpec, WeightQuantizer, make_quantizer
from .scales import num_scales
from .techniques import FLOAT_DTYPES

__all__ = [
    "quantize_",
    "quantized_parameter_names",
    "quantizer_parameters",
    "original_name",
    "use_precision",
    "find_quantizers",
    "model_size_bits",
]

_ORIGINAL_RE = re.compile(r"(^|\.)parametrizations\.([^.]+)\.original\d*$")


def original_name(name: str) -> str:
    """``a.b.parametrizations.weight.original`` -> ``a.b.weight`` (other names unchanged)."""
    return _ORIGINAL_RE.sub(r"\1\2", name)


def weight_slots(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Tensor]]:
    """``(original name, owning module, attribute name, float tensor)`` for every
    parameter slot of the model, parametrized or not (the tensor of a
    parametrized slot is its ``original``)."""
    for mod_name, module in model.named_modules():
        if "parametrizations" in mod_name.split("."):
            continue  # internals of parametrize (ParametrizationList, its modules)
        prefix = f"{mod_name}." if mod_name else ""
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():
                if plist.is_tensor:
                    yield prefix + tname, module, tname, plist.original
        for tname, p in module._parameters.items():
            if p is not None:
                yield prefix + tname, module, tname, p


def _plist(module: nn.Module, tname: str) -> ParametrizationList:
    """``module.parametrizations[tname]`` of a parametrized tensor (parametrize sets the attribute at
    run time, a ModuleDict of ParametrizationLists: nn.Module's type does not declare it)."""
    return cast(Mapping[str, ParametrizationList], module.parametrizations)[tname]


def find_quantizer(module: nn.Module, tname: str) -> WeightQuantizer | None:
    if parametrize.is_parametrized(module, tname):
        for m in _plist(module, tname):
            if isinstance(m, WeightQuantizer):
                return m
    return None


def is_selected(name: str, tensor: Tensor, spec: QuantSpec) -> bool:
    return tensor.ndim >= 2 and name_matches(name, spec.include) and not name_matches(name, spec.exclude)


def quantized_parameter_names(model: nn.Module, spec: QuantSpec) -> list[str]:
    """Original names of the parameters ``spec.include/exclude`` select (any technique)."""
    return [name for name, _, _, t in weight_slots(model) if is_selected(name, t, spec)]


def find_quantizers(model: nn.Module) -> dict[str, WeightQuantizer]:
    """Original parameter name -> attached :class:`WeightQuantizer`."""
    out = {}
    for name, module, tname, _ in weight_slots(model):
        q = find_quantizer(module, tname)
        if q is not None:
            out[name] = q
    return out


def quantize_(model: nn.Module, spec: QuantSpec) -> list[str]:
    """Attach the technique's :class:`WeightQuantizer` to every selected weight, in place.

    The ``nn.Parameter`` objects are kept (reachable as
    ``module.parametrizations.<name>.original``), so an optimizer built before
    keeps training them.  Re-applying replaces an attached quantizer.
    Returns the original names quantized; ``[]`` for ``float``/``ptq``. With ``spec.precision``
    (a mixed map) each weight trains at the map's bits, and those it keeps float stay float.
    ``spec.activations=8`` also attaches an 8-bit per-token activation quantizer to the
    inputs of every quantized ``nn.Linear`` / ``nn.MultiheadAttention`` (see :mod:`.activations`).
    """
    if not spec.attaches:
        return []
    names = []
    for name, module, tname, tensor in list(weight_slots(model)):
        if not is_selected(name, tensor, spec):
            continue
        bits = spec.bits if spec.precision is None else spec.precision.bits_for(name)
        if bits is None:  # the training map keeps this weight float
            continue
        # learned scales start from the weight as it is now (QAT may start mid-training)
        q = make_quantizer(spec, bits=bits, weight=tensor)
        q.train(module.training)
        old = find_quantizer(module, tname)
        if old is not None:
            plist = _plist(module, tname)
            plist[list(plist).index(old)] = q
        else:
            # unsafe=True: skip parametrize's trial forward (shape/dtype are preserved,
            # and it would draw noise from the RNG)
            parametrize.register_parametrization(module, tname, q, unsafe=True)
            forget_attachments()
        if act_target(module, tname):
            if spec.activations:
                attach_act_quantizer(module, spec.activations)
            else:
                detach_act_quantizer(module)
        names.append(name)
    return names


def quantizer_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name in model.named_parameters(), parameter)`` of every attached quantizer's
    learned scale (LSQ ``step``, PACT ``alpha``), e.g.
    ``ffn.parametrizations.weight.0.step``.  ``quantize_`` creates them: add them to the
    optimizer afterwards (no weight decay).  Empty for functional scales."""
    ids = {id(p) for q in find_quantizers(model).values() for p in q.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


def _float_kept(model: nn.Module, pmap: PrecisionMap, spec: QuantSpec) -> list[Tensor]:
    """Floating tensors a quantized precision keeps float: parameters it does not quantize
    (learned quantizer scales excepted: they reach the model only through the scales) and
    floating buffers; each tensor once."""
    learned = {id(p) for _, p in quantizer_parameters(model)}
    out: dict[int, Tensor] = {}
    for name, module, tname, tensor in weight_slots(model):
        q = find_quantizer(module, tname)
        quantized = pmap.bits_for(name) is not None and (q is not None or is_selected(name, tensor, spec))
        if not quantized and id(tensor) not in learned and tensor.is_floating_point():
            out.setdefault(id(tensor), tensor)
    for name, buf in model.named_buffers():
        if buf is not None and buf.is_floating_point() and "parametrizations" not in name.split("."):
            out.setdefault(id(buf), buf)
    return list(out.values())


@contextmanager
def use_precision(
    model: nn.Module,
    precision: PrecisionMap | str | None,
    spec: QuantSpec,
    *,
    cache: bool = False,
):
    """Evaluate the same weights at another precision; everything is restored on exit.

    ``precision``: ``"float"`` (quantizers disabled), ``"w2"``..``"w8"``, ``"w4a8"``/``"w8a8"``
    (also 8-bit per-token activations), a :class:`PrecisionMap` (named maps:
    ``parse_precision`` first), or ``None`` (no change: the model as trained).  A weight
    with a quantizer is evaluated with its own scale function at the map's bit width and hard
    rounding (also in train mode); a weight ``spec`` selects without one (float/ptq model)
    gets a temporary absmax round-to-nearest quantizer (``spec.granularity``).
    At a quantized precision the model is the one a packed export stores: scales rounded to
    ``spec.float_dtype`` and every floating tensor kept float (biases, norms, unquantized
    weights, floating buffers) rounded to it too (bfloat16 by default; ``"float32"`` keeps them).
    ``cache=True`` computes each quantized weight once for the whole block
    (``parametrize.cached()``): use it for no-grad evaluation/decoding only.
    """
    if precision is None:
        with parametrize.cached() if cache else nullcontext():
            yield model
        return
    pmap = parse_precision(precision)
    store = None if pmap.is_float else FLOAT_DTYPES[spec.float_dtype]
    saved: list[tuple[WeightQuantizer, int, bool, bool, torch.dtype | None]] = []
    temporary: list[tuple[nn.Module, str, WeightQuantizer, list[str] | None]] = []
    acts = find_act_quantizers(model)
    saved_acts = [(aq, aq.enabled, aq.bits) for aq in acts.values()]
    temp_acts: list[nn.Module] = []
    rounded: list[tuple[Tensor, Tensor]] = []
    try:
        for name, module, tname, tensor in list(weight_slots(model)):
            q = find_quantizer(module, tname)
            bits = pmap.bits_for(name)
            if q is not None:
                saved.append((q, q.bits, q.enabled, q.hard, q.scale_dtype))
                if bits is None:
                    q.enabled = False
                else:
                    q.bits, q.enabled, q.hard, q.scale_dtype = bits, True, True, store
            elif is_selected(name, tensor, spec):
                if bits is None:
                    continue
                q = WeightQuantizer(bits, "absmax", "round-ste", granularity=spec.granularity)
                q.scale_dtype = store
                # None: the tensor already had (user) parametrizations; else the
                # parameter order, restored on exit (parametrize re-adds at the end)
                order = None if parametrize.is_parametrized(module, tname) else list(module._parameters)
                parametrize.register_parametrization(module, tname, q, unsafe=True)
                forget_attachments()
                temporary.append((module, tname, q, order))
            else:
                continue
            if bits is not None and pmap.act_bits and act_target(module, tname):
                if "_qbench_act_quant" not in module.__dict__:
                    attach_act_quantizer(module, pmap.act_bits)
                    temp_acts.append(module)
        for aq in acts.values():
            aq.enabled, aq.bits = pmap.act_bits is not None, pmap.act_bits or aq.bits
        if store is not None and store != torch.float32:
            with torch.no_grad():
                for t in _float_kept(model, pmap, spec):
                    rounded.append((t, t.detach().clone()))
                    t.copy_(t.to(store))
        with parametrize.cached() if cache else nullcontext():
            yield model
    finally:
        with torch.no_grad():
            for t, orig in rounded:
                t.copy_(orig)
        for module in temp_acts:
            detach_act_quantizer(module)
        for aq, enabled, bits in saved_acts:
            aq.enabled, aq.bits = enabled, bits
        for module, tname, tq, order in reversed(temporary):
            if order is None:  # keep the user's own parametrizations
                plist = _plist(module, tname)
                del plist[list(plist).index(tq)]
            else:
                parametrize.remove_parametrizations(module, tname, leave_parametrized=False)
                forget_attachments()
                params = module._parameters  # same order as before -> same state_dict / parameters()
                for key in order:
                    params[key] = params.pop(key)
        for q, bits, enabled, hard, scale_dtype in saved:
            q.bits, q.enabled, q.hard, q.scale_dtype = bits, enabled, hard, scale_dtype


def packed_weight_bytes(numel: int, bits: int) -> int:
    """Bytes a weight of ``numel`` integers takes at ``bits`` in the packed export: dense,
    starting on a byte."""
    return (numel * bits + 7) // 8


def model_size_bits(
    model: nn.Module,
    precision_map: PrecisionMap | str | None,
    spec,
) -> dict[str, int]:
    """True packed size of ``model`` at ``precision_map``.

    Quantized weights cost ``bits * numel`` rounded up to whole bytes, plus ``f * n_scales``
    (one scale per row: per output channel for per-channel granularity): the packed export's
    data, byte for byte (:func:`qbench.quant.export.packed_bytes` adds its header); every other parameter costs ``f * numel``, with
    ``f`` the width of ``spec.float_dtype`` (16 for bfloat16) when ``precision_map`` quantizes
    anything (the packed export stores them so) and 32 otherwise (``"float"``, ``None``);
    learned quantizer scales are not counted twice.  Each parameter is counted once (tied weights too).  The
    quantized weights are the ones ``use_precision`` would quantize: those with
    a quantizer attached plus those ``spec`` selects.  ``precision_map=None``
    means "as trained": attached quantizers at their own bits, the rest float.

    Returns ``total_bits``, ``float32_bits`` (32 x all parameters),
    ``quantized_params`` and ``float_params`` (numbers of scalars).
    """
    pmap = None if precision_map is None else parse_precision(precision_map)
    fbits = 32
    if pmap is not None and not pmap.is_float:
        fbits = torch.finfo(FLOAT_DTYPES[getattr(spec, "float_dtype", "float32")]).bits
    qinfo: dict[int, tuple[int, int]] = {}  # id(param) -> (bits, n_scales)
    for name, module, tname, tensor in weight_slots(model):
        if id(tensor) in qinfo or not isinstance(tensor, nn.Parameter):
            continue
        quantizer = find_quantizer(module, tname)
        if quantizer is not None:
            bits = quantizer.bits if pmap is None else pmap.bits_for(name)
            granularity = quantizer.granularity
        elif pmap is not None and is_selected(name, tensor, spec):
            bits, granularity = pmap.bits_for(name), spec.granularity
        else:
            bits = None
        if bits is not None:
            qinfo[id(tensor)] = (bits, num_scales(tensor.shape, granularity))

    # learned scales (LSQ/PACT) are folded into the exported per-row scales already counted
    learned = {id(p) for _, p in quantizer_parameters(model)}
    total = float32 = n_q = n_f = 0
    for p in model.parameters():  # deduplicated
        if id(p) in learned:
            continue
        n = p.numel()
        float32 += 32 * n
        if id(p) in qinfo:
            bits, n_scales = qinfo[id(p)]
            total += 8 * packed_weight_bytes(n, bits) + fbits * n_scales
            n_q += n
        else:
            total += fbits * n
            n_f += n
    return dict(total_bits=total, float32_bits=float32, quantized_params=n_q, float_params=n_f)
