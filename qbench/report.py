"""Leaderboards from the results index, and the regression check that gates CI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qbench.quant import TECHNIQUES

_PRECISION_ORDER = {"float": 0, **{f"w{b}": 10 - b for b in range(8, 1, -1)}}


def _precision_key(p: str) -> tuple[int, str]:
    return (_PRECISION_ORDER.get(p, 20), p)


def _technique_key(t: str) -> tuple[int, str]:
    return (TECHNIQUES.index(t) if t in TECHNIQUES else len(TECHNIQUES), t)


def filter_results(
    df: pd.DataFrame,
    suite: str | None = None,
    task: str | None = None,
    technique: list[str] | None = None,
    dataset: str | None = None,
    metric: str | None = None,
) -> pd.DataFrame:
    """Select rows; without `metric`, each task's headline metric (WER, BLEU)."""
    if df.empty:
        return df
    df = df[df.metric == metric] if metric else df[df.headline == 1]
    if suite:
        df = df[df.suite == suite]
    if task:
        df = df[df.task == task]
    if dataset:
        df = df[df.dataset == dataset]
    if technique:
        df = df[df.technique.isin(technique)]
    return df


# Error rates are stored as fractions and shown as percentages; BLEU and chrF are already 0-100.
_PERCENT_METRICS = ("wer", "cer")


def display_scale(metric: str) -> float:
    return 100.0 if metric in _PERCENT_METRICS else 1.0


def _row_label(technique: str, train_bits: int, bits_vary: bool) -> str:
    if technique in ("float", "ptq") or not bits_vary:
        return technique
    return f"{technique} (trained w{train_bits})"


@dataclass
class Leaderboard:
    """Rows: technique; columns: eval precision; cells: metric mean (and std over seeds)."""

    table: pd.DataFrame  # formatted strings, for display
    values: pd.DataFrame  # long form: technique, precision, mean, std, n, size_bits
    metric: str
    higher_is_better: bool


def leaderboard(df: pd.DataFrame) -> Leaderboard:
    if df.empty:
        raise ValueError("no results match: run a recipe first (qbench run recipes/demo.yaml)")
    metrics = df.metric.unique()
    if len(metrics) > 1:
        raise ValueError(f"results mix metrics {sorted(metrics)}: filter with --task or --suite")
    bits_vary = df[~df.technique.isin(["float", "ptq"])].train_bits.nunique() > 1
    df = df.assign(
        row=[_row_label(t, b, bits_vary) for t, b in zip(df.technique, df.train_bits, strict=True)]
    )
    g = df.groupby(["row", "technique", "precision"], as_index=False).agg(
        mean=("value", "mean"),
        std=("value", "std"),
        n=("value", "size"),
        size_bits=("size_bits", "median"),
        float32_bits=("float32_bits", "median"),
    )
    precisions = sorted(g.precision.unique(), key=_precision_key)
    rows = sorted(g.row.unique(), key=lambda r: (_technique_key(g[g.row == r].technique.iloc[0]), r))

    scale = display_scale(df.metric.iloc[0])

    def cell(sub: pd.DataFrame) -> str:
        if sub.empty:
            return "–"
        m, s, n = sub["mean"].iloc[0], sub["std"].iloc[0], sub["n"].iloc[0]
        text = f"{scale * m:.2f}"
        return text + (f" ± {scale * s:.2f}" if n > 1 and not math.isnan(s) else "")

    table = pd.DataFrame(
        [[cell(g[(g.row == r) & (g.precision == p)]) for p in precisions] for r in rows],
        index=pd.Index(rows, name="technique"),
        columns=precisions,
    )
    sizes = g.groupby("precision").size_bits.median()
    f32 = g.float32_bits.median()
    table.loc["packed size"] = [f"{sizes[p] / 8e6:.2f} MB ({f32 / sizes[p]:.1f}x)" for p in precisions]
    return Leaderboard(
        table, g.drop(columns="row").assign(row=g.row), df.metric.iloc[0], bool(df.higher_is_better.iloc[0])
    )


