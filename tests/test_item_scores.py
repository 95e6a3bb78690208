"""Per-item scores (items/<precision>.csv.gz): written for every evaluated precision, summing (or
rescoring) to the corpus metric the run records, clustered by speaker, absent from older runs."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import jiwer
import numpy as np
import pandas as pd
import pytest
import sacrebleu
import soundfile as sf
import torch

from qbench.config import load_suite
from qbench.data.synthetic_speech import TEST_VOICES
from qbench.io import CorruptFile
from qbench.run.engine import run_recipe
from qbench.store import RunDir, items_path, read_items, read_results, write_items
from qbench.tasks.asr import ASRTask, scored_utterances
from qbench.tasks.base import EvalResult
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")
ASR_COLUMNS = ["test_set", "id", "cluster", "word_errors", "ref_words", "char_errors", "ref_chars"]


def rate(items: pd.DataFrame, errors: str, length: str) -> float:
    return int(items[errors].sum()) / int(items[length].sum())


def test_asr_items_sum_to_the_recorded_wer_and_cer(tmp_path, results):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml"), ["eval.long_form=[2]"]).runs[0]
    metrics = run_recipe(recipe, "tiny", results, CPU, progress=False)
    run = results / "runs" / "tiny" / recipe.run_id
    voices = {v.name for v in TEST_VOICES}
    for precision in ("float", "w8", "w4"):
        items = read_items(run, precision)
        assert items is not None and list(items.columns) == ASR_COLUMNS
        p = metrics["precisions"][precision]
        test = items[items.test_set == "test"]
        assert len(test) == p["utterances"] == 6
        assert abs(rate(test, "word_errors", "ref_words") - p["wer"]) <= 1e-12
        assert abs(rate(test, "char_errors", "ref_chars") - p["cer"]) <= 1e-12
        assert int(test.ref_words.sum()) == p["reference_words"]
        assert int(test.word_errors.sum()) == p["substitutions"] + p["deletions"] + p["insertions"]
        assert set(test.cluster) <= voices  # synthetic speech: each utterance's voice
        joined = items[items.test_set == "test@x2"]  # long-form: its own test set
        assert len(joined) == p["utterances@x2"] == 3
        assert abs(rate(joined, "word_errors", "ref_words") - p["wer@x2"]) <= 1e-12
        assert abs(rate(joined, "char_errors", "ref_chars") - p["cer@x2"]) <= 1e-12
        assert list(joined.id) == [f"{a}+{b}" for a, b in zip(test.id[::2], test.id[1::2], strict=True)]
        assert RunDir(results, "tiny", recipe).read_items(precision).equals(items)
    # beside the index rows: every run_dir the index names has items for its precisions
    index = read_results(results)
    assert len(index) == 3 * 4  # precisions x (wer, cer, wer@x2, cer@x2)
    assert all(read_items(r.run_dir, r.precision) is not None for r in index.itertuples())


TINY_MT = """\
name: tiny-mt
task: mt
seed: 0
data: {source: synthetic-mt, train_sentences: 120, valid_sentences: 4, test_sentences: 10}
model: {d_model: 16, encoder_layers: 1, decoder_layers: 1, heads: 2, ffn_mult: 2, vocab_size: 150}
quant: {technique: rand, bits: 4, float_warmup_steps: 3}
train: {steps: 6, batch_size: 8, lr: 3.0e-3, warmup: 2, checkpoint_every: 3, log_every: 1}
eval: {precisions: [float, w8, w4], batch_size: 4, beam_size: 2, hypotheses: false}
"""


def test_mt_items_rescore_to_the_recorded_bleu_and_chrf(tmp_path, results):
    (tmp_path / "mt.yaml").write_text(TINY_MT)
    recipe = load_suite(tmp_path / "mt.yaml").runs[0]
    metrics = run_recipe(recipe, "tiny-mt", results, CPU, progress=False)
    run = results / "runs" / "tiny-mt" / recipe.run_id
    assert not (run / "hyp").exists()  # items are written without eval.hypotheses
    for precision in ("float", "w8", "w4"):
        items = read_items(run, precision)
        assert items is not None and list(items.columns) == ["test_set", "id", "reference", "hypothesis"]
        assert list(items.id) == [f"test-{i}" for i in range(10)] and set(items.test_set) == {"test"}
        p = metrics["precisions"][precision]
        hyps, refs = list(items.hypothesis), [list(items.reference)]
        assert sacrebleu.corpus_bleu(hyps, refs).score == p["bleu"]
        assert sacrebleu.corpus_chrf(hyps, refs).score == p["chrf"]


def make_fsdd(root: Path, speakers: tuple[str, ...], takes: int = 2) -> Path:
    """Tone 'recordings' named as FSDD names them, {digit}_{speaker}_{take}.wav at 8 kHz."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for take in range(takes):
                t = np.arange(800) / 8000
                audio = 0.3 * np.sin(2 * np.pi * (200 + 40 * digit + 15 * s) * t)
                sf.write(rec / f"{digit}_{speaker}_{take}.wav", audio.astype(np.float32), 8000)
    return root


