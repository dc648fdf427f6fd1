"""The tf.data input pipeline: record table -> batches, nothing precomputed.

Per example (parallel map, CPU):  read -> decode -> mono -> crop (in output samples) -> rate
                                  (pipeline.datasets.clips)
Per batch (pipeline.features.stage.BatchStage): [waveform augmentation] -> frontend -> [masks]

Every element is (inputs, targets) with `inputs` a dict of one of two layouts:
  {"audio": [B, N], "seed": [2], "noise"?: [B, N]}   placement "device": waveforms; the trainer
      runs the BatchStage on its device (the GPU when there is one); "seed" and "noise" only in
      training
  {"features": [B, frames, bins, 1]}                  placement "pipeline": the BatchStage ran here
and targets [B, K], or [B, frames, 2K] for task "frames".
"""
from __future__ import annotations

import functools
import json
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.audio.formats import is_wav_path
from pipeline.config import Config
from pipeline.datasets.clips import (clip_from_region, frame_targets, frame_times_s, load_clip, read_margin_s,
                                     read_region)
from pipeline.features.framing import Framing
from pipeline.features.frontend import window_features
from pipeline.features.stage import BatchStage
from pipeline.records.labels import LabelSpec

AUTOTUNE = tf.data.AUTOTUNE


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


def noise_dataset(files: Sequence[str], cfg: Config, framing: Framing) -> tf.data.Dataset:
    """Endless stream of background clips (random crops of non-call audio, with the windows'
    context) for noise mixing."""
    compressed = needs_compressed(files)
    ds = tf.data.Dataset.from_tensor_slices(np.array(files, dtype=str)).repeat()
    ds = ds.shuffle(max(len(files), 1), seed=cfg.pipeline.seed + 7, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, _seed_stream(cfg.pipeline.seed + 11)))
    nan = tf.constant(np.nan, tf.float64)
    return ds.map(lambda f, s: load_clip(f, nan, nan, cfg.audio, True, s, compressed=compressed,
                                         context=framing.context_samples),
                  num_parallel_calls=AUTOTUNE, deterministic=cfg.pipeline.deterministic)


def balanced_records(records: pd.DataFrame, seed: int,
                     stream: Callable[[pd.DataFrame], tf.data.Dataset]) -> tf.data.Dataset:
    """Endless stream drawing every label equally often (tf.data resampling); `stream` makes
    each label's element stream from its records."""
    parts = [stream(part).repeat().shuffle(max(len(part), 1), seed=seed + i)
             for i, (_, part) in enumerate(records.groupby("label", sort=True))]
    return tf.data.Dataset.sample_from_datasets(parts, seed=seed, rerandomize_each_iteration=True)


def region_megabytes(records: pd.DataFrame, sample_rate_hz: int, margin_s: float) -> Optional[float]:
    """Memory the records' regions take decoded at the model rate, with `margin_s` read on each
    side of a region (a whole file is read as it is); None when the file scan did not give
    every file's duration."""
    if "duration_s" not in records or records["duration_s"].isna().any():
        return None
    whole = records["start_s"].isna() & records["end_s"].isna()
    seconds = np.where(whole, records["duration_s"], records["end_s"] - records["start_s"] + 2 * margin_s)
    return float(np.sum(seconds)) * sample_rate_hz * 4 / 1e6


