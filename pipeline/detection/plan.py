"""Which samples detection reads, planned in Python before any audio is touched.

A file's windows (of `window` samples every `hop`, at the model rate) are grouped into chunks of
a fixed number of windows (Chunk, chunk_plan), and each chunk into the input frames it needs from
the file (Read, plan_read): a read starts on an input frame where the resampler's polyphase
pattern restarts and reaches its kernels' span beyond the samples wanted, so each chunk computed
on its own gives the samples of the whole file resampled at once. A chunk may also want `context`
samples on each side of its windows (real audio where the file has it, zeros before its start and
after its end).

Time convention: window i covers samples [i * hop, i * hop + window), i.e. [i * hop_s, i * hop_s +
window_s) with hop_s = hop / rate (the rounded hop in samples, so times never drift over long
files). The last window may reach past the end of the file; it is zero-padded, never dropped.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from pipeline.audio import resample as resample_lib
from pipeline.audio.info import AudioInfo


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Windows [first_window, first_window + num_windows) of a file and the samples they need,
    [start, start + length) at the model rate (reaching past the file end for the last one)."""

    first_window: int
    num_windows: int
    start: int
    length: int


def num_windows(num_samples: int, window: int, hop: int) -> int:
    """Windows needed to cover every sample; the last partial window is kept (padded)."""
    if num_samples <= window:
        return 1
    return 1 + math.ceil((num_samples - window) / hop)


def samples(seconds: float, rate_hz: int) -> int:
    """Seconds -> a whole number of samples (half to even, as everywhere in the pipeline)."""
    return int(round(seconds * rate_hz))


def windows_per_chunk(chunk_s: float, rate_hz: int, window: int, hop: int) -> int:
    """How many windows a chunk of about chunk_s seconds holds (at least one)."""
    return max(1, (samples(chunk_s, rate_hz) - window) // hop + 1)


def chunk_plan(num_samples: int, window: int, hop: int, chunk_windows: int) -> list[Chunk]:
    """The windows of a file split into consecutive chunks of `chunk_windows` windows.

    A chunk's samples are exactly those its windows read, so framing each chunk with
    `tf.signal.frame(chunk, window, hop)` gives the windows of the whole file framed at once;
    consecutive chunks share the `window - hop` samples that windows across the boundary need.
    """
    if window < 1 or hop < 1 or chunk_windows < 1:
        raise ValueError(f"window, hop and chunk_windows must be >= 1, got {window}, {hop}, {chunk_windows}")
    total = num_windows(num_samples, window, hop)
    plan = []
    for first in range(0, total, chunk_windows):
        count = min(chunk_windows, total - first)
        plan.append(Chunk(first, count, first * hop, (count - 1) * hop + window))
    return plan


@dataclasses.dataclass(frozen=True)
class Read:
    """How a chunk's `length` model-rate samples [chunk.start - context, chunk.start + chunk.length
    + context) come from a file: `lead` zeros (before the file start), then `valid` samples, those
    at [offset, offset + valid) of the resampled signal of input frames [first_frame, last_frame),
    then zeros (past the file end) up to `length`."""

    first_frame: int
    last_frame: int
    offset: int
    length: int
    lead: int
    valid: int


@functools.lru_cache(maxsize=64)
def alignment(rate_in: int, rate_out: int) -> tuple[int, int]:
    """(period_in, period_out) of the resampler (pipeline.audio.resample.period), cached per rate pair."""
    return resample_lib.period(rate_in, rate_out)


@functools.lru_cache(maxsize=64)
def context_frames(rate_in: int, rate_out: int) -> int:
    """Input frames read beyond the wanted outputs on each side (pipeline.audio.resample.input_reach)."""
    return resample_lib.input_reach(rate_in, rate_out)


def plan_read(chunk: Chunk, info: AudioInfo, rate_out: int, context: int = 0) -> Read:
    """The input frames a chunk and `context` model-rate samples on each side of it need, and where
    those samples sit in their resampled signal."""
    if context < 0:
        raise ValueError(f"context must be >= 0 samples, got {context}")
    rate_in = info.sample_rate_hz
    period_in, period_out = alignment(rate_in, rate_out)
    reach = context_frames(rate_in, rate_out)
    total = resample_lib.resampled_length(info.frames, rate_in, rate_out)
    wanted, length = chunk.start - context, chunk.length + 2 * context
    # The wanted samples that lie in the file: [begin, end) of the whole file's resampled signal.
    begin = int(np.clip(wanted, 0, total))
    end = int(np.clip(wanted + length, begin, total))
    # Output n sits at input n * period_in / period_out (the resampler's possibly approximated ratio).
    k = max(0, (begin * period_in // period_out - reach) // period_in)
    first = min(k * period_in, info.frames)
    last = max(first, min(info.frames, -(-end * period_in // period_out) + reach))
    if end == begin:  # nothing of the file wanted (a last window past its end): nothing read, all zeros
        return Read(first, first, 0, length, 0, 0)
    return Read(first, last, begin - k * period_out, length, begin - wanted, end - begin)


@dataclasses.dataclass(frozen=True)
class Job:
    """One file to stream: its path, header info and chunk plan at the model rate, and the
    `context` samples each chunk's read adds on either side."""

    path: str
    info: AudioInfo
    chunks: tuple[Chunk, ...]
    reads: tuple[Read, ...]
    context: int = 0


def make_job(path: str, info: AudioInfo, rate_out: int, window: int, hop: int, chunk_windows: int,
             context: int = 0) -> Job:
    total = resample_lib.resampled_length(info.frames, info.sample_rate_hz, rate_out)
    chunks = tuple(chunk_plan(total, window, hop, chunk_windows))
    return Job(str(path), info, chunks, tuple(plan_read(c, info, rate_out, context) for c in chunks), context)
