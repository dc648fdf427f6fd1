"""Stream long recordings as fixed windows at the model rate, chunk by chunk, in bounded memory.

file -> header only (frames, rate, channels) -> chunk plan (pipeline.events.chunk_plan, in model-rate
samples) -> per chunk: ranged read of the input frames it needs plus some context
(pipeline.decode.read_audio_range) -> mono -> resample only the chunk's output samples
(pipeline.resample.resample_segment) -> tf.signal.frame into windows.

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
import dataclasses
import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from pipeline import resample as resample_lib
from pipeline import tfio_audio
from pipeline.decode import COMPRESSED_EXTENSIONS, WAV_EXTENSIONS, read_audio_range, to_mono
from pipeline.events import Chunk, chunk_plan
from pipeline.scan import NO_SAMPLES, Limits, file_problem, limit_problem, truncation_problem
from pipeline.wav import parse_wav_header

# Chunks read, resampled and framed at once (tf.data map), and chunks ready ahead of the model.
# Two in flight keep a core decoding while the model scores; more only add memory.
PARALLEL_CHUNKS = 2
PREFETCH_CHUNKS = 2

# Columns of the overview spectrogram (--plot): FFT frames of this many model-rate samples,
# log-mel with this many bands.
SPECTROGRAM_FRAME = 512
SPECTROGRAM_BANDS = 64


class BadAudio(Exception):
    """A file that cannot be streamed; str() is the reason for bad_files.csv."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate_hz: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


@dataclasses.dataclass(frozen=True)
class Read:
    """Input frames [first_frame, last_frame) of a file, and the output samples wanted from them:
    [offset, offset + length) of their resampled signal, of which the first `valid` lie within
    the file (the rest is the zero padding of the last window)."""

    first_frame: int
    last_frame: int
    offset: int
    length: int
    valid: int


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
# File headers


def _wav_info(path: str, size: int) -> AudioInfo:
    """Frames, rate and channels of a WAV from its header (the first bytes only)."""
    head_bytes = 1 << 16
    while True:
        with open(path, "rb") as f:
            head = f.read(head_bytes)
        try:
            header = {k: int(v) for k, v in parse_wav_header(tf.constant(head), tf.constant(path)).items()}
            break
        except tf.errors.InvalidArgumentError as err:
            if len(head) >= size or head_bytes >= 1 << 24:
                raise BadAudio("unreadable: " + _first_line(err)) from None
            head_bytes <<= 4  # the data chunk lies beyond the first bytes: look further
    block = max(header["block_align"], 1)
    available = size - header["data_offset"]
    declared = header["declared_data_bytes"]
    reason = truncation_problem(declared, available, block)
    if reason is not None:
        raise BadAudio(reason)
    frames = max(min(declared, available), 0) // block
    return AudioInfo(frames, header["sample_rate_hz"], header["channels"])


def _first_line(err: tf.errors.OpError) -> str:
    lines = [line.strip() for line in err.message.strip().splitlines() if line.strip()]
    text = " ".join(lines[:4])
    return text.replace("Expected 'tf.Tensor(False, shape=(), dtype=bool)' to be true. Summarized data: ", "")


def audio_info(path: str, mono: str = "mean", limits: Limits = Limits()) -> AudioInfo:
    """Frames, rate and channels from the header alone (no decoding); BadAudio with the reason
    for files that cannot be streamed: missing, empty, unsupported, unreadable header, truncated
    WAV, rate or channels out of range, or a mono rule naming a channel the file lacks."""
    p = Path(path)
    reason = file_problem(p)
    if reason is not None:
        raise BadAudio(reason)
    size = p.stat().st_size
    ext = p.suffix.lower().lstrip(".")
    if ext in WAV_EXTENSIONS:
        info = _wav_info(str(p), size)
    elif ext in COMPRESSED_EXTENSIONS:
        try:
            # read_compressed_range checks the container; the header reader alone would not.
            read_audio_range(tf.constant(str(p)), 0.0, 0.0)
            spec = tfio_audio.info_compressed(tf.constant(str(p)))
        except tf.errors.OpError as err:
            raise BadAudio("unreadable: " + _first_line(err)) from None
        info = AudioInfo(int(spec["frames"]), int(spec["sample_rate_hz"]), int(spec["channels"]))
    else:
        raise BadAudio(f"unsupported audio file extension {p.suffix!r} "
                       f"(expected one of {', '.join('.' + e for e in WAV_EXTENSIONS + COMPRESSED_EXTENSIONS)})")
    if info.frames == 0:
        raise BadAudio(NO_SAMPLES)
    reason = limit_problem(info.sample_rate_hz, info.channels, limits)
    if reason is not None:
        raise BadAudio(reason)
    if mono != "mean" and int(mono) >= info.channels:
        raise BadAudio(f"audio.mono {mono!r} selects channel {mono} but the file has {info.channels} channel(s)")
    return info


# ---------------------------------------------------------------------------------------------
# Read plans


