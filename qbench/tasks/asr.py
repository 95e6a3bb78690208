"""Speech recognition: log-mel features, Conformer encoder with a CTC head (or a transducer head,
qbench.tasks.transducer), greedy decoding, WER/CER.

Features are torchaudio's Kaldi-compatible fbank with global mean/variance normalisation kept in
the model as buffers (so a checkpoint or export carries them). Units are characters, for which
CTC at 40 ms frames (4x subsampling) has room, or sentencepiece subwords, which allow 80 ms
frames (8x) and so halve the encoder's work.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, cast

import jiwer
import torch
from torch import nn
from torch.nn import functional as F

from qbench.config import ConformerCTCConfig, Recipe, stable_hash
from qbench.data.synthetic_speech import plan_utterances
from qbench.device import autocast, to_device
from qbench.io import atomic_write_bytes
from qbench.progress import progress_bar
from qbench.tasks.augment import spec_augment, vtlp_warp
from qbench.tasks.base import EvalResult, Shard, instance_cache
from qbench.tasks.buckets import PackedRows, batches_of, pad_to, padded_length
from qbench.tasks.conformer import ConformerCTC, ConformerEncoder
from qbench.tasks.metrics import METRICS, Metric, metric, register, register_rule
from qbench.tasks.ngram import arpa_text
from qbench.tasks.speech_features import build_features, synthetic_config
from qbench.tasks.tokenizers import CharTokenizer, SentencePieceTokenizer
from qbench.tasks.transducer import ConformerTransducer, pad_targets, transducer_loss


def build_asr_model(m: ConformerCTCConfig, vocab: int) -> ConformerEncoder:
    """The untrained model of a recipe's `model:` section: conformer-ctc or conformer-transducer."""
    args = (
        m.n_mels,
        vocab,
        m.d_model,
        m.layers,
        m.heads,
        m.ffn_mult,
        m.conv_kernel,
        m.dropout,
        m.subsampling,
    )
    if m.arch == "conformer-transducer":
        return ConformerTransducer(
            *args,
            utterance_cmn=m.feature_norm == "utterance",
            pred_dim=m.pred_dim,
            joiner_dim=m.joiner_dim,
        )
    return ConformerCTC(*args, utterance_cmn=m.feature_norm == "utterance")


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, tokenizer) -> list[str]:
    """Best path: argmax per frame, merge repeats, drop blanks (id 0)."""
    best = log_probs.argmax(-1).cpu()
    return [
        tokenizer.decode(torch.unique_consecutive(seq[:n]).tolist())
        for seq, n in zip(best, lengths.tolist(), strict=True)
    ]


def word_error_details(refs: list[str], hyps: list[str]) -> dict[str, Any]:
    return scored_utterances(refs, hyps)[0]


def _sentence_counts(output: jiwer.WordOutput | jiwer.CharacterOutput) -> list[tuple[int, int]]:
    """(errors, reference length) of each sentence of a jiwer alignment: the substitutions +
    deletions + insertions and the hits + substitutions + deletions that its corpus rate sums."""
    counts = []
    for ref, chunks in zip(output.references, output.alignments, strict=True):
        errors = sum(
            (c.hyp_end_idx - c.hyp_start_idx) if c.type == "insert" else (c.ref_end_idx - c.ref_start_idx)
            for c in chunks
            if c.type != "equal"
        )
        counts.append((errors, len(ref)))
    return counts


def scored_utterances(
    refs: list[str], hyps: list[str]
) -> tuple[dict[str, Any], list[tuple[int, int, int, int]]]:
    """Corpus WER/CER details (jiwer) and, from the same alignments, each utterance's (word errors,
    reference words, char errors, reference chars): their sums over the utterances divide to the
    corpus WER and CER exactly."""
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)  # what jiwer.cer computes
    per_utterance = [
        (w, nw, c, nc)
        for (w, nw), (c, nc) in zip(_sentence_counts(words), _sentence_counts(chars), strict=True)
    ]
    return {
        "wer": words.wer,
        "cer": chars.cer,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "hits": words.hits,
        "reference_words": sum(len(r.split()) for r in refs),
        "utterances": len(refs),
        "normalisation": "lower-case a-z, apostrophe, single spaces (as generated)",
    }, per_utterance


# ------------------------------------------------------------------ metrics

