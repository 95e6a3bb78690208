"""Machine translation: joint BPE, a pre-norm Transformer encoder-decoder, beam search, BLEU/chrF.

One sentencepiece BPE model is trained on both sides of the training split, so encoder input,
decoder input and output projection share one embedding matrix (Press & Wolf 2017): a third of
the parameters of a small model, and one matrix for a quantizer to handle instead of three.
Sources end with </s> (never empty, as fairseq does); targets are <s> ... </s>.
Scores are sacrebleu's corpus BLEU and chrF on detokenised output, with their signatures.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, cast

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from qbench.config import Multi30kData, Recipe, SyntheticMTData, TransformerConfig, stable_hash
from qbench.data.parallel_text import load_multi30k, load_parallel
from qbench.data.synthetic_mt import load_synthetic_mt
from qbench.device import autocast, to_device
from qbench.progress import progress_bar
from qbench.tasks.base import EvalResult, Shard, instance_cache
from qbench.tasks.buckets import batches_of, pad_to, padded_length
from qbench.tasks.metrics import Metric, register
from qbench.tasks.tokenizers import SentencePieceTokenizer

PAD = SentencePieceTokenizer.pad_id
Pair = tuple[str, str]


def load_pairs(data) -> dict[str, list[Pair]]:
    """(source, target) pairs per split for any MT data source of a recipe."""
    if isinstance(data, SyntheticMTData):
        return load_synthetic_mt(data)
    return load_multi30k(data) if isinstance(data, Multi30kData) else load_parallel(data)


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) sines and cosines of geometrically spaced wavelengths (Vaswani et al.)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class TransformerMT(nn.Module):
    """nn.Transformer (pre-norm, batch first) between one shared embedding and its transpose."""

    positions: torch.Tensor  # buffer: the sinusoidal position table

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        encoder_layers: int,
        decoder_layers: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        max_len: int,
    ):
        super().__init__()
        self.max_len = max_len
        self.scale = math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        # std d^-1/2: scaled by sqrt(d) the inputs have unit variance, and the output logits start small
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        ffn = d_model * ffn_mult
        # nn.Transformer's default encoder warns that pre-norm rules out nested tensors; say so instead
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model, heads, ffn, dropout, "gelu", batch_first=True, norm_first=True
            ),
            encoder_layers,
            nn.LayerNorm(d_model),
            enable_nested_tensor=False,
        )
        self.transformer = nn.Transformer(
            d_model,
            heads,
            encoder_layers,
            decoder_layers,
            ffn,
            dropout,
            "gelu",
            custom_encoder=encoder,
            batch_first=True,
            norm_first=True,
        )

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embed(tokens) * self.scale + self.positions[: tokens.shape[1]])

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) token ids -> memory (B, S, d_model) and its padding mask (B, S), True at padding."""
        padding = src == PAD
        return self.transformer.encoder(self._embed(src), src_key_padding_mask=padding), padding

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) decoder input -> hidden states (B, T, d_model). No target padding mask is needed: the
        causal mask keeps real positions from seeing the padding after them, and padding is not scored."""
        length = tgt_in.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt_in.device).triu(1)
        return self.transformer.decoder(
            self._embed(tgt_in),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            memory_key_padding_mask=memory_padding,
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embed.weight)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Training: logits (B, T, vocab) of every target position."""
        memory, padding = self.encode(src)
        return self.logits(self.decode(tgt_in, memory, padding))


# ------------------------------------------------------------------ decoding


