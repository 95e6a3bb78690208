"""Quantization core of qbench: weight fake-quantizers for QAT and mixed-precision evaluation.

Usage: ``spec = QuantSpec(technique="rand", bits=4)``; ``quantize_(model, spec)`` attaches
quantizers in place; train; ``with use_precision(model, "w8", spec): ...`` evaluates the
same weights at another precision. Wrap a training forward in ``with batched_quantization(model):``
to quantize alike weights in a few batched passes (much less per-weight overhead).
"""

from .apply import (
    find_quantizers,
    original_name,
    quantize_,
    quantized_parameter_names,
    quantizer_parameters,
    use_precision,
)
from .batching import batched_quantization
from .export import export_packed, load_packed, packed_size_bytes
from .precision import PrecisionMap, model_size_bits, parse_precision
from .quantizers import TECHNIQUES, QuantSpec, WeightQuantizer

__all__ = [
    "QuantSpec",
    "TECHNIQUES",
    "quantize_",
    "use_precision",
    "batched_quantization",
    "PrecisionMap",
    "parse_precision",
    "model_size_bits",
    "quantized_parameter_names",
    "original_name",
    "WeightQuantizer",
    "find_quantizers",
    "quantizer_parameters",
    "export_packed",
    "load_packed",
    "packed_size_bytes",
]
