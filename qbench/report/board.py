"""Leaderboards from the results index: one row per technique, one column per precision."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass

import pandas as pd
from rich.table import Table
from rich.text import Text

from qbench.quant import TECHNIQUES
from qbench.report.intervals import cell_difference, cell_interval
from qbench.tasks.metrics import Metric, metric

_PRECISION_ORDER = {"float": 0, **{f"w{b}": 10 - b for b in range(8, 1, -1)}}


def precision_key(p: str) -> tuple[int, str]:
    """float, w8 .. w2, then other precisions; a precision's integer-kernel column (qbench eval,
    "<p>+int") right after it."""
    base = p.removesuffix("+int")
    return (_PRECISION_ORDER.get(base, 20), base + ("~" if p != base else ""))


def technique_key(t: str) -> tuple[int, str]:
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


def no_match_reason(
    df: pd.DataFrame,
    suite: str | None = None,
    task: str | None = None,
    technique: list[str] | None = None,
    dataset: str | None = None,
    metric: str | None = None,
) -> str:
    """Why :func:`filter_results` selected nothing from `df` (every row of the index), naming
    what does exist: the suites, a suite's metrics, techniques, tasks or datasets."""
    if df.empty:
        return "no results yet: run a recipe first (qbench run recipes/demo.yaml)"
    for column, wanted in (("suite", suite), ("task", task), ("dataset", dataset)):
        if wanted and wanted not in set(df[column]):
            have = sorted(set(df[column]))
            hint = difflib.get_close_matches(wanted, have, n=1)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            return f"no {column} {wanted!r} in the results ({column}s: {', '.join(have)}){did}"
        if wanted:
            df = df[df[column] == wanted]
    if metric and metric not in set(df.metric):
        where = f"suite {suite!r}" if suite else "the results"
        return f"{where} has no metric {metric!r} (metrics: {', '.join(sorted(set(df.metric)))})"
    if technique:
        have = sorted(set(df.technique))
        return (
            f"no technique {', '.join(technique)} in {suite or 'the results'} (techniques: {', '.join(have)})"
        )
    return "no results match"


def split_by_grid_point(df: pd.DataFrame) -> pd.DataFrame:
    """A suite whose grid varies the model (model.arch: CTC beside a transducer) becomes one
    suite per model, "suite [arch]", and one whose grid varies other keys one per grid point,
    "suite [train.lr=0.001]": each with its own float baseline, never averaged together."""
    if "model" not in df.columns or df.empty:
        return df
    # rows written before the model was recorded ("") do not count as a model of their own
    archs = df.model.replace("", None).groupby(df.suite).transform("nunique")
    df = df.assign(suite=df.suite.where(archs <= 1, df.suite + " [" + df.model + "]"))
    if "variant" not in df.columns:
        return df
    # a grid over other keys (train.lr: [...]): one board section per grid point, likewise
    return df.assign(suite=df.suite.where(df.variant == "", df.suite + " [" + df.variant + "]"))


def _row_label(technique: str, train_bits: int, bits_vary: bool) -> str:
    if technique in ("float", "ptq") or not bits_vary:
        return technique
    return f"{technique} (trained w{train_bits})"


@dataclass
class Leaderboard:
    """Rows: technique; columns: eval precision; cells: metric mean (± std over seeds) and the
    change from the float baseline of the same suite (the float-trained model at float precision)."""

    table: pd.DataFrame  # formatted strings, for display
    values: pd.DataFrame  # long form: suite, row, technique, precision, mean, std, n, delta, sizes
    metric: Metric
    seeds: int = 1  # most seeds behind one cell
    failed: pd.DataFrame | None = None  # runs whose state is failed: run_id, technique, seed, reason
    relative_to_best: bool = False  # (+x) is the change from the row's best precision, not from float
    ci: bool = False  # cells carry their 95 % interval
    against: str | None = None  # cells carry their paired difference from this technique


#: what makes one leaderboard cell (its rows are the seeds)
_CELL = ["suite", "row", "technique", "train_bits", "precision"]

SORT_HELP = "a precision column (best first), 'technique', or 'size' (smallest packed size first)"


