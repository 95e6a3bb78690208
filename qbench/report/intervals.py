"""Intervals and paired differences of leaderboard cells, from the per-item scores their runs
stored (store.read_items): the bridge between index rows and :mod:`qbench.report.stats`.

A cell is the index rows of one suite x technique x training bits x precision (one per seed).
WER/CER (and their greedy and long-form variants) pool per-utterance error counts and resample
seeds, speakers and utterances; BLEU/chrF go through sacrebleu on the stored hypotheses. Two cells
are paired by seed (every technique of a seed starts from that seed's float warm-up) and by item.
A cell whose runs predate per-item scores, or whose metric has none, gets no interval (None).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd

from qbench.report.stats import (
    Difference,
    ErrorItem,
    Interval,
    bleu_interval,
    error_rate_interval,
    paired_bleu,
    paired_bleu_seeds,
    paired_error_rate_difference,
)
from qbench.store import read_items

#: error-rate metrics: name -> (per-item errors column, reference length column)
_RATE_COLUMNS = {
    "wer": ("word_errors", "ref_words"),
    "cer": ("char_errors", "ref_chars"),
    "wer_greedy": ("word_errors_greedy", "ref_words"),
    "cer_greedy": ("char_errors_greedy", "ref_chars"),
}
_TEXT_METRICS = ("bleu", "chrf")
_LONG_FORM = re.compile(r"^(wer|cer)@x(\d+)$")


def supports(metric_name: str) -> bool:
    """True when per-item scores can give `metric_name` an interval."""
    return metric_name in _RATE_COLUMNS or metric_name in _TEXT_METRICS or bool(_LONG_FORM.match(metric_name))


def _test_set_and_metric(metric_name: str) -> tuple[str, str]:
    m = _LONG_FORM.match(metric_name)
    return (f"test@x{m.group(2)}", m.group(1)) if m else ("test", metric_name)


@functools.lru_cache(maxsize=512)
def _items(run_dir: str, precision: str) -> pd.DataFrame | None:
    return read_items(run_dir, precision)


def _cell_items(rows: pd.DataFrame, metric_name: str) -> dict[str, pd.DataFrame] | None:
    """seed -> that seed's items for the metric's test set; None if a run has none."""
    test_set, _ = _test_set_and_metric(metric_name)
    out = {}
    for r in rows.drop_duplicates("run_id").itertuples():
        items = _items(str(r.run_dir), str(r.precision))
        if items is None:
            return None
        if "test_set" in items.columns:
            items = items[items.test_set == test_set]
        if items.empty:
            return None
        out[str(r.seed)] = items.sort_values("id").reset_index(drop=True)
    return out or None


def _error_items(by_seed: dict[str, pd.DataFrame], metric_name: str) -> list[ErrorItem] | None:
    errors, length = _RATE_COLUMNS[_test_set_and_metric(metric_name)[1]]
    out = []
    for seed, items in by_seed.items():
        if errors not in items.columns:
            return None
        out += [
            ErrorItem(str(i), int(e), int(n), str(c), seed)
            for i, e, n, c in zip(items.id, items[errors], items[length], items.cluster, strict=True)
        ]
    return out


def cell_interval(rows: pd.DataFrame, metric_name: str) -> Interval | None:
    """The 95 % interval of a cell's metric (pooled over its seeds), in stored units."""
    if not supports(metric_name):
        return None
    by_seed = _cell_items(rows, metric_name)
    if by_seed is None:
        return None
    if metric_name in _TEXT_METRICS:
        hyps = [h for items in by_seed.values() for h in items.hypothesis]
        refs = [r for items in by_seed.values() for r in items.reference]
        return bleu_interval(hyps, refs, metric="bleu" if metric_name == "bleu" else "chrf")
    items = _error_items(by_seed, metric_name)
    return error_rate_interval(items) if items else None


def cell_difference(rows: pd.DataFrame, reference: pd.DataFrame, metric_name: str) -> Difference | None:
    """Cell minus reference cell, paired by seed and item (seeds both cells have), in stored
    units, with its 95 % interval and two-sided p-value."""
    if not supports(metric_name):
        return None
    system, base = _cell_items(rows, metric_name), _cell_items(reference, metric_name)
    if system is None or base is None:
        return None
    return _paired_difference(system, base, metric_name)


def items_difference(
    system: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]], metric_name: str
) -> Difference | None:
    """System minus reference from two evaluations' per-item scores (EvalResult.items) of one
    model family on one split, paired by item, as cell_difference pairs one seed's cells."""
    if not supports(metric_name) or _LONG_FORM.match(metric_name) or not system or not reference:
        return None

    def frame(items: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        df = pd.DataFrame(list(items))
        if "test_set" in df.columns:  # single items only: long-form ones are "<split>@xN"
            df = df[~df.test_set.astype(str).str.contains("@")]
        return df.sort_values("id").reset_index(drop=True)

    return _paired_difference({"0": frame(system)}, {"0": frame(reference)}, metric_name)


def _paired_difference(
    system: dict[str, pd.DataFrame], base: dict[str, pd.DataFrame], metric_name: str
) -> Difference | None:
    seeds = sorted(set(system) & set(base))
    if not seeds:
        return None
    system, base = {s: system[s] for s in seeds}, {s: base[s] for s in seeds}
    if metric_name in _TEXT_METRICS:
        refs = list(base[seeds[0]].reference)
        if any(list(items.reference) != refs for items in (*system.values(), *base.values())):
            return None  # not the same test set
        kind: Literal["bleu", "chrf"] = "bleu" if metric_name == "bleu" else "chrf"
        if len(seeds) == 1:
            sys_hyps, base_hyps = list(system[seeds[0]].hypothesis), list(base[seeds[0]].hypothesis)
            return paired_bleu(sys_hyps, base_hyps, refs, metric=kind, method="ar")
        by_seed = {s: list(system[s].hypothesis) for s in seeds}
        base_by_seed = {s: list(base[s].hypothesis) for s in seeds}
        return paired_bleu_seeds(by_seed, base_by_seed, refs, metric=kind).combined
    a, b = _error_items(system, metric_name), _error_items(base, metric_name)
    if not a or not b:
        return None
    try:  # p from the same cluster bootstrap as the interval: p < 0.05 where it excludes zero
        return paired_error_rate_difference(a, b, p_method="bootstrap")
    except ValueError:  # different test sets: nothing to pair
        return None