def _unit(board: Leaderboard) -> str:
    pct = " %" if board.metric in _PERCENT_METRICS else ""
    return f"{board.metric.upper()}{pct}, {'higher' if board.higher_is_better else 'lower'} is better"


def render(board: Leaderboard, fmt: str) -> str:
    unit = _unit(board)
    if fmt == "markdown":
        return f"{unit}; columns are the precision the model is evaluated at.\n\n" + board.table.to_markdown()
    if fmt == "csv":
        return board.values.to_csv(index=False)
    if fmt == "json":
        return board.values.to_json(orient="records", indent=2)
    raise ValueError(f"unknown format {fmt!r}")


def rich_table(board: Leaderboard, title: str):
    from rich.table import Table

    t = Table(title=title, caption=f"{_unit(board)}; columns: evaluation precision")
    t.add_column("technique", style="bold")
    for c in board.table.columns:
        t.add_column(c, justify="right")
    for label, row in board.table.iterrows():
        t.add_row(str(label), *row.tolist(), style="dim" if label == "packed size" else None)
    return t


# ------------------------------------------------------------------ regression check


@dataclass
class CheckOutcome:
    entry: dict
    actual: float | None
    status: str  # ok | regression | improvement | missing

    def describe(self) -> str:
        e = self.entry
        what = f"{e['suite']}/{e['technique']}@{e['precision']} {e['metric']}"
        if self.actual is None:
            return f"MISSING     {what}: no result in the index (baseline {e['value']:.4f})"
        delta = self.actual - e["value"]
        return (
            f"{self.status.upper():<11} {what}: {self.actual:.4f} vs baseline {e['value']:.4f} "
            f"({delta:+.4f}, tolerance {e['tolerance']:.4f})"
        )


def load_baseline(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path}: baseline file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected an object with an 'entries' list")
    needed = {"suite", "technique", "precision", "metric", "value", "tolerance"}
    for i, e in enumerate(entries):
        missing = needed - set(e)
        if missing:
            raise ValueError(f"{path}: entries[{i}] lacks {sorted(missing)}")
    return entries


def check(df: pd.DataFrame, entries: list[dict]) -> list[CheckOutcome]:
    out = []
    for e in entries:
        sub = (
            df[
                (df.suite == e["suite"])
                & (df.technique == e["technique"])
                & (df.precision == e["precision"])
                & (df.metric == e["metric"])
            ]
            if not df.empty
            else df
        )
        if "train_bits" in e and not sub.empty:
            sub = sub[sub.train_bits == e["train_bits"]]
        if sub.empty:
            out.append(CheckOutcome(e, None, "missing"))
            continue
        actual = float(sub.value.mean())
        better = (
            actual - e["value"]
            if e.get("higher_is_better", sub.higher_is_better.iloc[0])
            else e["value"] - actual
        )
        status = (
            "regression" if better < -e["tolerance"] else "improvement" if better > e["tolerance"] else "ok"
        )
        out.append(CheckOutcome(e, actual, status))
    return out


def baseline_from(df: pd.DataFrame, suite: str, tolerance: float, metrics: list[str] | None = None) -> dict:
    sub = df[df.suite == suite] if not df.empty else df
    if metrics and not sub.empty:
        sub = sub[sub.metric.isin(metrics)]
    if sub.empty:
        raise ValueError(f"no results for suite {suite!r} in the index")
    g = sub.groupby(["technique", "precision", "metric"], as_index=False).agg(
        value=("value", "mean"), higher_is_better=("higher_is_better", "first")
    )
    return {
        "entries": [
            {
                "suite": suite,
                "technique": r.technique,
                "precision": r.precision,
                "metric": r.metric,
                "value": round(float(r.value), 4),
                "tolerance": tolerance,
                "higher_is_better": bool(r.higher_is_better),
            }
            for r in g.itertuples()
        ]
    }
