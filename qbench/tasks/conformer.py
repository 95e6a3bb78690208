"""The Conformer encoder (convolutional subsampling, then Conformer blocks) and its CTC head."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F


class ConvSubsampling(nn.Module):
    """Stride-2 1-D convolutions over time (mel bins as channels): 4x or 8x fewer frames.

    1-D rather than ESPnet's 2-D convolutions because on a CPU the 2-D stack costs a third of
    a training step here; 8x with subword units follows NVIDIA's FastConformer.
    """

    def __init__(self, n_mels: int, d_model: int, factor: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = n_mels
        for _ in range(factor.bit_length() - 1):
            layers += [nn.Conv1d(channels, d_model, 3, stride=2, padding=1), nn.GELU()]
            channels = d_model
        self.conv = nn.Sequential(*layers)
        self.factor = factor

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T/factor, d_model)
        for _ in range(self.factor.bit_length() - 1):
            lengths = (lengths - 1) // 2 + 1
        return x, lengths.clamp(min=1, max=x.shape[1])


class ConformerEncoder(nn.Module):
    """Feature normalisation, ConvSubsampling and torchaudio's Conformer: the encoder that the CTC
    and the transducer heads (qbench.tasks.transducer) share. A head subclasses it and adds its
    layers after these, so parameter names and initialisation order are the same in both."""

    feat_mean: torch.Tensor  # buffers: the training set's feature statistics
    feat_std: torch.Tensor

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        layers: int,
        heads: int,
        ffn_mult: int,
        conv_kernel: int,
        dropout: float,
        subsampling: int = 4,
        utterance_cmn: bool = True,
    ):
        super().__init__()
        self.utterance_cmn = utterance_cmn
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        self.subsample = ConvSubsampling(n_mels, d_model, subsampling)
        self.dropout = nn.Dropout(dropout)
        self.encoder = torchaudio.models.Conformer(
            input_dim=d_model,
            num_heads=heads,
            ffn_dim=d_model * ffn_mult,
            num_layers=layers,
            depthwise_conv_kernel_size=conv_kernel,
            dropout=dropout,
        )

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) -> encoder states (B, T/subsampling, d_model) and their lengths."""
        if self.utterance_cmn:
            # Per-utterance mean over the real frames (Kaldi's CMN): removes much of what differs
            # between voices and channels, which matters when test voices are unseen.
            mask = (torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]).unsqueeze(
                -1
            )
            mean = (feats * mask).sum(1, keepdim=True) / lengths[:, None, None].clamp(min=1)
            x = (feats - mean) * mask / self.feat_std
        else:
            x = (feats - self.feat_mean) / self.feat_std
        x, lengths = self.subsample(x, lengths)
        # torchaudio's Conformer.forward, with the padding mask taken from the padded length instead
        # of lengths.max().item(): no host sync, and no graph break under torch.compile
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        x = self.dropout(x).transpose(0, 1)
        for layer in self.encoder.conformer_layers:
            x = layer(x, padding)
        return x.transpose(0, 1), lengths


class ConformerCTC(ConformerEncoder):
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
    ):
        super().__init__(
            n_mels, d_model, layers, heads, ffn_mult, conv_kernel, dropout, subsampling, utterance_cmn
        )
        self.head = nn.Linear(d_model, vocab)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) -> CTC log-probabilities (B, T/subsampling, vocab) in float32, and their lengths."""
        x, lengths = self.encode(feats, lengths)
        return F.log_softmax(self.head(x).float(), dim=-1), lengths
