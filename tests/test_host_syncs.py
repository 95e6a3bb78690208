"""No host syncs in a training step, checked on the CPU.

On a GPU, reading a tensor's value on the host (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``,
``.cpu()``) stops the host until the device has caught up. The CPU has no such stop, so these tests
record the reads themselves: every Python-level read through a torch function mode, and every
read in C++ (``aten._local_scalar_dense``, which ``item``/``float``/``int``/``bool`` all reach) or op
whose output size depends on data (``nonzero``, ``masked_select``, ...) through a dispatch mode.
tests/test_quant_cuda.py checks the same on a GPU with torch.cuda's sync debug mode.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from qbench.quant import TECHNIQUES, QuantSpec, batched_quantization, quantize_

#: Tensor methods that read a tensor's values on the host
HOST_READS = {
    Tensor.item,
    Tensor.tolist,
    Tensor.cpu,
    Tensor.numpy,
    Tensor.__float__,
    Tensor.__int__,
    Tensor.__index__,
    Tensor.__bool__,
    Tensor.__array__,
}
#: aten ops that read values on the host, or whose output's size depends on the data
SYNCING_OPS = {
    "_local_scalar_dense",
    "is_nonzero",
    "nonzero",
    "masked_select",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave",
}
#: aten ops that, indexed with a boolean mask, find its true places (nonzero) first
BOOL_INDEXED = {"index", "index_put", "index_put_", "_index_put_impl_"}
QAT_TECHNIQUES = [t for t in TECHNIQUES if t not in ("float", "ptq", "custom")]


def _caller() -> str:
    """Where the read was asked for: the innermost frame outside the recorder, and the innermost
    of qbench or of the tests."""
    recorder = ("_caller", "__torch_function__", "__torch_dispatch__")
    frames = [f for f in traceback.extract_stack() if f.name not in recorder]
    ours = [f for f in frames if "/qbench/" in f.filename or "/tests/" in f.filename] or frames
    where = lambda f: f"{Path(f.filename).name}:{f.lineno}"  # noqa: E731
    optimizer = " in torch.optim" if any("/torch/optim/" in f.filename for f in frames) else ""
    return f"{where(frames[-1])} (from {where(ours[-1])}){optimizer}"


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


class _FunctionReads(TorchFunctionMode):
    def __init__(self, reads: list[str]) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.reads.append(f"Tensor.{func.__name__} at {_caller()}")
        return func(*args, **(kwargs or {}))


class _DispatchReads(TorchDispatchMode):
    def __init__(self, reads: list[str]) -> None:
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in SYNCING_OPS or (name in BOOL_INDEXED and _bool_index(args)):
            self.reads.append(f"aten.{name} at {_caller()}")
        return func(*args, **(kwargs or {}))


class HostReads:
    """Records, while active, every host read of a tensor value (see the module docstring)."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self._modes = (_FunctionReads(self.reads), _DispatchReads(self.reads))

    def __enter__(self) -> HostReads:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


