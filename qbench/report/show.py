"""`qbench show RUN`: one run at a glance, from its run folder alone.

Config (the resolved recipe), state, the training curve summary (metrics.json `curve`, else the
losses in train.log), the per-precision metrics and sizes, and the worst hypotheses of
hyp/<precision>.tsv ranked by word error rate (per sentence, so also for MT).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from rich.table import Table

from qbench.config import load_run_config
from qbench.io import read_json
from qbench.report.board import precision_key
from qbench.tasks.metrics import METRICS, metric

_LOSS = re.compile(r"^step (\d+) loss (\S+) avg (\S+)")


def find_run(run: str, results: Path) -> Path:
    """A run folder from a path, a run id or a unique prefix of one (under results/runs/*/)."""
    p = Path(run)
    if (p / "config.yaml").is_file():
        return p
    hits = sorted(results.glob(f"runs/*/{run}*"))
    hits = [h for h in hits if (h / "config.yaml").is_file()]
    if not hits:
        raise ValueError(f"{run}: no such run folder, and no run id starting so under {results}/runs")
    if len(hits) > 1:
        names = ", ".join(f"{h.parent.name}/{h.name}" for h in hits[:8])
        raise ValueError(
            f"{run}: {len(hits)} runs match ({names}{', ...' if len(hits) > 8 else ''}); be more specific"
        )
    return hits[0]


def _wer(ref: str, hyp: str) -> tuple[float, int]:
    """Word edit distance per reference word; written out (not jiwer) because rows may have an
    empty reference or hypothesis, which jiwer rejects."""
    r, h = ref.split(), hyp.split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    errors = prev[-1]
    return errors / max(1, len(r)), errors


def worst_hypotheses(tsv: Path, n: int) -> list[tuple[str, str, str, float]]:
    """The n rows with the most word errors per reference word: (id, reference, hypothesis, wer)."""
    with open(tsv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    scored = [
        (r["id"], r["reference"], r["hypothesis"] or "", *_wer(r["reference"], r["hypothesis"] or ""))
        for r in rows
    ]
    scored.sort(key=lambda x: (-x[3], -x[4], x[0]))
    return [(i, ref, hyp, w) for i, ref, hyp, w, _ in scored[:n]]


def curve_summary(run_dir: Path, metrics: dict) -> list[str]:
    lines = []
    curve = metrics.get("curve") or []
    if curve:
        key = next(k for k in curve[0] if k not in ("step", "minutes", "split"))
        m = metric(key)
        pts = [(p["step"], m.display(p[key])) for p in curve if key in p]
        best = m.best(pts, key=lambda x: x[1])
        picked = pts if len(pts) <= 8 else pts[:: max(1, len(pts) // 8)]
        if picked[-1] != pts[-1]:
            picked.append(pts[-1])
        shown = ", ".join(f"{s}: {v:.2f}" for s, v in picked)
        lines.append(f"{key.upper()} on {curve[0].get('split', 'valid')} by step: {shown}")
        lines.append(f"best {best[1]:.2f} at step {best[0]}; last {pts[-1][1]:.2f} at step {pts[-1][0]}")
    log = run_dir / "train.log"
    if log.is_file():
        text = log.read_text(errors="replace").splitlines()
        losses = [(int(m.group(1)), float(m.group(3))) for m in map(_LOSS.match, text) if m]
        if losses:
            lines.append(
                f"training loss (running mean): {losses[0][1]:.3f} at step {losses[0][0]} -> "
                f"{losses[-1][1]:.3f} at step {losses[-1][0]} ({len(losses)} log lines in this run)"
            )
        starts = [t for t in text if t.startswith("training ")]
        if starts:
            lines.append("; ".join(starts))
    if metrics.get("train_seconds") is not None:
        lines.append(
            f"training time {metrics['train_seconds'] / 60:.1f} min for {metrics.get('steps')} steps"
        )
    return lines or ["no curve recorded (train.eval_every is 0) and no train.log"]


def show_run(run_dir: Path, console, worst: int = 5, precisions: list[str] | None = None) -> None:
    config = load_run_config(run_dir / "config.yaml").model_dump(mode="json")
    remedy = "delete it (and metrics.json) and run the suite again to evaluate the run anew"
    status = read_json(run_dir / "status.json", remedy) if (run_dir / "status.json").is_file() else {}
    metrics = read_json(run_dir / "metrics.json", remedy) if (run_dir / "metrics.json").is_file() else {}
    console.print(f"[bold]{run_dir.parent.name}/{run_dir.name}[/bold]  ({run_dir})", highlight=False)
    state = status.get("state", "unknown")
    console.print(
        f"state: {state}" + (f" — {status['reason']}" if status.get("reason") else ""), highlight=False
    )
    q, t, m = config["quant"], config["train"], config["model"]
    qat = "" if q["technique"] in ("float", "ptq") else f" (QAT from step {q.get('float_warmup_steps', 0)})"
    console.print(
        f"config: task {config['task']}, data {config['data']['source']}, model {m['arch']} "
        f"(d_model {m.get('d_model')}), technique {q['technique']} at {q['bits']} bits, seed {config['seed']}, "
        f"{t['steps']} steps{qat}, batch {t['batch_size']}, lr {t['lr']:g}",
        highlight=False,
    )
    console.print(f"  full resolved config: {run_dir / 'config.yaml'}", highlight=False)
    console.rule("training")
    for line in curve_summary(run_dir, metrics):
        console.print("  " + line, highlight=False)
    per = metrics.get("precisions") or {}
    if per:
        console.rule("evaluation (test)")
        names = sorted(per, key=precision_key)
        # the registered metrics (not their variants: long-form, greedy) this run recorded
        shown = [m for m in METRICS.values() if any(m.name in per[p] for p in names)]
        table = Table()
        for c in ["precision", *[m.label for m in shown], "packed size"]:
            table.add_column(c, justify="right")
        for p in names:
            d = per[p]
            cells = [m.format(d[m.name]) if m.name in d else "–" for m in shown]
            size = d.get("size_bits")
            ratio = f" ({d['float32_bits'] / size:.1f}x)" if size and d.get("float32_bits") else ""
            table.add_row(p, *cells, f"{size / 8e6:.2f} MB{ratio}" if size else "–")
        console.print(table)
    hyp_dir = run_dir / "hyp"
    available = sorted((f.stem for f in hyp_dir.glob("*.tsv")), key=precision_key) if hyp_dir.is_dir() else []
    chosen = precisions or available[-1:]
    for p in chosen:
        f = hyp_dir / f"{p}.tsv"
        if not f.is_file():
            console.print(f"[yellow]no hypotheses for {p}[/yellow] (have: {', '.join(available) or 'none'})")
            continue
        console.rule(f"worst {worst} hypotheses at {p} (word error rate per sentence)")
        for i, ref, hyp, w in worst_hypotheses(f, worst):
            console.print(f"  [bold]{i}[/bold]  {100 * w:.0f}%", highlight=False)
            console.print(f"    ref: {ref}", highlight=False)
            console.print(f"    hyp: {hyp}", highlight=False)
