"""Run ids and shared-training keys are pinned: a change that moves any of them would orphan
every finished run and every shared float warm-up in existing results roots. When ids are meant
to change (a change in what is trained), rewrite the table with
`python tests/test_run_ids.py` and say why in the commit message."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

from qbench.config import EVALUATION_DATA_KEYS, load_suite, run_id, training_key

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path(__file__).resolve().parent / "data" / "run_ids.json"

#: --set variants that reach the schema's optional keys (each starts without the grid)
VARIANTS = {
    "recipes/ci.yaml": [
        ["grid=", "quant.technique=clip"],
        ["grid=", "quant.technique=lsq", "quant.activations=a8"],
        [
            "grid=",
            "quant.technique=custom",
            "quant.scale=topk-lp",
            "quant.estimator=round-ste",
            "quant.scale_grad=false",
        ],
        [
            "grid=",
            "quant.technique=ste",
            "quant.granularity=per-group",
            "quant.group_size=3",
            "quant.qat_lr=0.001",
        ],
        ["grid=", "quant.technique=pqn", "quant.float_dtype=float32", "quant.include=['*.weight']"],
        ["grid=", "model.arch=conformer-transducer", "quant.technique=pact"],
        ["eval.long_form=[4]", "model.vtlp=0.1"],
    ],
}


def current_table() -> list[dict]:
    rows = []
    recipes = sorted(
        glob.glob("recipes/*.yaml", root_dir=ROOT) + glob.glob("benchmarks/*.yaml", root_dir=ROOT)
    )
    for name in recipes:
        for sets in [[], *VARIANTS.get(name, [])]:
            for recipe in load_suite(ROOT / name, sets).runs:
                warmup = recipe.quant.float_warmup_steps
                rows.append(
                    {
                        "recipe": name,
                        "set": sets,
                        "run_id": recipe.run_id,
                        "training_key": training_key(recipe)[:16],
                        "warmup_key": training_key(recipe, float_until=warmup)[:16] if warmup else None,
                    }
                )
    return rows


def test_run_ids_and_training_keys_are_pinned():
    expected = json.loads(TABLE.read_text())
    actual = current_table()
    assert len(actual) == len(expected) > 200
    changed = [(e, a) for e, a in zip(expected, actual, strict=True) if e != a]
    assert not changed, f"{len(changed)} run ids or keys moved; first: {changed[0]}"


def test_the_pin_detects_a_changed_default():
    """A pin that cannot fail guards nothing: dropping a compatibility entry must move ids."""
    from qbench.config import run_ids

    before = current_table()
    table = run_ids.HASHED_WHEN_SET
    saved = dict(table)
    try:
        table.pop(("model", "vtlp"))
        after = current_table()
    finally:
        table.clear()
        table.update(saved)
    assert sum(b["run_id"] != a["run_id"] for b, a in zip(before, after, strict=True)) > 50


if __name__ == "__main__":
    TABLE.write_text(json.dumps(current_table(), indent=1) + "\n")
    print(f"wrote {TABLE}", file=sys.stderr)


def test_the_learning_curve_enters_run_ids_but_not_training_keys():
    plain = load_suite(ROOT / "benchmarks/rand-paper.yaml", ["grid=", "seed=0"]).runs[0]
    curve = load_suite(ROOT / "benchmarks/rand-paper.yaml", ["grid=", "seed=0", "train.eval_every=100"]).runs[
        0
    ]
    test = load_suite(
        ROOT / "benchmarks/rand-paper.yaml", ["grid=", "seed=0", "train.curve_split=test"]
    ).runs[0]
    assert len({plain.run_id, curve.run_id, test.run_id}) == 3  # what a run records differs
    assert training_key(plain) == training_key(curve) == training_key(test)  # what it trains does not
    n = plain.quant.float_warmup_steps
    assert training_key(plain, float_until=n) == training_key(curve, float_until=n)


LEGACY = Path(__file__).resolve().parent / "data" / "run_ids_legacy.json"


def test_legacy_ids_are_those_of_results_roots_written_before_the_test_split_left_them():
    """`legacy=True` reproduces the ids and keys that also hashed the test split and data folder
    (the first grid point of each recipe and variant, pinned when they were today's ids)."""
    for row in json.loads(LEGACY.read_text()):
        recipe = load_suite(ROOT / row["recipe"], row["set"]).runs[0]
        warmup = recipe.quant.float_warmup_steps
        assert run_id(recipe, legacy=True) == row["run_id"], row["recipe"]
        assert training_key(recipe, legacy=True)[:16] == row["training_key"]
        if warmup:
            assert training_key(recipe, float_until=warmup, legacy=True)[:16] == row["warmup_key"]
        # today's differ where the source has evaluation keys: the legacy ones are a mapping
        assert (run_id(recipe) != row["run_id"]) == bool(EVALUATION_DATA_KEYS[recipe.data.source])


def _one(name: str, *sets: str):
    return load_suite(ROOT / name, ["grid=", *sets]).runs[0]


def test_the_test_split_and_data_folder_do_not_name_a_training():
    cases = {
        "recipes/asr-fsdd.yaml": ["data.test_speakers=[lucas]", "data.test_utterances=40", "data.path=/else"],
        "recipes/mt-multi30k.yaml": ["data.test_set=test_2017_flickr", "data.path=/else"],
        "recipes/demo.yaml": ["data.test_utterances=1500"],
    }
    for name, sets in cases.items():
        base = _one(name)
        for s in sets:
            other = _one(name, s)
            assert other.data != base.data, s
            assert other.run_id == base.run_id, s
            assert training_key(other) == training_key(base), s
            assert run_id(other, legacy=True) != run_id(base, legacy=True), s


def test_synthetic_mt_test_sentences_still_name_a_training():
    """Its held-out sentences are kept out of training: more test sentences, another training set."""
    base = _one("recipes/mt-synthetic.yaml")
    other = _one("recipes/mt-synthetic.yaml", "data.test_sentences=1200")
    assert other.run_id != base.run_id and training_key(other) != training_key(base)
