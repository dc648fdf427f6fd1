"""Typed run configuration: frozen dataclasses loaded from YAML with strict checking.

One dataclass per concern; units live in field names; seconds become samples only in the
derived properties here. Every error names the file, the dotted key and what was expected.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot describe a run."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-4, 5E3) as floats; plain
    YAML 1.1 reads them as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """How any input file becomes a fixed-length mono clip at one sample rate."""

    sample_rate_hz: int = 16000
    clip_s: float = 3.0
    # "mean" averages channels; "0", "1", ... picks one channel.
    mono: str = "mean"
    # Where a clip shorter than clip_s sits: "start", "center" or "random" (random only in training).
    pad_position: str = "center"
    # "zero" pads with silence; "repeat" tiles the clip (cyclic) to the length.
    pad_mode: str = "zero"

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
    cache: bool = False
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
    negative_margin_s: float = 0.5
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Recordings (groups) held back by name instead of by fraction: file-name patterns.
    val_groups: list[str] = dataclasses.field(default_factory=list)
    test_groups: list[str] = dataclasses.field(default_factory=list)
    min_duration_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone from models.registry. Each family reads the fields it needs (see its builder)."""

    name: str = "small_cnn"
    # Channels of the first block; later blocks widen from it.
    width: int = 32
    # Number of blocks (stages).
    depth: int = 3
    kernel_size: int = 3
    pooling: Literal["max", "avg"] = "max"
    dropout: float = 0.2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    early_stopping_patience: int = 5
    mixed_precision: bool = False
    # "frames": a score per spectrogram frame and call label, plus one per frame for "a call
    # starts here" (sound event detection: annotations source and a frame model such as crnn).
    task: Literal["binary", "multiclass", "multilabel", "frames"] = "multiclass"
    # Frame targets: a frame is an onset frame ("a call starts here") within this of a labelled
    # start. Wider than a frame (~12 ms at hop 256 and 22.05 kHz) because hand-labelled starts
    # are uncertain by tens of ms, more in loosely labelled archives (MP3 encoder delay adds to it).
    onset_tolerance_s: float = 0.025
    # Class imbalance: "none"; "class_weights" (loss weights from training-split counts, single-
    # label tasks); "sample" (tf.data draws every class equally often).
    balance: Literal["none", "class_weights", "sample"] = "none"
    # Learning-rate schedule over the whole run: "constant" or "cosine" decay to 0.
    schedule: Literal["constant", "cosine"] = "constant"
    # TensorBoard profiler batch range, e.g. "10,20"; "" turns the profiler off.
    profile_batches: str = ""
    # Augmented input spectrograms drawn in TensorBoard's image grid each epoch (0: none).
    image_examples: int = 16


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    window_s: Optional[float] = None
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
    objective: str = "val_loss"
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


