"""Loading recipes: YAML parsed safely with the line of every key, `--set` overrides, grid
expansion, and validation whose every error names the file, the line, the dotted key and, where
there is one, the nearest valid name (the CLI turns it into exit code 2)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from qbench.config.run_ids import EVALUATION_DATA_KEYS
from qbench.config.schema import (
    ARCHS,
    DATA_SOURCES,
    DataConfig,
    ModelConfig,
    Recipe,
    nearest,
)
from qbench.io import CorruptFile
from qbench.quant.labels import technique_label

#: a further check of a validated recipe: (location, message) pairs, empty when all is well
RecipeCheck = Callable[[Recipe], list[tuple[tuple, str]]]


class RecipeError(Exception):
    """A recipe that cannot run; the message says what and where."""


@dataclass(frozen=True)
class Suite:
    """What a recipe file expands to: a name and one validated Recipe per grid point."""

    name: str
    path: Path
    runs: tuple[Recipe, ...]


# ---------------------------------------------------------------- YAML with line numbers


#: deepest nesting a recipe may have, and how many values it may expand to (aliases included):
#: a real recipe is 3-4 levels deep and a few hundred values
MAX_DEPTH = 50
MAX_VALUES = 100_000


def _check_depth(text: str, source: str) -> None:
    """Refuse deep nesting before PyYAML's composer, which recurses once per level, sees it (the
    event stream is read iteratively)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise RecipeError(f"{source}:{line}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _compose_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML safely, also returning the line of every key path (1-based).

    Also refused here, each naming its line: a key given twice in one mapping (YAML loaders keep
    the last one silently), and a document that nests deeper than MAX_DEPTH or expands to more
    than MAX_VALUES values: an alias stands for a whole subtree, so a few hundred bytes of nested
    aliases expand exponentially. The walk is iterative and stops at the first excess."""
    try:
        _check_depth(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    lines: dict[tuple, int] = {}
    stack: list[tuple[yaml.Node, tuple]] = [(node, ())] if node is not None else []
    visited = 0
    while stack:
        n, path = stack.pop()
        visited += 1
        line = n.start_mark.line + 1
        if visited > MAX_VALUES or len(path) > MAX_DEPTH:
            what = (
                f"more than {MAX_VALUES} values"
                if visited > MAX_VALUES
                else f"deeper than {MAX_DEPTH} levels"
            )
            raise RecipeError(f"{source}:{line}: the recipe expands to {what} (through aliases)")
        lines.setdefault(path, line)
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in n.value:
                key, key_line = k.value, k.start_mark.line + 1
                if key in seen and key != "<<":
                    dotted = ".".join(str(p) for p in (*path, key))
                    raise RecipeError(
                        f"{source}:{key_line}: {dotted}: given twice (first at line {seen[key]})"
                    )
                seen[key] = key_line
                lines[path + (key,)] = key_line
                stack.append((v, path + (key,)))
        elif isinstance(n, yaml.SequenceNode):
            stack += [(v, path + (i,)) for i, v in enumerate(n.value)]
    return data, lines


_TAGGED = {"data": ("source", DataConfig), "model": ("arch", ModelConfig)}


def _union_members(annotated: Any, tag: str) -> dict[str, type[BaseModel]]:
    """{tag value: class} of a discriminated union such as DataConfig (tag "source")."""
    union = annotated.__origin__ if hasattr(annotated, "__metadata__") else annotated
    return {value: m for m in union.__args__ for value in get_args(m.model_fields[tag].annotation)}


def _strip_tags(loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """Pydantic puts the union tag into error locations (data.synthetic-speech.seed); drop it,
    returning the location as the user wrote it and the schema class at its parent."""
    clean: list = []
    model: Any = Recipe
    i = 0
    while i < len(loc):
        part = loc[i]
        clean.append(part)
        if len(clean) == 1 and part in _TAGGED and i + 1 < len(loc):
            members = _union_members(_TAGGED[part][1], _TAGGED[part][0])
            if loc[i + 1] in members:
                model = members[loc[i + 1]]
                i += 2
                continue
        fields = getattr(model, "model_fields", {})
        model = fields[part].annotation if part in fields else None
        i += 1
    return tuple(clean), model


def _fields_at(loc: tuple) -> list[str]:
    """Valid key names beside the last element of an error location, for 'did you mean' hints."""
    _, parent = _strip_tags(loc[:-1])
    fields = getattr(parent, "model_fields", None)
    return list(fields) if fields else []


def _format_error(
    err: Mapping[str, Any], source: str, lines: dict[tuple, int], overrides: dict[str, str]
) -> str:
    loc, _ = _strip_tags(tuple(err["loc"]))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if dotted in overrides:
        where = f"--set {dotted}={overrides[dotted]}"
    else:
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        where = f"{source}:{line}" if line else source
    msg = err["msg"]
    hint = ""
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        hint = nearest(loc[-1], _fields_at(tuple(err["loc"])))
    elif err["type"] in ("literal_error", "union_tag_invalid"):
        allowed = err.get("ctx", {}).get("expected", "") or err.get("ctx", {}).get("expected_tags", "")
        options = [o.strip().strip("'") for o in str(allowed).replace(" or ", ",").split(",") if o.strip()]
        got = err.get("input")
        if isinstance(got, dict):
            got = got.get(_TAGGED[loc[0]][0]) if loc and loc[0] in _TAGGED else got
        hint = nearest(got, options)
        msg = f"{msg}, got {got!r}"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg}, got {err['input']!r}"
    return f"{where}: {dotted}: {msg}{hint}"


def _validate(
    raw: dict, source: str, lines: dict[tuple, int], overrides: dict[str, str], checks: Sequence[RecipeCheck]
) -> Recipe:
    # The task implies the model and data kinds, so `model: {d_model: 16}` needs no `arch:`.
    task = raw.get("task", "asr")
    defaults = {
        "model": {k: v[0] for k, v in ARCHS.items()},
        "data": {k: v[0] for k, v in DATA_SOURCES.items()},
    }
    for section, default in defaults.items():
        tag = _TAGGED[section][0]
        if isinstance(raw.get(section), dict) and tag not in raw[section] and task in default:
            raw[section] = {tag: default[task], **raw[section]}
    if task == "mt" and "data" not in raw:
        raw["data"] = {"source": "synthetic-mt"}
    if task == "mt" and "model" not in raw:
        raw["model"] = {"arch": "transformer"}
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        msgs = [_format_error(err, source, lines, overrides) for err in e.errors()]
        raise RecipeError("\n".join(msgs)) from None
    problems = recipe.cross_field_errors()
    for check in checks if not problems else ():
        problems += check(recipe)
    errors = [{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in problems]
    if errors:
        raise RecipeError("\n".join(_format_error(err, source, lines, overrides) for err in errors))
    return recipe


# ---------------------------------------------------------------- overrides and grid


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def _override_value(key: str, value: str) -> Any:
    """A `--set` value parsed as YAML (empty: null), with the recipe file's limits."""
    where = f"--set {key}={value}"
    if not value.strip():
        return None
    try:
        _check_depth(value, where)
        yaml.compose(value, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{where}: not a YAML value ({getattr(e, 'problem', e)})") from None
    return _compose_with_lines(value, where)[0]


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item}: expected KEY=VALUE, e.g. --set train.steps=200")
        out[key.strip()] = value
    return out


#: grid keys a leaderboard already tells apart (rows: technique and training bits; seeds are
#: averaged; a model.arch grid splits the board): the others may label a run's `variant`
ROW_KEYS = frozenset({"quant.technique", "quant.bits", "seed", "model.arch"})


def _keep_needed_variants(runs: list[Recipe]) -> list[Recipe]:
    """Keep a run's `variant` label only where the leaderboard could not tell it from another run
    of the grid otherwise (same technique label, bits, seed and model): a grid over `train.lr`
    needs it, a grid over whole `quant:` sections (each a technique of its own) does not."""
    row = [(technique_label(r), r.quant.bits, r.seed, r.model.arch) for r in runs]
    clash = {k for k in row if row.count(k) > 1}
    return [r if k in clash else r.model_copy(update={"variant": ""}) for r, k in zip(runs, row, strict=True)]


def _short(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")


def load_suite(
    path: str | Path, overrides: list[str] | None = None, checks: Sequence[RecipeCheck] = ()
) -> Suite:
    """Load a recipe file, apply `--set` overrides, expand its grid and validate every run.
    ``checks`` look further at each run that passed the schema (qbench.tasks checks its settings
    against the model it builds), returning (location, message) pairs like the schema's."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise RecipeError(f"{source}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    raw, lines = _compose_with_lines(text, source)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}:1: a recipe is a YAML mapping (name:, task:, data:, ...)")

    sets = parse_overrides(overrides or [])
    values = {key: _override_value(key, value) for key, value in sets.items()}
    grid_sets = {k.removeprefix("grid."): v for k, v in values.items() if k.startswith("grid.")}
    for key, value in values.items():
        if not key.startswith("grid."):
            _set_dotted(raw, key, value)

    grid = raw.pop("grid", None) or {}
    if isinstance(grid, dict):
        grid = {**grid, **grid_sets}
        # a --set of a key the grid varies replaces that axis by the one value
        grid.update({k: [v] for k, v in values.items() if k in grid and k not in grid_sets})
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        line = lines.get(("grid",), 1)
        raise RecipeError(f"{source}:{line}: grid: expected a mapping of dotted keys to non-empty lists")

    runs = []
    for combo in itertools.product(*grid.values()):
        point = copy.deepcopy(raw)
        point_lines = dict(lines)
        for key, value in zip(grid, combo, strict=True):
            _set_dotted(point, key, value)
            point_lines[tuple(key.split("."))] = lines.get(("grid", key), 1)
        # A grid point that replaces a whole section (a `quant:` entry of its own) keeps the
        # command line's `--set` of keys inside it: `--set quant.bits=3` reaches every entry.
        for key, value in values.items():
            if any(key.startswith(g + ".") for g in grid) and not key.startswith("grid."):
                _set_dotted(point, key, copy.deepcopy(value))
        labels = [f"{k}={_short(v)}" for k, v in zip(grid, combo, strict=True) if k not in ROW_KEYS]
        point["variant"] = ", ".join(labels)
        runs.append(_validate(point, source, point_lines, sets, checks))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise RecipeError(
            f"{source}: grid produces duplicate runs (points that differ only in their test split or "
            "data folder train the same model: score a finished run elsewhere with `qbench eval --set`)"
        )
    runs = _keep_needed_variants(runs)
    return Suite(name=runs[0].name, path=path, runs=tuple(runs))


def with_evaluation_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """A finished run's recipe with `--set` overrides of what it is evaluated on (``data.`` keys
    of the data source's EVALUATION_DATA_KEYS, ``eval.`` keys); RecipeError for any key that would
    change the trained model, or a value the schema refuses."""
    sets = parse_overrides(overrides)
    raw = recipe.model_dump(mode="json")
    source = raw["data"]["source"]
    evaluation_keys = EVALUATION_DATA_KEYS[source]
    for key, value in sets.items():
        section, _, name = key.partition(".")
        if section == "data" and name not in raw["data"]:
            raise RecipeError(f"--set {key}: no such key for data source {source}")
        if not ((section == "data" and name in evaluation_keys) or (section == "eval" and name)):
            allowed = ", ".join([*(f"data.{k}" for k in sorted(evaluation_keys)), "eval.*"])
            raise RecipeError(
                f"--set {key}: changes what the run was trained on; evaluation of a {source} run "
                f"takes {allowed}"
            )
        _set_dotted(raw, key, _override_value(key, value))
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise RecipeError(f"--set: {where}: {first['msg']}") from None


def resolved_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def load_run_config(path: Path) -> Recipe:
    """The recipe a run folder's ``config.yaml`` (written by :func:`resolved_yaml`) holds. A file
    that is truncated, overwritten or from an incompatible qbench raises CorruptFile naming it."""
    remedy = "delete the run folder and run its suite again"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Recipe.model_validate(raw)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise CorruptFile(f"{path}: not a readable run config ({type(e).__name__}); {remedy}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise CorruptFile(f"{path}: not a valid run config ({where}: {first['msg']}); {remedy}") from None
