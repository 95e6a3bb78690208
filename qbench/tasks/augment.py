"""Training-time augmentation of log-mel features, done on the features' device (no host reads)."""

from __future__ import annotations

import torch
import torchaudio

__all__ = ["spec_augment", "vtlp_warp"]


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Two frequency masks (up to 15 bins) and two time masks (up to 5% of the frames) per utterance."""
    x = feats.transpose(1, 2)  # (B, F, T) as torchaudio's masking transforms expect
    freq = torchaudio.transforms.FrequencyMasking(freq_mask_param=15, iid_masks=True)
    time_mask = torchaudio.transforms.TimeMasking(
        time_mask_param=max(1, int(0.05 * x.shape[-1])), iid_masks=True
    )
    mean = x.mean()  # a 0-dim tensor: masked in on the device, where float() would wait for it
    for _ in range(2):
        x = freq(x.unsqueeze(1), mask_value=mean).squeeze(1)
        x = time_mask(x.unsqueeze(1), mask_value=mean).squeeze(1)
    return x.transpose(1, 2)


def vtlp_warp(
    feats: torch.Tensor, max_warp: float, low_hz: float = 20.0, high_hz: float = 8000.0
) -> torch.Tensor:
    """Vocal tract length perturbation on log-mel features (Jaitly & Hinton, 2013).

    Each utterance's spectrum is stretched in frequency by a factor drawn from [1 - max_warp,
    1 + max_warp]: the output bin centred at f Hz takes the (interpolated) log energy at f / factor.
    Done on the features rather than the audio (as torchaudio would by resampling) because it is
    a gather per batch instead of a resample per utterance. Bins whose source lies past the top
    keep the top bin.
    """
    batch, _, n_mels = feats.shape
    mel = lambda hz: 1127.0 * torch.log1p(hz / 700.0)  # noqa: E731 - Kaldi's mel scale, as fbank uses
    lo, hi = mel(torch.tensor(low_hz)), mel(torch.tensor(high_hz))
    step = (hi - lo) / (n_mels + 1)
    centres_mel = lo + step * torch.arange(1, n_mels + 1)
    centres_hz = 700.0 * torch.expm1(centres_mel / 1127.0)
    factor = 1.0 + (torch.rand(batch, 1) * 2.0 - 1.0) * max_warp
    source_pos = ((mel(centres_hz[None, :] / factor) - lo) / step - 1.0).clamp(0, n_mels - 1)
    left = source_pos.floor().long().clamp(max=n_mels - 2)
    frac = (source_pos - left).to(feats.device, feats.dtype)[:, None, :]
    left = left.to(feats.device)[:, None, :].expand(-1, feats.shape[1], -1)
    lower = feats.gather(2, left)
    upper = feats.gather(2, left + 1)
    return lower + (upper - lower) * frac