METRIC_WER = register(
    Metric("wer", higher_is_better=False, unit="%", scale=100.0, description="word error rate (jiwer)")
)
METRIC_CER = register(
    Metric("cer", higher_is_better=False, unit="%", scale=100.0, description="character error rate (jiwer)")
)
METRIC_RTFX = register(
    Metric(
        "rtfx",
        higher_is_better=True,
        unit="x",
        scale=1.0,
        decimals=1,
        description="inverse real-time factor: seconds of test audio decoded per second of compute",
    )
)
FRAME_SECONDS = 0.01  # log_mel: a frame every 10 ms
_VARIANT = re.compile(r"(wer|cer)(_greedy)?(?:@x([1-9]\d*))?")


@register_rule
def asr_metric_variant(name: str) -> Metric | None:
    """wer_greedy / cer_greedy: greedy decoding, scored beside a lexicon decoder; wer@xN / cer@xN
    (also of _greedy): N test utterances joined into one long recording. None for other names."""
    m = _VARIANT.fullmatch(name)
    if m is None or name in METRICS:
        return None
    base = METRICS[m[1]]
    short = m[1] + (m[2] or "")
    joined = int(m[3] or 1)
    what = base.description + (", greedy decoding" if m[2] else "")
    if joined > 1:
        what += f", on recordings of {joined} joined test utterances"
    return Metric(name, base.higher_is_better, base.unit, base.scale, base.decimals, what, short, joined)