FSDD_RECIPE = """\
name: fsdd-tiny
task: asr
data: {{source: fsdd-digits, path: {path}, train_speakers: [ann, bob], test_speakers: [cat, dan],
        valid_takes: 1, train_utterances: 8, valid_utterances: 2, test_utterances: 8, max_digits: 3}}
model: {{d_model: 16, layers: 1, heads: 2, conv_kernel: 3}}
quant: {{technique: float, bits: 4}}
train: {{steps: 2, batch_size: 4, warmup: 1, checkpoint_every: 2}}
eval: {{precisions: [float, w4], batch_size: 4}}
"""


def test_fsdd_items_cluster_by_speaker(tmp_path):
    path = make_fsdd(tmp_path / "fsdd", ("ann", "bob", "cat", "dan"))
    (tmp_path / "r.yaml").write_text(FSDD_RECIPE.format(path=path))
    recipe = load_suite(tmp_path / "r.yaml").runs[0]
    results = tmp_path / "results"
    metrics = run_recipe(recipe, "fsdd-tiny", results, CPU, progress=False)
    for precision in ("float", "w4"):
        items = RunDir(results, "fsdd-tiny", recipe).read_items(precision)
        assert items is not None and len(items) == 8
        assert set(items.cluster) == {"cat", "dan"}  # the test speakers, never an utterance id
        assert all(uid.endswith(f"-{c}") for uid, c in zip(items.id, items.cluster, strict=True))
        wer = metrics["precisions"][precision]["wer"]
        assert abs(rate(items, "word_errors", "ref_words") - wer) <= 1e-12


def recipe_of(tmp_path: Path, data: str):
    (tmp_path / "c.yaml").write_text(
        f"name: c\ntask: asr\ndata: {data}\nmodel: {{d_model: 16, layers: 1, heads: 2}}\n"
        "quant: {technique: float}\ntrain: {steps: 1}\n"
    )
    return load_suite(tmp_path / "c.yaml").runs[0]


@pytest.mark.parametrize(
    ("data", "ids", "clusters"),
    [
        (
            "{source: fsdd-digits, path: /nowhere}",
            ["test-00000-theo", "test-00001-jackson", "odd"],
            ["theo", "jackson", "odd"],
        ),
        (
            "{source: librispeech, path: /nowhere}",
            ["1089-134686-0000", "121-123852-0001"],
            ["1089", "121"],
        ),
        # a manifest's utterances carry no speaker in their id: each is its own cluster
        ("{source: manifest, train: a.tsv, valid: b.tsv, test: c.tsv}", ["test-000002"], ["test-000002"]),
    ],
)
def test_clusters_from_the_ids_of_each_source(tmp_path, data, ids, clusters):
    task = ASRTask(recipe_of(tmp_path, data), tmp_path, progress=False)
    task.splits = {"test": {"ids": ids, "texts": ["a"] * len(ids), "feats": [torch.zeros(3, 80)] * len(ids)}}
    assert task.clusters("test") == tuple(clusters)
    # where the data holds speakers, they decide; an empty one falls back to the id
    task.splits["valid"] = {"ids": ids, "speakers": ["x", *[""] * (len(ids) - 1)]}
    assert task.clusters("valid") == ("x", *ids[1:])


def test_long_form_clusters_join_the_speakers_of_their_utterances(tmp_path):
    task = ASRTask(recipe_of(tmp_path, "{source: fsdd-digits, path: /nowhere}"), tmp_path, progress=False)
    ids = ["test-00000-theo", "test-00001-theo", "test-00002-theo", "test-00003-ann"]
    task.splits = {"test": {"ids": ids, "texts": ["one"] * 4, "feats": [torch.zeros(3, 80)] * 4}}
    assert task.clusters(task.long_form_split(2)) == ("theo", "theo+ann")