class Net(nn.Module):
    """Linear, Conv1d and attention weights (the attention's fused in_proj_weight among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 32)
        self.conv = nn.Conv1d(32, 32, 3, padding=1)
        self.down = nn.Linear(32, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x, padding):  # (B, T, 16), (B, T) True at padding
        h = torch.relu(self.up(x))
        h = self.down(self.conv(h.transpose(1, 2)).transpose(1, 2))
        return self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]


def _train_steps(model: nn.Module, optimizer, x: Tensor, padding: Tensor, steps: int, record_from: int):
    """QAT steps as the engine takes them; the host reads of the steps from `record_from` on."""
    reads: list[str] = []
    for step in range(steps):
        recorder = HostReads() if step >= record_from else None
        if recorder is not None:
            recorder.__enter__()
        try:
            with batched_quantization(model):
                loss = model(x, padding).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        finally:
            if recorder is not None:
                recorder.__exit__(None, None, None)
                reads += recorder.reads
    return reads


@pytest.mark.parametrize(
    ("technique", "options"),
    [(t, {}) for t in QAT_TECHNIQUES] + [("clip", {"clip_every": 2})],  # a due ratio search in the steps read
)
def test_quantized_training_step_reads_nothing_on_the_host(technique, options):
    """After two warm-up steps (lazy initialisation, mse-clip's first search), a QAT step (forward
    under batched quantization, backward, gradient clipping, optimizer step) of every technique
    reads no tensor value on the host."""
    torch.manual_seed(0)
    model = Net().train()
    quantize_(model, QuantSpec(technique, 4, **options))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(3, 10, 16)
    padding = torch.arange(10)[None, :] >= torch.tensor([10, 7, 4])[:, None]
    reads = _train_steps(model, optimizer, x, padding, steps=5, record_from=2)
    assert reads == []


def test_the_recorder_sees_every_kind_of_host_read():
    """The recorder can fail: each way of reading a value on the host is caught, and the quantizer
    path's steps are caught too when a quantizer reads one."""
    t = torch.tensor([1.5, -2.0])
    reads_of = {
        "item": lambda: t[0].item(),
        "float": lambda: float(t[0]),
        "int": lambda: int(t[0]),
        "bool": lambda: bool(t[0] > 0),
        "if": lambda: 1 if (t > 0).any() else 0,
        "format": lambda: f"{t[0]:.2f}",
        "tolist": lambda: t.tolist(),
        "cpu": lambda: t.cpu(),
        "numpy": lambda: t.numpy(),
        "nonzero": lambda: t.nonzero(),
        "mask": lambda: t[t > 0],
    }
    for name, read in reads_of.items():
        with HostReads() as recorder:
            read()
        assert recorder.reads, name
    with HostReads() as recorder:
        _ = (t * 2 + 1).sum().sqrt()  # device work alone: nothing read
    assert recorder.reads == []

    import qbench.quant.estimators as estimators

    original = estimators.round_ste

    def syncing_round_ste(rows, scale, qp, clips=True):
        if scale.max().item() > 0:  # a deliberate host read in the quantizer path
            pass
        return original(rows, scale, qp, clips)

    torch.manual_seed(0)
    model = Net().train()
    quantize_(model, QuantSpec("ste", 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, padding = torch.randn(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool)
    estimators.round_ste = syncing_round_ste
    try:
        reads = _train_steps(model, optimizer, x, padding, steps=3, record_from=2)
    finally:
        estimators.round_ste = original
    assert reads and all("test_host_syncs.py" in r for r in reads), reads


def test_engine_steps_between_log_reads_read_nothing_on_the_host(tmp_path, results, monkeypatch):
    """The engine's QAT steps between two reads of the losses (train.log_every: 4) read no tensor
    value on the host: the loss is checked for NaN and averaged at the reads only. (AdamW reads its
    step counters, host tensors even on a GPU, and ctc_loss's CPU kernel takes the lengths on the
    host: neither is counted.)"""
    from qbench.config import load_suite
    from qbench.run.engine import run_recipe
    from qbench.tasks.asr import ASRTask
    from tests.conftest import tiny_recipe

    path = tiny_recipe(tmp_path / "r.yaml", technique="lsq", steps=8, warmup=3, ckpt=4)
    path.write_text(path.read_text().replace("log_every: 1", "log_every: 4"))
    recipe = load_suite(path).runs[0]
    original = ASRTask.train_batch
    recorder = HostReads()
    recorded_steps = []

    def train_batch(self, step, device, shard=None):
        """Steps 5 and 6: after the reads at steps 3 (float warm-up saved) and 4, before step 8's."""
        if step == 7:
            recorder.__exit__(None, None, None)
        batch = original(self, step, device)
        if step == 5:
            recorder.__enter__()
        if step in (5, 6):
            recorded_steps.append(step)
        return batch

    monkeypatch.setattr(ASRTask, "train_batch", train_batch)
    run_recipe(recipe, "tiny", results, torch.device("cpu"), progress=False)
    assert recorded_steps == [5, 6]
    reads = [r for r in recorder.reads if not r.endswith(" in torch.optim")]
    assert reads == [], reads
    metrics = json.loads((results / "runs/tiny" / recipe.run_id / "metrics.json").read_text())
    assert metrics["steps"] == 8


def test_spec_augment_masks_with_the_mean_on_the_device_as_before():
    """SpecAugment's mask value stays a device tensor: the same draws and values, bit for bit, as
    the float() it replaced, and nothing read on the host."""
    import torchaudio

    from qbench.tasks.augment import spec_augment

    feats, lengths = torch.randn(3, 50, 20) * 3 + 1, torch.tensor([50, 41, 12])

    def before(feats):
        x = feats.transpose(1, 2)
        freq = torchaudio.transforms.FrequencyMasking(freq_mask_param=15, iid_masks=True)
        time_mask = torchaudio.transforms.TimeMasking(time_mask_param=2, iid_masks=True)
        mean = float(x.mean())
        for _ in range(2):
            x = freq(x.unsqueeze(1), mask_value=mean).squeeze(1)
            x = time_mask(x.unsqueeze(1), mask_value=mean).squeeze(1)
        return x.transpose(1, 2)

    torch.manual_seed(3)
    expected = before(feats)
    torch.manual_seed(3)
    with HostReads() as recorder:
        out = spec_augment(feats, lengths)
    assert recorder.reads == []
    assert torch.equal(out, expected)
    assert (out == feats.mean()).sum() > 20  # masks were drawn