def leaderboard(
    df: pd.DataFrame,
    sort: str | None = None,
    reference: pd.DataFrame | None = None,
    relative_to_best: bool = False,
    ci: bool = False,
    against: str | None = None,
) -> Leaderboard:
    """`reference`: rows to take each suite's float baseline from when `df` was filtered by
    technique (default: `df` itself). `relative_to_best`: each cell's change is from the best
    precision of its own row (one trained model evaluated at several precisions: what each
    precision costs that model), and the best cell says so. `ci`: each cell's 95 % interval;
    `against`: each cell's paired difference from that technique's cell (``float``: the float
    model in float; another technique: its cell at the same precision), with its interval and
    p-value (see qbench.report.intervals)."""
    if df.empty:
        raise ValueError("no results match: run a recipe first (qbench run recipes/demo.yaml)")
    df = split_by_grid_point(df)
    if reference is not None:
        reference = split_by_grid_point(reference)
    metrics = df.metric.unique()
    if len(metrics) > 1:
        raise ValueError(f"results mix metrics {sorted(metrics)}: filter with --task or --suite")
    m = metric(metrics[0])
    bits_vary = df[~df.technique.isin(["float", "ptq"])].train_bits.nunique() > 1
    several = df.suite.nunique() > 1
    labels = [_row_label(t, b, bits_vary) for t, b in zip(df.technique, df.train_bits, strict=True)]
    if several:  # one board over several suites: keep their rows apart
        labels = [f"{s}: {label}" for s, label in zip(df.suite, labels, strict=True)]
    df = df.assign(row=labels)
    g = df.groupby(["suite", "row", "technique", "train_bits", "precision"], as_index=False).agg(
        mean=("value", "mean"),
        std=("value", "std"),
        n=("value", "size"),
        size_bits=("size_bits", "median"),
        float32_bits=("float32_bits", "median"),
    )
    # The reference of each suite: its float-trained model evaluated in float.
    base = df if reference is None or reference.empty else reference
    base = base[(base.technique == "float") & (base.precision == "float") & (base.metric == m.name)]
    ref = base.groupby("suite")["value"].mean()
    g["delta"] = [m - ref[s] if s in ref.index else math.nan for s, m in zip(g.suite, g["mean"], strict=True)]
    g["size_mb"] = g.size_bits / 8e6
    higher = m.higher_is_better
    if relative_to_best:
        best = g.groupby("row")["mean"].transform("max" if higher else "min")
        g["delta"] = g["mean"] - best
        g["best_precision"] = g.row.map(
            g.loc[g.groupby("row")["mean"].idxmax() if higher else g.groupby("row")["mean"].idxmin()]
            .set_index("row")
            .precision
        )
    seeds: dict[tuple, dict[str, float]] = {}
    for key, value, seed in zip(df[_CELL].itertuples(index=False, name=None), df.value, df.seed, strict=True):
        seeds.setdefault(key, {})[str(seed)] = float(value)
    g = g.assign(
        per_seed=pd.Series([seeds[k] for k in g[_CELL].itertuples(index=False, name=None)], index=g.index)
    )
    if ci or against:
        g = _with_intervals(g, df, df if reference is None or reference.empty else reference, m, ci, against)
    precisions = sorted(g.precision.unique(), key=precision_key)
    rows = sorted(
        g.row.unique(),
        key=lambda r: (g[g.row == r].suite.iloc[0], technique_key(g[g.row == r].technique.iloc[0]), r),
    )
    rows = _sorted_rows(g, rows, precisions, sort, higher)

    def cell(sub: pd.DataFrame) -> str:
        if sub.empty:
            return "–"
        mean, s, n, d = sub["mean"].iloc[0], sub["std"].iloc[0], sub["n"].iloc[0], sub["delta"].iloc[0]
        text = m.format(mean)
        if n > 1 and not math.isnan(s):
            text += f" ± {m.format(s)}"
        if relative_to_best:
            return text + (
                " (best)"
                if sub.precision.iloc[0] == sub.best_precision.iloc[0]
                else f" ({m.format(d, signed=True)})"
            )
        if ci:
            low, high = sub["ci_low"].iloc[0], sub["ci_high"].iloc[0]
            text += " [–]" if math.isnan(low) else f" [{m.format(low)}, {m.format(high)}]"
        if against:
            return text + _difference_text(sub.iloc[0], m)
        is_ref = sub.technique.iloc[0] == "float" and sub.precision.iloc[0] == "float"
        if not math.isnan(d) and not is_ref:
            text += f" ({m.format(d, signed=True)})"
        return text

    table = pd.DataFrame(
        [[cell(g[(g.row == r) & (g.precision == p)]) for p in precisions] for r in rows],
        index=pd.Index(rows, name="technique"),
        columns=precisions,
    )
    sizes = g.groupby("precision").size_bits.median()
    f32 = g.float32_bits.median()
    table.loc["packed size"] = [f"{sizes[p] / 8e6:.2f} MB ({f32 / sizes[p]:.1f}x)" for p in precisions]
    order = {r: i for i, r in enumerate(rows)}
    values = g.assign(_o=g.row.map(order), _p=g.precision.map(lambda p: precision_key(p)[0]))
    values = values.sort_values(["_o", "_p"]).drop(columns=["_o", "_p"]).reset_index(drop=True)
    return Leaderboard(
        table, values, m, seeds=int(g.n.max()), relative_to_best=relative_to_best, ci=ci, against=against
    )


