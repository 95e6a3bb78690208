"""Log-mel features of a speech recipe's splits, cached in two parts: what training reads (train
and valid), keyed by the training data (qbench.config.training_data), and the test split, keyed
by its own settings. Scoring a model on another test split builds only the test features; a
moved copy of the data builds nothing. Recorded sources key each part by the files it reads
too (path below the data folder, size, mtime), so a changed file rebuilds its part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio

from qbench.config import stable_hash, training_data
from qbench.data import speech
from qbench.data.synthetic_speech import SyntheticSpeechConfig, load_synthetic_speech
from qbench.io import atomic_torch_save, load_checkpoint
from qbench.progress import console, progress_bar

__all__ = ["FEATURE_VERSION", "PARTS", "build_features", "log_mel"]

FEATURE_VERSION = 1
#: the splits cached together: training's, and the test split on its own
PARTS: tuple[tuple[str, ...], ...] = (("train", "valid"), ("test",))


def log_mel(audio: torch.Tensor, sample_rate: int, n_mels: int) -> torch.Tensor:
    """(samples,) float in [-1, 1] -> (frames, n_mels): 25 ms windows every 10 ms."""
    return torchaudio.compliance.kaldi.fbank(
        audio.unsqueeze(0) * 32768.0,
        num_mel_bins=n_mels,
        sample_frequency=sample_rate,
        dither=0.0,
        energy_floor=1.0,
    )


def synthetic_config(data: Any) -> SyntheticSpeechConfig:
    """The generator's settings of a recipe's `data: {source: synthetic-speech}` section."""
    return SyntheticSpeechConfig(
        seed=data.seed,
        train_utterances=data.train_utterances,
        valid_utterances=data.valid_utterances,
        test_utterances=data.test_utterances,
        snr_db=data.snr_db,
    )


def _part_file(data: Any, part: tuple[str, ...], n_mels: int, cache_dir: Path) -> Path:
    dump = data.model_dump(mode="json")
    # training's part: the training data only; the test part: all but where the data lies
    described = training_data(dump) if "train" in part else {k: v for k, v in dump.items() if k != "path"}
    key: dict[str, Any] = {"data": described, "splits": part, "n_mels": n_mels, "v": FEATURE_VERSION}
    if data.source != "synthetic-speech":
        files = speech.source_files(data, part)
        key["generator"] = speech.generator_version(data)
        key["files"] = speech.fingerprint(files, speech.data_root(data))
    return cache_dir / "features" / f"{data.source}-{'+'.join(part)}-{stable_hash(key)[:16]}.pt"


def _build_part(
    data: Any, part: tuple[str, ...], n_mels: int, cache_dir: Path, progress: bool
) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    if data.source == "synthetic-speech":
        cfg = synthetic_config(data)
        rate = cfg.sample_rate
        utterances: dict = load_synthetic_speech(cfg, cache_dir, data.workers, progress, splits=part)
    else:
        rate, utterances = 16000, speech.utterances(data, stats, part)
    splits: dict[str, Any] = {}
    for split, utts in utterances.items():
        ids, texts, feats = [], [], []
        for u in progress_bar(utts, f"features {split}", enabled=progress):
            ids.append(u.id)
            texts.append(u.text)
            feats.append(log_mel(torch.from_numpy(u.audio), rate, n_mels).half())
        splits[split] = {"ids": ids, "texts": texts, "feats": feats}
    if data.source != "synthetic-speech":
        stats["utterances"] = {split: len(s["ids"]) for split, s in splits.items()}
        stats["hours"] = {
            split: round(sum(f.shape[0] for f in s["feats"]) / 360000, 4) for split, s in splits.items()
        }
        skipped = {k: v for k, v in stats.items() if k.startswith("skipped") and v}
        if skipped:
            console.print(f"[yellow]{data.source}: {skipped} (counted in metrics.json under data)[/yellow]")
    return {**splits, "stats": stats}


def build_features(
    data: Any, n_mels: int, cache_dir: Path, progress: bool = True
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every split's ids, texts and fp16 features (from the cache where built before), and the
    data's counts (recorded sources: utterances and hours per split, items skipped)."""
    splits: dict[str, dict[str, Any]] = {}
    stats: dict[str, Any] = {}
    for part in PARTS:
        file = _part_file(data, part, n_mels, cache_dir)
        if file.is_file():
            built = load_checkpoint(file)
        else:
            built = _build_part(data, part, n_mels, cache_dir, progress)
            atomic_torch_save(file, built)
        for name, value in built.pop("stats").items():
            if isinstance(value, dict):
                stats.setdefault(name, {}).update(value)
            else:
                stats[name] = stats.get(name, 0) + value
        splits.update(built)
    return splits, stats
