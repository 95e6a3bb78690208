"""Training features held on the device (qbench.tasks.buckets.PackedRows): copied there once and
batched by index, with the values of host collation bit for bit; the CPU runs the same code."""

import pytest
import torch
from torch import nn

from qbench.config import load_suite
from qbench.run.distributed import Shard
from qbench.tasks import build_task
from qbench.tasks.buckets import PackedRows, pad_to, padded_length
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_packed_rows_gather_what_pad_sequence_pads():
    torch.manual_seed(0)
    rows = [torch.randn(n, 5).half() for n in (7, 1, 12, 3, 12, 9)]
    packed = PackedRows(rows, CPU)
    for idx in ([2, 0, 5], [1], [3, 3, 1, 4], list(range(6))):
        expected = nn.utils.rnn.pad_sequence([rows[i] for i in idx], batch_first=True)
        got = packed.gather(idx)
        assert got.dtype == torch.float16 and torch.equal(got, expected), idx
        longer = packed.gather(idx, 16)
        assert longer.shape == (len(idx), 16, 5) and torch.equal(longer, pad_to(expected, 16))
    with pytest.raises(ValueError, match="below the longest"):
        packed.gather([2, 0], 11)
    tokens = PackedRows([torch.tensor([3, 1, 4]), torch.tensor([1, 5]), torch.tensor([9])], CPU)
    assert tokens.gather([1, 0, 2]).tolist() == [[1, 5, 0], [3, 1, 4], [9, 0, 0]]  # 1-D rows too


def _host_collated(features, idx, multiple):
    """Training features as `_collate` built them before the device path: padded on the host."""
    feats = [features[i].float() for i in idx]
    padded = nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return pad_to(padded, padded_length(padded.shape[1], multiple)) if multiple else padded


@pytest.mark.parametrize("multiple", [0, 16])
def test_train_batches_from_resident_features_equal_host_collation(tmp_path, results, multiple):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml"), [f"train.pad_to_multiple={multiple}"]).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    features = [f.clone() for f in task.splits["train"]["feats"]]  # as cached, before any batch
    n = len(task._epoch_batches(0))
    for step in range(2 * n + 1):  # two epochs and a step of the third: every batch of each order
        idx = task._epoch_batches(step // n)[step % n]
        batch = task.train_batch(step, CPU)
        assert torch.equal(batch["feats"], _host_collated(features, idx, multiple)), step
        host = task._collate("train", idx, CPU, multiple)  # evaluation's path: collated on the host
        for key in ("feats", "lengths", "targets", "target_lengths"):
            assert batch[key].dtype == host[key].dtype and torch.equal(batch[key], host[key]), (step, key)
        assert batch["ids"] == host["ids"]
        part = task.train_batch(step, CPU, shard=Shard(1, 2))
        if part is not None:  # this rank's items of the batch, from the same resident features
            assert torch.equal(part["feats"], _host_collated(features, Shard(1, 2).take(idx), multiple))
    assert list(task._resident) == [CPU]  # built once, for the one device
    packed = task.resident_features(CPU)
    assert packed is task._resident[CPU]
    # on the CPU the split's features are views of the packed copy (held once), of equal values
    held = task.splits["train"]["feats"]
    assert all(f.untyped_storage().data_ptr() == packed.flat.untyped_storage().data_ptr() for f in held)
    assert all(torch.equal(a, b) for a, b in zip(held, features, strict=True))


@CUDA
def test_resident_features_on_cuda_equal_the_cpus_and_sync_nothing(tmp_path, results):
    """On CUDA the features are held on the GPU (fp16) and gathered there: the CPU's values, and
    after the first batch (the one-time copy) no step waits on the device."""
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml"), ["train.pad_to_multiple=16"]).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    cuda = torch.device("cuda")
    first = task.train_batch(0, cuda)
    resident = task.resident_features(cuda)
    assert resident.flat.is_cuda and resident.flat.dtype == torch.float16
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = [task.train_batch(step, cuda) for step in range(1, 6)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for step, b in enumerate([first, *batches]):
        on_cpu = task.train_batch(step, CPU)
        assert b["feats"].is_cuda and torch.equal(b["feats"].cpu(), on_cpu["feats"]), step
