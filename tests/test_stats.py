"""qbench.report.stats against known answers: analytic standard errors, sacrebleu's own paired
tests, hand-computed Holm adjustments and verdicts that a wrong rule would get wrong."""

from __future__ import annotations

import random
from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from qbench.report.stats import (
    Difference,
    ErrorItem,
    Interval,
    bleu_interval,
    error_rate_interval,
    holm,
    paired_bleu,
    paired_bleu_seeds,
    paired_error_rate_difference,
    verdict,
)

# ------------------------------------------------------------------ synthetic error counts


def _utterances(n: int, seed: int, clusters: int = 1, effect_sd: float = 0.0):
    """n utterances of 3-25 words, each with its own error probability (a speaker effect on the
    logit when effect_sd > 0): (reference lengths, speaker of each, error probabilities)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 26, n)
    speaker = rng.integers(0, clusters, n)
    effects = rng.normal(0, effect_sd, clusters)
    p = 1 / (1 + np.exp(-(-1.0 + effects[speaker] + rng.normal(0, 0.5, n))))
    return lengths, speaker, p


def _items(errors, lengths, speaker, seed_label: str = "", prefix: str = "u") -> list[ErrorItem]:
    return [
        ErrorItem(f"{prefix}{i}", int(e), int(n), f"spk{s}", seed_label)
        for i, (e, n, s) in enumerate(zip(errors, lengths, speaker, strict=True))
    ]


def _ratio_se(errors, lengths) -> float:
    """The delta-method (linearised) standard error of sum(e) / sum(l) over independent items."""
    errors, lengths = np.asarray(errors, float), np.asarray(lengths, float)
    r = errors.sum() / lengths.sum()
    return float(np.sqrt(((errors - r * lengths) ** 2).sum()) / lengths.sum())


def test_wer_bootstrap_se_matches_the_delta_method():
    lengths, speaker, p = _utterances(2000, seed=1)
    errors = np.random.default_rng(2).binomial(lengths, p)
    interval = error_rate_interval(_items(errors, lengths, speaker))
    analytic = _ratio_se(errors, lengths)
    assert interval.scheme == "bootstrap (1000): utterances"  # one speaker: plain utterance bootstrap
    assert interval.estimate == errors.sum() / lengths.sum()  # pooled, as jiwer
    assert interval.se == pytest.approx(analytic, rel=0.10)
    assert interval.low < interval.estimate < interval.high
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * analytic, rel=0.15)


def test_cluster_bootstrap_se_matches_the_clustered_delta_method():
    """Speakers differ: the speaker-level (cluster) delta-method SE is the answer, several times
    the naive utterance-level one."""
    lengths, speaker, p = _utterances(3000, seed=3, clusters=60, effect_sd=0.8)
    errors = np.random.default_rng(4).binomial(lengths, p)
    interval = error_rate_interval(_items(errors, lengths, speaker))
    by_speaker = np.bincount(speaker, errors, 60), np.bincount(speaker, lengths, 60)
    assert interval.scheme == "bootstrap (1000): 60 clusters > utterances"
    assert interval.se == pytest.approx(_ratio_se(*by_speaker), rel=0.10)
    assert interval.se > 3 * _ratio_se(errors, lengths)


def test_few_clusters_resample_utterances_within_each():
    lengths, speaker, p = _utterances(600, seed=5, clusters=3, effect_sd=0.8)
    errors = np.random.default_rng(6).binomial(lengths, p)
    interval = error_rate_interval(_items(errors, lengths, speaker))
    assert "within each of 3 clusters (stratified: fewer than 5)" in interval.scheme
    # stratified: the variance is the within-speaker one, at most the naive one
    assert interval.se <= 1.1 * _ratio_se(errors, lengths)


def test_seeds_that_share_a_test_set_are_crossed_with_it():
    """Three seeds that made the same errors: the test set's sampling error stays that of one
    test set (crossed), where drawing utterances afresh for each seed would divide it by sqrt(3)."""
    lengths, speaker, p = _utterances(1500, seed=7)
    errors = np.random.default_rng(8).binomial(lengths, p)
    one = error_rate_interval(_items(errors, lengths, speaker))
    crossed = error_rate_interval([it for s in "abc" for it in _items(errors, lengths, speaker, s)])
    nested = error_rate_interval([it for s in "abc" for it in _items(errors, lengths, speaker, s, prefix=s)])
    assert crossed.scheme.startswith("bootstrap (1000): 3 seeds x utterances (crossed")
    assert nested.scheme == "bootstrap (1000): 3 seeds > utterances"
    assert crossed.estimate == one.estimate
    assert crossed.se == pytest.approx(one.se, rel=0.10)
    assert nested.se == pytest.approx(one.se / np.sqrt(3), rel=0.15)


def test_seeds_that_differ_widen_the_interval():
    lengths, speaker, p = _utterances(1000, seed=9)
    rng = np.random.default_rng(10)
    shifted = [np.clip(p + shift, 0, 1) for shift in (-0.05, 0.0, 0.05)]  # seed-to-seed spread
    items = [
        it
        for s, q in zip("abc", shifted, strict=True)
        for it in _items(rng.binomial(lengths, q), lengths, speaker, s)
    ]
    same = [it for s in "abc" for it in _items(rng.binomial(lengths, p), lengths, speaker, s)]
    assert error_rate_interval(items).se > 2 * error_rate_interval(same).se


def _paired_items(n=2000, shift=0.02, seed=11, seeds=("",)):
    """A reference and a system that errs on the same utterances, give or take one error on
    some: one more with probability 0.15 + shift, one fewer with 0.15 - shift."""
    lengths, speaker, p = _utterances(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    system, reference = [], []
    for s in seeds:
        base = rng.binomial(lengths, p) + 1  # at least one error each, so that one fewer stays >= 0
        changed = rng.choice([-1, 0, 1], n, p=[0.15 - shift, 0.7, 0.15 + shift])
        system += _items(base + changed, lengths, speaker, s)
        reference += _items(base, lengths, speaker, s)
    return system, reference


def test_paired_error_rate_difference_matches_the_delta_method_and_a_sign_test():
    system, reference = _paired_items(shift=0.015)
    d = np.array([s.errors - r.errors for s, r in zip(system, reference, strict=True)], float)
    lengths = np.array([it.ref_len for it in system], float)
    diff = paired_error_rate_difference(system, reference)
    assert diff.estimate == pytest.approx(d.sum() / lengths.sum())
    assert diff.se == pytest.approx(_ratio_se(d, lengths), rel=0.10)
    # the approximate randomisation's p is, for many utterances, the normal sign-flip test's
    z = abs(d.sum()) / np.sqrt((d**2).sum())
    normal_p = 2 * (1 - NormalDist().cdf(z))
    assert 0.005 < normal_p < 0.2  # a borderline effect, where the p-value matters
    assert diff.p_value == pytest.approx(normal_p, abs=0.01)
    assert diff.p_method == "paired approximate randomisation (10000)"
    # the same draws score both systems: their intervals are error_rate_interval's
    assert diff.system == error_rate_interval(system)
    assert diff.reference == error_rate_interval(reference)
    assert diff.draws is not None and diff.system.draws is not None and diff.reference.draws is not None
    np.testing.assert_array_equal(diff.draws, diff.system.draws - diff.reference.draws)


def test_paired_bootstrap_p_value_agrees_with_the_interval():
    system, reference = _paired_items(shift=0.03)
    diff = paired_error_rate_difference(system, reference, p_method="bootstrap")
    assert diff.low > 0 and diff.p_value < 0.05
    assert diff.p_method == "paired bootstrap (1000)"


def test_identical_systems_differ_by_nothing():
    system, _ = _paired_items()
    diff = paired_error_rate_difference(system, list(reversed(system)))  # order does not matter
    assert (diff.estimate, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_several_seeds_pair_by_seed_and_utterance():
    system, reference = _paired_items(n=500, shift=0.03, seeds=("0", "1", "2"))
    diff = paired_error_rate_difference(system, reference)
    assert diff.n == 1500
    assert "3 seeds x utterances (crossed" in diff.scheme
    assert diff.estimate > 0 and diff.p_value < 0.001


def test_same_call_same_numbers_and_the_seed_is_a_parameter():
    system, reference = _paired_items(n=300, seeds=("0", "1"))
    first, again = (paired_error_rate_difference(system, reference) for _ in range(2))
    assert first == again
    assert first.draws is not None and again.draws is not None
    np.testing.assert_array_equal(first.draws, again.draws)
    assert error_rate_interval(system) == error_rate_interval(system)
    other = paired_error_rate_difference(system, reference, seed=7, n_resamples=500)
    assert (other.low, other.high) != (first.low, first.high)


def test_misaligned_pairs_are_refused():
    system, reference = _paired_items(n=50)
    with pytest.raises(ValueError, match="do not align: 1 .* only in the system"):
        paired_error_rate_difference(system, reference[1:])
    with pytest.raises(ValueError, match="do not align: 0 .* 1 only in the reference"):
        paired_error_rate_difference(system[1:], reference)
    longer = [replace(reference[0], ref_len=reference[0].ref_len + 1), *reference[1:]]
    with pytest.raises(ValueError, match="differ in reference length or cluster"):
        paired_error_rate_difference(system, longer)
    other_seed = [replace(it, seed="1") for it in reference]
    with pytest.raises(ValueError, match="do not align"):
        paired_error_rate_difference(system, other_seed)
    with pytest.raises(ValueError, match="twice"):
        error_rate_interval(system + system[:1])


# ------------------------------------------------------------------ BLEU and chrF against sacrebleu

WORDS = "the a cat dog sat on mat ran fast slow big red house tree river walked saw green old man".split()


def _corpus(n=200, seed=0):
    """References and two systems' hypotheses: the system garbles fewer words than the baseline.
    The references are always the same; `seed` draws the garbling (a training seed's models)."""
    refs = [" ".join(random.Random(i).choices(WORDS, k=random.Random(-i).randint(6, 16))) for i in range(n)]
    rng = random.Random(seed)

    def garble(rate: float) -> list[str]:
        return [" ".join(w if rng.random() > rate else rng.choice(WORDS) for w in r.split()) for r in refs]

    return refs, garble(0.30), garble(0.34)  # close: p-values well above their floor


@pytest.fixture
def sacrebleu_seed(monkeypatch):
    """sacrebleu's own default seed (12345), as the functions under test use."""
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)


