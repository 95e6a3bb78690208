"""The recipe schema: one strict, frozen pydantic model per section (data, model, quant, train,
eval) and the checks that span sections, each reported as (location, message) so an error can
point at its line (qbench.config.loading)."""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from qbench.config import run_ids
from qbench.quant.precision import parse_precision
from qbench.quant.quantizers import QuantSpec
from qbench.quant.techniques import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    ESTIMATORS,
    OPTIONS,
    SCALE_NAMES,
    TECHNIQUE_CONFIGS,
    TECHNIQUES,
    preset_for,
    scale_class,
)

#: bounds that catch a typo (10**30 steps) before it allocates or loops for ever
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536

#: names that become file or folder names (a suite, a named precision map): no separators, no
#: leading dot, so every path made from them stays inside its results folder
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

#: the numeric types a YAML `true`/`false` must not pass for (pydantic's lax mode reads true as 1)
_NUMBERS = (int, float, int | None, float | None)


class _Strict(BaseModel):
    """A recipe section: unknown keys are errors, values are frozen, a boolean is no number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """A boolean given for a number is handed on as its YAML spelling, so the field's own
        validation rejects it with the field's location ("unable to parse string ... 'true'")."""
        if not isinstance(data, dict):
            return data
        numbers = {k for k, f in cls.model_fields.items() if f.annotation in _NUMBERS}
        return {k: str(v).lower() if isinstance(v, bool) and k in numbers else v for k, v in data.items()}


class SyntheticSpeechData(_Strict):
    source: Literal["synthetic-speech"] = "synthetic-speech"
    seed: int = Field(0, ge=0)  # the data's own seed: a grid over `seed` varies training, not data
    train_utterances: int = Field(3000, ge=1)
    valid_utterances: int = Field(200, ge=1)
    test_utterances: int = Field(300, ge=1)
    snr_db: tuple[float, float] = (10.0, 30.0)
    workers: int = Field(2, ge=1)

    @field_validator("snr_db")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"snr_db must be [low, high], got {list(v)}")
        return v


