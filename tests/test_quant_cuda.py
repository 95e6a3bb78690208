"""qbench.quant on CUDA (skipped without a GPU; benchmarks/gpu_check.sh runs it): round-STE's values
are those of torch's fake-quant kernel bit for bit, and a QAT training step of every technique
makes no host sync."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qbench.quant import TECHNIQUES, QuantSpec, batched_quantization, quantize_
from qbench.quant.estimators import round_ste

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_round_ste_equals_fake_quantize_kernel_on_cuda(bits):
    torch.manual_seed(bits)
    qp = 2 ** (bits - 1) - 1
    w = (torch.randn(64, 512) * 10 ** torch.empty(64, 1).uniform_(-6, 3)).cuda()
    s = w.abs().amax(1) / qp * torch.empty(64, device="cuda").uniform_(0.3, 1.2)  # < 1: some clamp
    zp = torch.zeros(64, dtype=torch.int32, device="cuda")
    ref = torch.fake_quantize_per_channel_affine(w, s, zp, 0, -qp, qp)
    for rows, scale in (
        (w, s),
        (w.clone().requires_grad_(), s),
        (w.clone().requires_grad_(), s.clone().requires_grad_()),
    ):
        assert torch.equal(round_ste(rows, scale, qp).detach().view(torch.int32), ref.view(torch.int32))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 32)
        self.conv = nn.Conv1d(32, 32, 3, padding=1)
        self.down = nn.Linear(32, 16)

    def forward(self, x):  # (B, T, 16)
        h = torch.relu(self.up(x))
        return self.down(self.conv(h.transpose(1, 2)).transpose(1, 2))


@pytest.mark.parametrize("technique", [t for t in TECHNIQUES if t not in ("float", "ptq", "custom")])
def test_training_step_makes_no_host_sync(technique):
    torch.manual_seed(0)
    model = Net()
    quantize_(model, QuantSpec(technique, 4))
    model.cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 10, 16, device="cuda")
    for step in range(3):  # the first steps initialise lazily and search (mse-clip)
        torch.cuda.set_sync_debug_mode("error" if step == 2 else 0)
        try:
            with batched_quantization(model):
                loss = model(x).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_engine_steps_between_log_reads_make_no_host_sync(tmp_path, results, monkeypatch):
    """The engine's QAT steps between two reads of the losses (train.log_every: 4) of a translation
    model (cross-entropy; CTC's CUDA kernel reads its lengths on the host) make no host sync: the
    batch copies, forward, backward, gradient clipping and AdamW step all stay on the device."""
    from qbench.config import load_suite
    from qbench.run.engine import run_recipe
    from qbench.tasks.mt import MTTask
    from tests.test_distributed import TINY_MT

    path = tmp_path / "mt.yaml"
    path.write_text(
        TINY_MT.replace("grid: {quant.technique: [ste, rand]}\n", "").replace("log_every: 1", "log_every: 4")
    )
    recipe = load_suite(path, ["train.steps=8", "quant.technique=lsq", "train.checkpoint_every=4"]).runs[0]
    original = MTTask.train_batch
    checked = []

    def train_batch(self, step, device, shard=None):
        """Steps 5 and 6: after the reads at steps 3 (float warm-up saved) and 4, before step 8's."""
        torch.cuda.set_sync_debug_mode(0)
        batch = original(self, step, device)
        if step in (5, 6):
            checked.append(step)
            torch.cuda.set_sync_debug_mode("error")
        return batch

    monkeypatch.setattr(MTTask, "train_batch", train_batch)
    try:
        run_recipe(recipe, "tiny", results, torch.device("cuda"), progress=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert checked == [5, 6]