@pytest.mark.parametrize("metric,cls", [("bleu", BLEU), ("chrf", CHRF)])
def test_bleu_interval_is_sacrebleus(sacrebleu_seed, metric, cls):
    refs, system, _ = _corpus()
    ours = bleu_interval(system, refs, metric=metric)
    theirs = cls().corpus_score(system, [refs], n_bootstrap=1000)
    assert ours.estimate == theirs.score
    assert ours.half_width == pytest.approx(theirs._ci, abs=1e-9)
    assert ours.draws is not None and ours.draws.mean() == pytest.approx(
        theirs._mean, rel=1e-6
    )  # float32 sums


@pytest.mark.parametrize("metric,cls", [("bleu", BLEU), ("chrf", CHRF)])
def test_paired_bootstrap_is_sacrebleus(sacrebleu_seed, metric, cls):
    refs, system, baseline = _corpus()
    ours = paired_bleu(system, baseline, refs, metric=metric, method="bs")
    _, scores = PairedTest([("baseline", baseline), ("system", system)], {metric: cls()}, [refs], "bs")()
    (base, sys_result) = next(v for k, v in scores.items() if k != "System")
    assert ours.p_value == sys_result.p_value
    assert 1 / 1001 < ours.p_value < 0.5  # not the floor that any large effect reaches
    assert ours.system is not None and ours.reference is not None
    assert ours.system.estimate == sys_result.score and ours.reference.estimate == base.score
    assert ours.system.half_width == pytest.approx(sys_result.ci, abs=1e-9)
    assert ours.system.draws.mean() == pytest.approx(sys_result.mean, rel=1e-6)  # sacrebleu sums in float32
    assert ours.reference.half_width == pytest.approx(base.ci, abs=1e-9)
    assert ours.estimate == pytest.approx(sys_result.score - base.score)
    assert ours.estimate > 0 and ours.low < ours.estimate < ours.high


