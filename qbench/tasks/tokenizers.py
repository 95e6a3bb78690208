"""Output units: characters, or sentencepiece subwords trained on the training transcripts.

Id 0 is reserved (the CTC blank for ASR, padding for MT); unit ids start at 1.

The sentencepiece vocabulary size comes from the recipe's ``model.vocab_size``. It is a soft limit
(``hard_vocab_limit=False``: a smaller vocabulary is fine when the text has few merges), but not
below one piece per distinct character of the training text plus the reserved symbols (unk, and
<s> </s> for sequence-to-sequence targets): sentencepiece refuses that, and so does `train`, with
a `DataError` naming the key and the smallest size that works.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import sentencepiece as spm

from qbench.data import DataError
from qbench.io import atomic_write_bytes

# sentencepiece's words when the vocabulary cannot hold every character: "... required_chars. 25 vs 26"
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class CharTokenizer:
    units = (" ", "'", *"abcdefghijklmnopqrstuvwxyz")

    def __init__(self) -> None:
        self._ids = {c: i + 1 for i, c in enumerate(self.units)}

    @property
    def size(self) -> int:
        return len(self.units) + 1

    def encode(self, text: str) -> list[int]:
        return [self._ids[c] for c in text if c in self._ids]

    def decode(self, ids: list[int]) -> str:
        return " ".join("".join(self.units[i - 1] for i in ids if i > 0).split())


class SentencePieceTokenizer:
    """A BPE model trained once per (texts, vocabulary size) and cached by its hash.

    With ``bos_eos=True`` (sequence-to-sequence targets) the model also reserves begin- and
    end-of-sentence symbols; ``encode`` never adds them, the caller places them.
    """

    pad_id = 0

    def __init__(self, model_proto: bytes):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls,
        texts: list[str],
        vocab_size: int,
        cache_file: Path,
        bos_eos: bool = False,
        key: str = "model.vocab_size",
    ) -> SentencePieceTokenizer:
        """Train on ``texts`` unless ``cache_file`` exists; its name must encode everything passed here.
        A vocabulary too small for the texts' characters is a DataError naming the recipe `key`."""
        if cache_file.is_file():
            return cls(cache_file.read_bytes())
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=buf,
                vocab_size=vocab_size,
                model_type="bpe",
                character_coverage=1.0,
                unk_id=0,
                bos_id=1 if bos_eos else -1,
                eos_id=2 if bos_eos else -1,
                num_threads=1,
                minloglevel=2,
                hard_vocab_limit=False,
            )
        except RuntimeError as e:
            m = _TOO_SMALL.search(str(e))
            if m is None:
                raise
            reserved = 3 if bos_eos else 1
            raise DataError(
                f"{key}: {vocab_size} is too small for the training text, whose {int(m[2]) - reserved} "
                f"distinct characters and {reserved} reserved symbol(s) need at least {m[2]}: "
                f"set {key} to {m[2]} or more"
            ) from None
        atomic_write_bytes(cache_file, buf.getvalue())
        return cls(buf.getvalue())

    @property
    def size(self) -> int:
        return self.sp.get_piece_size() + 1

    @property
    def bos_id(self) -> int:
        if self.sp.bos_id() < 0:
            raise ValueError("this sentencepiece model has no begin-of-sentence symbol (train with bos_eos)")
        return self.sp.bos_id() + 1

    @property
    def eos_id(self) -> int:
        if self.sp.eos_id() < 0:
            raise ValueError("this sentencepiece model has no end-of-sentence symbol (train with bos_eos)")
        return self.sp.eos_id() + 1

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text)]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.sp.decode([i - 1 for i in ids if i > 0]).split())