# ---------------------------------------------------------------------------------------------
# Loading and checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against the annotated type `tp`; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list):
            return [_coerce(item, typing.get_args(tp)[0], f"{where}[{i}]") for i, item in enumerate(items)]
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is dict and typing.get_args(tp)[1] is Any:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping from names to values, got {value!r}")
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items()):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping of names to names, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key (known keys: {', '.join(sorted(fields))})".lstrip(".")
        )
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    """Cross-field checks: values each fine alone that cannot describe a run together."""
    sr = cfg.audio.sample_rate_hz
    nyquist = sr / 2.0
    fe = cfg.frontend
    problems: list[tuple[str, str]] = []

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            problems.append((key, msg))

    need(sr > 0, "audio.sample_rate_hz", "a positive rate in Hz")
    need(cfg.audio.clip_s > 0, "audio.clip_s", "a positive duration in seconds")
    need(cfg.audio.mono == "mean" or cfg.audio.mono.isdigit(), "audio.mono",
         "'mean' or a channel index such as '0'")
    need(cfg.audio.pad_position in ("start", "center", "random"), "audio.pad_position",
         "one of 'start', 'center', 'random'")
    need(cfg.audio.pad_mode in ("zero", "repeat"), "audio.pad_mode", "'zero' or 'repeat'")
    need((fe.window_s is None) != (fe.n_fft is None), "frontend.window_s",
         "exactly one of frontend.window_s and frontend.n_fft (set the other to null)")
    need((fe.hop_s is None) != (fe.hop_samples is None), "frontend.hop_s",
         "exactly one of frontend.hop_s and frontend.hop_samples (set the other to null)")
    if not problems:
        frame = fe.frame_length_samples(sr)
        hop = fe.hop_length_samples(sr)
        need(frame >= 2, "frontend.window_s" if fe.window_s is not None else "frontend.n_fft",
             f"a window of at least 2 samples at {sr} Hz")
        need(hop >= 1, "frontend.hop_s" if fe.hop_s is not None else "frontend.hop_samples",
             f"a hop of at least 1 sample at {sr} Hz")
        need(frame <= cfg.audio.clip_samples, "frontend.n_fft",
             f"a window no longer than the clip ({cfg.audio.clip_samples} samples)")
    need(0 <= fe.fmin_hz < nyquist, "frontend.fmin_hz", f"0 <= fmin_hz < Nyquist ({nyquist:g} Hz)")
    if fe.fmax_hz is not None:
        need(fe.fmax_hz <= nyquist, "frontend.fmax_hz",
             f"at most Nyquist ({nyquist:g} Hz for audio.sample_rate_hz={sr}), got {fe.fmax_hz:g}")
        need(fe.fmax_hz > fe.fmin_hz, "frontend.fmax_hz", f"above fmin_hz ({fe.fmin_hz:g})")
    need(fe.n_mels >= 1, "frontend.n_mels", "at least 1")
    need(1 <= fe.n_mfcc <= fe.n_mels, "frontend.n_mfcc", f"between 1 and n_mels ({fe.n_mels})")
    need(fe.power in (1.0, 2.0), "frontend.power", "1.0 (magnitude) or 2.0 (power)")
    need(fe.log_floor > 0, "frontend.log_floor", "a positive floor")
    need(fe.pcen_time_constant_s > 0, "frontend.pcen_time_constant_s", "a positive time in s")
    aug = cfg.augment
    need(0 <= aug.noise_prob <= 1, "augment.noise_prob", "a probability in [0, 1]")
    need(aug.noise_snr_db_min <= aug.noise_snr_db_max, "augment.noise_snr_db_min",
         "at most noise_snr_db_max")
    need(aug.noise_prob == 0 or bool(aug.noise_glob), "augment.noise_glob",
         "a glob of background audio when noise_prob > 0")
    for key in ("time_masks", "time_mask_max_frames", "freq_masks", "freq_mask_max_bins"):
        need(getattr(aug, key) >= 0, f"augment.{key}", "a count >= 0")
    need(aug.mixup_alpha >= 0, "augment.mixup_alpha", "alpha >= 0 (0 disables mixup)")
    need(aug.gain_db_range >= 0, "augment.gain_db_range", "a range in dB >= 0")
    need(aug.time_shift_max_s >= 0, "augment.time_shift_max_s", "a shift in s >= 0")
    need(cfg.pipeline.batch_size >= 1, "pipeline.batch_size", "at least 1")
    need(cfg.pipeline.shuffle_buffer >= 0, "pipeline.shuffle_buffer", "a size >= 0")
    d = cfg.data
    need(0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1
         and d.val_fraction + d.test_fraction < 1, "data.val_fraction",
         "val_fraction + test_fraction below 1")
    need(d.negatives_per_positive >= 0, "data.negatives_per_positive", "a ratio >= 0")
    need(cfg.train.epochs >= 1, "train.epochs", "at least 1")
    need(not (cfg.train.balance == "class_weights" and cfg.train.task == "multilabel"),
         "train.balance", "'none' or 'sample' for a multilabel task (class weights need one label)")
    need(cfg.train.task != "frames" or d.source == "annotations", "train.task",
         "a source with call times for 'frames' (data.source: annotations)")
    need(cfg.train.task != "frames" or cfg.train.balance != "class_weights", "train.balance",
         "'none' or 'sample' for frame targets")
    need(cfg.train.onset_tolerance_s > 0, "train.onset_tolerance_s", "above 0 s")
    need(cfg.train.task != "frames" or cfg.audio.pad_mode != "repeat", "audio.pad_mode",
         "zero padding for frame targets (repeated audio would repeat calls the targets do not hold)")
    need(cfg.train.learning_rate > 0, "train.learning_rate", "a positive rate")
    need(0 <= cfg.model.dropout < 1, "model.dropout", "a fraction in [0, 1)")
    need(0 < cfg.detect.threshold < 1, "detect.threshold", "a score in (0, 1)")
    need(0 < cfg.detect.onset_threshold <= 1, "detect.onset_threshold", "a score in (0, 1]")
    need(cfg.model.kernel_size >= 1, "model.kernel_size", "at least 1")
    need(cfg.model.width >= 1 and cfg.model.depth >= 1, "model.width", "width and depth of at least 1")
    need(cfg.detect.chunk_s > 0, "detect.chunk_s", "a positive duration in seconds")
    need(cfg.detect.max_event_s is None or cfg.detect.max_event_s > 0, "detect.max_event_s",
         "a positive duration in seconds, or null")
    need(0 < cfg.detect.match_min_overlap <= 1, "detect.match_min_overlap", "a fraction in (0, 1]")
    need(cfg.tune.max_trials >= 1, "tune.max_trials", "at least 1")
    need(cfg.tune.max_epochs >= 1, "tune.max_epochs", "at least 1")
    need(cfg.tune.max_hours >= 0, "tune.max_hours", "hours >= 0 (0: no limit)")
    if problems:
        key, msg = problems[0]
        raise ConfigError(f"{key}: expected {msg}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return path, value


def apply_overrides(raw: dict, overrides: typing.Iterable[str]) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    try:
        cfg = _build(Config, raw, "")
        _check(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """Reads a YAML config, applies `--set` overrides and checks the result.

    A relative `data.root` is resolved against the folder of the config file, so a config
    works from any working directory.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        raw = _yaml_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    overrides = list(overrides)
    try:
        raw = apply_overrides(raw, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    cfg = from_dict(raw, str(path))
    root = Path(cfg.data.root)
    if not root.is_absolute():
        cfg = replace(cfg, data=replace(cfg.data, root=str((path.parent / root).resolve())))
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Writes the resolved config; load_config reads it back to an equal Config."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def add_config_arguments(parser) -> None:
    """The --config and --set options every command that builds from a config takes."""
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable)")


def config_from_arguments(args) -> Config:
    """load_config for parsed --config/--set; a bad config ends the command with exit code 2."""
    try:
        return load_config(args.config, args.set)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


replace = dataclasses.replace