def make_dataset(records: pd.DataFrame, labels: LabelSpec, cfg: Config, framing: Framing, training: bool,
                 noise_files: Sequence[str] = (), repeat: bool = False,
                 frontend: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.data.Dataset:
    """Batches for training (shuffled, random crops, augmentation) or evaluation (fixed order);
    elements as in the module docstring. `repeat`: endless (training reads steps_per_epoch
    batches per epoch from one iterator). `framing`: the model's windows and their context;
    `frontend`: the model's frontend, for placement "pipeline" (default: the project's, with
    cfg.frontend).

    Within pipeline.cache_mb, decoded audio stays in memory after the first pass: in training
    each record's region (read_region; the crops of later epochs are cut from it), in
    evaluation the clips themselves."""
    p = cfg.pipeline
    compressed = needs_compressed(list(records["file"]))
    shift_s = cfg.augment.time_shift_max_s if cfg.augment.enabled else 0.0
    rates = known_rates(records)
    context = framing.context_samples
    with_start = labels.task == "frames"
    if training:
        megabytes = region_megabytes(records, cfg.audio.sample_rate_hz, read_margin_s(cfg.audio, context, shift_s))
    else:
        megabytes = len(records) * (cfg.audio.clip_samples + 2 * context) * 4 / 1e6
    cached = megabytes is not None and megabytes <= p.cache_mb

    def example(rec, seed, region=None):
        if region is None:
            got = load_clip(rec["file"], rec["start_s"], rec["end_s"], cfg.audio, training, seed, shift_s,
                            rates, compressed, with_start=with_start, context=context)
        else:
            got = clip_from_region(region, cfg.audio, training, seed, shift_s, with_start=with_start, context=context)
        if not with_start:
            return got, rec["target"]
        clip, start = got
        times = frame_times_s(start, framing, cfg.audio.sample_rate_hz)  # [frames]
        targets = frame_targets(rec["events"], times, len(labels.names),
                                cfg.train.onset_tolerance_s)  # [frames, 2K]
        # Frames outside the region (padding, or audio the record does not cover) hold no calls.
        inside = (times >= rec["start_s"]) & (times < rec["end_s"])  # [frames]
        return clip, targets * tf.cast(inside, tf.float32)[:, None]

    def stream(part: pd.DataFrame) -> tf.data.Dataset:
        """The records of a table; cached training: with their regions, read on the first pass."""
        ds = _records_dataset(part, labels)
        if training and cached:
            ds = ds.map(lambda rec: (rec, read_region(rec["file"], rec["start_s"], rec["end_s"], cfg.audio, shift_s,
                                                      rates, compressed, context)),
                        num_parallel_calls=AUTOTUNE, deterministic=p.deterministic).cache()
        return ds

    if not training:
        ds = _records_dataset(records, labels).map(lambda rec: example(rec, None), num_parallel_calls=AUTOTUNE,
                                                   deterministic=p.deterministic)
        if cached:
            ds = ds.cache()
        if repeat:
            ds = ds.repeat()
    else:
        if cfg.train.balance == "sample":
            # Endless; one epoch is still len(records) examples.
            ds = balanced_records(records, p.seed, stream).take(len(records))
        else:
            ds = stream(records)
            if p.shuffle_buffer > 0:
                ds = ds.shuffle(min(p.shuffle_buffer, len(records)), seed=p.seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = tf.data.Dataset.zip((ds, _seed_stream(p.seed)))
        ds = ds.map((lambda element, seed: example(element[0], seed, element[1])) if cached else example,
                    num_parallel_calls=AUTOTUNE, deterministic=p.deterministic)

    ds = ds.batch(p.batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE,
                  deterministic=p.deterministic)
    if frontend is None:
        frontend = functools.partial(window_features, cfg=cfg.frontend, sample_rate_hz=cfg.audio.sample_rate_hz,
                                     framing=framing)
    stage = BatchStage(frontend, cfg.augment, cfg.audio.sample_rate_hz)
    if training:
        parts = [ds, _seed_stream(p.seed + 1)]
        use_noise = cfg.augment.enabled and cfg.augment.noise_prob > 0 and len(noise_files) > 0
        if use_noise:
            parts.append(noise_dataset(noise_files, cfg, framing).batch(p.batch_size))

        def pack(batch, seed, noise=None):
            waves, targets = batch
            inputs = {"audio": waves, "seed": seed}
            if noise is not None:
                inputs["noise"] = noise
            return inputs, targets

        ds = tf.data.Dataset.zip(tuple(parts)).map(lambda *xs: pack(*xs))
    else:
        ds = ds.map(lambda waves, targets: ({"audio": waves}, targets))
    if p.placement == "pipeline":
        ds = ds.map(lambda inputs, y: _features(stage, inputs, y, training), num_parallel_calls=AUTOTUNE,
                    deterministic=p.deterministic)
    options = tf.data.Options()
    options.deterministic = p.deterministic
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def _features(stage: BatchStage, inputs: dict, targets: tf.Tensor, training: bool):
    features, targets = stage(inputs, targets, training=training)
    return {"features": features}, targets
