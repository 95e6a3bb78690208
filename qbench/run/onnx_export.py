"""`qbench export --format onnx`: a finished speech run as an ONNX model that ONNX Runtime runs,
scored through qbench's own decoder against the fake-quant evaluation of the same precision.

Why onnx + onnxruntime: ONNX is what speech deployments ship (espnet_onnx, sherpa-onnx, icefall's
exports), torch exports a Conformer to it with dynamic batch and length (torch.export), and ONNX
Runtime is the runtime those users run. ExecuTorch targets phones and needs its own toolchain.

The graph is exported from a plain float model loaded from the packed export (so its weights are
exactly the stored integers times their scales); weights stored at 8 bits then become int8
initialisers with per-channel DequantizeLinear (quant/onnx_int8), the others stay their
dequantized float values. CTC speech models only: the MT model decodes autoregressively, a loop
this export does not carry.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qbench.quant import export_packed, load_packed, parse_precision, use_precision
from qbench.quant.export import read_packed_weights
from qbench.quant.sensitivity import written_maps
from qbench.run.engine import load_trained
from qbench.tasks import EvalResult

__all__ = ["OnnxExport", "OrtModel", "export_onnx"]


class OrtModel(nn.Module):
    """An ONNX Runtime session behind the CTC model's forward: (feats, lengths) -> (log-probs,
    lengths), so the task's own evaluation decodes and scores it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.session.run(
            None, {"feats": feats.float().cpu().numpy(), "lengths": lengths.cpu().numpy()}
        )
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    size_bytes: int
    int8: list[str]  # weights stored as int8 initialisers
    float_weights: list[str]  # quantized weights left as their dequantized float values
    onnx: EvalResult
    fake: EvalResult


def export_onnx(run_dir: Path, results: Path, precision: str, out: Path) -> OnnxExport:
    """Export the run at `precision` to `out` and score it with ONNX Runtime and fake-quant."""
    import onnx

    from qbench.quant.onnx_int8 import QuantizedWeight, int8_initializers

    recipe, task, model, spec = load_trained(run_dir, results)
    if recipe.task != "asr" or recipe.model.arch != "conformer-ctc":
        raise ValueError(
            f"{run_dir}: ONNX export covers CTC speech models (conformer-ctc), not {recipe.task} {recipe.model.arch}"
        )
    pmap = parse_precision(precision, written_maps(run_dir, recipe.precisions))
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        packed = Path(tmp) / "model.safetensors"
        export_packed(model, pmap, spec, packed)
        plain = task.build_model().eval()
        load_packed(plain, packed)
        packed_weights = read_packed_weights(packed)
        weights = [
            QuantizedWeight(name, ints.numpy(), scales.numpy())
            for name, bits, ints, scales in packed_weights
            if bits == 8
        ]
        stored = {name for name, *_ in packed_weights}
    feats, lengths = torch.randn(2, 200, recipe.model.n_mels), torch.tensor([200, 150])
    batch, frames = (
        torch.export.Dim("batch", min=1, max=1024),
        torch.export.Dim("frames", min=16, max=100_000),
    )
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # optional-operator notices
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its step-by-step log
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            plain,
            (feats, lengths),
            dynamo=True,
            input_names=["feats", "lengths"],
            output_names=["log_probs", "out_lengths"],
            dynamic_shapes=({0: batch, 1: frames}, {0: batch}),
            verbose=False,
        )
    assert program is not None
    graph = program.model_proto
    replaced = int8_initializers(graph, weights)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    scored = task.evaluate(OrtModel(out), "test", cpu, progress=False)
    with use_precision(model, pmap, spec, cache=True):
        fake = task.evaluate(model, "test", cpu, progress=False)
    return OnnxExport(
        out, out.stat().st_size, replaced.int8, sorted(stored - set(replaced.int8)), scored, fake
    )
