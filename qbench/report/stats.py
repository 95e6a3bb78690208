"""Statistics for the reports: confidence intervals, paired differences, Holm's correction and
the verdict of a pre-registered claim. Pure numbers in, numbers out.

Every resampling takes a seed and a count (by default 12345, sacrebleu's seed, and 1000
resamples; 10000 permutations/trials for p-values), so a table computed twice is the same table.

- Error rates (WER/CER) are pooled as jiwer pools them: sum(errors) / sum(reference length).
  Their intervals come from a hierarchical bootstrap (seeds, speakers/voices, utterances);
  their paired p-values from a paired approximate randomisation (the two systems' counts of an
  utterance swapped at random), whose null ("the two systems are exchangeable on every
  utterance") holds its level exactly, where a p-value read off a bootstrap does not.
- BLEU/chrF delegate to sacrebleu: p-values are sacrebleu.significance.PairedTest's, and the
  intervals are computed on the very resamples sacrebleu draws (same seed, same indices), so a
  system's "mu +- 95 % CI" equals sacrebleu's output.
- Intervals are percentile intervals, their ends picked as sacrebleu picks them: the
  floor(B * (1 - level) / 2)-th sorted resample from either end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from statistics import NormalDist
from typing import Literal

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric as SacreMetric
from sacrebleu.significance import PairedTest, Result

DEFAULT_SEED = 12345  # sacrebleu's own default (SACREBLEU_SEED)
DEFAULT_RESAMPLES = 1000
DEFAULT_PERMUTATIONS = 10000  # as sacrebleu's approximate randomisation
MIN_CLUSTERS = 5  # fewer speakers/voices than this: resample utterances within each instead

VerdictName = Literal["supported", "contradicted", "inconclusive", "equivalent"]
#: values (n, or n x k, one row per item) -> their sums in every resample (B, or B x k)
Sums = Callable[[list[np.ndarray]], list[np.ndarray]]


def _bounds(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of `draws` at `level`, its ends chosen as sacrebleu chooses them."""
    if not 0 < level < 1 or len(draws) < 2:
        raise ValueError(f"need 0 < level < 1 and 2 resamples or more (level {level}, {len(draws)})")
    s = np.sort(draws)
    k = math.floor(len(s) * (1 - level) / 2 + 1e-9)
    return float(s[k]), float(s[len(s) - k - 1])


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (`level`, 95 % by default), the bootstrap
    standard error, the number of items `n` it rests on and how they were resampled (`scheme`).
    `draws` keeps the bootstrap distribution, so an interval at another level needs no rerun."""

    estimate: float
    low: float
    high: float
    se: float
    n: int
    level: float = 0.95
    scheme: str = ""
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)

    def bounds(self, level: float) -> tuple[float, float]:
        """The interval at `level`: from the draws when kept, else estimate +- z * se."""
        if math.isclose(level, self.level):
            return self.low, self.high
        if self.draws is not None:
            return _bounds(self.draws, level)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.estimate - z * self.se, self.estimate + z * self.se

    @property
    def half_width(self) -> float:
        """Half the interval's width: sacrebleu's "+- CI"."""
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference(Interval):
    """A paired difference, system - reference, in the metric's stored units: its interval, its
    two-sided p-value (`p_method` says which test) and, when known, each side's own interval."""

    p_value: float = math.nan
    p_method: str = ""
    system: Interval | None = None
    reference: Interval | None = None


@dataclass(frozen=True)
class SeedsDifference:
    """A paired difference over several seeds: one per seed, and the seeds combined."""

    combined: Difference
    per_seed: dict[str, Difference]


@dataclass(frozen=True)
class ErrorItem:
    """One utterance's share of an error rate: its errors (substitutions + deletions +
    insertions) and its reference length (words for WER, characters for CER), with its speaker or
    voice (`cluster`) and the training seed of the model that transcribed it."""

    utterance: str
    errors: int
    ref_len: int
    cluster: str = ""
    seed: str = ""


def _interval(estimate: float, draws: np.ndarray, n: int, level: float, scheme: str) -> Interval:
    low, high = _bounds(draws, level)
    return Interval(float(estimate), low, high, float(np.std(draws, ddof=1)), n, level, scheme, draws)