@functools.lru_cache(maxsize=64)
def alignment(rate_in: int, rate_out: int) -> tuple[int, int]:
    """(period_in, period_out) of the resampler (pipeline.resample.period), cached per rate pair."""
    return resample_lib.period(rate_in, rate_out)


def context_frames(rate_in: int, rate_out: int) -> int:
    """Input frames read beyond the wanted outputs on each side: more than the resampler's
    kernels reach (26.5 samples of the lower rate for the main kernel, less for decimation)."""
    if rate_in == rate_out:
        return 0
    return math.ceil(64 * rate_in / min(rate_in, rate_out)) + 64


def resampled_frames(frames: int, rate_in: int, rate_out: int) -> int:
    """Length of the whole file at the model rate (as pipeline.resample.resampled_length)."""
    return -(-frames * rate_out // rate_in)


def plan_read(chunk: Chunk, info: AudioInfo, rate_out: int) -> Read:
    """The input frames a chunk needs and where its output samples sit in their resampled signal."""
    rate_in = info.sample_rate_hz
    period_in, period_out = alignment(rate_in, rate_out)
    context = context_frames(rate_in, rate_out)
    # Output n sits at input n * period_in / period_out (the resampler's possibly approximated ratio).
    lo = chunk.start * period_in // period_out - context
    k = max(0, lo // period_in)
    first = min(k * period_in, info.frames)
    hi = -(-(chunk.start + chunk.length) * period_in // period_out) + context
    last = max(first, min(info.frames, hi))
    total = resampled_frames(info.frames, rate_in, rate_out)
    valid = int(np.clip(total - chunk.start, 0, chunk.length))
    return Read(first, last, chunk.start - k * period_out, chunk.length, valid)


@dataclasses.dataclass(frozen=True)
class Job:
    """One file to stream: its path, header info and chunk plan at the model rate."""

    path: str
    info: AudioInfo
    chunks: tuple[Chunk, ...]
    reads: tuple[Read, ...]


def make_job(path: str, info: AudioInfo, rate_out: int, window: int, hop: int, chunk_windows: int) -> Job:
    total = resampled_frames(info.frames, info.sample_rate_hz, rate_out)
    chunks = tuple(chunk_plan(total, window, hop, chunk_windows))
    return Job(str(path), info, chunks, tuple(plan_read(c, info, rate_out) for c in chunks))


# ---------------------------------------------------------------------------------------------
# The graph side


def read_chunk(path: tf.Tensor, rate_in: tf.Tensor, read: dict, rate_out: int, mono: str,
               rates: Sequence[int] = ()) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One Read (as tensors) -> (float32 [length] mono at rate_out, peak |sample|, NaN/Inf count).

    The peak and the count are over the input frames read (for silent- and corrupt-file checks).
    """
    rate = tf.cast(rate_in, tf.float64)
    first = tf.cast(read["first_frame"], tf.float64)
    last = tf.cast(read["last_frame"], tf.float64)
    # frame / rate * rate rounds back to the frame: read_audio_range reads exactly [first, last).
    samples, rate_read, _ = read_audio_range(path, first / rate, last / rate)  # [frames, channels]
    finite = tf.math.is_finite(samples)  # [frames, channels]
    non_finite = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
    # reduce_max of no samples is -inf: the maximum with 0 makes it 0.
    peak = tf.maximum(tf.reduce_max(tf.abs(tf.where(finite, samples, 0.0))), 0.0)
    x = to_mono(tf.where(finite, samples, 0.0), mono)  # [frames]
    y = resample_lib.resample_segment(x, rate_read, rate_out, read["offset"], read["length"], rates)  # [length]
    keep = tf.range(tf.shape(y, out_type=tf.int64)[0]) < tf.cast(read["valid"], tf.int64)  # [length]
    return tf.where(keep, y, 0.0), peak, non_finite


def _spectrogram(y: tf.Tensor, own: tf.Tensor, rate_out: int) -> tf.Tensor:
    """Log-mel frames [frames, SPECTROGRAM_BANDS] of y[:own] (non-overlapping FFT frames)."""
    own = tf.maximum(own, SPECTROGRAM_FRAME)
    frames = tf.signal.frame(y[:own], SPECTROGRAM_FRAME, SPECTROGRAM_FRAME)  # [frames, SPECTROGRAM_FRAME]
    power = tf.square(tf.abs(tf.signal.rfft(frames * tf.signal.hann_window(SPECTROGRAM_FRAME))))  # [frames, bins]
    mel = tf.signal.linear_to_mel_weight_matrix(SPECTROGRAM_BANDS, SPECTROGRAM_FRAME // 2 + 1, rate_out,
                                                min(100.0, rate_out / 4), rate_out / 2)  # [bins, bands]
    return tf.math.log(tf.matmul(power, mel) + 1e-10) / math.log(10.0)  # [frames, bands]


def window_dataset(jobs: Sequence[Job], rate_out: int, mono: str, window: int, hop: int,
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
