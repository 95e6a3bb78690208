"""Data-parallel training (torchrun, gloo on the CPU) gives the one-process result, written once."""

import json
import os
import subprocess
import sys

import pytest
import torch

from qbench.config import load_suite
from qbench.run.distributed import Shard
from qbench.run.engine import run_recipe
from qbench.store import read_results
from qbench.tasks import build_task
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")

# 29 sentences in batches of 7: shards of 4 and 3 sentences (unequal, so a mean of shard means would
# be wrong), and every epoch's last batch holds 1 sentence, so rank 1 has an empty shard there.
TINY_MT = """\
name: tiny-ddp
task: mt
seed: 0
data: {source: synthetic-mt, train_sentences: 29, valid_sentences: 4, test_sentences: 10}
model: {d_model: 16, encoder_layers: 1, decoder_layers: 1, heads: 2, ffn_mult: 2, vocab_size: 120, dropout: 0.0}
quant: {technique: ste, bits: 4, float_warmup_steps: 3}
train: {steps: 10, batch_size: 7, lr: 3.0e-3, warmup: 2, checkpoint_every: 5, log_every: 1}
eval: {precisions: [float, w4], batch_size: 3}
grid: {quant.technique: [ste, rand]}
"""


def losses(log: str) -> list[float]:
    return [
        float(line.split()[3]) for line in log.splitlines() if line.startswith("step ") and " loss " in line
    ]


def test_two_processes_match_one(tmp_path, results):
    path = tmp_path / "mt.yaml"
    path.write_text(TINY_MT)
    ste, rand = load_suite(path).runs
    one = run_recipe(ste, "tiny-ddp", results, CPU, progress=False)

    two = tmp_path / "two"
    (two / "cache").mkdir(parents=True)
    (two / "cache" / "spm").symlink_to((results / "cache" / "spm").resolve(), target_is_directory=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "qbench", "run", str(path), "--results", str(two), "--no-progress"]
    out = subprocess.run(cmd, env={**os.environ, "QBENCH_THREADS": "1"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 run(s) on 2 cpu processes (gloo)" in out.stderr
    assert out.stderr.count(f"{ste.run_id} done") == 1  # one console: rank 0's

    # one set of results: one run folder per run, index rows once, one log line per step
    folders = (two / "runs" / "tiny-ddp").iterdir()
    assert sorted(p.name for p in folders if p.name != ".locks") == sorted(
        [ste.run_id, rand.run_id, "suite.json"]
    )
    df = read_results(two)
    assert len(df) == 2 * 2 * 2  # runs x precisions x (bleu, chrf)
    assert len(json.loads((two / "runs/tiny-ddp/suite.json").read_text())["sessions"]) == 1
    log = (two / "runs/tiny-ddp" / ste.run_id / "train.log").read_text()
    assert log.count("training from scratch") == 1 and len(losses(log)) == 10

    # Same global batch, same result. The losses are summed in another order, so they agree to
    # float rounding (the log keeps 4 decimals); so do the weights, except the key projection's bias:
    # its exact gradient is zero (softmax ignores a constant added to every key), and Adam scales the
    # rounding noise left in its place up to a step of +-lr. The tolerance, 5e-5, is 1/60 of one Adam
    # step (lr 3e-3): a wrong shard or normalisation moves weights by whole steps. (Rounding alone
    # reached 1.4e-5 in the embedding on one CPU model.)
    two_metrics = json.loads((two / "runs/tiny-ddp" / ste.run_id / "metrics.json").read_text())
    assert two_metrics["world_size"] == 2 and one["world_size"] == 1
    ref_log = (results / "runs/tiny-ddp" / ste.run_id / "train.log").read_text()
    assert losses(log) == pytest.approx(losses(ref_log), abs=2e-4)
    for p in ("float", "w4"):
        assert two_metrics["precisions"][p]["chrf"] == pytest.approx(one["precisions"][p]["chrf"], abs=0.5)
    a = torch.load(results / "runs/tiny-ddp" / ste.run_id / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(two / "runs/tiny-ddp" / ste.run_id / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].float(), b[k].float()
        if k.endswith("in_proj_bias"):
            d = x.shape[0] // 3  # query, key, value
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        assert torch.allclose(x, y, atol=5e-5, rtol=0), (k, (x - y).abs().max())

    # rand: one noise draw per step for all ranks; the engine checks that the ranks end in sync
    assert json.loads((two / "runs/tiny-ddp" / rand.run_id / "status.json").read_text())["state"] == "done"
    assert (
        "reused shared float warm-up (3 steps)"
        in (two / "runs/tiny-ddp" / rand.run_id / "train.log").read_text()
    )


@pytest.mark.parametrize("task_name", ["asr", "mt"])
def test_shard_losses_sum_to_the_global_loss(tmp_path, results, task_name):
    """The ranks' loss parts (shard sum / global normaliser) add up to the one-process mean loss,
    for unequal shards, CTC's per-utterance length normalisation and MT's token count alike."""
    if task_name == "asr":
        path = tiny_recipe(tmp_path / "r.yaml")
        path.write_text(path.read_text().replace("dropout: 0.1}", "dropout: 0.1, specaugment: false}"))
        path.write_text(path.read_text().replace("batch_size: 4, lr", "batch_size: 5, lr"))
    else:
        path = tmp_path / "mt.yaml"
        path.write_text(TINY_MT.replace("grid: {quant.technique: [ste, rand]}\n", ""))
    recipe = load_suite(path).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    torch.manual_seed(0)
    model = task.build_model().eval()  # no dropout; BatchNorm on running statistics
    if task_name == "asr":
        # A per-frame model: the Conformer's convolution module sees its padded frames (torchaudio does
        # not mask them), so its output for an utterance depends on how far its batch is padded.
        model = FrameModel(recipe.model.n_mels, task.tokenizer.size)
    whole = task.loss(model, task.train_batch(0, CPU))
    for world in (2, 3):
        parts = [task.train_batch(0, CPU, shard=Shard(r, world)) for r in range(world)]
        total = sum(task.loss(model, b) for b in parts if b is not None)
        assert total.item() == pytest.approx(whole.item(), rel=1e-5)


class FrameModel(torch.nn.Module):
    def __init__(self, n_mels: int, vocab: int):
        super().__init__()
        self.proj = torch.nn.Linear(n_mels, vocab)

    def forward(self, feats, lengths):
        return torch.log_softmax(self.proj(feats), -1), lengths


def test_shard_takes_strided_parts():
    assert Shard(1, 3).take(list(range(8))) == [1, 4, 7]
    assert Shard(0, 1).gather({1: "a"}) == {1: "a"}
