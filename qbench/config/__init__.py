"""Recipes: the schema (:mod:`.schema`), loading YAML into it with errors that point at a line
(:mod:`.loading`), and the run ids that name what a recipe trains (:mod:`.run_ids`)."""

from qbench.config.loading import RecipeCheck, RecipeError, Suite, load_suite, parse_overrides, resolved_yaml
from qbench.config.run_ids import run_id, stable_hash, training_key
from qbench.config.schema import (
    ARCHS,
    DATA_SOURCES,
    TRANSDUCER_INCLUDE,
    ConformerCTCConfig,
    EvalConfig,
    FSDDData,
    LibriSpeechData,
    ManifestData,
    Multi30kData,
    ParallelData,
    QuantConfig,
    Recipe,
    SyntheticMTData,
    SyntheticSpeechData,
    TrainConfig,
    TransformerConfig,
    trains_quantized,
)

__all__ = [
    "ARCHS",
    "DATA_SOURCES",
    "TRANSDUCER_INCLUDE",
    "ConformerCTCConfig",
    "EvalConfig",
    "FSDDData",
    "LibriSpeechData",
    "ManifestData",
    "Multi30kData",
    "ParallelData",
    "QuantConfig",
    "Recipe",
    "RecipeCheck",
    "RecipeError",
    "Suite",
    "SyntheticMTData",
    "SyntheticSpeechData",
    "TrainConfig",
    "TransformerConfig",
    "load_suite",
    "parse_overrides",
    "resolved_yaml",
    "run_id",
    "stable_hash",
    "trains_quantized",
    "training_key",
]
