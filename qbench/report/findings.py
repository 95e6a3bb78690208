"""`qbench findings`: each claim of the reference papers, the index rows that test it, and
whether it held here, as a Markdown section for results/RESULTS.md.

Claims (../shared/DESIGN.md; RAND = Qiu et al., arXiv 2305.15536; Xu et al., arXiv 2112.11540):

- ``noise-needs-scale-grad``: noise-based QAT fails without a gradient through the scale
  (absmax-sg + noise worse than absmax + noise at w4; the round-STE pair is the control).
- ``rand-beats-learned-and-clip``: top-k L_p (RAND) beats learned (LSQ), PACT and MSE-clip scales
  at w4, under each estimator.
- ``rand-helps-noise-most``: RAND's gain over absmax is larger under noise than under round-STE.
- ``noise-model-many-precisions``: a noise-trained model holds up at several precisions (mixed
  4/8-bit maps included) while learned-scale models do not: the mean distance of a model's
  quantized precisions from its own best precision is smaller for noise (pqn, rand, any noise
  cell) than for learned scales (lsq, pact).
- ``long-form``: our reading of "long-form speech generalises better": RAND (noise) models lose
  less WER than round-STE models when test utterances are joined into long recordings
  (``wer@xN`` minus ``wer`` at w4, largest N).
- ``auto-precision`` (Xu et al.): the automatic maps (precisions named ``auto*``) score better
  than uniform w4 and at least as well as the hand-written map of about the same average bits
  (precisions named ``hand*``).
- ``rand-default-kp``: RAND's default k=2, p=8 is the best of the k/p sweep or within one
  standard deviation of it.

Every comparison uses means over seeds of the headline metric (WER, BLEU) per suite; a verdict
says "within the seed spread" when the difference is smaller than the larger standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qbench.io import atomic_write_text
from qbench.quant.labels import cell, topk_options
from qbench.store import suite_sessions
from qbench.tasks.metrics import Metric, metric

__all__ = ["Finding", "findings", "render_findings", "write_findings"]

BEGIN, END = "<!-- FINDINGS:BEGIN -->", "<!-- FINDINGS:END -->"


@dataclass
class Stat:
    suite: str
    technique: str
    precision: str
    metric: str
    mean: float
    std: float
    n: int

    def text(self, m: Metric) -> str:
        s = m.format(self.mean)
        if self.n > 1 and not math.isnan(self.std):
            s += f" ± {m.format(self.std)}"
        return s + f" (n={self.n})"


@dataclass
class Finding:
    key: str
    claim: str
    source: str
    verdict: str  # held | held within the seed spread | did not hold | partly held | not tested
    detail: str
    rows: list[Stat] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)


class _Table:
    """Means over seeds of one suite's headline metric (or a named metric)."""

    def __init__(self, df: pd.DataFrame, suite: str):
        self.suite = suite
        self.all = df[df.suite == suite]
        head = self.all[self.all.headline == 1]
        self.metric = metric(head.metric.iloc[0] if not head.empty else "wer")
        self.used: list[Stat] = []

    def stat(self, technique: str, precision: str, metric: str | None = None) -> Stat | None:
        m = metric or self.metric.name
        sub = self.all[
            (self.all.technique == technique) & (self.all.precision == precision) & (self.all.metric == m)
        ]
        if sub.empty:
            return None
        # one value per seed (a rerun of a seed counts once: its mean)
        per_seed = sub.groupby("seed").value.mean()
        s = Stat(
            self.suite, technique, precision, m, float(per_seed.mean()), float(per_seed.std()), len(per_seed)
        )
        self.used.append(s)
        return s

    def better(self, a: Stat, b: Stat) -> float:
        """How much better a is than b (positive: better), in metric units."""
        return self.metric.better(a.mean, b.mean)

    def techniques(self) -> list[str]:
        return sorted(self.all.technique.unique())

    def by_cell(self) -> dict[tuple[str, str], str]:
        """(scale, estimator) -> the technique label of that cell, RAND default k/p only."""
        out = {}
        for t in self.techniques():
            c = cell(t)
            if c is not None and (c[0] != "topk-lp" or "(" not in t):
                out[c] = t
        return out


def _margin(diff: float, *stats: Stat) -> str:
    spread = max((s.std for s in stats if s.n > 1 and not math.isnan(s.std)), default=float("nan"))
    return "held within the seed spread" if not math.isnan(spread) and abs(diff) < spread else "held"


