"""Integer initialisers for an exported ONNX graph: every float initialiser that holds a weight
the packed export stored at 8 bits (as it is, or transposed, as the exporter lays out a Linear
weight) becomes an int8 initialiser and a per-channel ``DequantizeLinear`` node whose output
takes the initialiser's name, so the rest of the graph is untouched. This is ONNX's QDQ form for
weight-only quantization, which ONNX Runtime executes as stored integers times their scales.

Matching is by value (the initialiser equals the dequantized weight ``q * s`` exactly, because
the graph was exported from a model loaded from the packed file), not by name: the exporter
renames and transposes initialisers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["QuantizedWeight", "int8_initializers"]


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight of the packed export: its name, integers (its own shape) and per-row scales."""

    name: str
    ints: np.ndarray  # int8, the weight's shape
    scales: np.ndarray  # float32, one per row (axis 0)


@dataclass
class Replaced:
    int8: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # stored at 8 bits, no initialiser equals it


def _dequantized(w: QuantizedWeight) -> np.ndarray:
    rows = w.ints.reshape(w.ints.shape[0], -1).astype(np.float32) * w.scales[:, None]
    return rows.reshape(w.ints.shape)


def int8_initializers(graph_model: onnx.ModelProto, weights: list[QuantizedWeight]) -> Replaced:
    """Replace, in place, each initialiser equal to one of `weights` (or its transpose, for 2-D
    weights) by int8 + DequantizeLinear."""
    g = graph_model.graph
    done = Replaced()
    by_shape: dict[tuple, list[onnx.TensorProto]] = {}
    for init in g.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            by_shape.setdefault(tuple(init.dims), []).append(init)
    nodes, remove = [], []
    for w in weights:
        value = _dequantized(w)
        candidates = [(value, w.ints, 0)]
        if value.ndim == 2:
            candidates.append((value.T, w.ints.T, 1))
        hit = None
        for expected, ints, axis in candidates:
            for init in by_shape.get(expected.shape, []):
                if init.name not in remove and np.array_equal(numpy_helper.to_array(init), expected):
                    hit = (init, ints, axis)
                    break
            if hit:
                break
        if hit is None:
            done.unmatched.append(w.name)
            continue
        init, ints, axis = hit
        base = init.name
        g.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(ints, dtype=np.int8), f"{base}__int8"),
                numpy_helper.from_array(w.scales.astype(np.float32), f"{base}__scale"),
                numpy_helper.from_array(np.zeros(len(w.scales), dtype=np.int8), f"{base}__zero"),
            ]
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}__int8", f"{base}__scale", f"{base}__zero"],
                [base],
                name=f"{base}__dequantize",
                axis=axis,
            )
        )
        remove.append(base)
        done.int8.append(w.name)
    kept = [i for i in g.initializer if i.name not in set(remove)]
    del g.initializer[:]
    g.initializer.extend(kept)
    for node in reversed(nodes):  # the graph stays topologically sorted: producers first
        g.node.insert(0, node)
    return done
