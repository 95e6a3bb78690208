"""How metrics are shown: error rates are stored as fractions and shown as percentages; BLEU
and chrF are already 0-100."""

from __future__ import annotations

# Error rates are stored as fractions and shown as percentages; BLEU and chrF are already 0-100.
_PERCENT_METRICS = ("wer", "cer")


def display_scale(metric: str) -> float:
    return 100.0 if is_percent(metric) else 1.0


def is_percent(metric: str) -> bool:
    """wer, cer and their variants (wer@x4: long-form; wer_greedy: greedy beside a lexicon decoder)."""
    return metric.split("@")[0].removesuffix("_greedy") in _PERCENT_METRICS