def _noise_needs_scale_grad(t: _Table) -> tuple[str, str] | None:
    cells = t.by_cell()
    sg, ok = cells.get(("absmax-sg", "noise")), cells.get(("absmax", "noise"))
    if not (sg and ok):
        return None
    a, b = t.stat(sg, "w4"), t.stat(ok, "w4")
    if not (a and b):
        return None
    d = t.better(b, a)
    verdict = _margin(d, a, b) if d > 0 else "did not hold"
    detail = f"absmax + noise is {abs(d) * t.metric.scale:.2f} {'better' if d > 0 else 'worse'} than with the scale gradient stopped"
    sg_ste, ste = cells.get(("absmax-sg", "round-ste")), cells.get(("absmax", "round-ste"))
    if sg_ste and ste:
        c, e = t.stat(sg_ste, "w4"), t.stat(ste, "w4")
        if c and e:
            detail += f"; control, round-STE: stopping the gradient changes it by {t.better(c, e) * t.metric.scale:+.2f} (positive: better)"
    return verdict, detail


def _rand_beats_learned_and_clip(t: _Table) -> tuple[str, str] | None:
    cells = t.by_cell()
    wins, total, parts = 0, 0, []
    for est in ("noise", "round-ste"):
        rand = cells.get(("topk-lp", est))
        r = t.stat(rand, "w4") if rand else None
        if r is None:
            continue
        for scale in ("learned", "pact", "mse-clip"):
            other = cells.get((scale, est))
            o = t.stat(other, "w4") if other else None
            if o is None:
                continue
            d = t.better(r, o)
            total += 1
            wins += d > 0
            parts.append(f"{est}: vs {scale} {d * t.metric.scale:+.2f}")
    if not total:
        return None
    verdict = "held" if wins == total else "did not hold" if wins == 0 else "partly held"
    return (
        verdict,
        f"RAND better in {wins} of {total} comparisons ({'; '.join(parts)}; positive: RAND better)",
    )


def _rand_helps_noise_most(t: _Table) -> tuple[str, str] | None:
    cells = t.by_cell()
    gains = {}
    for est in ("noise", "round-ste"):
        a, r = cells.get(("absmax", est)), cells.get(("topk-lp", est))
        sa, sr = (t.stat(a, "w4") if a else None), (t.stat(r, "w4") if r else None)
        if sa and sr:
            gains[est] = t.better(sr, sa)
    if len(gains) < 2:
        return None
    s = t.metric.scale
    # "helps most" needs RAND to help noise at all: losing less under noise than under STE is not it
    verdict = "held" if gains["noise"] > 0 and gains["noise"] > gains["round-ste"] else "did not hold"
    note = "; RAND helps neither" if max(gains.values()) <= 0 else ""
    return (
        verdict,
        f"RAND's gain over absmax: {gains['noise'] * s:+.2f} with noise, {gains['round-ste'] * s:+.2f} "
        f"with round-STE (positive: RAND better){note}",
    )


def _distance_from_best(t: _Table, technique: str) -> tuple[float, int] | None:
    precisions = sorted(
        t.all[(t.all.technique == technique) & (t.all.metric == t.metric.name)].precision.unique()
    )
    stats = [s for p in precisions if (s := t.stat(technique, p))]
    quantized = [s for s in stats if s.precision != "float"]
    if len(quantized) < 3:
        return None
    best = t.metric.best(stats, key=lambda s: s.mean)
    return sum(abs(s.mean - best.mean) for s in quantized) / len(quantized), len(quantized)


def _noise_model_many_precisions(t: _Table) -> tuple[str, str] | None:
    mixed = [
        p for p in t.all.precision.unique() if p != "float" and not (p.startswith("w") and p[1:].isdigit())
    ]
    if not mixed:
        return None
    groups: dict[str, list[tuple[str, float]]] = {"noise": [], "learned": []}
    for tech in t.techniques():
        c = cell(tech)
        if c is None or "(" in tech:
            continue
        dist = _distance_from_best(t, tech)
        if dist is None:
            continue
        if c[1] == "noise" and c[0] in ("absmax", "topk-lp"):
            groups["noise"].append((tech, dist[0]))
        elif c[0] in ("learned", "pact") and c[1] == "round-ste":
            groups["learned"].append((tech, dist[0]))
    if not groups["noise"] or not groups["learned"]:
        return None
    s = t.metric.scale
    mean = {k: sum(v for _, v in g) / len(g) for k, g in groups.items()}
    verdict = "held" if mean["noise"] < mean["learned"] else "did not hold"
    fmt = lambda g: ", ".join(f"{k} {v * s:.2f}" for k, v in g)  # noqa: E731
    return verdict, (
        f"mean distance of the quantized precisions ({len(mixed)} mixed maps among them) from the model's best: "
        f"noise {fmt(groups['noise'])}; learned scales {fmt(groups['learned'])}"
    )


