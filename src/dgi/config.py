"""Typed, layered configuration: defaults -> YAML files -> `key=value` overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    path: Path | None = None
    max_history: int = Field(20, ge=1)
    indexing_ratio: float = Field(0.0, ge=0.0, le=1.0, description="share of the items (with text) "
                                  "that get a DSI indexing example in train: the item's text as the "
                                  "query, the item as the target (seeded by train.seed)")
    indexing_spans: int = Field(0, ge=0, le=16, description="per indexed item, this many more indexing "
                                "examples whose query is a random run of 2-4 consecutive words of the item's "
                                "text (DSI's random-span indexing: queries as short as searchers type); needs "
                                "data.indexing_ratio > 0")
    valid_carve_ratio: float = Field(0.1, ge=0.0, le=0.5, description="when the dataset has no validation "
                                     "examples: the share of the training examples moved to validation "
                                     "(whole queries, seeded by train.seed), so epoch and ranking-rule "
                                     "selection have data; indexing examples stay in train; 0 disables")
    valid_carve_max: int = Field(2000, ge=1, description="at most this many training examples are carved "
                                 "(train.eval_examples scores 2000 per epoch by default)")

    @model_validator(mode="after")
    def _spans_need_indexing(self) -> DataConfig:
        if self.indexing_spans and not self.indexing_ratio:
            raise ValueError(f"indexing_spans={self.indexing_spans} adds span queries to indexing examples, "
                             "but indexing_ratio is 0 (no item is indexed)")
        return self


class EncoderConfig(Section):
    model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; "
                       "'all-MiniLM-L6-v2' loads the packaged offline copy")
    batch_size: int = Field(256, ge=1)
    cache_dir: Path | None = Field(None, description="embedding cache; default ~/.cache/dgi/embeddings")
    max_length: int = Field(32, ge=4, description="model.text_encoder=trainable: tokens kept per text "
                            "(bounds the backbone's cost per step)")
    gradient_checkpointing: bool = Field(True, description="model.text_encoder=trainable: recompute each "
                                         "backbone layer's activations in the backward pass instead of keeping them")


class ModelConfig(Section):
    width: int = Field(128, ge=8, description="item/context/decoder/codebook dimension")
    context_layers: int = Field(2, ge=0)
    decoder_layers: int = Field(2, ge=1)
    attention_heads: int = Field(4, ge=1)
    ffn_multiplier: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    item_id_embeddings: bool = Field(
        False, description="add a learnable per-item vector (zero at start) to the item tower's unit "
        "output: collaborative signal a title cannot carry; items added after training keep none")
    projection_init: Literal["pca", "whitened_pca"] = Field(
        "pca", description="initial text -> width projection of the towers (centered PCA; whitened = "
        "every kept direction rescaled to unit variance, which sharpens content similarity)")
    decoder_inputs: Literal["residual", "codewords"] = Field(
        "residual", description="what the decoder reads at step j: the context vector minus the "
        "codewords chosen so far (starts at the quantized dense solution) or the codewords")
    text_encoder: Literal["frozen", "trainable"] = Field(
        "frozen", description="frozen: fixed cached embeddings of encoder.model; trainable: encoder.model is "
        "fine-tuned with the rest (the step's target item and query texts get gradients; history items and "
        "sampled negatives read embeddings refreshed after every epoch)")
    context_attention: Literal["bidirectional", "causal"] = Field(
        "bidirectional", description="bidirectional: every history slot attends to every other; causal: "
        "each attends to the ones before it (SASRec-style), so training encodes each user's sequence once "
        "for all its prefixes (~2.5x fewer tokens on Beauty)")
    geometry: Literal["cosine", "dot"] = Field(
        "cosine", description="cosine: unit-length item and context vectors, logits scaled by the InfoNCE "
        "temperature (DGI); dot: unnormalized vectors and raw dot products — the classic dual encoder "
        "whose popular items win by norm (dense-only runs, train.joint_epochs=0)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.width % self.attention_heads:
            raise ValueError(f"width {self.width} is not divisible by attention_heads {self.attention_heads}")
        return self


class QuantizerConfig(Section):
    codebook_sizes: list[int] | None = Field(None, description="None: chosen from the corpus size")
    levels: int = Field(3, ge=1)
    gradient: Literal["gumbel", "ste", "frozen"] = "gumbel"
    heads: Literal["tied", "untied"] = "tied"
    logits: Literal["cosine", "dot"] = "cosine"
    head_target: Literal["codeword", "prefix"] = Field(
        "codeword", description="what a tied head's level-j logit compares: codeword k with the decoder state "
        "(codeword), or the point the extended prefix names in item space, the sum of its codewords, with the "
        "decoder state plus the sum so far (prefix): a fresh decoder then scores each partial SID by the "
        "context's cosine to it, the dense path's own geometry, instead of re-quantizing a noisy residual")
    gamma_init: float = Field(30.0, gt=0)
    tau_start: float = Field(1.0, gt=0)
    tau_end: float = Field(0.1, gt=0)
    kmeans_iterations: int = Field(25, ge=1)

    @model_validator(mode="after")
    def _sizes_match_levels(self) -> QuantizerConfig:
        if self.codebook_sizes is not None:
            if len(self.codebook_sizes) != self.levels:
                raise ValueError(f"codebook_sizes has {len(self.codebook_sizes)} entries, levels={self.levels}")
            if min(self.codebook_sizes) < 2:
                raise ValueError("every codebook needs at least 2 codes")
        if self.head_target == "prefix" and (self.heads != "tied" or self.logits != "cosine"):
            raise ValueError("quantizer.head_target=prefix sums codebook rows: it needs heads=tied, logits=cosine")
        return self


class LossConfig(Section):
    ntp: float = Field(1.0, ge=0)
    global_recon: float = Field(1.0, ge=0)
    local: float = Field(0.25, ge=0)
    commitment_beta: float = Field(0.25, ge=0)
    infonce: float = Field(1.0, ge=0)
    infonce_temperature: float = Field(0.05, gt=0)
    sampled_negatives: int = Field(0, ge=0, description="items drawn uniformly per batch as extra InfoNCE "
                                   "negatives; in-batch negatives alone follow popularity and push it down")
    diversity: float = Field(0.5, ge=0)
    ntp_label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the next-token "
                                       "cross-entropy: spreads this share of each level's target mass over "
                                       "all codes, against over-confident head codes")
    ntp_popularity_power: float = Field(0.0, ge=0, le=1, description="weight each example's next-token loss "
                                        "by its target's training count to this negative power (mean weight "
                                        "1): 0 = every example alike, 1 = every item alike; lifts the tail")
    ntp_dense_targets: float = Field(0.0, ge=0, le=1, description="decoder phase: this share of each level's "
                                     "next-token target mass follows the model's own dense path (its softmax "
                                     "over every item at the InfoNCE temperature, summed over the items under "
                                     "each code below the target's prefix): a geometry-aware label smoothing")


class TrainConfig(Section):
    seed: int = 0
    batch_size: int = Field(256, ge=2)
    dense_epochs: int = Field(1, ge=0, description="warm-up: towers on InfoNCE before the index is built")
    quantizer_epochs: int = Field(3, ge=0, description="frozen mode only: reconstruction epochs "
                                  "over the items before the codes are fixed")
    joint_epochs: int = Field(3, ge=0)
    decoder_epochs: int = Field(0, ge=0, description="after the joint phase: the SID decoder alone on the "
                                "fixed SIDs of the best epoch so far (towers and quantizer frozen and "
                                "deterministic, hard codewords as in beam search), with its own schedule")
    decoder_lr: float = Field(1e-3, gt=0, description="peak learning rate of the decoder phase "
                              "(warm-up, then linear decay over the phase)")
    patience: int | None = Field(None, ge=1, description="end the joint or decoder phase after this many "
                                 "epochs without a better validation score (None: run every epoch)")
    lr: float = Field(1e-3, gt=0)
    joint_decoder_lr: float | None = Field(None, gt=0, description="peak learning rate of the SID decoder and "
                                           "its heads in the joint phase (None: train.lr). A larger batch takes "
                                           "fewer steps an epoch; the towers then want a lower rate than the "
                                           "decoder, which is still learning when the schedule ends")
    backbone_lr: float = Field(2e-5, gt=0, description="peak learning rate of a trainable text encoder")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="at most this many batches an epoch (a "
                                            "random subset of the shuffled batches): epochs of a fixed cost")
    quantizer_lr: float = Field(5e-4, gt=0, description="the paper's 5e-4; higher rates let the tied "
                                "next-token gradient collapse the codebooks (measured: 89% collisions at 5e-3)")
    weight_decay: float = Field(0.01, ge=0)
    length_bucketing: int = Field(64, ge=1, description="shuffle, then sort pools of this many batches by "
                                  "history length and shuffle the batches: a batch of similar lengths pads "
                                  "little (Beauty: mean 6.7 of 20 slots); 1 = plain shuffle")
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_examples: int = Field(2000, ge=1, description="validation examples scored each epoch")
    diagnostics: bool = Field(True, description="log every ranking rule, beam recall per SID level, the "
                              "invalid-SID rate and teacher-forced NTP per level each epoch (about 3x "
                              "the validation cost); false: the dense path and the configured rule only")
    select_metric: str = "ndcg@10"
    threads: int | None = Field(None, ge=1, description="torch and FAISS threads for everything `dgi train`, "
                                "`--resume` and `dgi eval` do, the text encoding included (None: every core)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast where bf16 is native (CUDA with bf16, a CPU with "
        "AVX512-BF16 or AMX), else fp32; code assignment, scaled logits and losses always run in fp32")
    device: str = Field("cpu", description="torch device for training and search: cpu, cuda, cuda:N or "
                        "auto (cuda when available); beam search bookkeeping stays on the CPU")


class SearchConfig(Section):
    beam_size: int = Field(10, ge=1)
    rule: Literal["lexicographic", "fused", "rerank"] = "lexicographic"
    fusion_weight: float = 1.0
    rerank_beam_size: int = Field(50, ge=1)
    batch_size: int = Field(256, ge=1)
    item_vectors: Literal["float32", "float16"] = Field(
        "float32", description="how search holds the item vectors: float16 halves the memory a large "
        "catalogue needs (a model directory stores them in float16 anyway); scores are computed in float32")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="the decoder's steps in beam search: bf16 autocast is about 1.5x faster batched on a "
        "CPU with AVX512-BF16 (auto: where native) but may reorder near-tied beams; log-probs stay fp32")
    level_weights: list[float] | None = Field(
        None, description="a weight per SID level on its log-probs in a beam's score (None: all 1, the plain "
        "sum); weights below 1 on the deeper levels trust the coarse level more when beams of different "
        "parents compete; scaling every weight by one factor changes neither the beams nor the lexicographic order "
        "(the fused rule's fusion_weight is relative to the weighted score). Chosen on validation")
    popularity_correction: float = Field(
        0.0, ge=0.0, description="subtract this share of the training popularity prior, log P_train(next "
        "code | prefix), from every level's log-probs (logit adjustment, dgi.search.prior): the decoder's beams "
        "stop favouring codes that many training targets share, which lifts rarely seen items. 0: off; "
        "chosen on validation. Needs the items' training counts, which a run and its exported model directory carry")

    @model_validator(mode="after")
    def _positive_level_weights(self) -> SearchConfig:
        if self.level_weights is not None and min(self.level_weights, default=1.0) <= 0:
            raise ValueError(f"search.level_weights must all be > 0, got {self.level_weights}")
        return self


class Config(Section):
    name: str = "dgi"
    data: DataConfig = DataConfig()
    encoder: EncoderConfig = EncoderConfig()
    model: ModelConfig = ModelConfig()
    quantizer: QuantizerConfig = QuantizerConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _trainable(self) -> Config:
        t = self.train
        if t.joint_epochs == 0 and t.dense_epochs == 0:
            raise ValueError("nothing to train: train.dense_epochs and train.joint_epochs are both 0")
        if self.model.geometry == "dot" and t.joint_epochs:
            raise ValueError("model.geometry=dot is the dense dual-encoder baseline: set train.joint_epochs=0 "
                             "(the DGI ablation without cosine is quantizer.logits=dot)")
        if self.loss.ntp_dense_targets and not t.decoder_epochs:
            raise ValueError("loss.ntp_dense_targets acts in the decoder phase only: set train.decoder_epochs")
        return self

    @model_validator(mode="after")
    def _a_level_weight_per_sid_level(self) -> Config:
        weights = self.search.level_weights
        if weights is not None and len(weights) != self.quantizer.levels:
            raise ValueError(f"search.level_weights has {len(weights)} entries for {self.quantizer.levels} SID levels")
        return self


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source."""


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> Config:
    """Merge `base` (or the defaults), each YAML file in order, then `section.key=value` overrides."""
    merged: dict[str, Any] = dict(base or {})
    for file in files:
        try:
            layer = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{file}: cannot read config: {error}") from error
        if not isinstance(layer, dict):
            raise ConfigError(f"{file}: a config file must be a mapping, got {type(layer).__name__}")
        merged = _deep_merge(merged, layer)
    merged = apply_overrides(merged, overrides)
    try:
        return Config.model_validate(merged)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']} (got {e.get('input')!r})"
                             for e in error.errors())
        raise ConfigError(f"invalid config ({', '.join(map(str, files)) or 'defaults'}"
                          f"{' + overrides' if overrides else ''}): {problems}") from error


def apply_overrides(mapping: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`mapping` (a config as nested dicts) with each `section.key=value` override applied in order."""
    merged = dict(mapping)
    for override in overrides:
        merged = _deep_merge(merged, _parse_override(override))
    return merged


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def auto_codebook_sizes(n_items: int, levels: int) -> list[int]:
    """256 codes a level from ~10k items up (as in TIGER); fewer for small corpora so codes get used."""
    size = 16
    while size < 256 and size * 2 * 32 <= n_items:
        size *= 2
    return [size] * levels


def _parse_override(text: str) -> dict[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    value = yaml.safe_load(raw) if raw.strip() else None
    node: Any = value
    for part in reversed(key.strip().split(".")):
        node = {part: node}
    return node


def _deep_merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
