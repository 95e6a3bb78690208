"""The claims `qbench findings` tests, each declared once as a pre-registered contrast: its
statement, its family (the claims whose p-values Holm's correction adjusts together), the
contrast (a difference of two cells, system minus reference, or an interaction, the difference
of two such differences), the suites it is tested on with each suite's metric, the expected
direction in that metric's stored units (+1: the contrast is higher; WER is lower-is-better, BLEU
higher-is-better, so the same claim reads -1 on a WER suite and +1 on a BLEU suite) and delta, the
smallest effect worth reporting. A cell is one suite x technique x precision (training bits 4:
every claim is about 4-bit QAT), one index row per seed.

delta is one point on the displayed scale (:data:`WER_DELTA`: 1 WER point, stored as 0.01;
:data:`BLEU_DELTA`: 1 BLEU point): the smallest difference ASR and MT papers report as a change;
it decides only "equivalent" (the 90 % interval inside +-delta: two one-sided tests).

Papers: RAND = Qiu et al., arXiv 2305.15536; Xu et al., arXiv 2112.11540 (../shared/DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLEU_DELTA", "CLAIMS", "FAMILIES", "WER_DELTA", "Cell", "Claim", "Diff", "Interaction", "Site"]

WER_DELTA = 0.01  # 1 WER point (WER is stored as a fraction)
BLEU_DELTA = 1.0  # 1 BLEU point (BLEU is stored 0-100)


@dataclass(frozen=True)
class Cell:
    technique: str
    precision: str

    def __str__(self) -> str:
        return f"{self.technique}@{self.precision}"


@dataclass(frozen=True)
class Diff:
    """system - reference, in the site's metric or in `metric` when named (wer@x8)."""

    system: Cell
    reference: Cell
    metric: str | None = None

    def text(self) -> str:
        return f"{self.system} − {self.reference}" + (f" [{self.metric}]" if self.metric else "")


@dataclass(frozen=True)
class Interaction:
    """first - second: a difference of two differences."""

    first: Diff
    second: Diff

    def text(self) -> str:
        return f"({self.first.text()}) − ({self.second.text()})"


@dataclass(frozen=True)
class Site:
    """A suite a claim is tested on: its metric, the expected sign of the contrast in that
    metric's stored units, and delta in stored units."""

    suite: str
    metric: str
    direction: int
    delta: float


@dataclass(frozen=True)
class Claim:
    id: str
    family: str  # tested together: Holm's correction runs over the family's tests
    statement: str  # what this contrast tests (its family's claim: FAMILIES)
    contrast: Diff | Interaction
    sites: tuple[Site, ...]
    train_bits: int = 4

    @property
    def diffs(self) -> tuple[Diff, ...]:
        c = self.contrast
        return (c.first, c.second) if isinstance(c, Interaction) else (c,)


def _asr(suite: str, direction: int) -> Site:
    return Site(suite, "wer", direction, WER_DELTA)


def _mt(suite: str, direction: int) -> Site:
    return Site(suite, "bleu", direction, BLEU_DELTA)


def _w4(system: str, reference: str) -> Diff:
    return Diff(Cell(system, "w4"), Cell(reference, "w4"))


#: family -> (source, the paper's claim)
FAMILIES = {
    "noise-needs-scale-grad": ("RAND", "Noise-based QAT fails without a gradient through the scale."),
    "rand-beats-learned-and-clip": (
        "RAND",
        "RAND (top-k L_p scale) beats learnable scales (LSQ, PACT) and clipping, under each estimator.",
    ),
    "rand-helps-noise-most": ("RAND", "RAND helps noise-based QAT most."),
    "noise-model-many-precisions": (
        "RAND",
        "One noise-trained model holds up when evaluated at several precisions (mixed 4/8-bit); "
        "learned-scale models do not.",
    ),
    "long-form": (
        "RAND",
        "Long-form speech generalises better (our reading: RAND models lose less than round-STE "
        "models on recordings of several joined utterances).",
    ),
    "auto-beats-w4": (
        "Xu et al.",
        "Per-layer bits from Hessian-trace-weighted sensitivity under a size budget beat uniform 4-bit.",
    ),
    "auto-matches-hand": (
        "Xu et al.",
        "The automatic maps match a hand-written map of about the same average bits "
        "('equivalent' or 'supported' upholds it).",
    ),
    "rand-default-kp": (
        "RAND",
        "RAND's defaults k=2, p=8 are a good choice: no worse than the other k/p "
        "('equivalent' or 'supported' upholds it).",
    ),
}

