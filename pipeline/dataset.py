"""The tf.data input pipeline: record table -> batches, nothing precomputed.

Per example (parallel map, CPU):  read -> decode -> mono -> crop (in output samples) -> rate
Per batch (BatchStage):           [waveform augmentation] -> frontend -> [spectrogram masks]

With `pipeline.placement = "pipeline"` the BatchStage is mapped here over batches; with
`"device"` the dataset yields waveforms plus a per-batch seed and the model's train step runs
the same BatchStage on its own device (the GPU when there is one).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline import augment as aug
from pipeline.config import AudioConfig, AugmentConfig, Config, FrontendConfig
from pipeline.data_service import check_wav_inputs, distribute
from pipeline.decode import is_wav_path, read_audio, read_audio_range, to_mono
from pipeline.frontend import compute_features, frontend_output_shape
from pipeline.resample import resample, resample_segment, resampled_length

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Class names and how a record's label string becomes a target vector.

    For task "frames" the names are the call labels and targets are per frame (frame_targets):
    outputs [0, K) say "label k sounds in this frame", outputs [K, 2K) "a label-k call starts
    here".
    """

    names: tuple[str, ...]
    task: str = "multiclass"  # "binary" | "multiclass" | "multilabel" | "frames"

    @property
    def output_names(self) -> tuple[str, ...]:
        """A name per model output column."""
        if self.task == "frames":
            return (*self.names, *(f"{name}_onset" for name in self.names))
        return self.names if self.task != "binary" else self.names[1:]

    def per_output(self, scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, "LabelSpec"]:
        """(scores, targets, spec) for per-output metrics: frame outputs [n, frames, 2K] become
        [n * frames, 2K] rows scored as a multi-label task over output_names; others pass."""
        if self.task != "frames":
            return scores, targets, self
        width = scores.shape[-1]
        return scores.reshape(-1, width), targets.reshape(-1, width), LabelSpec(self.output_names, "multilabel")

    @property
    def num_outputs(self) -> int:
        if self.task == "frames":
            return 2 * len(self.names)
        return 1 if self.task == "binary" else len(self.names)

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        """Label strings -> float32 targets [n, num_outputs]; multi-label strings use ';'."""
        if self.task == "frames":
            raise ValueError("frame targets come from the records' events (frame_targets), not labels")
        index = {name: i for i, name in enumerate(self.names)}
        if self.task == "binary":
            return np.array([[float(index[l] == 1)] for l in labels], np.float32)
        out = np.zeros((len(labels), len(self.names)), np.float32)
        for row, label in enumerate(labels):
            for part in str(label).split(";") if self.task == "multilabel" else [label]:
                out[row, index[part]] = 1.0
        return out

    @classmethod
    def from_records(cls, records: pd.DataFrame, task: str, negative_label: str = "") -> "LabelSpec":
        parts = records["label"].astype(str)
        split = task in ("multilabel", "frames")
        names = sorted({p for l in parts for p in (l.split(";") if split else [l])})
        if task == "frames":
            names = [n for n in names if n != negative_label]
            if not names:
                raise ValueError("frame targets need at least one call label, found none")
        if task == "binary":
            if len(names) != 2:
                raise ValueError(f"a binary task needs exactly 2 labels, found {names}")
            if negative_label in names:
                names = [negative_label] + [n for n in names if n != negative_label]
        return cls(tuple(names), task)


# ---------------------------------------------------------------------------------------------
# Per-example stage


