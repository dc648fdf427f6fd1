"""Stream long recordings as fixed windows at the model rate, chunk by chunk, in bounded memory.

file -> header only (pipeline.audio.info) -> chunk and read plan (pipeline.detection.plan, in
model-rate samples) -> per chunk: ranged read of the input frames it needs plus some context
(pipeline.audio.read.read_audio_range) -> mono -> resample only the chunk's output samples
(pipeline.audio.resample.resample_segment) -> tf.signal.frame into windows.

Each chunk is computed on its own (no state carried between chunks), yet its windows equal those
of the whole file decoded, resampled and framed at once (up to float rounding): a chunk's read
starts on an input frame where the resampler's polyphase pattern restarts (a multiple of its
input period), so the chunk's output samples are the whole file's, and the read reaches a kernel
length beyond the samples wanted on either side. Windows across a chunk boundary are framed from
the samples both chunks read. Memory is bounded by the chunk length, whatever the file length.

All files of a run go through one tf.data pipeline (one graph, one iterator): chunks are read,
resampled and framed in the background while the caller scores the previous ones. A chunk that
fails to read raises its error at that element; the iterator then goes on with the next chunk.
"""
from __future__ import annotations

import ctypes
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from pipeline.audio import resample as resample_lib
from pipeline.audio.region import read_mono
from pipeline.detection.plan import Job

# Chunks read, resampled and framed at once (tf.data map), and chunks ready ahead of the model.
# Two in flight keep a core decoding while the model scores; more only add memory.
PARALLEL_CHUNKS = 2
PREFETCH_CHUNKS = 2

# Columns of the overview spectrogram (--plot): FFT frames of this many model-rate samples,
# log-mel with this many bands.
SPECTROGRAM_FRAME = 512
SPECTROGRAM_BANDS = 64


def limit_heap_growth(threshold_bytes: int = 8 << 20) -> bool:
    """Serve every allocation above threshold_bytes with its own memory map (glibc mallopt).

    glibc raises its mmap threshold each time a large block is freed, after which the chunks'
    buffers (tens of MB, freed every chunk) come from the heap, whose fragmentation grows the
    resident memory chunk after chunk: on a 3-hour file, about 10% more than on a 3-minute one
    after 40 chunks, still growing. A fixed threshold returns them to the system at once.
    Returns whether it took effect (False on systems without glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


# ---------------------------------------------------------------------------------------------
# The graph side


def read_chunk(path: tf.Tensor, rate_in: tf.Tensor, read: dict, rate_out: int, mono: str | int,
               rates: Sequence[int] = ()) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One Read (as tensors) -> (float32 [length] mono at rate_out, peak |sample|, NaN/Inf count).

    The peak and the count are over the input frames read (for silent- and corrupt-file checks).
    """
    rate = tf.cast(rate_in, tf.float64)
    first = tf.cast(read["first_frame"], tf.float64)
    last = tf.cast(read["last_frame"], tf.float64)
    # frame / rate * rate rounds back to the frame: exactly [first, last) is read.
    region = read_mono(path, first / rate, last / rate, mono)
    y = resample_lib.resample_segment(region.samples, region.rate, rate_out, read["offset"], read["length"],
                                      rates)  # [length]
    keep = tf.range(tf.shape(y, out_type=tf.int64)[0]) < tf.cast(read["valid"], tf.int64)  # [length]
    return tf.where(keep, y, 0.0), region.peak, region.non_finite


def _spectrogram(y: tf.Tensor, own: tf.Tensor, rate_out: int) -> tf.Tensor:
    """Log-mel frames [frames, SPECTROGRAM_BANDS] of y[:own] (non-overlapping FFT frames)."""
    own = tf.maximum(own, SPECTROGRAM_FRAME)
    frames = tf.signal.frame(y[:own], SPECTROGRAM_FRAME, SPECTROGRAM_FRAME)  # [frames, SPECTROGRAM_FRAME]
    power = tf.square(tf.abs(tf.signal.rfft(frames * tf.signal.hann_window(SPECTROGRAM_FRAME))))  # [frames, bins]
    mel = tf.signal.linear_to_mel_weight_matrix(SPECTROGRAM_BANDS, SPECTROGRAM_FRAME // 2 + 1, rate_out,
                                                min(100.0, rate_out / 4), rate_out / 2)  # [bins, bands]
    return tf.math.log(tf.matmul(power, mel) + 1e-10) / math.log(10.0)  # [frames, bands]


def window_dataset(jobs: Sequence[Job], rate_out: int, mono: str | int, window: int, hop: int,
                   spectrogram: bool = False, parallel: int = PARALLEL_CHUNKS,
                   prefetch: int = PREFETCH_CHUNKS) -> tf.data.Dataset:
    """Every chunk of every job, in order: dicts with
    job, chunk (int64 indices), windows float32 [num_windows, window], peak, non_finite and, with
    `spectrogram`, a log-mel overview of the chunk's own hop range [frames, SPECTROGRAM_BANDS]."""
    rows = [(j, c, job.path, job.info.sample_rate_hz, r, chunk)
            for j, job in enumerate(jobs) for c, (chunk, r) in enumerate(zip(job.chunks, job.reads))]
    rates = tuple(sorted({job.info.sample_rate_hz for job in jobs} - {rate_out}))
    columns = {
        "job": np.array([r[0] for r in rows], np.int64),
        "chunk": np.array([r[1] for r in rows], np.int64),
        "path": np.array([r[2] for r in rows], dtype=object).astype(str),
        "rate_in": np.array([r[3] for r in rows], np.int64),
        "own": np.array([r[5].num_windows * hop for r in rows], np.int64),
        **{field: np.array([getattr(r[4], field) for r in rows], np.int64)
           for field in ("first_frame", "last_frame", "offset", "length", "valid")},
    }

    def load(row):
        y, peak, non_finite = read_chunk(row["path"], row["rate_in"], row, rate_out, mono, rates)  # [length]
        out = {"job": row["job"], "chunk": row["chunk"], "peak": peak, "non_finite": non_finite,
               "windows": tf.signal.frame(y, window, hop)}  # [num_windows, window]
        if spectrogram:
            out["spectrogram"] = _spectrogram(y, tf.minimum(row["own"], row["valid"]), rate_out)
        return out

    ds = tf.data.Dataset.from_tensor_slices(columns)
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    return ds.prefetch(prefetch)
