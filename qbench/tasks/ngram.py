"""A word n-gram language model written as an ARPA file, for the lexicon CTC decoder.

Hand-written because the usual builder, KenLM's `lmplz`, is a C++ program that pip cannot
install; the decoder (flashlight-text, through torchaudio) still loads the ARPA file natively.
The model is the textbook backed-off absolute-discounting n-gram (Ney, Essen and Kneser, 1994)
with one discount D = n1 / (n1 + 2 n2) per order, estimated from the counts of counts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _discount(counts: Counter) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    # Kept inside [0.1, 0.9]: tiny corpora can give 0 (no mass left for unseen words) or 1
    # (seen singletons with probability 0).
    return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9) if n1 + n2 else 0.5


def arpa_text(sentences: Iterable[str], order: int = 3) -> str:
    """The ARPA text of a backed-off n-gram model (order 1 to 3) of whitespace-split sentences."""
    if not 1 <= order <= 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[n][ngram tuple]
    for s in sentences:
        words = [BOS, *s.split(), EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if gram != (BOS,):
                    counts[n][gram] += 1

    # Unigrams: discounted counts, the freed mass spread uniformly (so <unk> gets a share).
    total = sum(counts[1].values())
    d1 = _discount(counts[1])
    vocab = sorted(w for (w,) in counts[1])
    unseen_mass = d1 * len(vocab) / total
    prob: list[dict[tuple, float]] = [{} for _ in range(order + 1)]
    for (w,), c in counts[1].items():
        prob[1][(w,)] = (c - d1) / total + unseen_mass / (len(vocab) + 1)
    prob[1][(UNK,)] = unseen_mass / (len(vocab) + 1)

    # Higher orders: p(w | h) = (c(h w) - D) / c(h) if seen, else backoff(h) * p(w | shorter h).
    followers: list[dict[tuple, list[tuple]]] = [defaultdict(list) for _ in range(order + 1)]
    for n in range(2, order + 1):
        d = _discount(counts[n])
        history_count: Counter = Counter()
        for gram, c in counts[n].items():
            history_count[gram[:-1]] += c
            followers[n][gram[:-1]].append(gram)
        for gram, c in counts[n].items():
            prob[n][gram] = (c - d) / history_count[gram[:-1]]

    def lower(gram: tuple) -> float:
        """p(w | h) by the model of order len(gram), backing off as needed."""
        if gram in prob[len(gram)]:
            return prob[len(gram)][gram]
        if len(gram) == 1:
            return prob[1][(UNK,)]
        return backoff.get(gram[:-1], 1.0) * lower(gram[1:])

    backoff: dict[tuple, float] = {}
    for n in range(2, order + 1):
        for history, grams in followers[n].items():
            seen = sum(prob[n][g] for g in grams)
            seen_lower = sum(lower(g[1:]) for g in grams)
            backoff[history] = max(1.0 - seen, 1e-12) / max(1.0 - seen_lower, 1e-12)

    lines = ["", "\\data\\"]
    sizes = {1: len(prob[1]) + 1, **{n: len(prob[n]) for n in range(2, order + 1)}}  # +1: <s>
    lines += [f"ngram {n}={sizes[n]}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        entries: list[tuple[tuple, float | None]] = sorted(prob[n].items())
        if n == 1:
            entries = [((BOS,), None), *entries]
        for gram, p in entries:
            logp = "-99" if p is None else f"{math.log10(p):.6f}"
            row = f"{logp}\t{' '.join(gram)}"
            if n < order and (gram in backoff or gram == (BOS,)):
                row += f"\t{math.log10(backoff.get(gram, 1.0)):.6f}"
            lines.append(row)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