def crop_offset(region_samples: tf.Tensor, clip_samples: int, audio: AudioConfig,
                training: bool, seed: Optional[tf.Tensor]) -> tf.Tensor:
    """First output sample of the clip within a region of `region_samples` output samples.

    Longer regions: a random start when training, the centred one otherwise. Shorter regions
    give a negative offset (the clip starts before the audio: zero padding in front) placed by
    `audio.pad_position`; "random" placement falls back to centred outside training.
    """
    region = tf.cast(region_samples, tf.int64)
    slack = region - clip_samples  # >= 0: audio to spare; < 0: padding needed
    spare = tf.abs(slack)
    centred = tf.where(slack >= 0, spare // 2, -(spare // 2))
    if not (training and seed is not None):
        drawn_offset = centred
    else:
        u = tf.random.stateless_uniform([], seed, dtype=tf.float64)
        drawn = tf.cast(tf.floor(u * tf.cast(spare + 1, tf.float64)), tf.int64)
        drawn_offset = tf.where(slack >= 0, drawn, -drawn)
    if audio.pad_position == "start":
        shorter = tf.zeros([], tf.int64)
    elif audio.pad_position == "random":
        shorter = drawn_offset
    else:
        shorter = centred
    return tf.where(slack >= 0, drawn_offset, shorter)


def load_clip(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor, audio: AudioConfig,
              training: bool, seed: Optional[tf.Tensor] = None, shift_max_s: float = 0.0,
              rates: Sequence[int] = (), compressed: bool = True, with_start: bool = False):
    """One record -> float32 [clip_samples] mono at audio.sample_rate_hz (with `with_start`:
    (clip, the clip's first sample in seconds of file time, float64), for frame targets).

    Only the region [start_s, end_s) (NaN = whole file) is read and decoded (seek in WAV,
    tensorflow-io's seeking readers for compressed files), and only the clip's output samples
    are resampled, so a window of a long recording costs no more than the window. In
    training, `shift_max_s` moves the crop by up to that much either way (time-shift
    augmentation; audio beyond the region's ends reads as zeros). `rates`: the input rates
    expected (from the file scan), whose resampling filters are then built once per graph.
    `compressed=False`: WAV files only (see pipeline.decode.read_audio).
    """
    rate_out = audio.sample_rate_hz
    clip = audio.clip_samples
    start_s = tf.cast(start_s, tf.float64)
    end_s = tf.cast(end_s, tf.float64)

    def whole_file():
        samples, rate = read_audio(path, compressed)  # [frames, channels], int32
        return to_mono(samples, audio.mono), rate, tf.zeros([], tf.int64)  # [frames]

    def window():
        samples, rate, first = read_audio_range(path, start_s, end_s, compressed)  # only the region is read
        return to_mono(samples, audio.mono), rate, first  # [region_frames]

    region, rate_in, first = tf.cond(tf.math.is_nan(start_s) & tf.math.is_nan(end_s), whole_file, window)
    region = tf.ensure_shape(region, [None])  # [region_frames]
    region_out = resampled_length(tf.shape(region, out_type=tf.int64)[0], rate_in, rate_out)
    offset = crop_offset(region_out, clip, audio, training, seed)
    shift = int(round(shift_max_s * rate_out))
    if training and seed is not None and shift > 0:
        shift_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        offset += tf.random.stateless_uniform([], shift_seed, minval=-shift, maxval=shift + 1,
                                              dtype=tf.int64)
    if audio.pad_mode == "repeat":
        def tiled():
            y = resample(region, rate_in, rate_out, rates)  # [region_out]
            reps = clip // tf.maximum(tf.shape(y)[0], 1) + 1
            return tf.tile(y, [reps])[:clip]
        out = tf.cond(tf.logical_and(region_out < clip, region_out > 0), tiled,
                      lambda: resample_segment(region, rate_in, rate_out, offset, clip, rates))
    else:
        out = resample_segment(region, rate_in, rate_out, offset, clip, rates)
    out = tf.ensure_shape(out, [clip])  # [clip_samples]
    if not with_start:
        return out
    start = (tf.cast(first, tf.float64) / tf.cast(rate_in, tf.float64)
             + tf.cast(offset, tf.float64) / float(rate_out))
    return out, start


def frame_times_s(clip_start_s: tf.Tensor, num_frames: int, frontend: FrontendConfig,
                  sample_rate_hz: int) -> tf.Tensor:
    """File times (float64 [num_frames]) of the centres of a clip's frontend frames."""
    return tf.cast(clip_start_s, tf.float64) + tf.constant(frame_centres_s(num_frames, frontend, sample_rate_hz))


def frame_centres_s(num_frames: int, frontend: FrontendConfig, sample_rate_hz: int) -> np.ndarray:
    """Centres (float64 [num_frames], seconds) of the frontend's frames from the signal start."""
    centre = 0.0 if frontend.center else frontend.frame_length_samples(sample_rate_hz) / 2.0
    return (np.arange(num_frames) * frontend.hop_length_samples(sample_rate_hz) + centre) / sample_rate_hz


def frame_targets(events: tf.Tensor, times_s: tf.Tensor, num_labels: int, onset_tolerance_s: float) -> tf.Tensor:
    """Calls -> float32 frame targets [frames, 2 * num_labels].

    events: float64 [calls, 3] rows (start_s, end_s, label index), label -1 for padding;
    times_s: float64 [frames], the frames' centres. Column k is 1 where a label-k call covers
    the frame, column num_labels + k where a label-k call starts within onset_tolerance_s.
    """
    start, end, label = events[:, 0], events[:, 1], tf.cast(events[:, 2], tf.int32)  # [calls] each
    t = times_s[:, None]  # [frames, 1]
    inside = (t >= start[None, :]) & (t < end[None, :])  # [frames, calls]
    onset = tf.abs(t - start[None, :]) <= onset_tolerance_s  # [frames, calls]
    which = tf.one_hot(label, num_labels, dtype=tf.float32)  # [calls, K]; padding rows are zeros
    presence = tf.minimum(tf.matmul(tf.cast(inside, tf.float32), which), 1.0)  # [frames, K]
    starts = tf.minimum(tf.matmul(tf.cast(onset, tf.float32), which), 1.0)  # [frames, K]
    return tf.concat([presence, starts], axis=1)  # [frames, 2K]


# ---------------------------------------------------------------------------------------------
# Per-batch stage


class BatchStage:
    """Waveform batch -> features: augmentation (training only) and the frontend.

    The same object runs in a tf.data map (placement "pipeline") or inside the model's train
    step (placement "device"); both give identical features for the same batch and seed.
    """

    def __init__(self, frontend: FrontendConfig, augment: AugmentConfig, sample_rate_hz: int):
        self.frontend = frontend
        self.augment = augment
        self.sample_rate_hz = sample_rate_hz

    def features(self, waves: tf.Tensor) -> tf.Tensor:
        return compute_features(waves, self.frontend, self.sample_rate_hz)  # [batch, frames, bins, 1]

    def __call__(self, batch: dict, labels: tf.Tensor, training: bool):
        waves = batch["audio"]  # [batch, samples]
        if not (training and self.augment.enabled):
            return self.features(waves), labels
        seed = tf.cast(batch["seed"], tf.int64)
        wave_seed, spec_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        waves, labels = aug.augment_waveforms(waves, labels, wave_seed, self.augment,
                                              self.sample_rate_hz, noise=batch.get("noise"))
        spec = self.features(waves)  # [batch, frames, bins, 1]
        spec = aug.augment_spectrograms(spec, spec_seed, self.augment)
        return spec, labels


# ---------------------------------------------------------------------------------------------
# Datasets


def _seed_stream(seed: int) -> tf.data.Dataset:
    """Per-element stateless seeds [2]: reproducible for a seed, different in every epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def event_arrays(records: pd.DataFrame, labels: LabelSpec) -> np.ndarray:
    """The records' `events` JSON -> float64 [records, most calls, 3] (start_s, end_s, label
    index), padded with label -1."""
    index = {name: i for i, name in enumerate(labels.names)}
    parsed = [json.loads(text) for text in records["events"]]
    out = np.zeros((len(parsed), max([1, *map(len, parsed)]), 3), np.float64)
    out[:, :, 2] = -1
    for row, calls in enumerate(parsed):
        for col, (start, end, label) in enumerate(calls):
            out[row, col] = (start, end, index.get(label, -1))
    return out


def _records_dataset(records: pd.DataFrame, labels: LabelSpec) -> tf.data.Dataset:
    columns = {
        "file": records["file"].astype(str).to_numpy(),
        "start_s": records["start_s"].astype(np.float64).to_numpy(),
        "end_s": records["end_s"].astype(np.float64).to_numpy(),
    }
    if labels.task == "frames":
        columns["events"] = event_arrays(records, labels)
    else:
        columns["target"] = labels.encode(list(records["label"]))
    return tf.data.Dataset.from_tensor_slices(columns)


def known_rates(records: pd.DataFrame) -> tuple[int, ...]:
    """Input sample rates of the records, when the file scan recorded them."""
    if "sample_rate_hz" not in records:
        return ()
    return tuple(sorted({int(r) for r in records["sample_rate_hz"].dropna()}))


def needs_compressed(files: Sequence[str]) -> bool:
    """Whether any file needs the MP3/FLAC/Ogg readers (otherwise graphs are built WAV-only)."""
    return not all(is_wav_path(f) for f in files)


def noise_dataset(files: Sequence[str], cfg: Config) -> tf.data.Dataset:
    """Endless stream of background clips (random crops of non-call audio) for noise mixing."""
    compressed = needs_compressed(files)
    ds = tf.data.Dataset.from_tensor_slices(np.array(files, dtype=str)).repeat()
    ds = ds.shuffle(max(len(files), 1), seed=cfg.pipeline.seed + 7, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, _seed_stream(cfg.pipeline.seed + 11)))
    nan = tf.constant(np.nan, tf.float64)
    return ds.map(lambda f, s: load_clip(f, nan, nan, cfg.audio, True, s, compressed=compressed),
                  num_parallel_calls=AUTOTUNE, deterministic=cfg.pipeline.deterministic)


def balanced_records(records: pd.DataFrame, labels: LabelSpec, seed: int) -> tf.data.Dataset:
    """Endless record stream drawing every label equally often (tf.data resampling)."""
    parts = [_records_dataset(part, labels).repeat().shuffle(max(len(part), 1), seed=seed + i)
             for i, (_, part) in enumerate(records.groupby("label", sort=True))]
    return tf.data.Dataset.sample_from_datasets(parts, seed=seed, rerandomize_each_iteration=True)


def make_dataset(records: pd.DataFrame, labels: LabelSpec, cfg: Config, training: bool,
                 noise_files: Sequence[str] = (), repeat: bool = False, data_service: str = "",
                 data_service_job: Optional[str] = None) -> tf.data.Dataset:
    """Batches for training (shuffled, random crops, augmentation) or evaluation (fixed order).

    Elements:
      training, placement "pipeline":  (features [B, frames, bins, 1], targets [B, K])
      training, placement "device":    ({"audio": [B, N], "seed": [2], "noise"?: [B, N]}, targets)
      evaluation, "pipeline":          (features, targets)
      evaluation, "device":            (audio [B, N], targets)
    with targets [B, K], or [B, frames, 2K] for task "frames".

    `data_service`: address of a tf.data service dispatcher that then runs everything up to the
    final prefetch (pipeline.data_service; WAV inputs only); `data_service_job`: the job name,
    shared by trainers that split one stream (multi-worker training), None for a full pass.
    """
    p = cfg.pipeline
    if data_service:
        check_wav_inputs(list(records["file"]) + list(noise_files))
    compressed = needs_compressed(list(records["file"]))
    if training and cfg.train.balance == "sample":
        # Endless; one epoch is still len(records) examples.
        ds = balanced_records(records, labels, p.seed).take(len(records))
    else:
        ds = _records_dataset(records, labels)
        if training and p.shuffle_buffer > 0:
            ds = ds.shuffle(min(p.shuffle_buffer, len(records)), seed=p.seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, _seed_stream(p.seed)))

    shift_s = cfg.augment.time_shift_max_s if cfg.augment.enabled else 0.0
    rates = known_rates(records)

    num_frames = frontend_output_shape(cfg.frontend, cfg.audio.sample_rate_hz, cfg.audio.clip_samples)[0]

    def per_example(rec, seed):
        if labels.task != "frames":
            clip = load_clip(rec["file"], rec["start_s"], rec["end_s"], cfg.audio, training, seed, shift_s,
                             rates, compressed)
            return clip, rec["target"]
        clip, start = load_clip(rec["file"], rec["start_s"], rec["end_s"], cfg.audio, training, seed, shift_s,
                                rates, compressed, with_start=True)
        times = frame_times_s(start, num_frames, cfg.frontend, cfg.audio.sample_rate_hz)  # [frames]
        targets = frame_targets(rec["events"], times, len(labels.names),
                                cfg.train.onset_tolerance_s)  # [frames, 2K]
        # Frames outside the region (padding, or audio the record does not cover) hold no calls.
        inside = (times >= rec["start_s"]) & (times < rec["end_s"])  # [frames]
        return clip, targets * tf.cast(inside, tf.float32)[:, None]

    ds = ds.map(per_example, num_parallel_calls=AUTOTUNE, deterministic=p.deterministic)
    if p.cache and not training:
        ds = ds.cache()
    ds = ds.batch(p.batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE,
                  deterministic=p.deterministic)
    stage = BatchStage(cfg.frontend, cfg.augment, cfg.audio.sample_rate_hz)
    if training:
        parts = [ds, _seed_stream(p.seed + 1)]
        use_noise = cfg.augment.enabled and cfg.augment.noise_prob > 0 and len(noise_files) > 0
        if use_noise:
            parts.append(noise_dataset(noise_files, cfg).batch(p.batch_size))

        def pack(batch, seed, noise=None):
            waves, targets = batch
            features = {"audio": waves, "seed": seed}
            if noise is not None:
                features["noise"] = noise
            return features, targets

        ds = tf.data.Dataset.zip(tuple(parts)).map(lambda *xs: pack(*xs))
        if p.placement == "pipeline":
            ds = ds.map(lambda f, y: stage(f, y, training=True), num_parallel_calls=AUTOTUNE,
                        deterministic=p.deterministic)
    elif p.placement == "pipeline":
        ds = ds.map(lambda w, y: stage({"audio": w}, y, training=False), num_parallel_calls=AUTOTUNE,
                    deterministic=p.deterministic)
    options = tf.data.Options()
    options.deterministic = p.deterministic
    options.experimental_optimization.map_parallelization = True
    ds = ds.with_options(options)
    if data_service:
        ds = distribute(ds, data_service, job_name=data_service_job)
    return ds.prefetch(AUTOTUNE)