def _reference_cell(ref: pd.DataFrame, suite: str, precision: str, against: str) -> pd.DataFrame:
    at = "float" if against == "float" else precision
    return ref[(ref.suite == suite) & (ref.technique == against) & (ref.precision == at)]


def _with_intervals(
    g: pd.DataFrame, df: pd.DataFrame, ref: pd.DataFrame, m: Metric, ci: bool, against: str | None
) -> pd.DataFrame:
    """Add each cell's interval (ci_low, ci_high) and its paired difference from `against`
    (diff, diff_low, diff_high, p_value, significant); NaN where a run has no per-item scores."""
    cells = dict(iter(df.groupby(_CELL)))
    out: dict[str, list] = {
        k: [] for k in ("ci_low", "ci_high", "diff", "diff_low", "diff_high", "p_value", "significant")
    }
    for key in g[_CELL].itertuples(index=False, name=None):
        rows = cells[key]
        iv = cell_interval(rows, m.name) if ci else None
        out["ci_low"].append(iv.low if iv else math.nan)
        out["ci_high"].append(iv.high if iv else math.nan)
        d = None
        if against:
            base = _reference_cell(ref, key[0], key[4], against)
            same = (
                not base.empty and set(base.run_id) == set(rows.run_id) and key[4] == base.precision.iloc[0]
            )
            d = None if base.empty or same else cell_difference(rows, base, m.name)
        out["diff"].append(d.estimate if d else math.nan)
        out["diff_low"].append(d.low if d else math.nan)
        out["diff_high"].append(d.high if d else math.nan)
        out["p_value"].append(d.p_value if d else math.nan)
        out["significant"].append(bool(d and (d.low > 0 or d.high < 0)))
    return g.assign(**out, against=against or "")


def _difference_text(cell: pd.Series, m: Metric) -> str:
    """ " (Δ +1.20 [+0.40, +2.00] p=0.003*)": the paired difference, * when its interval
    excludes zero; nothing for the reference itself or a cell without per-item scores."""
    if math.isnan(cell["diff"]):
        return ""
    low, high = m.format(cell["diff_low"], signed=True), m.format(cell["diff_high"], signed=True)
    star = "*" if cell["significant"] else ""
    p = "p<0.001" if cell["p_value"] < 0.001 else f"p={cell['p_value']:.3f}"
    return f" (Δ {m.format(cell['diff'], signed=True)} [{low}, {high}] {p}{star})"


def by_length(df: pd.DataFrame, precision: str, base: str = "wer") -> pd.DataFrame:
    """Long-form view: the rows of `df` (all metrics: do not filter by metric first) at
    `precision` whose metric is `base` (WER on single utterances) or a long-form variant of it
    (Metric.base == base: `wer@xN`, N utterances joined), relabelled so that :func:`leaderboard`
    shows one column per length (x1, x4, x8, ...)."""
    if df.empty:
        return df
    sub = df[df.precision == precision]
    measures = {name: metric(name) for name in sub.metric.unique()}
    sub = sub[sub.metric.map(lambda name: measures[name].base == base).astype(bool)]
    lengths = sub.metric.map(lambda name: measures[name].joined)
    if not (lengths > 1).any():
        raise ValueError(
            f"no long-form results at precision {precision!r}: run a recipe with eval.long_form, e.g. [4, 8]"
        )
    width = len(str(lengths.max()))
    return sub.assign(precision=[f"{precision} x{n:0{width}d}" for n in lengths], metric=base, headline=1)


