"""`qbench quant ...`: look at what a recipe quantizes, without data or training.

The library's modules are imported inside the commands, as in main.py: they load torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qbench.cli.errors import fail
from qbench.progress import console

quant_app = typer.Typer(help="Inspect what a recipe quantizes.", no_args_is_help=True, add_completion=False)


@quant_app.command()
def inspect(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a key, e.g. --set quant.bits=8 (repeatable).")
    ] = [],  # noqa: B006
    results: Annotated[
        Path,
        typer.Option(
            "--results",
            help="Results root: automatic precision maps are shown as the recipe's runs chose them.",
            envvar="QBENCH_RESULTS",
        ),
    ] = Path("results"),
) -> None:
    """List each parameter with its bits, granularity and technique, and the parameters kept float.

    Built from the recipe alone (no data): with subword units the vocabulary rows are a
    placeholder size. One table per distinct `quant:` setting of the recipe's grid.
    """
    from qbench.config import RecipeError
    from qbench.quant import model_size_bits
    from qbench.quant.activations import act_target
    from qbench.quant.apply import is_selected, weight_slots
    from qbench.quant.scales import num_scales
    from qbench.quant.sensitivity import average_bits
    from qbench.tasks import load_suite
    from qbench.tasks.models import skeleton_model

    try:
        suite = load_suite(recipe, set_)
    except RecipeError as e:
        fail(str(e), 2)
    seen = set()
    for r in suite.runs:
        key = (r.quant.model_dump_json(exclude={"float_warmup_steps"}), r.model.model_dump_json())
        if key in seen:
            continue
        seen.add(key)
        spec = r.quant_spec()
        model = skeleton_model(r)
        precisions, chosen = _precisions_of(r, results / "runs" / suite.name)
        technique = spec.describe()
        title = (
            f"{r.name}: {r.quant.technique} ({technique}), {r.quant.bits}-bit training"
            if spec.attaches
            else f"{r.name}: {r.quant.technique} ({technique})"
        )
        table = Table(title=title, title_justify="left")
        table.add_column("parameter", no_wrap=True)
        table.add_column("shape", no_wrap=True)
        table.add_column("bits", no_wrap=True)
        table.add_column("eval bits\n" + "/".join(p.name for p in precisions), no_wrap=True)
        table.add_column("granularity", no_wrap=True)
        table.add_column("scales", justify="right", no_wrap=True)
        table.add_column("technique", no_wrap=True)
        kept = Table(
            title=f"kept float (stored as {spec.float_dtype} at a quantized precision)", title_justify="left"
        )
        kept.add_column("parameter", no_wrap=True)
        kept.add_column("shape", no_wrap=True)
        seen_ids: set[int] = set()
        n_q = n_f = 0
        for name, module, tname, tensor in weight_slots(model):
            if id(tensor) in seen_ids:
                continue
            seen_ids.add(id(tensor))
            shape = "x".join(map(str, tensor.shape)) or "scalar"
            if not is_selected(name, tensor, spec):
                kept.add_row(name, shape)
                n_f += tensor.numel()
                continue
            n_q += tensor.numel()
            evals = "/".join(
                "auto" if p.auto is not None else "f" if (b := p.bits_for(name)) is None else str(b)
                for p in precisions
            )
            tech = r.quant.technique if spec.attaches else "absmax (eval)"
            if spec.activations and act_target(module, tname):
                tech += " +a8"
            table.add_row(
                name,
                shape,
                str(spec.bits) if spec.attaches else "float",
                evals,
                spec.granularity.removeprefix("per-"),
                str(num_scales(tensor.shape, spec.granularity)),
                tech,
            )
        console.print(table)
        console.print(kept)
        console.print(f"{n_q:,} parameters quantized, {n_f:,} kept float (biases, norms, 1-D tensors)")
        for p in precisions:
            if p.auto is not None:
                console.print(
                    f"  {p.name:>10}: automatic ({p.auto.sensitivity}, {p.auto.budget_bits:g} bits on average "
                    f"from {list(p.auto.bits)}): chosen after training; run the recipe, then inspect again"
                )
                continue
            size = model_size_bits(model, p, spec)
            avg = average_bits(model, spec, p)
            console.print(
                f"  {p.name:>10}: {size['total_bits'] / 8e3:,.1f} kB packed, "
                f"1/{size['float32_bits'] / size['total_bits']:.2f} of float32"
                + (f", {avg:.2f} bits per quantized weight" if avg is not None else "")
            )
        for name, (run_id, report) in chosen.items():
            console.print(
                f"  {name}: chosen by {report['config']['sensitivity']} sensitivity for run {run_id}: "
                f"{report['average_bits']:.3f} average bits (budget {report['config']['budget_bits']:g}); "
                f"8-bit: {', '.join(ly['name'] for ly in report['layers'] if ly['bits'] == 8) or 'none'}",
                highlight=False,
            )
        console.print()


def _precisions_of(recipe, suite_dir: Path):
    """The recipe's evaluation precisions, automatic maps replaced by the map its run chose when
    the run folder has one; and {name: (run id, map report)} of those."""
    from qbench.quant import parse_precision
    from qbench.quant.sensitivity import written_maps

    run_dir = suite_dir / recipe.run_id
    named = written_maps(run_dir, recipe.precisions)
    chosen = {}
    for p in recipe.eval.precisions:
        f = run_dir / "precision_maps" / f"{p}.json"
        if named.get(p) is not recipe.precisions.get(p) and f.is_file():
            chosen[p] = (recipe.run_id, json.loads(f.read_text()))
    return [parse_precision(p, named) for p in recipe.eval.precisions], chosen