def max_output_lengths(src_lengths: torch.Tensor, limit: int) -> torch.Tensor:
    """How many tokens (</s> included) each sentence may generate: 1.5 x its source + 10, at most `limit`."""
    return (src_lengths * 1.5 + 10).long().clamp(max=limit)


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6) ** alpha (Wu et al. 2016); alpha 0 ranks by raw log-probability."""
    return ((5 + length) / 6) ** alpha


def _next_token_log_probs(
    model: TransformerMT, tokens: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor, bos: int
) -> torch.Tensor:
    logits = model.logits(model.decode(tokens, memory, memory_padding)[:, -1]).float()
    logits[:, PAD] = logits[:, bos] = -math.inf  # never generated
    return logits.log_softmax(-1)


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@torch.no_grad()
def greedy_decode(
    model: TransformerMT, src: torch.Tensor, bos: int, eos: int, max_lengths: torch.Tensor
) -> list[list[int]]:
    """The most probable next token at every step, for a batch; returns ids without <s>/</s>."""
    memory, memory_padding = model.encode(src)
    tokens = src.new_full((src.shape[0], 1), bos)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    max_lengths = max_lengths.to(src.device)
    for step in range(int(max_lengths.max())):
        best = _next_token_log_probs(model, tokens, memory, memory_padding, bos).argmax(-1)
        best = best.masked_fill(finished, PAD)
        tokens = torch.cat([tokens, best[:, None]], dim=1)
        finished |= (best == eos) | (step + 1 >= max_lengths)
        if finished.all():
            break
    return [_until_eos([t for t in seq if t != PAD], eos) for seq in tokens[:, 1:].tolist()]


@torch.no_grad()
def beam_search(
    model: TransformerMT,
    src: torch.Tensor,
    bos: int,
    eos: int,
    max_lengths: torch.Tensor,
    beam_size: int,
    length_penalty: float,
) -> list[list[int]]:
    """Batched beam search (fairseq's scheme): each step keeps the `beam_size` best unfinished
    hypotheses by log-probability; a hypothesis ending in </s> among the best `beam_size`
    candidates is set aside, scored by log-probability / GNMT length penalty; a sentence is done
    once it has `beam_size` finished hypotheses or reaches its length limit. With beam 1 this is
    exactly greedy decoding."""
    batch, k = src.shape[0], beam_size
    memory, memory_padding = model.encode(src)
    memory, memory_padding = memory.repeat_interleave(k, 0), memory_padding.repeat_interleave(k, 0)
    tokens = src.new_full((batch * k, 1), bos)
    scores = torch.full((batch, k), -math.inf, device=src.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    limits = max_lengths.tolist()
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    offsets = torch.arange(batch, device=src.device)[:, None] * k
    for step in range(max(limits)):
        log_probs = _next_token_log_probs(model, tokens, memory, memory_padding, bos)
        vocab = log_probs.shape[-1]
        candidates = (scores.reshape(-1, 1) + log_probs).view(batch, k * vocab)
        top_scores, top_ids = candidates.topk(2 * k, dim=1)  # at most k end in </s>, so k others remain
        origin, token = top_ids // vocab, top_ids % vocab
        ends = token == eos
        length = step + 1
        penalty = gnmt_length_penalty(length, length_penalty)
        history = tokens[:, 1:].tolist()
        best = zip(top_scores[:, :k].tolist(), origin[:, :k].tolist(), token[:, :k].tolist(), strict=True)
        for b, (best_scores, best_origins, best_tokens) in enumerate(best):
            if done[b]:
                continue
            at_limit = length >= limits[b]
            for score, beam, tok in zip(best_scores, best_origins, best_tokens, strict=True):
                if score == -math.inf:  # a continuation of a beam that was never live (vocab < 2 * beam)
                    continue
                if tok == eos or at_limit:
                    seq = history[b * k + beam] + ([] if tok == eos else [tok])
                    finished[b].append((score / penalty, seq))
            done[b] = at_limit or len(finished[b]) >= k
        if all(done):
            break
        # the k best candidates that did not end: sort </s> candidates behind the others, keep order
        keep = (ends.long() * 2 * k + torch.arange(2 * k, device=src.device)).argsort(dim=1)[:, :k]
        scores = top_scores.gather(1, keep)
        rows = (offsets + origin.gather(1, keep)).view(-1)
        tokens = torch.cat([tokens[rows], token.gather(1, keep).view(-1, 1)], dim=1)
    return [max(hyps, key=lambda h: h[0])[1] for hyps in finished]


# ------------------------------------------------------------------ scoring

METRIC_BLEU = register(Metric("bleu", higher_is_better=True, description="corpus BLEU (sacrebleu), 0-100"))
METRIC_CHRF = register(Metric("chrf", higher_is_better=True, description="corpus chrF (sacrebleu), 0-100"))
METRIC_SENTENCES_PER_S = register(
    Metric(
        "sentences_per_s",
        higher_is_better=True,
        decimals=1,
        description="test sentences translated per second of compute",
    )
)


def translation_result(
    ids: list[str], refs: list[str], hyps: list[str], decoding: str, test_set: str = "test"
) -> EvalResult:
    """Corpus BLEU (headline) and chrF from sacrebleu, with signatures, and one row per sentence.
    Its items keep each sentence's hypothesis and reference: sacrebleu rescoring them (its paired
    bootstrap and approximate randomisation do) gives these scores exactly."""
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hyps, [refs])
    chrf_score = chrf.corpus_score(hyps, [refs])
    details = {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(refs),
        "decoding": decoding,
    }
    rows = list(zip(ids, refs, hyps, strict=True))
    items = [{"test_set": test_set, "id": i, "reference": r, "hypothesis": h} for i, r, h in rows]
    return EvalResult(METRIC_BLEU, bleu_score.score, details, rows, items)


# ------------------------------------------------------------------ the task


class MTTask:
    name = "mt"
    metric = METRIC_BLEU
    secondary_metrics: tuple[Metric, ...] = (METRIC_CHRF,)  # recorded in the index beside BLEU

    def __init__(self, recipe: Recipe, cache_dir: Path, progress: bool = True):
        self.recipe = recipe
        self.cache_dir = cache_dir
        self.progress = progress
        self.dataset: str = recipe.data.source
        if not isinstance(recipe.model, TransformerConfig):
            raise ValueError(f"model.arch {recipe.model.arch!r} is not a translation model")
        self.model_cfg = recipe.model  # the recipe's model section, known to be a translation model
        self.splits: dict[str, list[Pair]] = {}
        self.encoded: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
        self._tokenizer: SentencePieceTokenizer | None = None

    @property
    def tokenizer(self) -> SentencePieceTokenizer:
        """The joint BPE model, trained on the training pairs by build_data."""
        if self._tokenizer is None:
            raise RuntimeError("MTTask.build_data() trains the tokenizer: call it first")
        return self._tokenizer

    # ------------------------------------------------------------------ data

    def build_data(self) -> None:
        self.splits = load_pairs(self.recipe.data)
        m = self.model_cfg
        texts = [text for pair in self.splits["train"] for text in pair]
        key = stable_hash({"texts": texts, "vocab": m.vocab_size, "bos_eos": True})[:16]
        self._tokenizer = SentencePieceTokenizer.train(
            texts, m.vocab_size, self.cache_dir / "spm" / f"{key}.model", bos_eos=True
        )
        self.encoded = {split: self._encode(pairs) for split, pairs in self.splits.items()}

    def _encode(self, pairs: list[Pair]) -> tuple[list[list[int]], list[list[int]]]:
        """Sources with </s> and targets without <s>/</s>, cut so both fit the position table."""
        limit = self.model_cfg.max_len - 1
        eos = self.tokenizer.eos_id
        sources = [self.tokenizer.encode(src)[:limit] + [eos] for src, _ in pairs]
        targets = [self.tokenizer.encode(tgt)[:limit] for _, tgt in pairs]
        return sources, targets

    # ------------------------------------------------------------------ model

    def build_model(self) -> nn.Module:
        return build_mt_model(self.model_cfg, self.tokenizer.size)

    # ------------------------------------------------------------------ batches

    @instance_cache(2)  # the current and the next epoch
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """Length-bucketed batches of `batch_size` sentences: sort by (jittered) length so padding is
        small, then shuffle the batch order."""
        rng = random.Random(f"{self.recipe.seed}-{epoch}")
        sources, targets = self.encoded["train"]
        order = sorted(
            range(len(sources)),
            key=lambda i: max(len(sources[i]), len(targets[i]) + 1) * rng.uniform(0.9, 1.1),
        )
        batches = batches_of(order, self.recipe.train.batch_size, full=self.recipe.train.pad_to_multiple > 0)
        rng.shuffle(batches)
        return batches

    def _padded(self, rows: list[torch.Tensor], device: torch.device, multiple: int = 0) -> torch.Tensor:
        """Token rows padded with PAD to the longest, or (``multiple``: train.pad_to_multiple) to a
        multiple of it, within the model's positions."""
        padded = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD)
        if multiple:
            length = padded_length(padded.shape[1], multiple, limit=self.model_cfg.max_len)
            padded = pad_to(padded, length, value=PAD)
        return to_device(padded, device)

    def _sources(self, split: str, idx: list[int], device: torch.device, multiple: int = 0) -> torch.Tensor:
        sources = self.encoded[split][0]
        return self._padded([torch.tensor(sources[i]) for i in idx], device, multiple)

    def _collate(self, split: str, idx: list[int], device: torch.device, multiple: int = 0) -> dict[str, Any]:
        targets = self.encoded[split][1]
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        tgt_in = [torch.tensor([bos, *targets[i]]) for i in idx]
        tgt_out = [torch.tensor([*targets[i], eos]) for i in idx]
        return {
            "src": self._sources(split, idx, device, multiple),
            "tgt_in": self._padded(tgt_in, device, multiple),
            "tgt_out": self._padded(tgt_out, device, multiple),
        }

    def train_batch(
        self, step: int, device: torch.device, shard: Shard | None = None
    ) -> dict[str, Any] | None:
        """The step's batch; with a `shard` (data-parallel), this rank's part of it, normalised by
        the whole batch's target tokens (`loss_norm`), or None when the part is empty."""
        n = len(self._epoch_batches(0))
        idx = self._epoch_batches(step // n)[step % n]
        multiple = self.recipe.train.pad_to_multiple
        if shard is None:
            return self._collate("train", idx, device, multiple)
        part = shard.take(idx)
        tokens = sum(len(self.encoded["train"][1][i]) + 1 for i in idx)  # + </s>
        return {**self._collate("train", part, device, multiple), "loss_norm": tokens} if part else None

    # ------------------------------------------------------------------ loss and evaluation

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(batch["src"], batch["tgt_in"])
        norm = batch.get("loss_norm")  # data-parallel: sum over this shard / the global batch's tokens
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch["tgt_out"].flatten(),
            ignore_index=PAD,
            label_smoothing=self.model_cfg.label_smoothing,
            reduction="mean" if norm is None else "sum",
        )
        return loss if norm is None else loss / norm

    def translate(self, model: TransformerMT, src: torch.Tensor) -> list[list[int]]:
        """Token ids of the translations of a padded batch of sources, as eval.beam_size asks."""
        e = self.recipe.eval
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        lengths = max_output_lengths((src != PAD).sum(1), model.max_len - 1)
        if e.beam_size == 1:
            return greedy_decode(model, src, bos, eos, lengths)
        return beam_search(model, src, bos, eos, lengths, e.beam_size, e.length_penalty)

    throughput_metric = METRIC_SENTENCES_PER_S

    def throughput(self, split: str, seconds: float) -> float:
        """Sentences of `split` translated per second, for an evaluation that took `seconds`."""
        return len(self.encoded[split][0]) / seconds

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        device: torch.device,
        progress: bool = True,
        shard: Shard | None = None,
    ) -> EvalResult:
        """Batched decoding of length-sorted sentences; with a `shard` (data-parallel) this rank
        translates its share of the batches and the translations of all ranks are gathered."""
        was_training = model.training
        model.eval()
        e = self.recipe.eval
        sources = self.encoded[split][0]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        batches = [order[i : i + e.batch_size] for i in range(0, len(order), e.batch_size)]
        if shard is not None:
            batches = shard.take(batches)
        hyps: dict[int, str] = {}
        mt_model = cast(TransformerMT, model)  # what build_model makes
        # decoding reads every weight once per generated token: quantize each weight once instead
        with parametrize.cached():
            for idx in progress_bar(batches, f"decode {split}", enabled=progress and self.progress):
                with autocast(device):
                    out = self.translate(mt_model, self._sources(split, idx, device))
                for i, ids in zip(idx, out, strict=True):
                    hyps[i] = self.tokenizer.decode(ids)
        model.train(was_training)
        if shard is not None:
            hyps = shard.gather(hyps)
        pairs = self.splits[split]
        decoding = (
            "greedy"
            if e.beam_size == 1
            else (f"beam {e.beam_size}, GNMT length penalty alpha={e.length_penalty}")
        )
        return translation_result(
            [f"{split}-{i}" for i in range(len(pairs))],
            [t for _, t in pairs],
            [hyps[i] for i in range(len(pairs))],
            decoding,
            test_set=split,
        )


def build_mt_model(m: TransformerConfig, vocab: int) -> TransformerMT:
    """The untrained model of a recipe's `model:` section with a vocabulary of `vocab` tokens."""
    return TransformerMT(
        vocab, m.d_model, m.encoder_layers, m.decoder_layers, m.heads, m.ffn_mult, m.dropout, m.max_len
    )