# "the system is better": -1 on WER (lower is better), +1 on BLEU
_RAND_BETTER = (
    _asr("estimators-asr", -1),
    _asr("estimators-fsdd", -1),
    _asr("rand-paper", -1),
    _asr("rand-paper-gpu", -1),
    _asr("rand-paper-fsdd", -1),
    _mt("rand-paper-mt", +1),
)
_SWEEP = (
    "rand(k=1,p=8)",
    "rand(k=4,p=8)",
    "rand(k=8,p=8)",
    "rand(k=2,p=2)",
    "rand(k=2,p=4)",
    "rand(k=2,p=16)",
)
_MIXED = ("enc4-head8", "att8-ffn4", "firstlast8")
_AUTO = ("auto5-hessian", "auto5-fisher")
_TRAINED = ("ptq", "ste", "pqn", "rand", "lsq", "pact", "clip")  # float at a precision is ptq

CLAIMS: list[Claim] = [
    Claim(
        "noise-needs-scale-grad",
        "noise-needs-scale-grad",
        "Stopping the scale's gradient costs absmax + noise more than absmax + round-STE (the control).",
        Interaction(_w4("pqn-sg", "pqn"), _w4("absmax-sg+round-ste", "ste")),
        (
            _asr("estimators-asr", +1),
            _asr("estimators-fsdd", +1),
            _asr("rand-paper", +1),
            _asr("rand-paper-gpu", +1),
            _asr("rand-paper-fsdd", +1),
            _mt("rand-paper-mt", -1),
        ),
    ),
    *[
        Claim(
            f"rand-beats-{other}",
            "rand-beats-learned-and-clip",
            f"{rand} beats {other} at w4 ({est}).",
            _w4(rand, other),
            _RAND_BETTER,
        )
        for rand, est, others in (
            ("rand", "noise", ("learned+noise", "pact+noise", "mse-clip+noise")),
            ("rand-ste", "round-STE", ("lsq", "pact", "clip")),
        )
        for other in others
    ],
    Claim(
        "rand-helps-noise-most",
        "rand-helps-noise-most",
        "RAND's gain over absmax at w4 is larger under noise than under round-STE.",
        Interaction(_w4("rand", "pqn"), _w4("rand-ste", "ste")),
        _RAND_BETTER,
    ),
    *[
        Claim(
            f"many-precisions/{noise}-vs-{learned}@{p}",
            "noise-model-many-precisions",
            f"Evaluating at {p} instead of w4 (the trained precision) costs {noise} less than {learned}.",
            Interaction(Diff(Cell(noise, p), Cell(noise, "w4")), Diff(Cell(learned, p), Cell(learned, "w4"))),
            (_asr("asr-precisions", -1),),
        )
        for noise in ("rand", "pqn")
        for learned in ("lsq", "pact")
        for p in _MIXED
    ],
    Claim(
        "long-form",
        "long-form",
        "At w4, joining 8 test utterances into one recording costs rand less WER than ste.",
        Interaction(Diff(Cell("rand", "w4"), Cell("ste", "w4"), "wer@x8"), _w4("rand", "ste")),
        (_asr("asr-precisions", -1),),
    ),
    *[
        Claim(
            f"auto-vs-w4/{t}/{a}",
            "auto-beats-w4",
            f"{t} at {a} beats {t} at w4.",
            Diff(Cell(t, a), Cell(t, "w4")),
            (_asr("asr-precisions", -1),),
        )
        for t in _TRAINED
        for a in _AUTO
    ],
    *[
        Claim(
            f"auto-vs-hand/{t}/{a}",
            "auto-matches-hand",
            f"{t} at {a} is as good as {t} at hand5, or better.",
            Diff(Cell(t, a), Cell(t, "hand5")),
            (_asr("asr-precisions", -1),),
        )
        for t in _TRAINED
        for a in _AUTO
    ],
    *[
        Claim(
            f"rand-default-kp/{v}",
            "rand-default-kp",
            f"rand (k=2, p=8) is as good as {v} at w4, or better.",
            _w4("rand", v),
            (_asr("rand-paper", -1), _asr("rand-paper-gpu", -1), _asr("rand-paper-fsdd", -1)),
        )
        for v in _SWEEP
    ],
]