def _long_form(t: _Table) -> tuple[str, str] | None:
    longs = sorted(
        {m for m in t.all.metric.unique() if metric(m).base == t.metric.name and metric(m).joined > 1},
        key=lambda m: metric(m).joined,
    )
    if not longs:
        return None
    m = longs[-1]
    loss = {}
    for tech in ("rand", "pqn", "ste", "rand-ste"):
        short, long = t.stat(tech, "w4"), t.stat(tech, "w4", m)
        if short and long:
            loss[tech] = t.better(short, long)  # how much worse the long recordings score
    if "rand" not in loss or "ste" not in loss:
        return None
    s = t.metric.scale
    verdict = "held" if loss["rand"] < loss["ste"] else "did not hold"
    return verdict, f"{m} minus {t.metric.name} at w4 (lower: generalises better): " + ", ".join(
        f"{k} {v * s:+.2f}" for k, v in loss.items()
    )


def _auto_precision(t: _Table) -> tuple[str, str] | None:
    precisions = t.all.precision.unique()
    autos = sorted(p for p in precisions if p.startswith("auto"))
    hands = sorted(p for p in precisions if p.startswith("hand"))
    if not autos or "w4" not in precisions:
        return None
    s = t.metric.scale
    beat_w4 = match_hand = total = 0
    parts = []
    for tech in t.techniques():
        w4 = t.stat(tech, "w4")
        hand = [h for p in hands if (h := t.stat(tech, p))]
        for a in autos:
            sa = t.stat(tech, a)
            if not (sa and w4):
                continue
            total += 1
            beat_w4 += t.better(sa, w4) > 0
            ok_hand = all(t.better(sa, h) >= 0 for h in hand)
            match_hand += ok_hand
            parts.append(
                f"{tech} {a}: vs w4 {t.better(sa, w4) * s:+.2f}"
                + "".join(f", vs {h.precision} {t.better(sa, h) * s:+.2f}" for h in hand)
            )
    if not total:
        return None
    both = beat_w4 == total and match_hand == total
    verdict = "held" if both else "did not hold" if beat_w4 == 0 else "partly held"
    return verdict, (
        f"better than w4 in {beat_w4} of {total}, at least as good as the hand-written map in {match_hand} of "
        f"{total} (positive: automatic better): " + "; ".join(parts)
    )


def _rand_default_kp(t: _Table) -> tuple[str, str] | None:
    sweep = [
        x
        for x in t.techniques()
        if x == "rand" or (x.startswith("rand(") and cell(x) == ("topk-lp", "noise"))
    ]
    if len(sweep) < 3 or "rand" not in sweep:
        return None
    stats = {x: st for x in sweep if (st := t.stat(x, "w4"))}
    if "rand" not in stats:  # the default was trained but not evaluated at w4: nothing to compare
        return None
    best = t.metric.best(stats, key=lambda x: stats[x].mean)
    d = abs(stats["rand"].mean - stats[best].mean)
    s = t.metric.scale
    spread = max(stats["rand"].std, stats[best].std)
    if best == "rand":
        verdict = "held"
    elif not math.isnan(spread) and d <= spread:
        verdict = "held within the seed spread"
    else:
        verdict = "did not hold"

    def label(x: str) -> str:
        if x == "rand":
            return "k=2,p=8"
        return ",".join(f"{k}={v:g}" for k, v in topk_options(x).items() if k != "c")

    return verdict, f"best of {len(stats)}: {label(best)} ({d * s:.2f} from the default); " + ", ".join(
        f"{label(x)} {stats[x].mean * s:.2f}" for x in stats
    )


