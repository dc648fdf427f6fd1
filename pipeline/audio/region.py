"""A stretch of a file as mono samples: the one read that training clips and detection chunks share.

    region = read_mono(path, start_s, end_s, mono)   # only [start_s, end_s) is read and decoded
    y = resample_segment(region.samples, region.rate, rate_out, offset, length)   # at the model rate

NaN/Inf samples are zeroed here (and counted, with the peak, for the silent- and corrupt-file
checks), so no non-finite value ever reaches the resampler or the frontend.
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from pipeline.audio.read import read_audio, read_audio_range, to_mono


class MonoRegion(NamedTuple):
    samples: tf.Tensor  # float32 [frames], mono, non-finite samples zeroed
    rate: tf.Tensor  # int32 scalar, the file's sample rate
    first: tf.Tensor  # int64 scalar, the index of the first frame read
    peak: tf.Tensor  # float32 scalar, max |sample| over the frames read (0 when none)
    non_finite: tf.Tensor  # int64 scalar, NaN/Inf samples among them


def read_mono(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor, mono: str | int,
              compressed: bool = True) -> MonoRegion:
    """Frames [round(start_s * rate), round(end_s * rate)) of a file, mixed down by the `mono` rule.

    NaN start and end read the whole file (one read, WAV's fast path); otherwise only the
    region is read (pipeline.audio.read.read_audio_range). `compressed=False`: WAV files only.
    """
    start_s = tf.cast(start_s, tf.float64)
    end_s = tf.cast(end_s, tf.float64)

    def whole_file():
        samples, rate = read_audio(path, compressed)  # [frames, channels]
        return samples, rate, tf.zeros([], tf.int64)

    samples, rate, first = tf.cond(tf.math.is_nan(start_s) & tf.math.is_nan(end_s), whole_file,
                                   lambda: read_audio_range(path, start_s, end_s, compressed))
    finite = tf.math.is_finite(samples)  # [frames, channels]
    clean = tf.where(finite, samples, 0.0)  # [frames, channels]
    # reduce_max of no samples is -inf: the maximum with 0 makes it 0.
    peak = tf.maximum(tf.reduce_max(tf.abs(clean)), 0.0)
    non_finite = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
    mono_samples = tf.ensure_shape(to_mono(clean, mono), [None])  # [frames]
    return MonoRegion(mono_samples, rate, first, peak, non_finite)
