"""Machine translation: scoring, decoding, parallel-text readers and one tiny end-to-end run."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
from pathlib import Path

import pytest
import sacrebleu
import torch

from qbench.config import Multi30kData, ParallelData, load_suite
from qbench.data.parallel_text import DataError, load_multi30k, load_parallel, read_aligned, read_tsv
from qbench.run.engine import run_recipe
from qbench.tasks.mt import (
    TransformerMT,
    beam_search,
    gnmt_length_penalty,
    greedy_decode,
    max_output_lengths,
    translation_result,
)
from qbench.tasks.tokenizers import SentencePieceTokenizer

CPU = torch.device("cpu")
BOS, EOS = 2, 3


def test_bleu_and_chrf_are_sacrebleus() -> None:
    refs = ["Der kleine Hund sieht die große Katze.", "Ich weiß, dass er schläft.", "Sie läuft ins Haus."]
    hyps = [
        "Der kleine Hund sieht eine große Katze.",
        "Ich weiß, dass er schläft.",
        "Sie geht ins Haus hinein.",
    ]
    result = translation_result(["a", "b", "c"], refs, hyps, "greedy")
    assert result.metric.name == "bleu" and result.metric.higher_is_better
    assert result.value == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert result.details["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert result.details["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert result.details["chrf_signature"].startswith(
        "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:"
    )
    assert result.details["sentences"] == 3
    assert result.rows == list(zip(["a", "b", "c"], refs, hyps, strict=True))


def tiny_model(seed: int) -> TransformerMT:
    torch.manual_seed(seed)
    return TransformerMT(
        vocab_size=24,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        ffn_mult=2,
        dropout=0.0,
        max_len=32,
    ).eval()


def random_sources(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 24, (6, 7), generator=g)
    src[2, 3:] = 0  # padding
    src[4, 5:] = 0
    return src


@pytest.mark.parametrize("seed", range(4))
def test_beam_one_is_greedy(seed: int) -> None:
    model, src = tiny_model(seed), random_sources(seed)
    # an untrained model rarely ends by itself: favour </s> so both paths end early and at the limit
    with torch.no_grad():
        model.embed.weight[EOS] *= 4
    limits = max_output_lengths((src != 0).sum(1), model.max_len - 1)
    greedy = greedy_decode(model, src, BOS, EOS, limits)
    assert beam_search(model, src, BOS, EOS, limits, beam_size=1, length_penalty=1.0) == greedy
    assert {len(h) for h in greedy} != {int(limits.max())}  # some ended with </s>, not only at the limit


def exhaustive_best(model: TransformerMT, src: torch.Tensor, limit: int, alpha: float) -> list[int]:
    """The best output by brute force: every sequence that ends with </s> within `limit` tokens
    or stops at the limit, scored by log-probability / GNMT length penalty."""
    memory, padding = model.encode(src[None])
    allowed = [t for t in range(model.embed.num_embeddings) if t not in (0, BOS)]
    best, best_score = None, -math.inf
    for length in range(1, limit + 1):
        for seq in itertools.product(allowed, repeat=length):
            if EOS in seq[:-1] or (seq[-1] != EOS and length < limit):
                continue
            tokens = torch.tensor([[BOS, *seq]])
            logits = model.logits(model.decode(tokens[:, :-1], memory, padding)).float()
            logits[..., 0] = logits[..., BOS] = -math.inf
            log_prob = logits.log_softmax(-1)[0].gather(1, tokens[0, 1:, None]).sum().item()
            score = log_prob / gnmt_length_penalty(length, alpha)
            if score > best_score:
                best, best_score = [t for t in seq if t != EOS], score
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_optimum(alpha: float) -> None:
    """A beam wider than the search space is exhaustive, so it must return the brute-force best:
    checks the batch bookkeeping, beam reordering and length-penalised scoring."""
    torch.manual_seed(0)
    model = TransformerMT(
        vocab_size=7,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        ffn_mult=2,
        dropout=0.0,
        max_len=8,
    ).eval()
    src = torch.tensor([[4, 5, 6, 3], [6, 4, 3, 0], [5, 3, 0, 0]])
    with torch.no_grad():
        hyps = beam_search(model, src, BOS, EOS, torch.tensor([3, 3, 3]), beam_size=64, length_penalty=alpha)
        assert hyps == [exhaustive_best(model, row, 3, alpha) for row in src]


def test_beam_search_respects_length_limits() -> None:
    model, src = tiny_model(0), random_sources(0)
    limits = torch.tensor([1, 2, 3, 5, 8, 13])
    for hyp, limit in zip(beam_search(model, src, BOS, EOS, limits, 3, 0.6), limits.tolist(), strict=True):
        assert 0 < len(hyp) <= limit and EOS not in hyp and BOS not in hyp


def test_joint_bpe_reserves_padding_and_sentence_boundaries(tmp_path) -> None:
    texts = ["Der kleine Hund sieht die Katze.", "The small dog sees the cat."] * 20
    tokenizer = SentencePieceTokenizer.train(texts, 40, tmp_path / "bpe.model", bos_eos=True)
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 2, 3)
    ids = tokenizer.encode(texts[0])
    assert min(ids) > 3 and tokenizer.decode(ids) == texts[0]
    assert SentencePieceTokenizer.train(texts, 40, tmp_path / "bpe.model").eos_id == 3  # read from the cache
    with pytest.raises(ValueError, match="no end-of-sentence"):
        _ = SentencePieceTokenizer.train(texts, 40, tmp_path / "ctc.model").eos_id


# ------------------------------------------------------------------ parallel text


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("src_text", "tgt_text", "message"),
    [
        (
            "a\nb\nc\n",
            "x\ny\n",
            r"src\.txt has 3 lines but .*tgt\.txt has 2.* first unmatched line is .*src\.txt:3",
        ),
        ("", "x\n", r"src\.txt: file is empty"),
        ("a\nb\n", b"x\n\xff\xfey\n", r"tgt\.txt:2: invalid UTF-8 at byte 1 of the line"),
        ("a\n" + "b" * 21 + "\n", "x\ny\n", r"src\.txt:2: line has 21 characters, over max_line_chars=20"),
        ("a\n\nc\n", "x\ny\nz\n", r"src\.txt:2: blank line"),
    ],
    ids=["line counts", "empty", "utf-8", "too long", "blank"],
)
def test_malformed_aligned_files_name_file_and_line(tmp_path, src_text, tgt_text, message) -> None:
    src, tgt = write(tmp_path / "src.txt", src_text), write(tmp_path / "tgt.txt", tgt_text)
    with pytest.raises(DataError, match=message):
        read_aligned(src, tgt, max_line_chars=20)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tx\nb y\n", r"pairs\.tsv:2: expected source<TAB>target \(exactly one tab\), found 0 tabs"),
        ("a\tx\tz\n", r"pairs\.tsv:1: .* found 2 tabs"),
        ("a\tx\n\ty\n", r"pairs\.tsv:2: empty source side"),
    ],
    ids=["no tab", "two tabs", "empty side"],
)
def test_malformed_tsv_names_file_and_line(tmp_path, text, message) -> None:
    with pytest.raises(DataError, match=message):
        read_tsv(write(tmp_path / "pairs.tsv", text), max_line_chars=100)


def test_missing_file_is_named(tmp_path) -> None:
    cfg = ParallelData(
        train=(str(tmp_path / "train.tsv"),),
        valid=(str(tmp_path / "v.tsv"),),
        test=(str(tmp_path / "t.tsv"),),
    )
    with pytest.raises(DataError, match=r"train\.tsv: file not found"):
        load_parallel(cfg)


def test_gzip_crlf_bom_and_tsv_are_read(tmp_path) -> None:
    write(tmp_path / "train.de", gzip.compress("\ufeffHallo Welt\r\nGuten Tag\r\n".encode()))
    write(tmp_path / "train.en", "Hello world\nGood day")  # no final newline
    write(tmp_path / "valid.tsv", "one\teins\n")
    write(tmp_path / "test.tsv", "two\tzwei\n")
    cfg = ParallelData(
        train=(str(tmp_path / "train.en"), str(tmp_path / "train.de")),
        valid=(str(tmp_path / "valid.tsv"),),
        test=(str(tmp_path / "test.tsv"),),
    )
    data = load_parallel(cfg)
    assert data == {
        "train": [("Hello world", "Hallo Welt"), ("Good day", "Guten Tag")],
        "valid": [("one", "eins")],
        "test": [("two", "zwei")],
    }


def test_multi30k_without_a_path_says_how_to_set_it() -> None:
    with pytest.raises(DataError, match=r"--set data\.path="):
        load_multi30k(Multi30kData())


def test_multi30k_missing_test_set_is_named(tmp_path) -> None:
    for stem in ("train", "val"):
        for lang in ("en", "de"):
            write(tmp_path / f"{stem}.{lang}", "x\n")
    with pytest.raises(DataError, match=r"missing test_2016_flickr\.en\.gz"):
        load_multi30k(Multi30kData(path=str(tmp_path)))


def test_multi30k_reads_the_real_files(data_dir) -> None:
    data = load_multi30k(Multi30kData(path=str(data_dir / "multi30k"), src="en", tgt="de"))
    assert {split: len(pairs) for split, pairs in data.items()} == {
        "train": 29000,
        "valid": 1014,
        "test": 1000,
    }
    assert data["train"][0] == (
        "Two young, White males are outside near many bushes.",
        "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    )
    fr = load_multi30k(Multi30kData(path=str(data_dir / "multi30k"), src="de", tgt="fr"))
    assert fr["train"][0][0] == data["train"][0][1]


# ------------------------------------------------------------------ end to end

TINY_MT = """\
name: tiny-mt
task: mt
seed: 0
data: {source: synthetic-mt, train_sentences: 120, valid_sentences: 4, test_sentences: 10}
model: {d_model: 16, encoder_layers: 1, decoder_layers: 1, heads: 2, ffn_mult: 2, vocab_size: 150}
quant: {technique: rand, bits: 4, float_warmup_steps: 3}
train: {steps: 6, batch_size: 8, lr: 3.0e-3, warmup: 2, checkpoint_every: 3, log_every: 1}
eval: {precisions: [float, w4], batch_size: 4, beam_size: 2, length_penalty: 0.6}
"""


def test_tiny_mt_run_end_to_end(tmp_path, results) -> None:
    (tmp_path / "mt.yaml").write_text(TINY_MT)
    recipe = load_suite(tmp_path / "mt.yaml").runs[0]
    metrics = run_recipe(recipe, "tiny-mt", results, CPU, progress=False)
    run = results / "runs" / "tiny-mt" / recipe.run_id
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert list((results / "cache" / "spm").glob("*.model"))
    for precision in ("float", "w4"):
        p = metrics["precisions"][precision]
        assert {"bleu", "chrf", "signature", "chrf_signature", "sentences", "size_bits"} <= set(p)
        assert p["decoding"] == "beam 2, GNMT length penalty alpha=0.6" and p["sentences"] == 10
        with open(run / "hyp" / f"{precision}.tsv", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        assert len(rows) == 10
        # the stored hypotheses score exactly the reported BLEU
        assert p["bleu"] == sacrebleu.corpus_bleu([h for _, _, h in rows], [[r for _, r, _ in rows]]).score
    assert metrics["precisions"]["w4"]["size_bits"] < metrics["precisions"]["float"]["size_bits"]