def test_approximate_randomisation_is_sacrebleus(sacrebleu_seed):
    refs, system, baseline = _corpus()
    ours = paired_bleu(system, baseline, refs, method="ar", n_trials=2000)
    _, scores = PairedTest(
        [("baseline", baseline), ("system", system)], {"bleu": BLEU()}, [refs], "ar", 2000
    )()
    assert ours.p_value == scores["BLEU"][1].p_value
    assert 1 / 2001 < ours.p_value < 0.5
    assert ours.p_method == "sacrebleu approximate randomisation (2000)"


def test_paired_bleu_of_identical_systems_has_p_one():
    """sacrebleu itself reports p = 1/(trials + 1) here (it counts only larger differences)."""
    refs, system, _ = _corpus(n=50)
    diff = paired_bleu(system, list(system), refs)
    assert (diff.estimate, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bleu_over_seeds(sacrebleu_seed):
    refs, system, baseline = _corpus(n=120)
    _, system2, baseline2 = _corpus(n=120, seed=1)
    systems, baselines = {"0": system, "1": system2}, {"0": baseline, "1": baseline2}
    both = paired_bleu_seeds(systems, baselines, refs, n_trials=1000)
    assert both.per_seed["1"] == paired_bleu(system2, baseline2, refs, method="ar", n_trials=1000)
    pooled_refs = refs + refs
    _, scores = PairedTest(
        [("baseline", baseline + baseline2), ("system", system + system2)],
        {"bleu": BLEU()},
        [pooled_refs],
        "ar",
        1000,
    )()
    assert both.combined.p_value == scores["BLEU"][1].p_value
    assert both.combined.estimate == pytest.approx(
        BLEU().corpus_score(system + system2, [pooled_refs]).score
        - BLEU().corpus_score(baseline + baseline2, [pooled_refs]).score
    )
    assert (
        both.combined.scheme
        == "paired bootstrap (1000): 2 seeds x sentences (crossed: every seed scored the same ones)"
    )
    assert both.combined.n == 240
    with pytest.raises(ValueError, match="seeds"):
        paired_bleu_seeds(systems, {"0": baseline}, refs)


def test_bleu_inputs_are_checked():
    refs, system, baseline = _corpus(n=20)
    with pytest.raises(ValueError, match="hypotheses"):
        paired_bleu(system[1:], baseline, refs)
    with pytest.raises(ValueError, match="seed 0"):
        bleu_interval(system, refs, seed=0)
    with pytest.raises(ValueError, match="metric"):
        bleu_interval(system, refs, metric="ter")  # type: ignore[arg-type]


# ------------------------------------------------------------------ Holm and verdicts


def test_holm_on_a_borderline_family():
    p = [0.01, 0.04, 0.03]
    # by hand: sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    adjusted = holm(p)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06])
    assert [x < 0.05 for x in p] == [True, True, True]
    assert [x < 0.05 for x in adjusted] == [True, False, False]
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped
    assert holm([0.001, 0.01, 0.02, 0.5]) == pytest.approx([0.004, 0.03, 0.04, 0.5])
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


def _cell(mean: float, sd: float, seed: int = 0) -> Difference:
    """A synthetic paired difference whose bootstrap distribution is N(mean, sd)."""
    draws = np.random.default_rng(seed).normal(mean, sd, 1000)
    low, high = np.quantile(draws, [0.025, 0.975])
    return Difference(mean, float(low), float(high), sd, 300, draws=draws, p_value=0.5)


def test_verdicts_of_large_and_null_effects():
    assert verdict(_cell(5.0, 1.0), direction=+1, delta=0.5) == "supported"
    assert verdict(_cell(-5.0, 1.0), direction=+1, delta=0.5) == "contradicted"
    assert verdict(_cell(0.0, 1.0), direction=+1, delta=0.5) == "inconclusive"
    assert verdict(_cell(0.0, 0.01), direction=+1, delta=0.1) == "equivalent"
    assert verdict(_cell(0.0, 0.01), direction=+1, delta=0.0) == "inconclusive"  # no margin: no equivalence


def test_verdict_needs_the_interval_not_the_point_estimate():
    """Mutation guard: a rule reading the estimate's sign alone would say supported."""
    cell = _cell(1.0, 1.0)
    assert cell.estimate > 0 and cell.low < 0 < cell.high
    assert verdict(cell, direction=+1, delta=0.1) == "inconclusive"
    assert verdict(cell, direction=-1, delta=0.1) == "inconclusive"


def test_verdict_follows_the_claimed_direction():
    """Mutation guard: a flipped sign would swap these. WER falling is a claim with direction -1."""
    fall = _cell(-0.03, 0.005)
    assert verdict(fall, direction=-1, delta=0.005) == "supported"
    assert verdict(fall, direction=+1, delta=0.005) == "contradicted"
    rise = _cell(0.03, 0.005)
    assert verdict(rise, direction=-1, delta=0.005) == "contradicted"
    assert verdict(rise, direction=+1, delta=0.005) == "supported"


def test_verdict_heeds_the_familys_adjusted_p():
    cell = _cell(5.0, 1.0)
    assert verdict(cell, +1, 0.5, adjusted_p=0.01) == "supported"
    assert verdict(cell, +1, 0.5, adjusted_p=0.06) == "inconclusive"
    assert verdict(_cell(-5.0, 1.0), +1, 0.5, adjusted_p=0.06) == "inconclusive"


def test_verdict_uses_the_alpha_it_is_given():
    """An effect 2.2 standard errors from zero: outside the 95 % interval, inside the 99 % one."""
    cell = Interval(2.2, 2.2 - 1.96, 2.2 + 1.96, 1.0, 100)  # no draws: normal intervals at other levels
    assert verdict(cell, +1, 0.1, alpha=0.05) == "supported"
    assert verdict(cell, +1, 0.1, alpha=0.01) == "inconclusive"
    assert verdict(Interval(0.0, -0.02, 0.02, 0.01, 100), +1, 0.05) == "equivalent"
    with pytest.raises(ValueError):
        verdict(cell, 0, 0.1)


def test_verdicts_on_paired_error_rates():
    """End to end: fewer errors is a claim with direction -1."""
    better, reference = _paired_items(shift=-0.04)
    diff = paired_error_rate_difference(better, reference)
    assert diff.high < 0
    assert verdict(diff, direction=-1, delta=0.001, adjusted_p=holm([diff.p_value, 0.5])[0]) == "supported"
    assert verdict(diff, direction=+1, delta=0.001) == "contradicted"
