"""Lexicon-constrained CTC decoding and the word n-gram model behind it."""

import json
import math
from collections import defaultdict

import pytest
import torch

from qbench.config import Recipe
from qbench.tasks.asr import ASRTask, ctc_greedy_decode
from qbench.tasks.ngram import arpa_text
from qbench.tasks.tokenizers import CharTokenizer

TEXTS = ["the cat sat", "the dog sat", "a cat ran", "the cat ran home", "a dog sat home"]


def parse_arpa(text: str) -> tuple[dict, dict]:
    logp, backoff = {}, {}
    order = 0
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1])
            continue
        parts = line.split("\t")
        if order and len(parts) >= 2:
            gram = tuple(parts[1].split())
            logp[gram] = float(parts[0])
            if len(parts) == 3:
                backoff[gram] = float(parts[2])
    return logp, backoff


def prob(logp: dict, backoff: dict, gram: tuple) -> float:
    if gram in logp:
        return 10 ** logp[gram]
    return 10 ** backoff.get(gram[:-1], 0.0) * prob(logp, backoff, gram[1:])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_is_a_distribution_for_every_history(order):
    logp, backoff = parse_arpa(arpa_text(TEXTS, order))
    vocab = [g[0] for g in logp if len(g) == 1 and g[0] != "<s>"]
    assert "<unk>" in vocab and "</s>" in vocab
    histories = {g[:-1] for g in logp if len(g) > 1} | {()}
    for h in histories:
        total = sum(prob(logp, backoff, (*h, w)) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), h


def test_ngram_prefers_what_the_text_says():
    logp, backoff = parse_arpa(arpa_text(TEXTS, 3))
    # "the" is followed by cat (2 of 3) far more than by sat (never)
    assert prob(logp, backoff, ("the", "cat")) > 5 * prob(logp, backoff, ("the", "sat"))
    counts = defaultdict(int)
    for t in TEXTS:
        counts[t.split()[0]] += 1
    assert prob(logp, backoff, ("<s>", "the")) > prob(logp, backoff, ("<s>", "a")) > 0


def emissions(text: str, tok: CharTokenizer, noise: dict[int, str] | None = None) -> torch.Tensor:
    """CTC log-probabilities whose best path spells `text` (a blank between letters), with the
    letters at the positions in `noise` replaced by others."""
    path = []
    for i, c in enumerate(text):
        path += [tok.encode((noise or {}).get(i, c))[0], 0]
    lp = torch.full((len(path), tok.size), -8.0)
    for t, u in enumerate(path):
        lp[t, u] = -0.05
        if noise and t // 2 in noise and u:  # the true letter is the runner-up
            lp[t, tok.encode(text[t // 2])[0]] = -0.7
    return torch.log_softmax(lp, -1)


def lexicon_task(tmp_path, lm_order: int) -> ASRTask:
    raw = {
        "name": "lex",
        "eval": {"decoder": "lexicon", "beam_size": 20, "lm_order": lm_order, "lm_weight": 1.0},
    }
    task = ASRTask(Recipe.model_validate(raw), tmp_path, progress=False)
    task.splits = {"train": {"texts": TEXTS}}
    return task


@pytest.mark.parametrize("lm_order", [0, 3])
def test_lexicon_decoder_snaps_a_misspelling_to_a_training_word(tmp_path, lm_order):
    task = lexicon_task(tmp_path, lm_order)
    tok = task.tokenizer
    lp = emissions("the cat ran", tok, noise={5: "x"})  # greedy reads "the cxt ran"
    lengths = torch.tensor([lp.shape[0]])
    assert ctc_greedy_decode(lp[None], lengths, tok) == ["the cxt ran"]
    best = task.lexicon_decoder(lp[None].contiguous(), lengths.int())
    assert " ".join(best[0][0].words) == "the cat ran"
    assert task.lexicon == sorted({w for t in TEXTS for w in t.split()})


def test_lexicon_decoding_end_to_end_records_greedy_beside_it(tmp_path, results):
    from qbench.config import load_suite
    from qbench.run.engine import run_recipe
    from tests.conftest import tiny_recipe

    recipe_file = tiny_recipe(tmp_path / "r.yaml", technique="float", steps=6, warmup=0)
    over = ["eval.decoder=lexicon", "eval.beam_size=8", "eval.lm_order=2", "eval.precisions=[float]"]
    (recipe,) = load_suite(recipe_file, over).runs
    run_recipe(recipe, "tiny", results, torch.device("cpu"), progress=False)
    run_dir = next((results / "runs" / "tiny").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())["precisions"]["float"]
    assert {"wer", "wer_greedy", "cer_greedy"} <= set(metrics)
    assert metrics["decoder"].startswith("lexicon (beam 8")
    # (the 6-step model still emits only blanks, so which words it spells is tested above)
    assert math.isfinite(metrics["wer"])


def test_lexicon_decoder_is_for_asr_only(tmp_path):
    from qbench.config import RecipeError, load_suite

    f = tmp_path / "mt.yaml"
    f.write_text("name: m\ntask: mt\neval: {decoder: lexicon}\n")
    with pytest.raises(RecipeError, match="eval.decoder"):
        load_suite(f)


def test_lexicon_decoder_with_subword_units_is_refused_before_training(tmp_path):
    from qbench.config import RecipeError, load_suite

    f = tmp_path / "bpe.yaml"
    f.write_text("name: b\ntask: asr\nmodel: {units: bpe, vocab_size: 64}\neval: {decoder: lexicon}\n")
    with pytest.raises(RecipeError, match="lexicon decoding needs model.units: chars"):
        load_suite(f)