def _paired(
    estimates: tuple[float, float],
    draws: tuple[np.ndarray, np.ndarray],
    n: int,
    level: float,
    scheme: str,
    p: float,
    how: str,
) -> Difference:
    """The Difference of two systems (system, reference) scored on the same resamples."""
    sys_i, ref_i = (_interval(e, d, n, level, scheme) for e, d in zip(estimates, draws, strict=True))
    diff = _interval(estimates[0] - estimates[1], draws[0] - draws[1], n, level, f"paired {scheme}")
    return Difference(**{**diff.__dict__, "p_value": p, "p_method": how, "system": sys_i, "reference": ref_i})


# ------------------------------------------------------------------ the hierarchical bootstrap
# Written here: no library resamples clusters, let alone seeds and clusters and utterances.


def _draw(rng: np.random.Generator, mult: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """How often each child is drawn in each resample (B x children) when, in resample b,
    parent j is drawn mult[b, j] times and each copy resamples its sizes[j] children (numbered
    parent after parent) with replacement. A parent drawn m times, each copy resampled, is the
    same in distribution as one draw of m * size: equal-probability multinomials add up."""
    b, m = len(mult), int(sizes.sum())
    totals = (mult * sizes).ravel()
    first = np.arange(b)[:, None] * m + np.concatenate([[0], np.cumsum(sizes)[:-1]])  # child 0 of (b, j)
    # floor(u * size) < size for every u < 1 in doubles, so no draw falls outside its parent
    offsets = rng.random(int(totals.sum())) * np.repeat(np.tile(sizes.astype(np.float64), b), totals)
    drawn = np.repeat(first.ravel(), totals) + offsets.astype(np.int64)
    return np.bincount(drawn, minlength=b * m).reshape(b, m)


def _codes(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(labels, dtype=str), return_inverse=True)[1].ravel()


def _hierarchical(
    seeds: np.ndarray,
    clusters: np.ndarray,
    units: np.ndarray,
    n_resamples: int,
    seed: int,
    min_clusters: int,
    unit: str,
) -> tuple[Sums, str]:
    """The bootstrap of items labelled by seed, cluster and unit (utterance; codes 0..), and its
    scheme in words. Seeds are resampled when there are several. When every seed scored the
    same units (the test set is the data's, not the training seed's), seeds and units are
    crossed: one draw of clusters and units serves every drawn seed, as the one test set serves
    every seed (nesting them would shrink the test set's sampling error by sqrt(seeds)); else
    units are nested in seeds, drawn afresh in each. Clusters are resampled when there are at
    least `min_clusters` (in each seed), else all kept (stratified)."""
    rng = np.random.default_rng(seed)
    b, n_seeds, n_units = n_resamples, int(seeds.max()) + 1, int(units.max()) + 1
    seed_counts = np.ones((b, 1), dtype=np.int64)
    if n_seeds > 1:
        seed_counts = _draw(rng, seed_counts, np.array([n_seeds]))
    cells = np.unique(np.stack([seeds, units, clusters], axis=1), axis=0)
    crossed = n_seeds > 1 and len(cells) == n_seeds * n_units == n_seeds * len(
        np.unique(cells[:, 1:], axis=0)
    )
    if crossed:  # one group of clusters of units, counts weighted by the seeds' counts
        unit_cluster = np.empty(n_units, dtype=np.int64)
        unit_cluster[units] = clusters
        groups = np.zeros(int(clusters.max()) + 1, dtype=np.int64)  # the clusters of one test set
        by_cluster = len(groups) >= min_clusters
        mults = [
            np.ones((len(c), 1), dtype=np.int64) for c in np.array_split(seed_counts, range(0, b, 64)[1:])
        ]
    else:  # groups are seeds, their clusters the (seed, cluster) pairs, their units the items
        pairs, unit_cluster = np.unique(np.stack([seeds, clusters], axis=1), axis=0, return_inverse=True)
        unit_cluster, groups = unit_cluster.ravel(), pairs[:, 0]  # np.unique sorted them by seed
        by_cluster = np.bincount(groups, minlength=n_seeds).min() >= min_clusters
        mults = np.array_split(seed_counts, range(0, b, 64)[1:])

    cluster_sizes = np.bincount(groups, minlength=mults[0].shape[1])
    unit_order = np.argsort(unit_cluster, kind="stable")  # units numbered cluster after cluster
    unit_sizes = np.bincount(unit_cluster, minlength=len(groups))

    def sums(values: list[np.ndarray]) -> list[np.ndarray]:
        table = np.column_stack([v.reshape(len(v), -1) for v in values])
        if crossed:  # unit x (seed, column)
            cube = np.zeros((n_units, n_seeds, table.shape[1]))
            cube[units, seeds] = table
            table = cube.reshape(n_units, -1)
        table, out = table[unit_order], []
        for i, mult in enumerate(mults):  # 64 resamples at a time
            drawn = _draw(rng, mult, cluster_sizes) if by_cluster else mult[:, groups]
            part = _draw(rng, drawn, unit_sizes).astype(np.float64) @ table
            if crossed:
                part = np.einsum(
                    "bs,bsk->bk",
                    seed_counts[i * 64 : i * 64 + len(mult)],
                    part.reshape(len(mult), n_seeds, -1),
                )
            out.append(part)
        whole, ends = np.concatenate(out), np.cumsum([v[0].size for v in values])
        return [
            whole[:, e - v[0].size : e].reshape(b, *v.shape[1:]) for e, v in zip(ends, values, strict=True)
        ]

    n_clusters = len(np.unique(clusters))
    scheme = f"{n_seeds} seeds {'x' if crossed else '>'} " if n_seeds > 1 else ""
    if by_cluster:
        scheme += f"{n_clusters} clusters > {unit}"
    else:
        strata = f" within each of {n_clusters} clusters (stratified: fewer than {min_clusters})"
        scheme += unit + (strata if n_clusters > 1 else "")
    return sums, f"bootstrap ({b}): {scheme}" + (
        " (crossed: every seed scored the same ones)" if crossed else ""
    )


# ------------------------------------------------------------------ error rates


@dataclass(frozen=True)
class _Columns:
    keys: list[tuple[str, str]]  # (seed, utterance)
    errors: np.ndarray
    ref_len: np.ndarray
    clusters: np.ndarray


def _columns(items: Sequence[ErrorItem]) -> _Columns:
    if not items:
        raise ValueError("no items to score")
    errors = np.array([it.errors for it in items], dtype=np.float64)
    ref_len = np.array([it.ref_len for it in items], dtype=np.float64)
    if errors.min() < 0 or ref_len.min() < 0 or ref_len.sum() <= 0:
        raise ValueError("errors and reference lengths must not be negative, nor all references empty")
    keys = [(it.seed, it.utterance) for it in items]
    if len(set(keys)) != len(keys):
        raise ValueError("an utterance appears twice for the same seed")
    return _Columns(keys, errors, ref_len, np.array([it.cluster for it in items], dtype=str))


def _error_sums(
    cols: _Columns, values: list[np.ndarray], n_resamples: int, seed: int, min_clusters: int
) -> tuple[np.ndarray, list[np.ndarray], str]:
    """The hierarchical bootstrap's sums of the reference lengths and of each of `values`."""
    seeds, units = (_codes([k[i] for k in cols.keys]) for i in (0, 1))
    sums, scheme = _hierarchical(
        seeds, _codes(cols.clusters), units, n_resamples, seed, min_clusters, "utterances"
    )
    lengths, *out = sums([cols.ref_len, *values])
    return lengths, out, scheme


def error_rate_interval(
    items: Sequence[ErrorItem],
    *,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    min_clusters: int = MIN_CLUSTERS,
) -> Interval:
    """The pooled error rate sum(errors) / sum(ref_len) of `items` (several seeds pool too), with
    a hierarchical bootstrap interval (seeds, clusters, utterances: see its `scheme`)."""
    cols = _columns(items)
    lengths, (errors,), scheme = _error_sums(cols, [cols.errors], n_resamples, seed, min_clusters)
    return _interval(cols.errors.sum() / cols.ref_len.sum(), errors / lengths, len(items), level, scheme)


def _align(system: _Columns, reference: _Columns) -> np.ndarray:
    """The reference's row of each system row; a ValueError when the two do not pair up."""
    where = {k: i for i, k in enumerate(reference.keys)}
    missing, extra = [k for k in system.keys if k not in where], set(reference.keys) - set(system.keys)
    if missing or extra:
        shown = ", ".join(f"seed {s!r} utterance {u!r}" for s, u in (missing + sorted(extra))[:3])
        raise ValueError(
            f"paired inputs do not align: {len(missing)} (seed, utterance) only in the system, "
            f"{len(extra)} only in the reference (e.g. {shown})"
        )
    index = np.array([where[k] for k in system.keys])
    bad = np.flatnonzero(
        (reference.ref_len[index] != system.ref_len) | (reference.clusters[index] != system.clusters)
    )
    if bad.size:
        s, u = system.keys[bad[0]]
        raise ValueError(
            f"paired inputs do not align: {bad.size} utterances differ in reference length or "
            f"cluster between the two systems (e.g. seed {s!r} utterance {u!r})"
        )
    return index


def _sign_flip_p(d: np.ndarray, rng: np.random.Generator, n_permutations: int) -> float:
    """Paired approximate randomisation (as sacrebleu's AR test, here for error counts):
    swapping the two systems' counts of an utterance flips the sign of its difference d_i and
    leaves the denominator alone, so the permuted statistic is sum(+-d_i). Two-sided; ties count
    against the effect; p = (hits + 1) / (trials + 1)."""
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    total = float(d.sum())
    d = d.astype(np.float32 if np.abs(d).sum() < 2**24 else np.float64)  # integers: exact
    hits, chunk = 0, max(8, 2**22 // d.size)
    for start in range(0, n_permutations, chunk):
        rows = min(chunk, n_permutations - start)
        raw = np.frombuffer(rng.bytes((rows * d.size + 7) // 8), dtype=np.uint8)
        swapped = np.unpackbits(raw)[: rows * d.size].reshape(rows, d.size)  # 1: swap the pair
        hits += int(np.count_nonzero(np.abs(total - 2 * (swapped.astype(d.dtype) @ d)) >= abs(total)))
    return (hits + 1) / (n_permutations + 1)


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p-value read off a bootstrap distribution: twice the smaller tail beyond 0."""
    tail = min(np.count_nonzero(draws <= 0), np.count_nonzero(draws >= 0))
    return min(1.0, 2 * (tail + 1) / (len(draws) + 1))


def paired_error_rate_difference(
    system_items: Sequence[ErrorItem],
    reference_items: Sequence[ErrorItem],
    *,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
    min_clusters: int = MIN_CLUSTERS,
    p_method: Literal["ar", "bootstrap"] = "ar",
) -> Difference:
    """System - reference of the pooled error rate, paired by (seed, utterance): the same
    bootstrap draws score both (the interval), and the p-value comes from a paired approximate
    randomisation (`p_method="ar"`, the default) or from the bootstrap distribution.
    The AR p-value is conditional on the seeds (their models are fixed); the interval also
    carries the seed-to-seed spread when there are several seeds, so with few seeds it can span
    zero while p is small: the verdict asks for both."""
    sys_cols, ref_cols = _columns(system_items), _columns(reference_items)
    ref_errors = ref_cols.errors[_align(sys_cols, ref_cols)]
    values = [sys_cols.errors, ref_errors]
    lengths, (sys_sums, ref_sums), scheme = _error_sums(sys_cols, values, n_resamples, seed, min_clusters)
    draws = sys_sums / lengths, ref_sums / lengths
    if p_method == "ar":  # a stream of its own: the intervals stay error_rate_interval's
        p = _sign_flip_p(sys_cols.errors - ref_errors, np.random.default_rng([seed, 1]), n_permutations)
        how = f"paired approximate randomisation ({n_permutations})"
    elif p_method == "bootstrap":
        p, how = _bootstrap_p(draws[0] - draws[1]), f"paired bootstrap ({n_resamples})"
    else:
        raise ValueError(f"p_method must be 'ar' or 'bootstrap', not {p_method!r}")
    total = sys_cols.ref_len.sum()
    rates = sys_cols.errors.sum() / total, ref_errors.sum() / total
    return _paired(rates, draws, len(system_items), level, scheme, p, how)


# ------------------------------------------------------------------ BLEU and chrF (sacrebleu)


def _sacre_metric(metric: str) -> SacreMetric:
    """qbench's BLEU and chrF: sacrebleu's defaults, as the MT task scores them."""
    if metric not in ("bleu", "chrf"):
        raise ValueError(f"metric must be 'bleu' or 'chrf', not {metric!r}")
    return BLEU() if metric == "bleu" else CHRF()


def _sentence_stats(m: SacreMetric, hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    # sacrebleu's sufficient statistics per sentence: the (private) method its significance module uses
    return np.asarray(m._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=np.float64)


def _scores(m: SacreMetric, sums: np.ndarray) -> np.ndarray:
    """The score of each resample's summed statistics, from float32 sums as sacrebleu makes them
    (integers, so exact), which makes every score equal sacrebleu's bit for bit."""
    return np.array([m._compute_score_from_stats(s).score for s in sums.astype(np.float32)], dtype=np.float64)


def _sacrebleu_resamples(n: int, n_resamples: int, seed: int) -> Sums:
    """The resamples sacrebleu draws for its bootstrap (corpus_score(n_bootstrap=...) and the
    paired bootstrap test): the same generator, seed and call."""
    if seed == 0:  # PairedTest reads a seed of 0 as "no seed" and draws from the OS
        raise ValueError("seed 0 makes sacrebleu draw unseeded: choose another")
    idxs = np.random.default_rng(seed).choice(n, size=(n_resamples, n), replace=True)
    step = max(1, 2**20 // n)
    parts = range(0, n_resamples, step)
    return lambda values: [
        np.concatenate([v[idxs[b0 : b0 + step]].sum(axis=1) for b0 in parts]) for v in values
    ]


def bleu_interval(
    hyps: Sequence[str],
    refs: Sequence[str],
    *,
    metric: Literal["bleu", "chrf"] = "bleu",
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Corpus BLEU (or chrF) with a bootstrap interval over sentences, on the resamples
    sacrebleu's corpus_score(n_bootstrap=...) draws: half_width is its "+- CI"."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    m = _sacre_metric(metric)
    (sums,) = _sacrebleu_resamples(len(hyps), n_resamples, seed)([_sentence_stats(m, hyps, refs)])
    scheme = f"bootstrap ({n_resamples}): sentences, as sacrebleu"
    return _interval(
        m.corpus_score(list(hyps), [list(refs)]).score, _scores(m, sums), len(hyps), level, scheme
    )


@contextmanager
def _sacrebleu_seed(seed: int) -> Iterator[None]:
    """PairedTest takes its seed from SACREBLEU_SEED only (its documented switch)."""
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = old


def _sacrebleu_p(
    system: list[str], baseline: list[str], refs: list[str], metric: str, method: str, n: int, seed: int
) -> tuple[float, str]:
    """sacrebleu's paired test p-value (bs: paired bootstrap, ar: approximate randomisation)."""
    how = {"bs": "sacrebleu paired bootstrap", "ar": "sacrebleu approximate randomisation"}
    if method not in how:
        raise ValueError(f"method must be 'bs' or 'ar', not {method!r}")
    if system == baseline:  # sacrebleu counts only differences beyond the observed: p = 1/(n+1) here
        return 1.0, f"{how[method]} ({n}); identical hypotheses: p = 1"
    with _sacrebleu_seed(seed):
        test = PairedTest(
            [("baseline", baseline), ("system", system)], {metric: _sacre_metric(metric)}, [refs], method, n
        )
        _, scores = test()
    (result,) = [v[1] for k, v in scores.items() if k != "System"]
    if not isinstance(result, Result) or result.p_value is None:
        raise RuntimeError(f"sacrebleu's PairedTest gave no p-value: {result!r}")
    return float(result.p_value), f"{how[method]} ({n})"


def _bleu_difference(
    hyps: tuple[list[str], list[str], list[str]],
    metric: str,
    method: str,
    sums: Sums,
    scheme: str,
    level: float,
    trials: int,
    seed: int,
) -> Difference:
    """System - baseline on (system, baseline, references), scored on `sums`' resamples."""
    system, baseline, refs = hyps
    m = _sacre_metric(metric)
    sys_draws, bl_draws = (
        _scores(m, x) for x in sums([_sentence_stats(m, h, refs) for h in (system, baseline)])
    )
    scores = m.corpus_score(system, [refs]).score, m.corpus_score(baseline, [refs]).score
    p, how = _sacrebleu_p(system, baseline, refs, metric, method, trials, seed)
    return _paired(scores, (sys_draws, bl_draws), len(refs), level, scheme, p, how)


def paired_bleu(
    system_hyps: Sequence[str],
    baseline_hyps: Sequence[str],
    refs: Sequence[str],
    *,
    metric: Literal["bleu", "chrf"] = "bleu",
    method: Literal["bs", "ar"] = "bs",
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_trials: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
) -> Difference:
    """System - baseline BLEU (or chrF) on one test set. The p-value is sacrebleu's PairedTest
    (`method` "bs": paired bootstrap over `n_resamples`; "ar": approximate randomisation over
    `n_trials`); the interval of the difference, which sacrebleu does not give, comes from its
    paired bootstrap resamples, and so do `system` and `reference` (their half_width and draws'
    mean are sacrebleu's "mu +- CI")."""
    n = len(refs)
    if len(system_hyps) != n or len(baseline_hyps) != n or not n:
        raise ValueError(f"{len(system_hyps)} and {len(baseline_hyps)} hypotheses for {n} references")
    sums = _sacrebleu_resamples(n, n_resamples, seed)
    scheme = f"bootstrap ({n_resamples}): sentences, as sacrebleu"
    hyps = list(system_hyps), list(baseline_hyps), list(refs)
    return _bleu_difference(
        hyps, metric, method, sums, scheme, level, n_resamples if method == "bs" else n_trials, seed
    )


def paired_bleu_seeds(
    system_hyps: Mapping[str, Sequence[str]],
    baseline_hyps: Mapping[str, Sequence[str]],
    refs: Sequence[str],
    *,
    metric: Literal["bleu", "chrf"] = "bleu",
    method: Literal["bs", "ar"] = "ar",
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_trials: int = DEFAULT_PERMUTATIONS,
    seed: int = DEFAULT_SEED,
) -> SeedsDifference:
    """System - baseline BLEU (or chrF) over several training seeds (seed -> hypotheses on the
    same test set; each seed's system paired with the same seed's baseline). Per seed:
    paired_bleu. Combined: the seeds' hypotheses pooled into one corpus (BLEU of the pooled
    statistics, as a multi-seed corpus score); its p-value is sacrebleu's PairedTest on the
    pooled corpus (with "ar", the default, each (seed, sentence) pair is swapped as a unit: a
    valid paired test, conditional on the seeds), its interval the hierarchical bootstrap
    (seeds with replacement, crossed with the one test set's sentences)."""
    if set(system_hyps) != set(baseline_hyps) or not system_hyps:
        raise ValueError(
            f"the system's seeds {sorted(system_hyps)} and the baseline's {sorted(baseline_hyps)} differ"
        )
    seeds, n = sorted(system_hyps), len(refs)
    one = partial(paired_bleu, refs=refs, metric=metric, method=method, level=level, seed=seed)
    per_seed = {
        s: one(system_hyps[s], baseline_hyps[s], n_resamples=n_resamples, n_trials=n_trials) for s in seeds
    }
    seed_codes, sentences = np.repeat(np.arange(len(seeds)), n), np.tile(np.arange(n), len(seeds))
    one_cluster = np.zeros_like(sentences)
    sums, scheme = _hierarchical(
        seed_codes, one_cluster, sentences, n_resamples, seed, MIN_CLUSTERS, "sentences"
    )
    pooled_sys, pooled_bl = ([h for s in seeds for h in hyps[s]] for hyps in (system_hyps, baseline_hyps))
    trials = n_resamples if method == "bs" else n_trials
    combined = _bleu_difference(
        (pooled_sys, pooled_bl, list(refs) * len(seeds)), metric, method, sums, scheme, level, trials, seed
    )
    return SeedsDifference(replace(combined, p_method=f"{combined.p_method}, pooled seeds"), per_seed)


# ------------------------------------------------------------------ families and verdicts


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest p times
    (m - i + 1), made monotone, capped at 1. Written here because scipy has no Holm correction
    (scipy.stats.false_discovery_control is Benjamini-Hochberg)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError(f"p-values must lie in [0, 1]: {list(p_values)}")
    order, m = np.argsort(p, kind="stable"), len(p)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [float(a) for a in adjusted]


def verdict(
    difference: Interval, direction: int, delta: float, alpha: float = 0.05, adjusted_p: float | None = None
) -> VerdictName:
    """The verdict on a claim that `difference` (system - reference) lies in `direction` (+1:
    the system's value is higher, -1: lower), with `delta` the smallest effect worth reporting.

    - equivalent: the (1 - 2 alpha) interval lies inside (-delta, +delta): two one-sided tests
      at alpha with margin delta. It comes first: an effect surely smaller than delta is not
      worth reporting, in either direction, even when its interval excludes zero.
    - supported: the (1 - alpha) interval excludes zero in the claimed direction;
    - contradicted: it excludes zero the other way;
      both only when the family's adjusted p-value (if given) is below alpha;
    - inconclusive: otherwise."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction}")
    if delta < 0 or not 0 < alpha < 0.5:
        raise ValueError(f"need delta >= 0 and 0 < alpha < 0.5 (got delta {delta}, alpha {alpha})")
    tost_low, tost_high = difference.bounds(1 - 2 * alpha)
    if -delta < tost_low and tost_high < delta:
        return "equivalent"
    low, high = sorted(direction * b for b in difference.bounds(1 - alpha))  # > 0: as claimed
    significant = adjusted_p is None or adjusted_p < alpha
    if significant and low > 0:
        return "supported"
    if significant and high < 0:
        return "contradicted"
    return "inconclusive"
