import os
from pathlib import Path

import pytest
import torch

TINY = """\
name: tiny
task: asr
seed: 0
data: {{source: synthetic-speech, train_utterances: 16, valid_utterances: 4, test_utterances: 6, workers: 1}}
model: {{d_model: 16, layers: 1, heads: 2, conv_kernel: 3, dropout: 0.1}}
quant: {{technique: {technique}, bits: 4, float_warmup_steps: {warmup}}}
train: {{steps: {steps}, batch_size: 4, lr: 3.0e-3, warmup: 2, checkpoint_every: {ckpt}, log_every: 1}}
eval: {{precisions: [float, w8, w4], batch_size: 4}}
"""


def tiny_recipe(path: Path, technique: str = "rand", steps: int = 12, warmup: int = 5, ckpt: int = 4) -> Path:
    path.write_text(TINY.format(technique=technique, steps=steps, warmup=warmup, ckpt=ckpt))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP's spin-waiting makes
    them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One synthetic-speech cache for the whole session: tests copy it instead of re-synthesising."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def results(tmp_path, shared_cache) -> Path:
    """A fresh results root whose data caches point at the session's."""
    root = tmp_path / "results"
    (root / "cache").mkdir(parents=True)
    for name in ("synthetic-speech", "features"):  # data only; shared training checkpoints stay per test
        (shared_cache / name).mkdir(exist_ok=True)
        (root / "cache" / name).symlink_to(shared_cache / name, target_is_directory=True)
    return root


@pytest.fixture
def data_dir() -> Path:
    """The real datasets beside the project (../shared/data), found through QBENCH_DATA."""
    d = os.environ.get("QBENCH_DATA")
    if not d or not Path(d).is_dir():
        pytest.skip("QBENCH_DATA is unset or missing (.ci/run sets it to ../shared/data)")
    return Path(d)
