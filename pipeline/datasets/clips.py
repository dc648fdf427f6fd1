"""One training example from a record: the clip's samples at the model rate, and for frame
targets the calls it holds, frame by frame (pipeline.datasets.build maps these per record)."""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf

from pipeline.audio.region import read_mono
from pipeline.audio.resample import resample, resample_segment, resampled_length
from pipeline.config import AudioConfig
from pipeline.features.framing import Framing


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


class Region(NamedTuple):
    """A record's region with the margins a crop may reach, decoded and at the model rate: what
    training caches per record (pipeline.datasets.build), so later epochs only crop."""
    audio: tf.Tensor  # float32 [n]
    lead: tf.Tensor  # int64: index in `audio` of the region's first sample
    length: tf.Tensor  # int64: the region's length in output samples
    first_s: tf.Tensor  # float64: file time of audio[0]


def read_margin_s(audio: AudioConfig, context: int, shift_max_s: float) -> float:
    """Audio read on each side of a record's region: the windows' context, the time shift and
    the resampler's reach (64 output samples)."""
    return (context + 64) / audio.sample_rate_hz + float(shift_max_s)


def _read(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor, audio: AudioConfig, margin_s: float,
          compressed: bool):
    """The region [start_s, end_s) (NaN = whole file) with `margin_s` on each side, as read:
    (MonoRegion, the region's first output sample counted from the first sample read, the
    region's length in output samples)."""
    rate_out = audio.sample_rate_hz
    start_s = tf.cast(start_s, tf.float64)
    end_s = tf.cast(end_s, tf.float64)
    whole = tf.math.is_nan(start_s) & tf.math.is_nan(end_s)
    zero = tf.zeros([], tf.float64)
    read_start = tf.where(whole, start_s, tf.maximum(start_s - margin_s, zero))
    read_end = tf.where(whole, end_s, end_s + margin_s)
    source = read_mono(path, read_start, read_end, audio.mono, compressed)
    rate = tf.cast(source.rate, tf.float64)
    region_first = tf.where(whole, zero, tf.round(start_s * rate) - tf.cast(source.first, tf.float64))
    region_frames = tf.where(whole, tf.cast(tf.size(source.samples), tf.float64),
                             tf.round(end_s * rate) - tf.round(start_s * rate))
    region_lead = tf.cast(tf.math.ceil(region_first * rate_out / rate), tf.int64)
    region_out = resampled_length(tf.cast(tf.maximum(region_frames, zero), tf.int64), source.rate, rate_out)
    return source, region_lead, region_out


def _crop_start(region_lead: tf.Tensor, region_out: tf.Tensor, audio: AudioConfig, training: bool,
                seed: Optional[tf.Tensor], shift_max_s: float) -> tf.Tensor:
    """The clip's first output sample, counted like region_lead: the crop in the region
    (crop_offset) moved by the time shift in training."""
    offset = region_lead + crop_offset(region_out, audio.clip_samples, audio, training, seed)
    shift = int(round(shift_max_s * audio.sample_rate_hz))
    if training and seed is not None and shift > 0:
        shift_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        offset += tf.random.stateless_uniform([], shift_seed, minval=-shift, maxval=shift + 1,
                                              dtype=tf.int64)
    return offset


def _repeats(region_out: tf.Tensor, clip: int) -> tf.Tensor:
    """pad_mode "repeat": whether the region is tiled instead of zero padded (shorter than the
    clip, and not empty)."""
    return tf.logical_and(region_out < clip, region_out > 0)


def _tiled(y: tf.Tensor, length: int) -> tf.Tensor:
    """The region's samples [n > 0] repeated to `length`."""
    reps = length // tf.maximum(tf.shape(y)[0], 1) + 1
    return tf.tile(y, [reps])[:length]


def padded_slice(y: tf.Tensor, start: tf.Tensor, length: int) -> tf.Tensor:
    """y[start : start + length] with zeros where the window reaches outside y: float32 [length]."""
    n = tf.size(y, out_type=tf.int64)
    start = tf.cast(start, tf.int64)
    lo = tf.clip_by_value(start, 0, n)
    hi = tf.clip_by_value(start + length, 0, n)
    hi = tf.maximum(hi, lo)
    before = tf.clip_by_value(-start, 0, length)
    after = length - before - (hi - lo)
    return tf.pad(y[lo:hi], [[before, after]])


