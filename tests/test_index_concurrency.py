"""Several processes writing the SQLite index at once lose nothing."""

import subprocess
import sys
import time

from qbench.store import read_results, read_runs

WRITER = """
import sys, time
from pathlib import Path
from qbench.config import Recipe
from qbench.store import record_results, record_run_state

root, name, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
for i in range(50):
    run_id = f"{name}-{i}"
    rows = [
        dict(run_id=run_id, suite="s", task="asr", dataset="d", technique="rand", train_bits=4, seed=i,
             precision=p, metric="wer", value=i / 100, higher_is_better=0, headline=1, size_bits=1,
             float32_bits=8, extra=None, run_dir="x", created=time.time())
        for p in ("float", "w8", "w4")
    ]
    record_results(root, rows)  # one transaction per run, as the engine does
    record_run_state(root, Recipe(name="s", seed=i), f"suite-{name}", "done")
"""


def test_two_processes_record_100_runs_into_one_index(tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    time.sleep(0.5)
    go.touch()  # both start writing at the same moment
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    df = read_results(tmp_path, latest_only=False)  # every row written, superseded or not
    assert df.run_id.nunique() == 100
    assert len(df) == 300
    assert set(df.run_id) == {f"{n}-{i}" for n in "ab" for i in range(50)}
    runs = read_runs(tmp_path)
    assert len(runs) == 100 and set(runs.state) == {"done"}
