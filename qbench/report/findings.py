"""`qbench findings`: each claim of the reference papers as a pre-registered contrast, tested on
the suites it names, with its effect, 95 % interval, p-value (raw and Holm-adjusted within its
family), n, basis and verdict; as Markdown, also for a section of results/RESULTS.md.

The claims (report/claims.CLAIMS) are declared there, once. Before a claim is judged on a suite,
the suite's gates (report/gates: convergence, regime, headroom at the claim's precisions) must
pass; where one does not, the claim is "not testable here" (its effect and the interval rule's
verdict are still shown, for the record).

How a contrast is estimated (its basis, printed beside each verdict):

- per-item: the runs stored per-item scores (store.read_items), so each difference is
  report/intervals.cell_difference: paired by seed and item, a hierarchical bootstrap interval
  and a paired randomisation p-value. An interaction's two differences come from the same
  bootstrap resamples when they rest on the same seeds and items (the resampling seed is fixed):
  the interaction's interval is then the percentile interval of the resampled differences
  ("joint bootstrap"); else a normal approximation treats them as independent
  (se = sqrt(se1^2 + se2^2)). Either way the interaction's p is the normal approximation
  2 Phi(-|effect| / se).
- per-seed t: runs without per-item scores (all those that predate them): one value per seed
  and cell (a rerun seed counts once, its mean), the contrast computed per seed over the seeds
  every cell of it has (a seed's techniques share its float warm-up: they pair), then a Student
  t interval with n - 1 degrees of freedom and the one-sample t-test's p (scipy.stats). With one
  seed there is no interval: "not testable".

Verdicts are report/stats.verdict's, with the Holm-adjusted p of the family; nothing else
decides. Identical cells count once: two cells with the same runs at the same precision, or the
same value of every metric on every seed (ptq is the float model; two automatic maps that chose
the same bits), make a test a duplicate of the first with the same cells, left out of its family;
a contrast of a cell with itself is not testable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

from qbench.io import atomic_write_text
from qbench.report import stats
from qbench.report.claims import CLAIMS, FAMILIES, Cell, Claim, Diff, Interaction, Site
from qbench.report.gates import GateResult, trained_bits, untestable
from qbench.report.gates import render as render_gates
from qbench.report.intervals import cell_difference
from qbench.store import suite_sessions
from qbench.tasks.metrics import metric

__all__ = ["Outcome", "at_trained_bits", "findings", "render_findings", "seed_difference", "write_findings"]

BEGIN, END = "<!-- FINDINGS:BEGIN -->", "<!-- FINDINGS:END -->"
ALPHA = 0.05
LEVEL = 0.95


# ------------------------------------------------------------------ tests


@dataclass(frozen=True)
class SeedDifference(stats.Difference):
    """A paired difference over seeds: Student t intervals with `df` degrees of freedom."""

    df: int = 1

    def bounds(self, level: float) -> tuple[float, float]:
        if math.isclose(level, self.level):
            return self.low, self.high
        q = float(scipy_stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.estimate - q, self.estimate + q


@dataclass
class Outcome:
    """One claim on one suite."""

    claim: Claim
    site: Site
    verdict: str  # stats.verdict's name, or "not tested (...)", "not testable (...)", "counted once (...)"
    difference: stats.Difference | None = None
    basis: str = ""
    detail: str = ""
    n: str = ""
    p_holm: float = math.nan
    family_size: int = 0
    cells: dict[str, tuple[float, int]] = field(default_factory=dict)  # cell -> (mean over seeds, seeds)
    gates: tuple[GateResult, ...] = ()  # the suite's gates at the claim's precisions
    gated: str = ""  # the gates it did not pass: "not testable here", whatever the interval says

    @property
    def shown_verdict(self) -> str:
        """The verdict as published: "not testable here" when a gate did not pass (the interval
        rule's verdict beside it, for the record), else the rule's verdict."""
        if self.gated:
            return f"**not testable here** ({self.gated}); interval rule: {self.verdict}"
        return f"**{self.verdict}**"


def seed_difference(per_seed: Sequence[float], level: float = LEVEL) -> SeedDifference:
    """The mean of per-seed paired differences with its Student t interval (n - 1 degrees of
    freedom) and the one-sample t-test's two-sided p-value; needs two seeds or more."""
    d = np.asarray(per_seed, dtype=np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("a per-seed interval needs two seeds or more")
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    if se > 0:
        p = float(scipy_stats.ttest_1samp(d, 0.0).pvalue)
    else:  # every seed gave the same difference
        p = 1.0 if mean == 0 else 0.0
    q = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return SeedDifference(
        mean, mean - q, mean + q, se, n, level, "per-seed", p_value=p, p_method="one-sample t-test", df=n - 1
    )


def _normal(
    estimate: float, se: float, n: int, scheme: str, draws: np.ndarray | None = None
) -> stats.Difference:
    """A difference with a normal-approximation p; its interval from `draws` when given (percentile,
    as stats picks its ends) else estimate +- z se."""
    p = 2 * NormalDist().cdf(-abs(estimate) / se) if se > 0 else float(estimate == 0)
    probe = stats.Interval(estimate, math.nan, math.nan, se, n, level=0.5, draws=draws)
    low, high = probe.bounds(LEVEL)
    how = "normal approximation 2 Phi(-|effect| / se)"
    return stats.Difference(estimate, low, high, se, n, LEVEL, scheme, draws, p_value=p, p_method=how)


def _interaction(a: stats.Difference, b: stats.Difference, same_seeds: bool) -> tuple[stats.Difference, str]:
    """a - b from two per-item differences, on their shared resamples when they have them (the
    same seeds, and the same number of items resampled the same way)."""
    est = a.estimate - b.estimate
    same = same_seeds and a.scheme == b.scheme and a.n == b.n
    if a.draws is not None and b.draws is not None and len(a.draws) == len(b.draws) and same:
        draws = a.draws - b.draws
        d = _normal(est, float(np.std(draws, ddof=1)), a.n, f"joint {a.scheme}", draws)
        return d, "per-item, joint bootstrap"
    se = math.hypot(a.se, b.se)
    return _normal(est, se, min(a.n, b.n), "normal, se = sqrt(se1^2 + se2^2)"), "per-item, normal approx."


class _Suite:
    """The index rows of one suite, its cells and which of them are the same cell."""

    def __init__(self, df: pd.DataFrame, suite: str):
        self.rows = df[df.suite == suite] if not df.empty else df
        self.trained_bits = trained_bits(self.rows)  # a stress setting moves claims there
        self._canon: list[tuple[frozenset[str], str, tuple]] = []
        self._differences: dict[tuple, stats.Difference | None] = {}

    def difference(
        self, rows: pd.DataFrame, reference: pd.DataFrame, metric_name: str
    ) -> stats.Difference | None:
        """intervals.cell_difference, once per pair of cells (claims share contrasts)."""
        runs = (tuple(sorted(rows.run_id)), tuple(sorted(reference.run_id)))
        key = (*runs, metric_name, rows.precision.iloc[0], reference.precision.iloc[0])
        if key not in self._differences:
            self._differences[key] = cell_difference(rows, reference, metric_name)
        return self._differences[key]

    def cell(self, c: Cell, metric_name: str, train_bits: int) -> pd.DataFrame:
        r = self.rows
        sub = r[(r.technique == c.technique) & (r.precision == c.precision) & (r.metric == metric_name)]
        if sub.train_bits.nunique() > 1:
            sub = sub[sub.train_bits == train_bits]
        return sub

    @staticmethod
    def per_seed(rows: pd.DataFrame) -> pd.Series:
        return rows.groupby("seed").value.mean()  # a rerun of a seed counts once: its mean

    def canonical(self, c: Cell, train_bits: int) -> int:
        """The number of the first cell seen that is the same as `c`: the same runs at the same
        precision, or the same value of every metric on every seed (the same model: two
        different ones do not agree on WER, CER and the rest to 12 digits)."""
        r = self.rows
        rows = r[(r.technique == c.technique) & (r.precision == c.precision)]
        if rows.train_bits.nunique() > 1:
            rows = rows[rows.train_bits == train_bits]
        runs = frozenset(rows.run_id.astype(str))
        table = rows.groupby(["seed", "metric"]).value.mean().round(12)
        values = tuple(table.items())
        for i, (known_runs, precision, known_values) in enumerate(self._canon):
            if (known_runs == runs and precision == c.precision) or known_values == values:
                return i
        self._canon.append((runs, c.precision, values))
        return len(self._canon) - 1


def _estimate(
    claim: Claim, site: Site, s: _Suite, cells: list[tuple[pd.DataFrame, pd.DataFrame, str]]
) -> Outcome:
    per_item = [s.difference(a, b, m) for a, b, m in cells]
    if all(d is not None for d in per_item):
        ds = [d for d in per_item if d is not None]
        seeds = len(set(cells[0][0].seed) & set(cells[0][1].seed))
        if len(ds) == 1:
            d, basis = ds[0], "per-item, paired"
        else:
            same_seeds = len({frozenset(rows.seed) for a, b, _ in cells for rows in (a, b)}) == 1
            d, basis = _interaction(ds[0], ds[1], same_seeds)
            d = replace(d, p_method=f"{d.p_method}; parts: {ds[0].p_method}")
        detail = f"interval: {d.scheme}; p: {d.p_method}"
        return Outcome(claim, site, "", d, basis, detail, f"{d.n} items, {seeds} seed(s)")
    values = [(s.per_seed(a), s.per_seed(b)) for a, b, _ in cells]
    common = sorted(set.intersection(*(set(v.index) for pair in values for v in pair)))
    if not common:
        return Outcome(claim, site, "not tested (the cells share no seed)")
    per_seed = [
        sum(sign * (a[k] - b[k]) for sign, (a, b) in zip((1, -1), values, strict=False)) for k in common
    ]
    if len(common) < 2:
        return Outcome(
            claim, site, "not testable (one seed, no per-item scores)", n="1 seed", basis="per-seed"
        )
    d = seed_difference(per_seed)
    detail = f"per-seed contrasts (seeds {', '.join(str(k) for k in common)}): " + ", ".join(
        metric(site.metric).format(x, signed=True) for x in per_seed
    )
    return Outcome(claim, site, "", d, f"per-seed t, {d.df} df", detail, f"{len(common)} seeds")


def _test(claim: Claim, site: Site, s: _Suite, seen: dict[tuple, str]) -> Outcome:
    if s.rows.empty:
        return Outcome(claim, site, "not tested (suite not in the index)")
    cells, shown, keys = [], {}, []
    for diff in claim.diffs:
        m = diff.metric or site.metric
        pair = [s.cell(c, m, claim.train_bits) for c in (diff.system, diff.reference)]
        missing = [str(c) for c, rows in zip((diff.system, diff.reference), pair, strict=True) if rows.empty]
        if missing:
            return Outcome(claim, site, f"not tested (no rows for {', '.join(missing)} [{m}])")
        for c, rows in zip((diff.system, diff.reference), pair, strict=True):
            v = s.per_seed(rows)
            shown[f"{c} [{m}]" if diff.metric else str(c)] = (float(v.mean()), len(v))
        keys.append(
            (m, s.canonical(diff.system, claim.train_bits), s.canonical(diff.reference, claim.train_bits))
        )
        cells.append((pair[0], pair[1], m))
    if (len(keys) == 1 and keys[0][1] == keys[0][2]) or (len(keys) == 2 and keys[0] == keys[1]):
        return Outcome(
            claim, site, "not testable (identical cells: the contrast is zero by construction)", cells=shown
        )
    key = (site.suite, tuple(keys))
    if key in seen:
        return Outcome(claim, site, f"counted once (identical cells: same test as {seen[key]})", cells=shown)
    seen[key] = claim.id
    t = _estimate(claim, site, s, cells)
    t.cells = shown
    return t


#: (suite, the claim's precisions) -> that suite's gates at those precisions (gates.suite_gates)
Gates = Callable[[str, tuple[str, ...]], Sequence[GateResult]]


def at_trained_bits(claim: Claim, bits: int) -> Claim:
    """The claim where a suite trained its QAT techniques at `bits` rather than the claim's bits:
    its cells at w<claim bits> move to w<bits>. A suite runs at a stress setting (qbench pilot:
    w3, w2) where rounding the float model at 4 bits loses too little for QAT to recover
    anything; the claim is then tested there, and its cells say so (rand@w3)."""
    if bits == claim.train_bits:
        return claim
    old, new = f"w{claim.train_bits}", f"w{bits}"

    def cell(c: Cell) -> Cell:
        return Cell(c.technique, new) if c.precision == old else c

    def diff(d: Diff) -> Diff:
        return Diff(cell(d.system), cell(d.reference), d.metric)

    c = claim.contrast
    contrast = Interaction(diff(c.first), diff(c.second)) if isinstance(c, Interaction) else diff(c)
    return replace(claim, contrast=contrast, train_bits=bits)


def _precisions(claim: Claim) -> tuple[str, ...]:
    cells = [c for d in claim.diffs for c in (d.system, d.reference)]
    return tuple(dict.fromkeys(c.precision for c in cells if c.precision != "float"))


def findings(
    df: pd.DataFrame,
    suites: Sequence[str] | None = None,
    claims: Sequence[Claim] | None = None,
    gates: Gates | None = None,
) -> list[Outcome]:
    """Every claim of `claims` (default :data:`CLAIMS`) on each of its suites (only those in
    `suites` when given), with Holm's correction inside each family and stats.verdict's verdict.
    With `gates`, a claim on a suite that does not pass its gates is marked (Outcome.gated): it is
    "not testable here", whatever its interval says."""
    claims = CLAIMS if claims is None else claims
    tables: dict[str, _Suite] = {}
    seen: dict[str, dict[tuple, str]] = {}
    out = []
    for claim in claims:
        for site in claim.sites:
            if suites is not None and site.suite not in suites:
                continue
            s = tables.setdefault(site.suite, _Suite(df, site.suite))
            local = at_trained_bits(claim, s.trained_bits)
            t = replace(_test(local, site, s, seen.setdefault(claim.family, {})), claim=claim)
            if gates is not None and not s.rows.empty:
                t.gates = tuple(gates(site.suite, _precisions(local)))
                if t.difference is not None:
                    t.gated = untestable(t.gates) or ""
            out.append(t)
    for family in dict.fromkeys(t.claim.family for t in out):
        tested = [t for t in out if t.claim.family == family and t.difference is not None]
        adjusted = stats.holm([t.difference.p_value for t in tested if t.difference is not None])
        for t, p in zip(tested, adjusted, strict=True):
            assert t.difference is not None
            t.p_holm, t.family_size = p, len(tested)
            t.verdict = stats.verdict(t.difference, t.site.direction, t.site.delta, ALPHA, adjusted_p=p)
    return out


# ------------------------------------------------------------------ Markdown


def _p(p: float) -> str:
    return "–" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _effect(t: Outcome) -> str:
    if t.difference is None:
        return "–"
    m, d = metric(t.site.metric), t.difference
    return f"{m.format(d.estimate, signed=True)} [{m.format(d.low, signed=True)}, {m.format(d.high, signed=True)}]"


def _site(site: Site) -> str:
    m = metric(site.metric)
    return f"{site.suite} ({m.label} {'higher' if site.direction > 0 else 'lower'}, δ {m.format(site.delta)})"


def render_findings(
    items: list[Outcome],
    suites: Sequence[str] | None = None,
    results: Path | None = None,
    provenance: str = "",
) -> str:
    """Markdown: per family its claims (statement, contrast) and one table, a row per claim and
    suite: effect [95 % interval] in display units, p, Holm's p, n, basis and verdict.
    `provenance`: the note on the commit(s) the runs come from (qbench.report.provenance)."""
    wanted = list(dict.fromkeys(t.site.suite for t in items))
    cmd = "qbench findings" + "".join(f" --suite {s}" for s in suites or [])
    lines = [
        "## Findings",
        "",
        f"Generated by `{cmd}` from the results index. Each claim is a contrast declared in advance "
        "(qbench/report/claims.py, CLAIMS): cells are suite x technique @ precision, contrasts are "
        "system − reference (or a difference of two such differences), effects in display units "
        "with their 95 % interval; each suite says which way the claim expects the contrast to go "
        "and δ, the smallest effect worth reporting. Verdicts (report/stats.verdict, α = 0.05): "
        "**supported**: the interval excludes zero in the expected direction and the family's "
        "Holm-adjusted p < α; **contradicted**: the same the other way; **equivalent**: the 90 % "
        "interval lies within ±δ (two one-sided tests); **inconclusive**: otherwise. Basis: "
        "*per-item*: paired by seed and test item from the runs' per-item scores; *per-seed t*: "
        "paired by seed, Student t over the per-seed contrasts (runs without per-item scores). "
        "Identical cells count once. A claim on a suite that fails one of its gates (the float "
        "model converged, a regime where errors mean something, post-training rounding losing "
        "enough at the claim's precision) is **not testable here**: its effect and the interval "
        "rule's verdict are shown for the record, but they do not test the paper's claim.",
        "",
        *([provenance, ""] if provenance else []),
    ]
    if results is not None:
        for s in wanted:
            cmds = list(dict.fromkeys(x["command"] for x in suite_sessions(results, s) if x.get("command")))
            if cmds:
                lines.append(f"- {s}: `{'`, `'.join(cmds)}`")
        lines.append("")
    for s in wanted:
        found = {g.gate: g for t in items if t.site.suite == s for g in t.gates}
        if found:
            lines += [f"Gates of {s} (report/gates.py):", "", *render_gates(list(found.values())), ""]
    absent = "not tested (suite not in the index)"
    for family in dict.fromkeys(t.claim.family for t in items):
        tests = [t for t in items if t.claim.family == family]
        m = max((t.family_size for t in tests), default=0)
        source, statement = FAMILIES.get(family, ("", ""))
        lines += [f"### {family}" + (f" ({source})" if source else ""), "", statement, ""]
        for claim in dict.fromkeys(t.claim for t in tests):
            lines.append(f"- **{claim.id}**: {claim.statement} Contrast: {claim.contrast.text()}.")
        lines.append("")
        shown = [t for t in tests if t.verdict != absent]
        if shown:
            lines += [
                f"Holm's correction over the {m} test(s) of this family." if m else "No test had data.",
                "",
                "| claim | suite (expected, δ) | effect [95 % interval] | p | p (Holm) | n | basis | verdict |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for t in shown:
                p = t.difference.p_value if t.difference is not None else math.nan
                lines.append(
                    f"| {t.claim.id} | {_site(t.site)} | {_effect(t)} | {_p(p)} | {_p(t.p_holm)} "
                    f"| {t.n or '–'} | {t.basis or '–'} | {t.shown_verdict} |"
                )
            lines.append("")
        if missing := list(dict.fromkeys(t.site.suite for t in tests if t.verdict == absent)):
            lines += [f"Not tested on {', '.join(missing)}: not in the index.", ""]
        for t in shown:
            if t.cells:
                fmt = metric(t.site.metric).format
                cells = ", ".join(f"{c} {fmt(v)} (n={k})" for c, (v, k) in t.cells.items())
                lines.append(
                    f"- {t.claim.id} on {t.site.suite}: {cells}" + (f"; {t.detail}" if t.detail else "")
                )
        lines.append("")
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1])).rstrip() + "\n"


def write_findings(text: str, path: Path) -> None:
    """Put the section into ``path`` between the FINDINGS markers (replacing an older one, or
    appended), keeping the rest of the file."""
    block = f"{BEGIN}\n{text}{END}\n"
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + block + (("\n" + tail) if tail else "")
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    atomic_write_text(path, new)