def load_clip(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor, audio: AudioConfig,
              training: bool, seed: Optional[tf.Tensor] = None, shift_max_s: float = 0.0,
              rates: Sequence[int] = (), compressed: bool = True, with_start: bool = False,
              context: int = 0):
    """One record -> float32 [clip_samples + 2 * context] mono at audio.sample_rate_hz: the clip and
    `context` samples of the file on each side (zeros beyond its ends; see
    pipeline.features.framing). With `with_start`: (that, the clip's first sample in seconds of
    file time, float64), for frame targets.

    Only the region [start_s, end_s) (NaN = whole file) and the context around the clip are read
    and decoded (seek in WAV, tensorflow-io's seeking readers for compressed files), and only the
    output samples are resampled, so a window of a long recording costs no more than the window.
    In training, `shift_max_s` moves the crop by up to that much either way (time-shift
    augmentation; audio beyond the region's ends reads as zeros). `rates`: the input rates
    expected (from the file scan), whose resampling filters are then built once per graph.
    `compressed=False`: WAV files only (see pipeline.audio.read.read_audio).
    read_region + clip_from_region give the same clip from a region kept in memory.
    """
    rate_out, clip = audio.sample_rate_hz, audio.clip_samples
    source, region_lead, region_out = _read(path, start_s, end_s, audio, read_margin_s(audio, context, shift_max_s),
                                            compressed)
    signal, rate_in = source.samples, source.rate  # [read_frames]
    offset = _crop_start(region_lead, region_out, audio, training, seed, shift_max_s)
    length = clip + 2 * context
    if audio.pad_mode == "repeat":
        out = tf.cond(_repeats(region_out, clip),
                      lambda: _tiled(resample_segment(signal, rate_in, rate_out, region_lead, region_out, rates), length),
                      lambda: resample_segment(signal, rate_in, rate_out, offset - context, length, rates))
    else:
        out = resample_segment(signal, rate_in, rate_out, offset - context, length, rates)
    out = tf.ensure_shape(out, [length])  # [clip_samples + 2 * context]
    if not with_start:
        return out
    start = tf.cast(source.first, tf.float64) / tf.cast(rate_in, tf.float64) + tf.cast(offset, tf.float64) / float(rate_out)
    return out, start


def read_region(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor, audio: AudioConfig,
                shift_max_s: float = 0.0, rates: Sequence[int] = (), compressed: bool = True,
                context: int = 0) -> Region:
    """The part of a record any training crop can reach, decoded once and resampled whole."""
    source, region_lead, region_out = _read(path, start_s, end_s, audio, read_margin_s(audio, context, shift_max_s),
                                            compressed)
    samples = resample(source.samples, source.rate, audio.sample_rate_hz, rates)  # [n]
    first_s = tf.cast(source.first, tf.float64) / tf.cast(source.rate, tf.float64)
    return Region(samples, region_lead, region_out, first_s)


def clip_from_region(region: Region, audio: AudioConfig, training: bool, seed: Optional[tf.Tensor] = None,
                     shift_max_s: float = 0.0, with_start: bool = False, context: int = 0):
    """load_clip's clip (and start) cropped from a Region of the same record."""
    clip = audio.clip_samples
    offset = _crop_start(region.lead, region.length, audio, training, seed, shift_max_s)
    length = clip + 2 * context
    if audio.pad_mode == "repeat":
        out = tf.cond(_repeats(region.length, clip),
                      lambda: _tiled(region.audio[region.lead:region.lead + region.length], length),
                      lambda: padded_slice(region.audio, offset - context, length))
    else:
        out = padded_slice(region.audio, offset - context, length)
    out = tf.ensure_shape(out, [length])  # [clip_samples + 2 * context]
    if not with_start:
        return out
    return out, region.first_s + tf.cast(offset, tf.float64) / float(audio.sample_rate_hz)


def frame_times_s(clip_start_s: tf.Tensor, framing: Framing, sample_rate_hz: int) -> tf.Tensor:
    """File times (float64 [framing.frames]) of the centres of a clip's frontend frames."""
    return tf.cast(clip_start_s, tf.float64) + tf.constant(frame_centres_s(framing.frames, framing, sample_rate_hz))


def frame_centres_s(num_frames: int, framing: Framing, sample_rate_hz: int) -> np.ndarray:
    """Centres (float64 [num_frames], seconds) of a framing's frames from the signal start: frame
    t reads [t * hop, t * hop + frame_length), or is centred on t * hop."""
    centre = 0.0 if framing.center else framing.frame_length / 2.0
    return (np.arange(num_frames) * framing.hop + centre) / sample_rate_hz


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