class FSDDData(_Strict):
    """Connected digits from Free Spoken Digit Dataset recordings (qbench.data.fsdd)."""

    source: Literal["fsdd-digits"] = "fsdd-digits"
    path: str | None = None  # the FSDD folder (holding recordings/) or the recordings folder
    seed: int = Field(0, ge=0)
    train_speakers: tuple[str, ...] = ("george", "jackson", "nicolas", "yweweler")
    valid_speakers: tuple[str, ...] = ()  # empty: takes below valid_takes of the training speakers
    test_speakers: tuple[str, ...] = ("theo",)
    valid_takes: int = Field(5, ge=0)
    train_utterances: int = Field(3000, ge=1)
    valid_utterances: int = Field(200, ge=1)
    test_utterances: int = Field(500, ge=1)
    min_digits: int = Field(2, ge=1)
    max_digits: int = Field(7, ge=1)
    pause_s: tuple[float, float] = (0.05, 0.3)
    snr_db: tuple[float, float] = (30.0, 50.0)
    speed_perturb: tuple[float, ...] = (0.9, 1.0, 1.1)  # training only
    skip_bad_files: bool = False

    @model_validator(mode="after")
    def _ranges(self) -> FSDDData:
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) is above max_digits ({self.max_digits})")
        for name in ("pause_s", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi or (lo < 0 and name == "pause_s"):
                raise ValueError(f"{name} must be [low, high] with 0 <= low <= high, got {[lo, hi]}")
        if not self.speed_perturb or any(not 0.5 <= f <= 2.0 for f in self.speed_perturb):
            raise ValueError(f"speed_perturb factors must lie in [0.5, 2], got {list(self.speed_perturb)}")
        return self


class LibriSpeechData(_Strict):
    """LibriSpeech folder layout: SUBSET/SPEAKER/CHAPTER/*.flac + SPEAKER-CHAPTER.trans.txt."""

    source: Literal["librispeech"] = "librispeech"
    path: str | None = None  # the folder holding the subset folders (e.g. .../LibriSpeech)
    train: tuple[str, ...] = ("train-clean-100",)
    valid: tuple[str, ...] = ("dev-clean",)
    test: tuple[str, ...] = ("test-clean",)
    max_seconds: float = Field(20.0, gt=0)  # longer utterances are skipped and counted
    skip_bad_files: bool = False  # skip (and count) unreadable audio and unmatched transcripts


class ManifestData(_Strict):
    """One manifest per split: JSONL ({"audio", "text", "duration"?}) or TSV; paths relative to it."""

    source: Literal["manifest"] = "manifest"
    train: str
    valid: str
    test: str
    max_seconds: float = Field(20.0, gt=0)
    skip_bad_files: bool = False


class SyntheticMTData(_Strict):
    """English->German pairs from a grammar (qbench.data.synthetic_mt)."""

    source: Literal["synthetic-mt"] = "synthetic-mt"
    seed: int = Field(0, ge=0)
    train_sentences: int = Field(20000, ge=1)
    valid_sentences: int = Field(500, ge=1)
    test_sentences: int = Field(1000, ge=1)


class Multi30kData(_Strict):
    """Multi30k task 1 raw files (train/val/test_2016_flickr .{en,de,fr}.gz) from a folder."""

    source: Literal["multi30k"] = "multi30k"
    path: str | None = None
    src: Literal["en", "de", "fr"] = "en"
    tgt: Literal["en", "de", "fr"] = "de"
    test_set: str = "test_2016_flickr"


class ParallelData(_Strict):
    """Aligned text files per split (or one TSV per split: source<TAB>target)."""

    source: Literal["parallel"] = "parallel"
    train: tuple[str, ...]  # [src_file, tgt_file] or [tsv_file]
    valid: tuple[str, ...]
    test: tuple[str, ...]
    max_line_chars: int = Field(1000, ge=1)


DataConfig = Annotated[
    SyntheticSpeechData
    | FSDDData
    | LibriSpeechData
    | ManifestData
    | SyntheticMTData
    | Multi30kData
    | ParallelData,
    Field(discriminator="source"),
]
DATA_SOURCES = {
    "asr": ("synthetic-speech", "fsdd-digits", "librispeech", "manifest"),
    "mt": ("synthetic-mt", "multi30k", "parallel"),
}


class TransformerConfig(_Strict):
    """nn.Transformer encoder-decoder, pre-norm, shared embeddings, joint sentencepiece BPE."""

    arch: Literal["transformer"] = "transformer"
    d_model: int = Field(256, ge=8)
    encoder_layers: int = Field(3, ge=1)
    decoder_layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    ffn_mult: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    vocab_size: int = Field(4000, ge=16)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    max_len: int = Field(128, ge=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


class ConformerCTCConfig(_Strict):
    """The Conformer encoder with a CTC head, or with a transducer (RNN-T) head: an embedding +
    1-layer LSTM prediction network and a joiner (qbench.tasks.transducer), decoded greedily."""

    arch: Literal["conformer-ctc", "conformer-transducer"] = "conformer-ctc"
    d_model: int = Field(144, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    ffn_mult: int = Field(4, ge=1)
    conv_kernel: int = Field(15, ge=3)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    n_mels: int = Field(80, ge=8)
    subsampling: Literal[4, 8] = 4
    feature_norm: Literal["utterance", "global"] = (
        "utterance"  # mean: per utterance or global; variance: global
    )
    units: Literal["chars", "bpe"] = "chars"
    vocab_size: int = Field(256, ge=8)  # sentencepiece vocabulary when units is bpe
    specaugment: bool = True
    # Vocal tract length perturbation: each training utterance's frequency axis is warped by a
    # factor drawn from [1 - vtlp, 1 + vtlp], imitating speakers the training voices do not cover.
    vtlp: float = Field(0.0, ge=0.0, lt=0.5)
    # conformer-transducer: prediction network width (embedding and LSTM) and joiner width.
    # Unused by conformer-ctc, which leaves them out of its run ids, so a grid over model.arch
    # may set them for both.
    pred_dim: int = Field(128, ge=8)
    joiner_dim: int = Field(128, ge=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> ConformerCTCConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        return self


#: quant.include of a transducer by default: the LSTM's weights as well as the default globs
TRANSDUCER_INCLUDE: tuple[str, ...] = (*DEFAULT_INCLUDE, "*.weight_ih_l0", "*.weight_hh_l0")

ModelConfig = Annotated[ConformerCTCConfig | TransformerConfig, Field(discriminator="arch")]
#: task -> its model archs, the default first
ARCHS = {"asr": ("conformer-ctc", "conformer-transducer"), "mt": ("transformer",)}


#: the scale functions' and estimators' options (k, p, c, clip_every, noise, ...) as quant fields,
#: from their declarations in qbench.quant.techniques.OPTIONS
_OPTION_FIELDS: dict[str, Any] = {  # (annotation, field) each: an annotation computed at run time
    o.name: (
        Literal[o.choices] if o.choices else o.type,
        Field(o.default, ge=o.ge, gt=o.gt, le=o.le, description=o.help),
    )
    for o in OPTIONS
}
_QuantOptions = create_model("_QuantOptions", __base__=_Strict, **_OPTION_FIELDS)


class QuantConfig(_QuantOptions):
    """`technique` is a preset of (scale, estimator, scale gradient); `scale`/`estimator`/
    `scale_grad` spell one out or change a preset's part. Validation stores the canonical form:
    the preset's name when the parts spell one (`{scale: topk-lp, estimator: noise}` is `rand`),
    else `technique: custom` with all three parts. The parts' options come from their
    declarations (`_QuantOptions`)."""

    technique: Literal[TECHNIQUES] = "float"  # type: ignore[valid-type]
    scale: Literal[SCALE_NAMES] | None = None  # type: ignore[valid-type]
    estimator: Literal[tuple(ESTIMATORS)] | None = None  # type: ignore[valid-type]
    scale_grad: bool | None = None  # false: no gradient through the scale (a frozen learned scale)
    bits: int = Field(4, ge=2, le=8)
    granularity: Literal["per-channel", "per-tensor", "per-group"] = "per-channel"
    group_size: int | None = Field(None, ge=1)  # per-group: weights along the input dimension per scale
    # original parameter names (fnmatch globs); tensors under 2 dims always stay float
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    activations: Literal["a8"] | None = None  # a8: 8-bit per-token inputs of quantized layers
    # scales and float-kept tensors of a quantized evaluation / export
    float_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    # QAT starts after this many float steps. Runs that share everything but the technique
    # share these first steps, so a suite trains them once (see engine.py).
    float_warmup_steps: int = Field(0, ge=0)
    # The learning rate quantization-aware training restarts at, after the float warm-up, decayed
    # by cosine to train.min_lr_ratio x train.lr at the last step (a QAT fine-tuning schedule);
    # unset: the run's one schedule goes on. Float and ptq ignore it.
    qat_lr: float | None = Field(None, gt=0)
    # QAT as fine-tuning of a finished float model: the run first trains exactly what
    # `technique: float` trains (train.steps steps; the suite's float run shares it), then this
    # many quantization-aware steps at quant.qat_lr, decayed by cosine. 0: QAT takes the steps of
    # train.steps after float_warmup_steps.
    qat_steps: int = Field(0, ge=0)
    # Quantization-aware training at a mixed map: the name of a hand-written map under the
    # recipe's `precisions:` (each weight trains at its bits there); unset: every weight at `bits`.
    train_precision: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: Any) -> Any:
        if not isinstance(data, dict) or all(
            data.get(k) is None for k in ("scale", "estimator", "scale_grad")
        ):
            return data
        tech = data.get("technique")
        if tech is not None and tech not in TECHNIQUE_CONFIGS:
            return data  # float/ptq/custom/unknown: field_errors or the schema says what is wrong
        base = TECHNIQUE_CONFIGS[tech] if tech is not None else {}  # tech is a preset here, or unset
        scale = data.get("scale") or base.get("scale_fn")
        estimator = data.get("estimator") or base.get("estimator")
        grad = data.get("scale_grad")
        if scale not in SCALE_NAMES or estimator not in ESTIMATORS or not isinstance(grad, bool | None):
            return {**data, "technique": "custom"} if tech is None else data
        part = scale_class(scale)
        if not part.has_gradient and grad:
            return {**data, "technique": "custom"}  # field_errors: this scale has no gradient
        detach = (not grad) if grad is not None else base.get("detach_scale", False)
        name = preset_for(part.name, estimator, detach)
        out = {k: v for k, v in data.items() if k not in ("scale", "estimator", "scale_grad")}
        if name != "custom":
            return {**out, "technique": name}
        # a scale without a gradient (mse-clip) keeps none when a preset's estimator is swapped
        grad = not detach and part.has_gradient
        return {**out, "technique": "custom", "scale": part.name, "estimator": estimator, "scale_grad": grad}

    def spec(self) -> QuantSpec:
        """The quantization library's spec of this section (what training attaches and how)."""
        granularity = f"per-group-{self.group_size}" if self.granularity == "per-group" else self.granularity
        return QuantSpec(
            technique=self.technique,
            bits=self.bits,
            granularity=granularity,
            **{o.name: getattr(self, o.name) for o in OPTIONS},
            include=tuple(self.include),
            exclude=tuple(self.exclude),
            scale=self.scale,
            estimator=self.estimator,
            scale_grad=self.scale_grad,
            activations=8 if self.activations == "a8" else None,
            float_dtype=self.float_dtype,
        )

    def field_errors(self) -> list[tuple[tuple, str]]:
        """Checks across the fields of this section, as (location under quant, message)."""
        errors = []
        parts = [k for k in ("scale", "estimator", "scale_grad") if getattr(self, k) is not None]
        if self.technique in ("float", "ptq") and parts:
            errors.append(
                (
                    (parts[0],),
                    f"technique {self.technique!r} attaches no quantizer; give both quant.scale and "
                    "quant.estimator (or a quantizing technique) to spell one out",
                )
            )
        if self.technique == "custom":
            for k in ("scale", "estimator"):
                if getattr(self, k) is None:
                    errors.append(((k,), "a custom technique needs both quant.scale and quant.estimator"))
            if self.scale in SCALE_NAMES and not scale_class(self.scale).has_gradient and self.scale_grad:
                name = scale_class(self.scale).name
                errors.append((("scale_grad",), f"the {name} scale has no gradient (leave scale_grad unset)"))
        if self.granularity == "per-group" and self.group_size is None:
            errors.append((("group_size",), "required with granularity per-group (weights per scale)"))
        if self.granularity != "per-group" and self.group_size is not None:
            errors.append((("group_size",), f"only used with granularity per-group, not {self.granularity}"))
        if not self.include:
            errors.append((("include",), "needs at least one glob (e.g. '*.weight')"))
        return errors


class TrainConfig(_Strict):
    steps: int = Field(1000, ge=1, le=MAX_STEPS)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    lr: float = Field(1.0e-3, gt=0)
    warmup: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    checkpoint_every: int = Field(200, ge=1)
    eval_every: int = Field(0, ge=0)  # 0: no learning curve during training
    # The curve's split. "test" reports the unseen-voice metric against training minutes; it only
    # draws the curve, nothing is selected on it.
    curve_split: Literal["valid", "test"] = "valid"
    log_every: int = Field(25, ge=1)
    # torch.compile the model's training forward (fake-quant ops included). How fast, not what is
    # trained: left out of the run id, so a run with and without it is the same run. (Eager
    # training batches alike quantizers, compiled training quantizes weight by weight: the noise
    # estimator then draws the same distribution in another order.)
    compile: bool = False
    # Static shapes for torch.compile / CUDA graphs: every training batch holds batch_size items
    # (an epoch's last, short batch is filled up with the epoch's first items) and its time axes
    # are padded to a multiple of N, so a compiled step sees few shapes. 0: off (batches as long
    # as their longest item). Padding changes a Conformer's loss (its convolutions and batch norm
    # see padded frames), so a run with it set is another run.
    pad_to_multiple: int = Field(0, ge=0)
    # The training step's arithmetic. bf16: bf16 autocast on CUDA and fp32 on the CPU (where bf16
    # matmuls are slower); fp32: fp32 everywhere. (Evaluation keeps bf16 autocast on CUDA.)
    precision: Literal["fp32", "bf16"] = "bf16"
    # torch.compile's mode with train.compile: "reduce-overhead" captures the step in CUDA graphs
    # (best with pad_to_multiple: one graph per shape), "max-autotune" also tunes kernels. Speed
    # only, like `compile`: left out of the run id.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    # AdamW's implementation: "foreach" (per-tensor kernels launched from C++), or "fused" (one
    # kernel for all parameters; on CUDA it also keeps its step count on the device). Fused rounds
    # differently, so a run with it is another run.
    optimizer_impl: Literal["foreach", "fused"] = "foreach"


class EvalConfig(_Strict):
    precisions: tuple[str, ...] = ("float", "w8", "w4")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    hypotheses: bool = True
    beam_size: int = Field(1, ge=1)  # MT: 1 is greedy
    length_penalty: float = Field(1.0, ge=0.0)
    # ASR: also score recordings of N consecutive test utterances joined (e.g. [4, 8]); recorded as
    # the metrics wer@xN / cer@xN beside WER. The model is still trained on single utterances.
    long_form: tuple[int, ...] = ()
    # ASR decoding: "greedy" CTC best path, or "lexicon": CTC beam search (eval.beam_size beams)
    # that only spells words seen in the training transcripts, with no language model. With
    # "lexicon" the greedy scores are recorded too, as wer_greedy and cer_greedy.
    decoder: Literal["greedy", "lexicon"] = "greedy"
    word_score: float = 0.0  # lexicon: added per word; > 0 favours more words, < 0 fewer
    # lexicon: a word n-gram model of the training transcripts (0: none), weighted by lm_weight.
    lm_order: int = Field(0, ge=0, le=3)
    lm_weight: float = Field(2.0, ge=0.0)

    @field_validator("long_form")
    @classmethod
    def _lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 2 for n in v) or len(set(v)) != len(v):
            raise ValueError(f"long_form: distinct numbers of utterances, each at least 2, got {list(v)}")
        return v


class Recipe(_Strict):
    name: str = Field(pattern=SAFE_NAME, max_length=100)  # the suite: a folder name
    task: Literal["asr", "mt"] = "asr"
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=SyntheticSpeechData)
    model: ModelConfig = Field(default_factory=ConformerCTCConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    precisions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The grid keys this run sets besides technique, bits, seed and model.arch ("train.lr=0.001"),
    # set by the grid: leaderboards keep such runs apart instead of averaging them as seeds.
    variant: str = Field("", max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _transducer_include(cls, data: Any) -> Any:
        """A transducer's LSTM weights (weight_ih_l0, weight_hh_l0) escape the default include
        globs; with no `quant.include` of the recipe's own they are added, so all its weights
        are quantized."""
        if not isinstance(data, dict):
            return data
        model, quant = data.get("model"), data.get("quant")
        arch = model.get("arch") if isinstance(model, dict) else getattr(model, "arch", None)
        if arch != "conformer-transducer":
            return data
        if quant is None or isinstance(quant, dict) and "include" not in quant:
            return {**data, "quant": {**(quant or {}), "include": list(TRANSDUCER_INCLUDE)}}
        if isinstance(quant, QuantConfig) and "include" not in quant.model_fields_set:
            return {**data, "quant": quant.model_copy(update={"include": TRANSDUCER_INCLUDE})}
        return data

    def cross_field_errors(self) -> list[tuple[tuple, str]]:
        """Checks that span sections, as (location, message) so errors still point at a line."""
        errors: list[tuple[tuple, str]] = []
        if self.data.source not in DATA_SOURCES[self.task]:
            errors.append(
                (
                    ("data", "source"),
                    f"{self.data.source!r} is not a {self.task} data source "
                    f"(one of {', '.join(DATA_SOURCES[self.task])})",
                )
            )
        if self.model.arch not in ARCHS[self.task]:
            errors.append(
                (
                    ("model", "arch"),
                    f"{self.model.arch!r} is not a {self.task} model "
                    f"(use {' or '.join(repr(a) for a in ARCHS[self.task])})",
                )
            )
        if self.eval.long_form and self.task != "asr":
            errors.append(
                (("eval", "long_form"), "long-form evaluation joins speech recordings: task asr only")
            )
        if self.eval.decoder != "greedy" and self.task != "asr":
            errors.append((("eval", "decoder"), f"{self.eval.decoder!r} decoding is for asr recipes"))
        elif self.eval.decoder == "lexicon" and getattr(self.model, "units", "chars") != "chars":
            # found here, not after training: the lexicon spells words in characters
            errors.append((("eval", "decoder"), "lexicon decoding needs model.units: chars"))
        elif self.eval.decoder == "lexicon" and self.model.arch == "conformer-transducer":
            errors.append(
                (
                    ("eval", "decoder"),
                    "lexicon decoding is a CTC beam search: model.arch conformer-transducer decodes "
                    "with eval.decoder: greedy",
                )
            )
        for name in self.precisions:
            if not re.fullmatch(SAFE_NAME, name) or len(name) > 64:
                errors.append(
                    (
                        ("precisions", name),
                        f"{name!r}: a precision's name becomes a file name: letters, digits, '.', '_' "
                        "and '-', starting with a letter or digit, at most 64 characters",
                    )
                )
        known = ["float", *(f"w{b}" for b in range(2, 9)), *self.precisions]
        for i, p in enumerate(self.eval.precisions):
            try:
                parse_precision(p, self.precisions)
            except ValueError as e:
                errors.append((("eval", "precisions", i), f"{e}{nearest(p, known)}"))
        q = self.quant
        errors += [(("quant", *loc), msg) for loc, msg in q.field_errors()]
        if q.train_precision is not None:
            spec = self.precisions.get(q.train_precision)
            if q.technique in ("float", "ptq"):
                msg = f"technique {q.technique!r} trains no quantizer: train_precision is for QAT techniques"
                errors.append((("quant", "train_precision"), msg))
            elif spec is None:
                named = ", ".join(sorted(self.precisions)) or "none defined"
                msg = f"{q.train_precision!r} is not a map under precisions: ({named})"
                errors.append((("quant", "train_precision"), msg))
            elif "auto" in spec:
                msg = (
                    f"{q.train_precision!r} is automatic (chosen after training): train at a hand-written map"
                )
                errors.append((("quant", "train_precision"), msg))
        if self.train.compile_mode != "default" and not self.train.compile:
            msg = f"{self.train.compile_mode!r} is a torch.compile mode: it needs train.compile: true"
            errors.append((("train", "compile_mode"), msg))
        if q.qat_steps and q.technique not in ("float", "ptq"):
            if q.float_warmup_steps:
                msg = "QAT after the finished float training (qat_steps) starts at train.steps: unset float_warmup_steps"
                errors.append((("quant", "float_warmup_steps"), msg))
            if q.qat_lr is None:
                errors.append(
                    (("quant", "qat_lr"), "qat_steps needs qat_lr: the rate QAT fine-tuning starts at")
                )
        elif q.technique not in ("float", "ptq") and q.float_warmup_steps >= self.train.steps:
            errors.append(
                (
                    ("quant", "float_warmup_steps"),
                    f"{q.float_warmup_steps} must be below train.steps ({self.train.steps}), "
                    "or no step would be quantization-aware",
                )
            )
        return errors

    def quant_spec(self) -> QuantSpec:
        """The quantization library's spec of this recipe: the `quant:` section's, at its
        `train_precision` map where it names one."""
        spec = self.quant.spec()
        name = self.quant.train_precision
        return spec if name is None else replace(spec, precision=parse_precision(name, self.precisions))

    @property
    def run_id(self) -> str:
        """``<technique>-w<bits>-seed<seed>-<hash>`` (qbench.config.run_ids)."""
        return run_ids.run_id(self)


def nearest(word: Any, options: list[str]) -> str:
    """A " (did you mean ...?)" hint naming the option closest to ``word``, or ""."""
    match = difflib.get_close_matches(str(word), options, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def trains_quantized(recipe: Recipe) -> bool:
    """True when training attaches quantizers (every technique but float and ptq)."""
    return recipe.quant.technique not in ("float", "ptq")


def qat_start(recipe: Recipe) -> int | None:
    """The step quantization-aware training starts at: after the whole float training with
    `quant.qat_steps`, else after `quant.float_warmup_steps`; None for float and ptq."""
    if not trains_quantized(recipe):
        return None
    return recipe.train.steps if recipe.quant.qat_steps else recipe.quant.float_warmup_steps


def total_steps(recipe: Recipe) -> int:
    """Every training step of the run: train.steps, and the QAT steps after them with `qat_steps`."""
    return recipe.train.steps + (recipe.quant.qat_steps if trains_quantized(recipe) else 0)
