"""Run ids and shared-training keys: hashes of what determines a run's result.

A run id is ``<technique>-w<bits>-seed<seed>-<hash>``; the hash covers the resolved recipe but
what only changes speed (``train.compile``) and keys the model does not use (the transducer's
``pred_dim`` and ``joiner_dim`` on a CTC model). Options listed in :data:`HASHED_WHEN_SET` enter
the hash only when they differ from their default, so adding an option to the schema never moves
the ids of recipes that do not use it: every new option goes there, and so does every option a
scale function or an estimator declares (qbench.quant.techniques.OPTIONS) but those declared
``hashed_at_default``. ``technique: clip`` hashes its quant keys at their defaults too, but for the
options of parts it does not use. tests/test_run_ids.py pins the ids and keys of every committed
recipe.

The training key names the weights a run trains (its float warm-up, or its whole training), so
runs that share them (a suite's techniques after a common float warm-up; ptq beside float) train
them once.

Neither holds what a run is only scored on, nor where its data lies (:data:`EVALUATION_DATA_KEYS`):
scoring a run on another test split, or moving its data, is an evaluation of the same run
(``qbench eval``), not a new training. ``legacy=True`` gives the ids and keys of qbench versions
that hashed those keys too, so results roots written by them are adopted (qbench.run.adopt).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from qbench.quant.techniques import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, OPTIONS, preset_options

#: (section, key) -> default: hashed only when set to another value
HASHED_WHEN_SET: dict[tuple[str, str], Any] = {
    ("quant", "scale"): None,
    ("quant", "estimator"): None,
    ("quant", "scale_grad"): None,
    ("quant", "group_size"): None,
    ("quant", "include"): list(DEFAULT_INCLUDE),
    ("quant", "exclude"): list(DEFAULT_EXCLUDE),
    ("quant", "activations"): None,
    ("quant", "float_dtype"): "bfloat16",
    ("quant", "qat_lr"): None,
    ("quant", "train_precision"): None,
    ("quant", "qat_steps"): 0,
    ("eval", "long_form"): [],
    ("model", "vtlp"): 0.0,
    ("eval", "decoder"): "greedy",
    ("eval", "word_score"): 0.0,
    ("eval", "lm_order"): 0,
    ("eval", "lm_weight"): 2.0,
    ("train", "pad_to_multiple"): 0,
    ("train", "precision"): "bf16",
    ("train", "optimizer_impl"): "foreach",
    **{("quant", o.name): o.default for o in OPTIONS if not o.hashed_at_default},
}

#: quant keys added after `technique: clip` hashed all its keys: hashed for clip only when set
CLIP_ADDED = {"train_precision": None, "qat_steps": 0}

#: data keys, per data source, that choose only what a trained model is scored on (its test split)
#: or where the data lies: left out of run ids and training keys, and what `qbench eval --set`
#: may change. synthetic-mt has none: its held-out (valid and test) sentences are kept out of
#: training, so its test_sentences shape the training set.
EVALUATION_DATA_KEYS: dict[str, frozenset[str]] = {
    "synthetic-speech": frozenset({"test_utterances"}),
    "fsdd-digits": frozenset({"path", "test_speakers", "test_utterances"}),
    "librispeech": frozenset({"path", "test"}),
    "manifest": frozenset({"test"}),
    "synthetic-mt": frozenset(),
    "multi30k": frozenset({"path", "test_set"}),
    "parallel": frozenset({"test"}),
}

#: train keys of the learning curve only, at their defaults: in run ids (what a run records), not
#: in training keys
CURVE_KEYS = {"eval_every": 0, "curve_split": "valid"}
#: model keys only the transducer uses (left out of a CTC run's hash)
TRANSDUCER_ONLY = ("pred_dim", "joiner_dim")


def stable_hash(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _drop_defaults(section: str, d: dict) -> dict:
    return {
        k: v
        for k, v in d.items()
        if not ((section, k) in HASHED_WHEN_SET and v == HASHED_WHEN_SET[section, k])
    }


# Every function here reads a recipe (qbench.config.schema.Recipe) or its quant section through
# its JSON dump: what is hashed is what the dump holds.


def _filter_quant(q: dict) -> dict:
    if q["technique"] != "clip":
        return _drop_defaults("quant", q)
    # clip: every key, but the options of parts it does not use and the keys added since
    # (CLIP_ADDED) where they are at their defaults
    others = {
        o.name: o.default for o in OPTIONS if not o.hashed_at_default and o not in preset_options("clip")
    } | CLIP_ADDED
    return {k: v for k, v in q.items() if not (k in others and v == others[k])}


def hashed_quant(quant: BaseModel) -> dict:
    """The `quant:` section as it enters run ids and the training key of a QAT run."""
    return _filter_quant(quant.model_dump(mode="json"))


def training_data(data: dict) -> dict:
    """A recipe's `data:` section (JSON dump) without its evaluation keys: what training reads."""
    dropped = EVALUATION_DATA_KEYS[data["source"]]
    return {k: v for k, v in data.items() if k not in dropped}


def hashed_sections(recipe: BaseModel, legacy: bool = False) -> dict:
    """Every section but `quant:` as it enters run ids and training keys (`quant` unfiltered)."""
    d = recipe.model_dump(mode="json")
    d.pop("variant", None)  # a label for leaderboards: the grid point's other keys are hashed already
    for section in ("eval", "model", "train"):
        d[section] = _drop_defaults(section, d[section])
    if not legacy:
        d["data"] = training_data(d["data"])
    for key in ("compile", "compile_mode"):  # speed only: compiled and eager runs are the same run
        del d["train"][key]
    if d["model"]["arch"] == "conformer-ctc":
        for key in TRANSDUCER_ONLY:
            d["model"].pop(key, None)
    return d


def run_id(recipe: BaseModel, legacy: bool = False) -> str:
    d = hashed_sections(recipe, legacy)
    q = d["quant"]
    digest = stable_hash({**d, "quant": _filter_quant(q)})
    return f"{q['technique']}-w{q['bits']}-seed{d['seed']}-{digest[:8]}"


def training_key(recipe: BaseModel, float_until: int | None = None, legacy: bool = False) -> str:
    """What determines the weights after training (or after the first `float_until` float steps)."""
    d = hashed_sections(recipe, legacy)
    parts = _float_parts(d)
    if float_until is not None:
        parts["float_until"] = float_until
    elif d["quant"]["technique"] not in ("float", "ptq"):  # a QAT run's own training
        parts["quant"] = _filter_quant(d["quant"])
    return stable_hash(parts)


def _float_parts(d: dict) -> dict:
    parts = {k: d[k] for k in ("task", "seed", "data", "model", "train")}
    # the learning curve is recorded beside training, not part of it (evaluation draws no random
    # numbers): runs that differ only in it share their float training. Its keys are hashed at
    # their defaults, so the keys of runs that record no curve stay what they were.
    parts["train"] = {**parts["train"], **CURVE_KEYS}
    return parts


def float_training_key(recipe: BaseModel) -> str:
    """The training key of the recipe's float training alone: what `technique: float` with the
    same task, seed, data, model and train sections trains. A QAT run with `quant.qat_steps`
    starts from those weights."""
    return stable_hash(_float_parts(hashed_sections(recipe)))
