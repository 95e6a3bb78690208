"""`qbench compare --plot FILE.png`: the leaderboard as pictures (matplotlib, Agg backend).

Left: accuracy against packed model size, one line per technique through its evaluation
precisions (the Pareto view: down-left is better for error rates, up-left for BLEU), error bars
the standard deviation over seeds, the float baseline as a dashed line.
Middle and right: training curves per technique (mean over seeds) from the runs' `metrics.json`
curve (`train.eval_every`), or the training loss from `train.log` when no curve was recorded;
the right panel zooms on the quantization-aware part after the shared float warm-up.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from qbench.config import load_run_config
from qbench.io import CorruptFile
from qbench.report.board import precision_key, technique_key
from qbench.store import run_folder
from qbench.tasks.metrics import metric

_LOSS_LINE = re.compile(r"^step (\d+) loss \S+ avg (\S+)")


def _curve(run_dir: Path, metric: str, loss: bool = False) -> tuple[pd.DataFrame, str]:
    """(step, value) of one run: the recorded evaluation curve, else (or if `loss`) the training loss."""
    m = run_dir / "metrics.json"
    if m.is_file() and not loss:
        try:
            points = json.loads(m.read_text()).get("curve") or []
        except json.JSONDecodeError:
            points = []
        rows = [(p["step"], p[metric], p.get("split", "valid")) for p in points if metric in p]
        if rows:
            return pd.DataFrame(rows, columns=["step", "value", "split"]), "metric"
    log = run_dir / "train.log"
    rows = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            hit = _LOSS_LINE.match(line)
            if hit:
                rows.append((int(hit.group(1)), float(hit.group(2)), "train"))
    return pd.DataFrame(rows, columns=["step", "value", "split"]), "loss"


def _warmup(run_dir: Path) -> int:
    try:
        return load_run_config(run_dir / "config.yaml").quant.float_warmup_steps or 0
    except (OSError, CorruptFile):  # a plot still draws the curve, without the warm-up mark
        return 0


def _styles(labels: list[str]) -> dict[str, dict]:
    import matplotlib  # local: only plotting needs it, and it is slow to import

    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    markers = "osD^vP*Xh<>p"
    return {
        label: {"color": cmap(i % cmap.N), "marker": markers[i % len(markers)]}
        for i, label in enumerate(labels)
    }


def plot_suite(df: pd.DataFrame, out: Path, title: str | None = None, results: Path | None = None) -> None:
    """Write the figure for the (already filtered, one-metric) index rows `df` to `out` (PNG)."""
    # local: only plotting needs matplotlib, and it is slow to import; the Agg backend (files,
    # no display) must be chosen before pyplot is imported
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if df.empty:
        raise ValueError("no results match: nothing to plot")
    if df.metric.nunique() > 1:
        raise ValueError(f"results mix metrics {sorted(df.metric.unique())}: filter with --task or --suite")
    m = metric(df.metric.iloc[0])
    scale, higher = m.scale, m.higher_is_better
    unit = m.name.upper() + (f" ({m.unit})" if m.unit else "")
    several = df.suite.nunique() > 1
    bits_vary = df[~df.technique.isin(["float", "ptq"])].train_bits.nunique() > 1

    def label(r) -> str:
        name = r.technique
        if bits_vary and r.technique not in ("float", "ptq"):
            name += f" (w{r.train_bits} QAT)"
        return f"{r.suite}: {name}" if several else name

    df = df.assign(label=[label(r) for r in df.itertuples()])
    order = sorted(df.label.unique(), key=lambda lab: technique_key(df[df.label == lab].technique.iloc[0]))
    style = _styles(order)

    fig, axes = plt.subplots(1, 3, figsize=(19, 6.2), gridspec_kw={"width_ratios": [1.25, 1, 1]})
    _pareto(axes[0], df, order, style, scale, unit, higher)
    _curves(axes[1], axes[2], df, order, style, scale, unit, results)
    n_seeds = int(df.groupby(["label", "precision"]).seed.nunique().max())
    suites = ", ".join(sorted(df.suite.unique()))
    fig.suptitle(
        f"{title or suites}: {unit}, {m.direction} is better "
        f"({df.dataset.iloc[0]}, {n_seeds} seed{'s' if n_seeds > 1 else ''})",
        fontsize=14,
        fontweight="bold",
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 10), frameon=False, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _pareto(ax, df, order, style, scale, unit, higher) -> None:
    g = df.groupby(["label", "precision"], as_index=False).agg(
        mean=("value", "mean"), std=("value", "std"), size=("size_bits", "median")
    )
    sizes = g.groupby("precision")["size"].median() / 8e6
    # Techniques share one size per precision: spread them a little so error bars do not overlap.
    n = len(order)
    for i, lab in enumerate(order):
        sub = g[g.label == lab].sort_values("size")
        jitter = 1 + 0.035 * (i - (n - 1) / 2) / max(1, n / 4)
        x = sub["size"] / 8e6 * jitter
        y = sub["mean"] * scale
        err = (sub["std"].fillna(0) * scale).tolist()
        ax.errorbar(x, y, yerr=err, label=lab, capsize=3, lw=1.6, ms=7, **style[lab])
    ref = g[(g.label.isin([o for o in order if o.endswith("float")])) & (g.precision == "float")]
    if not ref.empty:
        ax.axhline(ref["mean"].iloc[0] * scale, color="0.4", ls="--", lw=1, zorder=0)
        ax.annotate(
            "float model, float eval",
            (0.5, ref["mean"].iloc[0] * scale),
            xycoords=("axes fraction", "data"),
            ha="center",
            va="bottom",
            fontsize=9,
            color="0.3",
        )
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator  # local: as in plot_suite

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("packed model size (MB, log scale)")
    ax.set_ylabel(unit)
    ax.set_title(f"Accuracy vs size ({'up' if higher else 'down'}-left is better)")
    ax.grid(True, which="both", alpha=0.3)
    top = ax.secondary_xaxis("top")
    precs = sorted(sizes.index, key=precision_key)
    top.set_xticks([sizes[p] for p in precs], labels=[f"{p}\n{sizes[p]:.3g} MB" for p in precs], fontsize=9)
    top.minorticks_off()


def _curves(ax_all, ax_qat, df, order, style, scale, unit, results) -> None:
    runs = df.drop_duplicates(["suite", "run_id"])
    kinds = set()
    per_label: dict[str, pd.DataFrame] = {}
    warmups = []
    split = None
    for lab in order:
        frames = []
        for r in runs[runs.label == lab].itertuples():
            d = run_folder(results, r.run_dir, r.suite, r.run_id)
            c, kind = _curve(d, r.metric)
            if c.empty:
                continue
            kinds.add(kind)
            split = split or c.split.iloc[0]
            frames.append(c.assign(run=r.run_id))
            if r.technique not in ("float", "ptq"):
                warmups.append(_warmup(d))
        if frames:
            per_label[lab] = pd.concat(frames)
    if not per_label:
        for ax in (ax_all, ax_qat):
            ax.text(0.5, 0.5, "no training curves recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return
    use_metric = kinds == {"metric"}
    if not use_metric and "metric" in kinds:  # some runs lack a curve: compare losses for all
        for lab, c in per_label.items():
            frames = []
            for run_id in c.run.unique():
                r = runs[(runs.label == lab) & (runs.run_id == run_id)].iloc[0]
                loss, _ = _curve(run_folder(results, r.run_dir, r.suite, r.run_id), r.metric, loss=True)
                frames.append(loss.assign(run=run_id))
            per_label[lab] = pd.concat(frames)
    ylabel = f"{unit} on {split}" if use_metric else "training loss (running mean)"
    warm = min(warmups) if warmups else 0
    for lab, c in per_label.items():
        if c.empty:
            continue
        mean = c.groupby("step").value.mean() * (scale if use_metric else 1)
        is_base = lab.split(": ")[-1] in ("float", "ptq")
        kw = {"color": style[lab]["color"], "label": lab, "lw": 2.2 if is_base else 1.5}
        ax_all.plot(mean.index, mean.values, **kw)
        after = mean[mean.index >= warm] if warm else mean
        ax_qat.plot(after.index, after.values, marker=style[lab]["marker"], ms=4, **kw)
    for ax in (ax_all, ax_qat):
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    if not use_metric:
        ax_all.set_yscale("log")
    ax_all.set_title("Training curve" + (" (whole run)" if warm else ""))
    if warm:
        ax_all.axvline(warm, color="0.4", ls=":", lw=1)
        ax_all.annotate(
            " QAT starts", (warm, 1), xycoords=("data", "axes fraction"), va="top", fontsize=9, color="0.3"
        )
        ax_qat.set_title(f"After the shared float warm-up (step {warm}): QAT phase")
        ax_qat.set_xlim(left=warm - max(1, 0.02 * warm))
        _fit_y(ax_qat)
    else:
        ax_qat.set_title("Training curve (second half)")
        steps = pd.concat(per_label.values()).step
        ax_qat.set_xlim(left=steps.max() / 2)
        _fit_y(ax_qat)


def _fit_y(ax) -> None:
    """Scale the y axis to the lines' points inside the current x limits."""
    lo, hi = ax.get_xlim()
    ys = [y for line in ax.get_lines() for x, y in zip(*line.get_data(), strict=True) if lo <= x <= hi]
    ys = [y for y in ys if not math.isnan(y)]
    if ys:
        pad = 0.08 * (max(ys) - min(ys) or abs(max(ys)) or 1)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
