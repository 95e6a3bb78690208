"""Output units round-trip, and id 0 stays free for the CTC blank."""

from qbench.tasks.tokenizers import CharTokenizer, SentencePieceTokenizer


def test_char_tokenizer_round_trip_and_blank():
    tok = CharTokenizer()
    ids = tok.encode("don't stop")
    assert 0 not in ids and tok.decode(ids) == "don't stop"
    assert tok.decode([0, *ids, 0]) == "don't stop"
    assert tok.size == 29


def test_sentencepiece_trains_once_and_round_trips(tmp_path):
    texts = [
        f"the {a} {b} sees a {c} dog"
        for a in ("big", "small", "red")
        for b in ("cat", "cow")
        for c in ("tall", "odd")
    ]
    cache = tmp_path / "spm.model"
    tok = SentencePieceTokenizer.train(texts * 5, 40, cache)
    assert cache.is_file()
    ids = tok.encode("the big cat sees a tall dog")
    assert min(ids) >= 1 and tok.decode(ids) == "the big cat sees a tall dog"
    again = SentencePieceTokenizer.train(["something else entirely"], 40, cache)  # cached: not retrained
    assert again.encode("the big cat") == tok.encode("the big cat")