class ASRTask:
    name = "asr"
    metric = METRIC_WER
    secondary_metrics: tuple[Metric, ...] = (METRIC_CER,)  # recorded in the index beside WER

    def __init__(self, recipe: Recipe, cache_dir: Path, progress: bool = True):
        self.recipe = recipe
        self.cache_dir = cache_dir
        self.progress = progress
        self.dataset: str = recipe.data.source
        if not isinstance(recipe.model, ConformerCTCConfig):
            raise ValueError(f"model.arch {recipe.model.arch!r} is not a speech recognition model")
        self.model_cfg = recipe.model  # the recipe's model section, known to be a speech model
        self.splits: dict[str, dict[str, Any]] = {}
        self.data_stats: dict[str, Any] = {}  # recorded sources: utterances kept, items skipped
        self._tokenizer: CharTokenizer | SentencePieceTokenizer | None = None
        self._lexicon_decoder = None
        self._resident: dict[torch.device, PackedRows] = {}  # training features held per device
        if recipe.eval.decoder == "lexicon":
            self.secondary_metrics += (metric("wer_greedy"), metric("cer_greedy"))
        for n in recipe.eval.long_form:  # long-form scores join WER and CER in the index
            self.secondary_metrics += (metric(f"wer@x{n}"), metric(f"cer@x{n}"))

    # ------------------------------------------------------------------ data

    def build_data(self) -> None:
        """Features of every split (from the cache when built before) and the output units: a
        sentencepiece model is trained here, once, so that a model.vocab_size too small for the
        transcripts stops the suite before anything runs."""
        self._build_features()
        _ = self.tokenizer

    def _build_features(self) -> None:
        self.splits, self.data_stats = build_features(
            self.recipe.data, self.model_cfg.n_mels, self.cache_dir, self.progress
        )

    @property
    def tokenizer(self) -> CharTokenizer | SentencePieceTokenizer:
        if self._tokenizer is None:
            m = self.model_cfg
            if m.units == "chars":
                self._tokenizer = CharTokenizer()
            else:
                texts = self.splits["train"]["texts"]
                key = stable_hash({"texts": texts, "vocab": m.vocab_size})[:16]
                self._tokenizer = SentencePieceTokenizer.train(
                    texts, m.vocab_size, self.cache_dir / "spm" / f"{key}.model"
                )
        return self._tokenizer

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        allf = torch.cat([f.float() for f in self.splits["train"]["feats"]])
        return allf.mean(0), allf.std(0).clamp(min=1e-3)

    # ------------------------------------------------------------------ model

    def build_model(self) -> nn.Module:
        model = build_asr_model(self.model_cfg, self.tokenizer.size)
        mean, std = self.feature_stats()
        model.feat_mean.copy_(mean)
        model.feat_std.copy_(std)
        return model

    # ------------------------------------------------------------------ batches

    @instance_cache(2)  # the current and the next epoch
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """Length-bucketed batches: sort by (jittered) length so padding is small, shuffle batch order."""
        rng = random.Random(f"{self.recipe.seed}-{epoch}")
        lengths = [f.shape[0] for f in self.splits["train"]["feats"]]
        order = sorted(range(len(lengths)), key=lambda i: lengths[i] * rng.uniform(0.9, 1.1))
        batches = batches_of(order, self.recipe.train.batch_size, full=self.recipe.train.pad_to_multiple > 0)
        rng.shuffle(batches)
        return batches

    def resident_features(self, device: torch.device) -> PackedRows:
        """The training features held on ``device`` (fp16, as cached), copied there once: training
        batches are gathered there by index instead of padded on the host and copied every step.
        The CPU runs the same code (the values of host collation, bit for bit); there the split's
        features become views of the packed copy, so they are held once."""
        if device not in self._resident:
            s = self.splits["train"]
            packed = self._resident[device] = PackedRows(s["feats"], device)
            if device.type == "cpu":
                s["feats"] = list(packed.flat.split(packed.lengths))
        return self._resident[device]

    def _collate(
        self, split: str, idx: list[int], device: torch.device, multiple: int = 0, resident: bool = False
    ) -> dict[str, Any]:
        """``multiple`` (train.pad_to_multiple): frames and targets padded to a multiple of it, the
        targets as (B, S) rows padded with blanks instead of concatenated (static shapes).
        ``resident`` (train split): features gathered on the device (:meth:`resident_features`)."""
        s = self.splits[split]
        sizes = [s["feats"][i].shape[0] for i in idx]
        frames = padded_length(max(sizes), multiple)
        if resident:
            padded = self.resident_features(device).gather(idx, frames).float()
        else:
            feats = [s["feats"][i].float() for i in idx]
            padded = to_device(pad_to(nn.utils.rnn.pad_sequence(feats, batch_first=True), frames), device)
        targets = [torch.tensor(self.tokenizer.encode(s["texts"][i])) for i in idx]
        target = torch.cat(targets)
        if multiple:
            rows = nn.utils.rnn.pad_sequence(targets, batch_first=True)  # blank (0) after the end
            target = pad_to(rows, padded_length(rows.shape[1], multiple))
        return {
            "feats": padded,
            "lengths": to_device(torch.tensor(sizes), device),
            "targets": to_device(target, device),
            "target_lengths": to_device(torch.tensor([len(t) for t in targets]), device),
            "ids": [s["ids"][i] for i in idx],
            "texts": [s["texts"][i] for i in idx],
        }

    def train_batch(
        self, step: int, device: torch.device, shard: Shard | None = None
    ) -> dict[str, Any] | None:
        """The step's batch; with a `shard` (data-parallel), this rank's part of it, normalised by
        the whole batch's size (`loss_norm`), or None when the part is empty."""
        n = len(self._epoch_batches(0))
        idx = self._epoch_batches(step // n)[step % n]
        multiple = self.recipe.train.pad_to_multiple
        if shard is None:
            return self._collate("train", idx, device, multiple, resident=True)
        part = shard.take(idx)
        if not part:
            return None
        return {**self._collate("train", part, device, multiple, resident=True), "loss_norm": len(idx)}

    # ------------------------------------------------------------------ loss and evaluation

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        feats = batch["feats"]
        if self.model_cfg.vtlp:
            feats = vtlp_warp(feats, self.model_cfg.vtlp)
        if self.model_cfg.specaugment:
            feats = spec_augment(feats, batch["lengths"])
        norm = batch.get("loss_norm")  # data-parallel: sum over this shard / the global batch size
        if self.model_cfg.arch == "conformer-transducer":
            targets = batch["targets"]  # (B, S) already with train.pad_to_multiple
            targets = targets if targets.dim() == 2 else pad_targets(targets, batch["target_lengths"])
            logits, out_lengths = model(feats, batch["lengths"], targets)
            loss = transducer_loss(logits, out_lengths, targets, batch["target_lengths"])
            return loss.mean() if norm is None else loss.sum() / norm
        log_probs, out_lengths = model(feats, batch["lengths"])
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            batch["targets"],
            out_lengths,
            batch["target_lengths"],
            blank=0,
            reduction="mean" if norm is None else "none",
            zero_infinity=True,
        )
        if norm is None:
            return loss
        # "mean" divides each utterance's loss by its target length, then averages over the batch
        return (loss / batch["target_lengths"].clamp(min=1)).sum() / norm

    throughput_metric = METRIC_RTFX

    def throughput(self, split: str, seconds: float) -> float:
        """RTFx of an evaluation of `split` that took `seconds`: audio seconds per second."""
        frames = sum(f.shape[0] for f in self.splits[split]["feats"])
        return frames * FRAME_SECONDS / seconds

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        device: torch.device,
        progress: bool = True,
        shard: Shard | None = None,
    ) -> EvalResult:
        """Greedy CTC (or transducer) decoding in length-sorted batches; with a `shard`
        (data-parallel) this rank decodes its share of the batches and the hypotheses of all ranks
        are gathered."""
        was_training = model.training
        model.eval()
        s = self.splits[split]
        order = sorted(range(len(s["feats"])), key=lambda i: s["feats"][i].shape[0])
        bs = self.recipe.eval.batch_size
        hyps: dict[int, str] = {}
        greedy: dict[int, str] = {}
        lexicon = self.lexicon_decoder if self.recipe.eval.decoder == "lexicon" else None
        transducer = self.model_cfg.arch == "conformer-transducer"  # greedy only (recipe checks)
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        if shard is not None:
            batches = shard.take(batches)
        for idx in progress_bar(batches, f"decode {split}", enabled=progress and self.progress):
            b = self._collate(split, idx, device)
            if transducer:
                transducer_model = cast(ConformerTransducer, model)  # what build_model makes for this arch
                with autocast(device):
                    best = transducer_model.greedy_decode(b["feats"], b["lengths"])
                for i, ids in zip(idx, best, strict=True):
                    greedy[i] = self.tokenizer.decode(ids)
                continue
            with autocast(device):
                log_probs, out_lengths = model(b["feats"], b["lengths"])
            for i, h in zip(idx, ctc_greedy_decode(log_probs, out_lengths, self.tokenizer), strict=True):
                greedy[i] = h
            if lexicon is not None:
                best = lexicon(log_probs.float().cpu().contiguous(), out_lengths.cpu().int())
                for i, nbest in zip(idx, best, strict=True):
                    hyps[i] = " ".join(nbest[0].words) if nbest else ""
        model.train(was_training)
        hyps = hyps or greedy
        if shard is not None:
            hyps, greedy = shard.gather(hyps), shard.gather(greedy)
        refs = s["texts"]
        hyp_list = [hyps[i] for i in range(len(refs))]
        details, counts = scored_utterances(refs, hyp_list)
        items = [
            {
                "test_set": split,
                "id": uid,
                "cluster": cluster,
                "word_errors": w,
                "ref_words": nw,
                "char_errors": c,
                "ref_chars": nc,
            }
            for uid, cluster, (w, nw, c, nc) in zip(s["ids"], self.clusters(split), counts, strict=True)
        ]
        if lexicon is not None:
            plain, plain_counts = scored_utterances(refs, [greedy[i] for i in range(len(refs))])
            details["wer_greedy"], details["cer_greedy"] = plain["wer"], plain["cer"]
            for item, (w, _, c, _) in zip(items, plain_counts, strict=True):
                item["word_errors_greedy"], item["char_errors_greedy"] = w, c
            e = self.recipe.eval
            lm = f", {e.lm_order}-gram LM x{e.lm_weight:g}" if e.lm_order else ""
            details["decoder"] = f"lexicon (beam {e.beam_size}, {len(self.lexicon)} words{lm})"
        if split == "test":
            for n in self.recipe.eval.long_form:
                long = self.evaluate(model, self.long_form_split(n), device, progress, shard=shard)
                details[f"wer@x{n}"], details[f"cer@x{n}"] = long.value, long.details["cer"]
                details[f"utterances@x{n}"] = long.details["utterances"]
                items += long.items  # its own test set, "test@x<n>"
        rows = list(zip(s["ids"], refs, hyp_list, strict=True))
        return EvalResult(METRIC_WER, details["wer"], details, rows, items)

    @instance_cache(8)  # a split's speakers never change
    def clusters(self, split: str) -> tuple[str, ...]:
        """The speaker (or synthetic voice) of each utterance of `split`: what a bootstrap over
        utterances resamples together. From the split's `speakers` where the data holds them, else
        from the source: FSDD ids end in the speaker (`test-00007-theo`), LibriSpeech ids start
        with it, synthetic speech replans its voices; the utterance id where nothing says (a
        manifest without speakers). A long-form utterance's are those of the utterances it joins,
        "+"-joined when they differ."""
        s = self.splits[split]
        ids: list[str] = s["ids"]
        base, _, joined = split.partition("@x")
        if joined and "speakers" not in s:
            of = dict(zip(self.splits[base]["ids"], self.clusters(base), strict=True))
            return tuple("+".join(dict.fromkeys(of.get(p, p) for p in uid.split("+"))) for uid in ids)
        d = self.recipe.data
        if "speakers" in s:
            speakers = [str(x) for x in s["speakers"]]
        elif d.source == "fsdd-digits":  # fsdd.generate: f"{split}-{i:05d}-{speaker}"
            speakers = [uid.split("-", 2)[2] if uid.count("-") >= 2 else "" for uid in ids]
        elif d.source == "librispeech":  # {speaker}-{chapter}-{utterance}
            speakers = [uid.split("-")[0] for uid in ids]
        elif d.source == "synthetic-speech" and split in ("train", "valid", "test"):
            voice = {plan.id: plan.voice.name for plan in plan_utterances(synthetic_config(d))[split]}
            speakers = [voice.get(uid, "") for uid in ids]
        else:
            speakers = [""] * len(ids)
        return tuple(sp or uid for sp, uid in zip(speakers, ids, strict=True))

    @property
    def lexicon(self) -> list[str]:
        """The words a lexicon decoder may spell: those of the training transcripts, never the test's."""
        return sorted({w for t in self.splits["train"]["texts"] for w in t.split()})

    @property
    def lexicon_decoder(self):
        """torchaudio's CTC beam search (flashlight-text) restricted to the training words, with an
        optional word n-gram model of the training transcripts (qbench.ngram)."""
        if self._lexicon_decoder is None:
            # local: loads flashlight-text, which only lexicon decoding needs
            from torchaudio.models.decoder import ctc_decoder

            if not isinstance(self.tokenizer, CharTokenizer):
                raise ValueError("eval.decoder: lexicon decoding needs model.units: chars")
            spell = {c: ("|" if c == " " else c) for c in self.tokenizer.units}
            words = [w for w in self.lexicon if all(c in spell for c in w)]
            lexicon_file = self.cache_dir / "lexicon" / f"{stable_hash(words)[:16]}.txt"
            if not lexicon_file.is_file():
                lines = "".join(f"{w}\t{' '.join(spell[c] for c in w)} |\n" for w in words)
                atomic_write_bytes(lexicon_file, lines.encode())
            e = self.recipe.eval
            lm_file = None
            if e.lm_order:
                texts = self.splits["train"]["texts"]
                lm_file = self.cache_dir / "lm" / f"{stable_hash([e.lm_order, texts])[:16]}.arpa"
                if not lm_file.is_file():
                    atomic_write_bytes(lm_file, arpa_text(texts, e.lm_order).encode())
            with _quiet_stderr():  # KenLM prints its own loading bar when it reads the ARPA file
                self._lexicon_decoder = ctc_decoder(
                    lexicon=str(lexicon_file),
                    tokens=["<blank>", *(spell[c] for c in self.tokenizer.units)],  # id 0 is the blank
                    lm=None if lm_file is None else str(lm_file),
                    lm_weight=e.lm_weight,
                    beam_size=e.beam_size,
                    word_score=e.word_score,
                    blank_token="<blank>",
                    sil_token="|",
                    unk_word="<unk>",
                    log_add=True,
                )
        return self._lexicon_decoder

    def long_form_split(self, n: int, source: str = "test") -> str:
        """The split `<source>@x<n>`: every run of `n` consecutive utterances of `source` joined into
        one recording (features end to end, transcripts joined by a space; a shorter remainder is
        left out). Joined as features rather than audio: the cache holds features, and a log-mel
        frame sees 25 ms, so only the frames at the joins differ."""
        name = f"{source}@x{n}"
        if name not in self.splits:
            s = self.splits[source]
            starts = range(0, len(s["ids"]) - n + 1, n)
            self.splits[name] = {
                "ids": ["+".join(s["ids"][i : i + n]) for i in starts],
                "texts": [" ".join(s["texts"][i : i + n]) for i in starts],
                "feats": [torch.cat(s["feats"][i : i + n]) for i in starts],
            }
            if not self.splits[name]["ids"]:
                raise ValueError(f"eval.long_form: {n} is more than the {len(s['ids'])} {source} utterances")
        return name


@contextlib.contextmanager
def _quiet_stderr():
    """Silence output written by C++ code straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
