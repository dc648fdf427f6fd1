"""The run configuration as typed, frozen dataclasses: one per concern, units in field names.

Seconds become samples only in the derived methods here. Loading and checking live beside this
module (pipeline.config.load, pipeline.config.checks); `pipeline.config` exports all three.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Optional, Union


class ConfigError(ValueError):
    """A config file or override that cannot describe a run."""


# Validation metrics that pick a run's best epoch (train.monitor) or rank tuner trials.
Monitor = Literal["val_loss", "val_macro_f1", "val_pr_auc", "val_accuracy"]


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """How any input file becomes a fixed-length mono clip at one sample rate."""

    sample_rate_hz: int = 16000
    clip_s: float = 3.0
    # "mean" averages the channels; a channel index (0, 1, ...) keeps that channel.
    mono: Union[Literal["mean"], int] = "mean"
    # Where a clip shorter than clip_s sits ("random": only in training; centred otherwise).
    pad_position: Literal["start", "center", "random"] = "center"
    # "zero" pads with silence; "repeat" tiles the clip (cyclic) to the length.
    pad_mode: Literal["zero", "repeat"] = "zero"

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_s * self.sample_rate_hz))


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    """Spectrogram frontend. Window and hop in seconds, or n_fft / hop_samples in samples."""

    kind: Literal["linear", "mel", "logmel", "mfcc", "pcen"] = "logmel"
    window_s: Optional[float] = None
    hop_s: Optional[float] = None
    n_fft: Optional[int] = 512
    hop_samples: Optional[int] = 128
    window: Literal["hann", "hamming"] = "hann"
    # Pad half a window each side so frame t is centred at t * hop (librosa's convention).
    center: bool = True
    # 1.0 magnitude, 2.0 power; the mel/log/mfcc/pcen kinds work on power.
    power: float = 2.0
    n_mels: int = 64
    mel_scale: Literal["htk", "slaney"] = "slaney"
    fmin_hz: float = 0.0
    # None means Nyquist.
    fmax_hz: Optional[float] = None
    n_mfcc: int = 20
    log_floor: float = 1e-10
    top_db: Optional[float] = None
    pcen_time_constant_s: float = 0.4
    pcen_gain: float = 0.98
    pcen_bias: float = 2.0
    pcen_power: float = 0.5
    pcen_eps: float = 1e-6
    # "none", "standardize" (zero mean, unit variance per example) or "minmax" (0..1 per example).
    normalize: Literal["none", "standardize", "minmax"] = "none"

    def frame_length_samples(self, sample_rate_hz: int) -> int:
        if self.window_s is not None:
            return int(round(self.window_s * sample_rate_hz))
        return int(self.n_fft)

    def hop_length_samples(self, sample_rate_hz: int) -> int:
        if self.hop_s is not None:
            return int(round(self.hop_s * sample_rate_hz))
        return int(self.hop_samples)

    def fft_length(self, sample_rate_hz: int) -> int:
        """FFT size: n_fft when given, else the next power of two above the window."""
        frame = self.frame_length_samples(sample_rate_hz)
        if self.window_s is None:
            return frame
        return 1 << max(0, math.ceil(math.log2(frame)))

    def fmax(self, sample_rate_hz: int) -> float:
        return float(self.fmax_hz) if self.fmax_hz is not None else sample_rate_hz / 2.0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation; every stage is stateless and driven by the run seed."""

    enabled: bool = False
    time_masks: int = 2
    time_mask_max_frames: int = 20
    freq_masks: int = 2
    freq_mask_max_bins: int = 8
    time_shift_max_s: float = 0.0
    gain_db_range: float = 0.0
    # Mix a background clip into each example with this probability, at snr_db_min..max.
    noise_prob: float = 0.0
    noise_snr_db_min: float = 0.0
    noise_snr_db_max: float = 20.0
    # Glob of non-call audio to mix in (relative paths resolve against data.root).
    noise_glob: str = ""
    mixup_alpha: float = 0.0


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 32
    # "pipeline": frontend + augmentation mapped in tf.data over batches (CPU).
    # "device": tf.data yields waveforms; the model's step computes features on its device
    # (the GPU when one is present).
    placement: Literal["pipeline", "device"] = "device"
    shuffle_buffer: int = 2048
    # Decoded audio at the model rate kept in memory after the first pass, per split, when the
    # split's audio fits in this many MB (training: each record's region with the margins its
    # crops can reach, so later epochs only crop; evaluation: the clips). 0: read every time.
    cache_mb: int = 1024
    # Fixed element order and fixed parallel results, for reproducible runs.
    deterministic: bool = True
    seed: int = 1234
    # Files and windows that fail checks are listed and skipped; True makes the first fatal.
    fail_fast: bool = False


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where examples come from. Relative paths resolve against the config file's folder."""

    root: str = "."
    # "folders": one sub-folder per class; "glob": files matching `pattern`, labels by `label_regex`;
    # "manifest": CSV with file,label[,group][,start_s,end_s]; "annotations": table over recordings.
    source: Literal["folders", "glob", "manifest", "annotations"] = "folders"
    pattern: str = "**/*.wav"
    label_regex: str = ""
    manifest: str = ""
    annotations: str = ""
    label_column: str = "label"
    # Our column name -> the table's, for manifest and CSV annotation tables (e.g. {file: path}).
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    # Label as found -> label to use (merges spelling variants, names folders); unmapped kept.
    label_map: dict[str, str] = dataclasses.field(default_factory=dict)
    # Label used for windows drawn from unannotated gaps (annotations source).
    negative_label: str = "noise"
    negatives_per_positive: float = 1.0
    # What makes a window over an annotated recording a call window: "whole", it holds the
    # whole call; "centre", a call sounds at its centre, as detection reads windows
    # (pipeline.records.windows). negative_margin_s: from every call to a non-call window ("whole")
    # or to its centre ("centre").
    call_windows: Literal["whole", "centre"] = "whole"
    negative_margin_s: float = 0.5
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Recordings (groups) held back by name instead of by fraction: file-name patterns.
    val_groups: list[str] = dataclasses.field(default_factory=list)
    test_groups: list[str] = dataclasses.field(default_factory=list)
    # Seed of the records (sampled non-call windows) and of the split; null: pipeline.seed. Fixed,
    # runs with other pipeline.seed values (initialisation, augmentation) share one split, as an
    # ensemble's members must (python -m pipeline.tools.ensemble).
    seed: Optional[int] = None
    # Shorter files are listed as too short, not used; null: one frontend window (a shorter file
    # holds no spectrogram frame).
    min_duration_s: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone from models.backbones.registry. Each family reads the fields it needs (see its builder)."""

    name: str = "small_cnn"
    # Channels of the first block; later blocks widen from it.
    width: int = 32
    # Number of blocks (stages).
    depth: int = 3
    kernel_size: int = 3
    # Pooling between blocks (small_cnn, crnn).
    block_pooling: Literal["max", "avg"] = "max"
    # Pooling of the last feature map over time and frequency before the logits (every clip model
    # but the fixed baselines).
    global_pooling: Literal["avg", "max"] = "avg"
    dropout: float = 0.2
    # Pretrained backbones (birdnet): the last MBConv blocks fine-tuned (0: the backbone frozen),
    # and ReLU units of a hidden layer in the head (0: a linear head on the embedding).
    trainable_blocks: int = 0
    head_units: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    # Decoupled weight decay (biases and normalisation layers excluded); null: the optimizer's
    # default (AdamW 0.004, none for the others).
    weight_decay: Optional[float] = None
    # Linear learning-rate warm-up over this many epochs, then train.schedule.
    warmup_epochs: float = 0.0
    # Targets pulled towards uniform by this much (0: none).
    label_smoothing: float = 0.0
    # The validation metric that picks the best epoch (model.keras) and stops training early;
    # ties go to the lower validation loss.
    monitor: Monitor = "val_loss"
    # The epoch saved as model.keras: the "best" by train.monitor, or the "last" one trained (for
    # a fixed schedule whose validation split is too small to choose an epoch by: a recording
    # with a handful of calls can rank the barely trained first epoch best).
    keep: Literal["best", "last"] = "best"
    early_stopping_patience: int = 5
    # BatchNormalization statistics for validation and the saved model: "recompute" them over
    # the training split (without augmentation) before every validation, or keep the "moving"
    # averages of the training steps, which lag far behind the weights when an epoch has few steps.
    batchnorm_statistics: Literal["recompute", "moving"] = "recompute"
    mixed_precision: bool = False
    # "frames": a score per spectrogram frame and call label, plus one per frame for "a call
    # starts here" (sound event detection: annotations source and a frame model such as crnn).
    task: Literal["binary", "multiclass", "multilabel", "frames"] = "multiclass"
    # Frame targets: a frame is an onset frame ("a call starts here") within this of a labelled
    # start. Wider than a frame (~12 ms at hop 256 and 22.05 kHz) because hand-labelled starts
    # are uncertain by tens of ms, more in loosely labelled archives (MP3 encoder delay adds to it).
    onset_tolerance_s: float = 0.025
    # Class imbalance: "none"; "class_weights" (loss weights from training-split counts, single-
    # label tasks); "sample" (tf.data draws every class equally often); "auto": "sample" when the
    # training split's largest class has at least twice the examples of its smallest.
    balance: Literal["auto", "none", "class_weights", "sample"] = "auto"
    # Learning-rate schedule over the whole run: "constant" or "cosine" decay to 0.
    schedule: Literal["constant", "cosine"] = "constant"
    # TensorBoard profiler batch range, e.g. "10,20"; "" turns the profiler off.
    profile_batches: str = ""
    # Augmented input spectrograms drawn in TensorBoard's image grid each epoch (0: none).
    image_examples: int = 16


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """Defaults of detect.py. Windows are always the trained clip length (audio.clip_s)."""

    hop_s: Optional[float] = None
    threshold: float = 0.5
    min_gap_s: float = 0.0
    min_duration_s: float = 0.0
    batch_size: int = 64
    # Audio decoded and scored per step when streaming a file; memory is bounded by this.
    chunk_s: float = 60.0
    # Evaluation against a truth table: a detected event matches a true call when their overlap
    # is at least this fraction of the shorter of the two (one-to-one matching).
    match_min_overlap: float = 0.3
    # Events longer than this are split into calls in a row at the score's lowest dips (None: never).
    max_event_s: Optional[float] = None
    # Frame models (train.task "frames"): an event is split where a new call starts, i.e. where
    # the onset score peaks at or above this inside it (1.0 never splits).
    onset_threshold: float = 0.5


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """KerasTuner search (python -m tuning). The space itself is declared in tuning/space.py."""

    tuner: Literal["hyperband", "bayesian", "random"] = "hyperband"
    max_trials: int = 20
    # Stop cleanly after the trial running when this many hours have passed (0: no limit).
    max_hours: float = 0.0
    # The validation metric trials are ranked by (it also picks each trial's best epoch).
    objective: Monitor = "val_loss"
    # Epochs of the longest trial (Hyperband's max_epochs; every trial for random/bayesian).
    max_epochs: int = 20
    # Hyperparameters held at one value, e.g. {"model.name": "resnet"}.
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Narrowed choices, e.g. {"frontend.n_mels": [32, 64], "model.name": ["small_cnn", "resnet"]}.
    space: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Config:
    audio: AudioConfig = AudioConfig()
    frontend: FrontendConfig = FrontendConfig()
    augment: AugmentConfig = AugmentConfig()
    pipeline: PipelineConfig = PipelineConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    detect: DetectConfig = DetectConfig()
    tune: TuneConfig = TuneConfig()