CLAIMS: list[tuple[str, str, str, Callable[[_Table], tuple[str, str] | None]]] = [
    (
        "noise-needs-scale-grad",
        "Noise-based QAT fails without a gradient through the scale.",
        "RAND",
        _noise_needs_scale_grad,
    ),
    (
        "rand-beats-learned-and-clip",
        "RAND (top-k L_p scale) beats learnable scale (LSQ, PACT) and clipping.",
        "RAND",
        _rand_beats_learned_and_clip,
    ),
    ("rand-helps-noise-most", "RAND helps noise-based QAT most.", "RAND", _rand_helps_noise_most),
    (
        "noise-model-many-precisions",
        "One noise-trained model holds up when evaluated at several precisions (mixed 4/8-bit); "
        "learned-scale models do not.",
        "RAND",
        _noise_model_many_precisions,
    ),
    (
        "long-form",
        "Long-form speech generalises better (our reading: RAND models lose less than STE models "
        "on recordings of several joined utterances).",
        "RAND",
        _long_form,
    ),
    (
        "auto-precision",
        "Per-layer bits from Hessian-trace-weighted sensitivity under a size budget beat uniform "
        "4-bit and match a hand-written map of the same average bits.",
        "Xu et al.",
        _auto_precision,
    ),
    ("rand-default-kp", "RAND's defaults k=2, p=8 are a good choice.", "RAND", _rand_default_kp),
]


def findings(df: pd.DataFrame, suites: Sequence[str]) -> list[Finding]:
    """One :class:`Finding` per claim, over the given suites of the index ``df``."""
    out = []
    for key, claim, source, test in CLAIMS:
        verdicts, details, rows, used = [], [], [], []
        for suite in suites:
            t = _Table(df, suite)
            if t.all.empty:
                continue
            res = test(t)
            if res is None:
                continue
            verdicts.append(res[0])
            details.append(f"{suite}: {res[1]}")
            rows += t.used
            used.append(suite)
        if not verdicts:
            verdict, detail = (
                "not tested",
                "no suite among " + ", ".join(suites) + " has the rows this claim needs",
            )
        elif all(v.startswith("held") for v in verdicts):
            verdict = "held" if all(v == "held" for v in verdicts) else "held within the seed spread"
            detail = "\n".join(details)
        elif all(v == "did not hold" for v in verdicts):
            verdict, detail = "did not hold", "\n".join(details)
        else:
            verdict, detail = "partly held", "\n".join(details)
        out.append(Finding(key, claim, source, verdict, detail, _dedup(rows), used))
    return out


def _dedup(rows: list[Stat]) -> list[Stat]:
    seen, out = set(), []
    for r in rows:
        k = (r.suite, r.technique, r.precision, r.metric)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def render_findings(items: list[Finding], suites: Sequence[str], results: Path | None = None) -> str:
    """Markdown: per claim the verdict, the suites, the command that ran each (from
    ``runs/<suite>/suite.json`` under ``results`` when recorded) and the rows."""
    commands = {}
    if results is not None:
        for s in suites:
            cmds = list(dict.fromkeys(x["command"] for x in suite_sessions(results, s) if x.get("command")))
            if cmds:
                commands[s] = cmds
    cmd = "qbench findings " + " ".join(f"--suite {s}" for s in suites)
    lines = [
        "## Findings",
        "",
        f"Generated by `{cmd}` from the results index: each claim of the reference papers, the rows "
        "that test it (mean ± standard deviation over seeds, n = seeds) and whether it held here. "
        "'Within the seed spread' marks a difference smaller than a standard deviation.",
        "",
    ]
    for f in items:
        lines += [f"### {f.claim} ({f.source})", ""]
        if f.verdict == "not tested":
            lines.append(f"**{f.verdict}.**")
        else:
            ran = [
                f"{s} (`{'`, `'.join(commands[s])}`)" if s in commands else f"{s} (command not recorded)"
                for s in f.suites
            ]
            # one leaderboard per suite: `qbench compare` shows one suite at a time
            where = "" if results is None or Path(results) == Path("results") else f" --results {results}"
            rows = ", ".join(f"`qbench compare --suite {s}{where}`" for s in f.suites)
            lines.append(f"**{f.verdict}.** Suites: {', '.join(ran)}; rows: {rows}.")
        lines += ["", *[f"- {d}" for d in f.detail.splitlines()], ""]
        if f.rows:
            lines += ["| suite | technique | precision | metric | value |", "|---|---|---|---|---|"]
            for r in f.rows:
                value = r.text(metric(r.metric))
                lines.append(f"| {r.suite} | {r.technique} | {r.precision} | {r.metric} | {value} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


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
