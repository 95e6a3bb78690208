"""Which commit of qbench the runs behind a table come from, and the refusal to combine runs of
several commits unless asked (`--allow-mixed-commits`).

Each run folder's env.json records the commit (qbench.store.environment). A run whose env.json
is missing, records no commit or records a dirty tree (a `dirty` or `git_dirty` that is true)
counts as ``unknown``; ``unknown`` is a commit of its own here, so runs of a known commit and
runs of an unknown one are mixed too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from qbench.store import run_folder

UNKNOWN = "unknown"
#: characters of a commit shown in tables and messages
SHORT = 10


class MixedCommits(ValueError):
    """Runs of several commits where one table may only show one; the message is one line."""


def run_commit(run_dir: Path) -> str:
    """The commit env.json of a run folder records, or UNKNOWN."""
    try:
        env = json.loads((Path(run_dir) / "env.json").read_text())
    except (OSError, ValueError):
        return UNKNOWN
    if not isinstance(env, dict) or env.get("dirty") or env.get("git_dirty"):
        return UNKNOWN
    commit = env.get("commit")
    return commit.strip() if isinstance(commit, str) and commit.strip() else UNKNOWN


def run_commits(df: pd.DataFrame, results: Path | None = None) -> dict[tuple[str, str], str]:
    """(suite, run_id) -> commit, for every run of index rows `df` (a row's `run_dir`, or
    <results>/runs/<suite>/<run_id> where that folder has moved)."""
    if df.empty:
        return {}
    out = {}
    for r in df.drop_duplicates(["suite", "run_id"]).itertuples():
        out[(str(r.suite), str(r.run_id))] = run_commit(
            run_folder(results, getattr(r, "run_dir", ""), r.suite, r.run_id)
        )
    return out


def commits_of(df: pd.DataFrame, results: Path | None = None) -> dict[str, int]:
    """commit -> number of runs of index rows `df` that come from it, most runs first
    (UNKNOWN for runs that record none)."""
    counts: dict[str, int] = {}
    for c in run_commits(df, results).values():
        counts[c] = counts.get(c, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def short(commit: str) -> str:
    return commit if commit == UNKNOWN else commit[:SHORT]


def describe_commits(counts: dict[str, int]) -> str:
    """ "abcdef1234 (6 runs)", or "abcdef1234 (4 runs), unknown (2 runs)"."""
    return ", ".join(f"{short(c)} ({n} run{'s' if n != 1 else ''})" for c, n in counts.items())


def check_one_commit(
    df: pd.DataFrame, allow_mixed: bool, results: Path | None = None, name_commit: bool = True
) -> str:
    """A one-line note saying which commit(s) the runs of `df` come from, for the table or page.
    Runs of several commits raise MixedCommits (one line naming the commits and their runs)
    unless `allow_mixed`, when the note says that they are mixed. Empty `df`: "".
    `name_commit` False: one commit is not named (a README, a user's document, carries no hashes)."""
    counts = commits_of(df, results)
    if not counts:
        return ""
    if len(counts) == 1:
        (commit, n), *_ = counts.items()
        if commit == UNKNOWN:
            return f"{n} run(s), all from an unknown qbench commit (their env.json records none)."
        if not name_commit:
            return f"{n} run(s), all from one qbench commit (each run's env.json names it)."
        return f"{n} run(s), all from qbench commit {short(commit)}."
    if not allow_mixed:
        raise MixedCommits(
            f"the runs come from {len(counts)} commits: {describe_commits(counts)}; rerun them at one "
            "commit, or pass --allow-mixed-commits to combine them"
        )
    return (
        f"**Mixed commits** (--allow-mixed-commits): the runs come from {len(counts)} commits, "
        f"{describe_commits(counts)}; a difference between rows may come from the code as well as the technique."
    )