def test_synthetic_speech_clusters_are_the_planned_voices(tmp_path, results):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml")).runs[0]
    task = ASRTask(recipe, results / "cache", progress=False)
    task.build_data()
    voices = task.clusters("test")
    assert len(voices) == 6 and set(voices) <= {v.name for v in TEST_VOICES}
    synthesised = next((results / "cache" / "synthetic-speech").glob("*/test.npz"))
    with np.load(synthesised) as arrays:  # what the generator recorded for each utterance
        assert list(arrays["ids"]) == task.splits["test"]["ids"] and list(arrays["speakers"]) == list(voices)


def test_per_utterance_counts_are_jiwers():
    rng = random.Random(0)
    words = ["a", "bb", "ccc", "dd", "e'f"]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(200)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(200)]
    details, counts = scored_utterances(refs, hyps)
    w, nw, c, nc = (list(x) for x in zip(*counts, strict=True))
    assert details["wer"] == jiwer.wer(refs, hyps) == sum(w) / sum(nw)
    assert details["cer"] == jiwer.cer(refs, hyps) == sum(c) / sum(nc)
    assert nw == [len(r.split()) for r in refs] and nc == [len(r) for r in refs]
    for ref, hyp, (we, _, ce, _) in zip(refs, hyps, counts, strict=True):
        assert we == round(jiwer.wer(ref, hyp) * len(ref.split()))
        assert ce == round(jiwer.cer(ref, hyp) * len(ref))
    _, ((we, nwe, ce, nce),) = scored_utterances(["one two three"], ["one too three four"])
    assert (we, nwe, ce, nce) == (2, 3, 6, 13)  # two -> too, + four; w -> o, + " four"


def test_items_round_trip_text_exactly_and_old_runs_read_as_none(tmp_path):
    run = tmp_path / "run"
    assert read_items(run, "w4") is None  # a run from before per-item scores
    texts = ['a, "quoted" one', "", "NA", "  spaced ", "line\nbreak\rreturn", "19", "null", "ü € 中"]
    items = [
        {"test_set": "test", "id": str(i), "cluster": "19", "reference": t, "hypothesis": t[::-1]}
        for i, t in enumerate(texts)
    ]
    write_items(run, "w4", items)
    back = read_items(run, "w4")
    assert back is not None and back.to_dict("records") == items
    raw = items_path(run, "w4").read_bytes()
    write_items(run, "w4", items)
    assert items_path(run, "w4").read_bytes() == raw  # the same scores give the same bytes
    assert pd.read_csv(items_path(run, "w4"), dtype=str, keep_default_na=False).shape == (8, 5)
    for bad in ("../w4", "w4/x", ""):
        with pytest.raises(ValueError, match="not a precision name"):
            read_items(run, bad)
    items_path(run, "w8").write_bytes(gzip.compress(b"test_set,id\n")[:-6])  # truncated
    with pytest.raises(CorruptFile, match="w8.csv.gz"):
        read_items(run, "w8")


class HalfShard:
    """Rank 0 of two, the other rank's hypotheses taken from a one-process result (gather)."""

    def __init__(self, full: EvalResult):
        self.full = {i: h for i, (_, _, h) in enumerate(full.rows)}

    def take(self, items):
        return list(items[0::2])

    def gather(self, part: dict) -> dict:
        assert all(self.full[i] == h for i, h in part.items())
        return {**self.full, **part}


def test_data_parallel_evaluation_has_every_item(tmp_path, results):
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml")).runs[0]
    task = ASRTask(recipe, results / "cache", progress=False)
    task.build_data()
    torch.manual_seed(0)
    model = task.build_model()
    full = task.evaluate(model, "test", CPU, progress=False)
    sharded = task.evaluate(model, "test", CPU, progress=False, shard=HalfShard(full))
    assert len(full.items) == 6 and sharded.items == full.items


def test_lexicon_items_also_score_the_greedy_hypotheses(tmp_path, results):
    over = ["eval.decoder=lexicon", "eval.beam_size=4", "eval.precisions=[float]"]
    recipe = load_suite(tiny_recipe(tmp_path / "r.yaml", steps=4, warmup=2), over).runs[0]
    metrics = run_recipe(recipe, "tiny", results, CPU, progress=False)["precisions"]["float"]
    items = RunDir(results, "tiny", recipe).read_items("float")
    assert items is not None and list(items.columns) == [
        *ASR_COLUMNS,
        "word_errors_greedy",
        "char_errors_greedy",
    ]
    assert abs(rate(items, "word_errors", "ref_words") - metrics["wer"]) <= 1e-12  # the lexicon decoder's
    assert abs(rate(items, "word_errors_greedy", "ref_words") - metrics["wer_greedy"]) <= 1e-12
    assert abs(rate(items, "char_errors_greedy", "ref_chars") - metrics["cer_greedy"]) <= 1e-12
