"""Transducer (RNN-T) head for the ASR task: the Conformer encoder of the CTC model
(:class:`qbench.tasks.asr.ConformerEncoder`), a prediction network (embedding + one LSTM layer)
and a joiner, trained with torchaudio's ``rnnt_loss`` and decoded greedily in batches.

Blank is id 0, as for CTC (the tokenizers keep 0 free); it is also the prediction network's
start symbol. Every weight is a quantization target: the linear layers and the embedding match
the default ``*.weight`` glob; the LSTM's ``weight_ih_l0`` / ``weight_hh_l0`` do not, so the recipe
schema makes ``quant.include`` :data:`qbench.config.TRANSDUCER_INCLUDE` for this arch when a recipe
gives no ``include`` of its own (``qbench quant inspect`` lists them). A ``QuantSpec`` built by
hand with the default globs leaves the LSTM float.

torchaudio's ``RNNT`` model wants its own transcriber interface (streaming ``infer``) and its
``RNNTBeamSearch`` decodes one utterance at a time; a benchmark's test sets are decoded many
times (once per precision), so the greedy decoder here is written by hand, batched over
utterances: each step runs the joiner for all utterances at one frame, and the prediction
network only advances for those that emitted a symbol.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from qbench.tasks.conformer import ConformerEncoder

BLANK = 0


class ConformerTransducer(ConformerEncoder):
    def __init__(
        self,
        n_mels: int,
        vocab: int,
        d_model: int,
        layers: int,
        heads: int,
        ffn_mult: int,
        conv_kernel: int,
        dropout: float,
        subsampling: int = 4,
        utterance_cmn: bool = True,
        pred_dim: int = 128,
        joiner_dim: int = 128,
        max_symbols: int = 5,
    ):
        super().__init__(
            n_mels, d_model, layers, heads, ffn_mult, conv_kernel, dropout, subsampling, utterance_cmn
        )
        self.vocab = vocab
        self.max_symbols = max_symbols  # greedy decoding: symbols emitted per frame at most
        self.enc_proj = nn.Linear(d_model, joiner_dim)
        self.embed = nn.Embedding(vocab, pred_dim)
        self.lstm = nn.LSTM(pred_dim, pred_dim, num_layers=1, batch_first=True)
        self.pred_proj = nn.Linear(pred_dim, joiner_dim)
        self.joiner = nn.Linear(joiner_dim, vocab)

    # ------------------------------------------------------------------ parts

    def encode_joint(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) -> encoder states projected into the joiner, (B, T', joiner_dim), and T'."""
        x, lengths = self.encode(feats, lengths)
        return self.enc_proj(x), lengths

    def predict(
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(B, U) previous symbols -> prediction states projected into the joiner,
        (B, U, joiner_dim), and the LSTM state."""
        out, state = self.lstm(self.embed(tokens), state)
        return self.pred_proj(out), state

    def join(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Projected encoder and prediction states that broadcast together -> logits over vocab."""
        return self.joiner(torch.tanh(enc + pred))

    # ------------------------------------------------------------------ training

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded targets (B, U) -> joint logits (B, T', U + 1, vocab) and the encoder lengths T'."""
        enc, enc_lengths = self.encode_joint(feats, lengths)
        start = torch.full_like(targets[:, :1], BLANK)
        pred, _ = self.predict(torch.cat([start, targets], dim=1))
        return self.join(enc[:, :, None], pred[:, None]), enc_lengths

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def greedy_decode(self, feats: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        enc, enc_lengths = self.encode_joint(feats, lengths)
        return self.greedy_search(enc, enc_lengths)

    @torch.no_grad()
    def greedy_search(self, enc: torch.Tensor, enc_lengths: torch.Tensor) -> list[list[int]]:
        """Greedy transducer search over projected encoder states (B, T, joiner_dim), all
        utterances at once: at each frame, emit the best non-blank symbol and advance the
        prediction network, until blank or `max_symbols`; then go to the next frame."""
        batch, frames = enc.shape[:2]
        hyps: list[list[int]] = [[] for _ in range(batch)]
        last = torch.full((batch, 1), BLANK, dtype=torch.long, device=enc.device)
        pred, (h, c) = self.predict(last)
        for t in range(frames):
            active = t < enc_lengths  # utterances with a frame t
            for _ in range(self.max_symbols):
                if not bool(active.any()):
                    break
                best = self.join(enc[:, t], pred[:, 0]).argmax(-1)
                emit = active & (best != BLANK)
                if not bool(emit.any()):
                    break
                for b in emit.nonzero()[:, 0].tolist():
                    hyps[b].append(int(best[b]))
                new_pred, (new_h, new_c) = self.predict(best[:, None], (h, c))
                pred = torch.where(emit[:, None, None], new_pred, pred)
                h = torch.where(emit[None, :, None], new_h, h)
                c = torch.where(emit[None, :, None], new_c, c)
                active = emit
        return hyps


def transducer_loss(
    logits: torch.Tensor,
    enc_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """Per-utterance RNN-T loss (B,) of float32 joint logits, divided by the target length like
    CTC's "mean" reduction, so losses (and gradient clipping) are on the same per-symbol scale."""
    loss = torchaudio.functional.rnnt_loss(
        logits.float(),
        targets.int(),
        enc_lengths.int(),
        target_lengths.int(),
        blank=BLANK,
        reduction="none",
    )
    return loss / target_lengths.clamp(min=1)


def pad_targets(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated targets (sum U_i,) -> (B, max U_i) padded with blank (at least one column)."""
    parts = list(torch.split(targets, target_lengths.tolist()))
    padded = nn.utils.rnn.pad_sequence(parts, batch_first=True, padding_value=BLANK)
    if padded.shape[1] == 0:
        padded = targets.new_full((len(parts), 1), BLANK)
    return padded