def _sorted_rows(g: pd.DataFrame, rows: list[str], precisions: list[str], sort: str | None, higher: bool):
    if not sort:
        return rows
    if sort == "technique":
        return sorted(rows)
    if sort == "size":
        size = g.groupby("row").size_bits.min()
        return sorted(rows, key=lambda r: size[r])
    if sort not in precisions:
        raise ValueError(f"cannot sort by {sort!r}: use {SORT_HELP}; columns here: {', '.join(precisions)}")
    col = g[g.precision == sort].set_index("row")["mean"]
    sign = -1 if higher else 1

    def key(r: str) -> tuple[int, float]:
        return (0, sign * col[r]) if r in col.index else (1, 0.0)

    return sorted(rows, key=key)  # stable: ties keep the technique order


def _legend(board: Leaderboard) -> str:
    parts = [f"cells: {board.metric.legend}"]
    if board.seeds > 1:
        parts.append(f"mean ± standard deviation over up to {board.seeds} seeds")
    if board.ci:
        parts.append(
            "[low, high] 95 % bootstrap interval (WER/CER: seeds, speakers, utterances; BLEU/chrF: "
            "sacrebleu's, over sentences; [–]: runs without per-item scores)"
        )
    if board.against:
        ref = (
            "the float model in float"
            if board.against == "float"
            else f"{board.against} at the same precision"
        )
        parts.append(
            f"(Δ [low, high] p) paired difference from {ref}, same suite, seeds and test items, with its "
            "95 % interval and two-sided p-value (WER/CER: from the same bootstrap; BLEU/chrF: "
            "sacrebleu's approximate randomisation); * where the interval excludes zero"
        )
    elif board.relative_to_best:
        parts.append("(+x) change from the best precision of the same row (the same trained models)")
    else:
        parts.append("(+x) change from the float model evaluated in float, same suite")
    parts.append("columns: the precision the model is evaluated at")
    return "; ".join(parts)


def _failed_markdown(failed: pd.DataFrame | None) -> str:
    if failed is None or failed.empty:
        return ""
    lines = [f"- `{r.run_id}` ({r.technique}, seed {r.seed}): {r.reason}" for r in failed.itertuples()]
    return "\n\nFailed runs (not in the table):\n\n" + "\n".join(lines)


def render(board: Leaderboard, fmt: str) -> str:
    if fmt == "markdown":
        return f"{_legend(board)}.\n\n" + board.table.to_markdown() + _failed_markdown(board.failed)
    if fmt == "csv":  # per-seed values as JSON text in one column
        return board.values.assign(per_seed=board.values.per_seed.map(json.dumps)).to_csv(index=False)
    if fmt == "json":
        return board.values.to_json(orient="records", indent=2)
    raise ValueError(f"unknown format {fmt!r}")


def rich_table(board: Leaderboard, title: str) -> Table:
    t = Table(title=title, caption=Text(_legend(board)))  # Text: "[low, high]" is not markup
    t.add_column("technique", style="bold")
    for c in board.table.columns:
        t.add_column(c, justify="right")
    for label, row in board.table.iterrows():
        cells = [Text(str(label)), *(Text(str(v)) for v in row.tolist())]
        t.add_row(*cells, style="dim" if label == "packed size" else None)
    return t


def failed_runs(
    runs: pd.DataFrame, suite: str | None = None, task: str | None = None, technique: list[str] | None = None
) -> pd.DataFrame:
    """Runs of the `runs` index table whose last state is failed, filtered like the board."""
    if runs.empty:
        return runs
    runs = runs[runs.state == "failed"]
    if suite:
        runs = runs[runs.suite == suite]
    if task:
        runs = runs[runs.task == task]
    if technique:
        runs = runs[runs.technique.isin(technique)]
    return runs.sort_values(["suite", "technique", "seed"])
