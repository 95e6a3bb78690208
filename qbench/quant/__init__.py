"""Quantization core of qbench: weight fake-quantizers for QAT and mixed-precision evaluation.

A quantizer composes a scale function and an estimator (:mod:`.scale_fns`, :mod:`.estimators`),
registered with their options in :mod:`.techniques`, which also names the technique presets.

Usage: ``spec = QuantSpec(technique="rand", bits=4)``; ``quantize_(model, spec)`` attaches
quantizers in place; train; ``with use_precision(model, "w8", spec): ...`` evaluates the
same weights at another precision. Wrap a training forward in ``with batched_quantization(model):``
to quantize alike weights in a few batched passes (much less per-weight overhead).
"""

from .apply import (
    find_quantizers,
    model_size_bits,
    original_name,
    quantize_,
    quantized_parameter_names,
    quantizer_parameters,
    use_precision,
)
from .batching import batched_quantization
from .export import export_packed, load_packed, packed_bytes, packed_size_bytes
from .precision import PrecisionMap, parse_precision
from .quantizers import QuantSpec, WeightQuantizer
from .techniques import ESTIMATORS, OPTIONS, SCALES, TECHNIQUES

__all__ = [
    "QuantSpec",
    "TECHNIQUES",
    "SCALES",
    "ESTIMATORS",
    "OPTIONS",
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
    "packed_bytes",
]
