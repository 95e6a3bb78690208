"""A task's cached methods keep nothing alive after the task: `qbench eval` builds one task per
run in one process, and each held its features for good when the cache outlived it."""

import gc
import weakref

import torch

from qbench.config import load_suite
from qbench.tasks import build_task
from tests.conftest import tiny_recipe


def test_a_dropped_task_is_freed_with_its_caches(tmp_path, results):
    recipe = load_suite(tiny_recipe(tmp_path / "tiny.yaml")).runs[0]
    task = build_task(recipe, results / "cache", progress=False)
    task.build_data()
    first = task.train_batch(0, torch.device("cpu"))
    assert task.clusters("test") is task.clusters("test")  # cached on the task
    assert torch.equal(task.train_batch(0, torch.device("cpu"))["feats"], first["feats"])
    gone = weakref.ref(task)
    del task
    gc.collect()
    assert gone() is None
