"""Stream long recordings as mono audio at the model rate, chunk by chunk, in bounded memory.

    with chunk_stream(jobs, rate_out, mono, context) as stream:
        for audio in stream:  # every chunk of every job, in order
            audio.problem or audio.samples  # float32 [chunk.length + 2 * context]

file -> header only (pipeline.audio.info, before the file gets a Job) -> chunk and read plan
(pipeline.detection.plan, in model-rate samples) -> in a background thread, per chunk: the input
frames it needs, decoded by libsndfile (soundfile) -> NaN/Inf zeroed and counted, peak -> mono by
the audio.mono rule -> only the chunk's output samples resampled
(pipeline.audio.resample.resample_segment) -> a bounded queue -> the caller.

Why libsndfile rather than the in-graph readers (pipeline.audio.read): it decodes the
capuchin_forest MP3s (9 min of 48 kHz stereo) in 0.4-0.5 s, tensorflow-io in 1.45-1.7 s, with
the same frames and samples (WAV and FLAC within 1e-7, Ogg Vorbis a few 1e-7, MP3 (mpg123
against minimp3) up to 3e-6: tests/test_stream.py), and a file stays open from one chunk to
the next, where tensorflow-io's MP3 reader rescanned the whole file's frame headers for every
chunk. WAV files are read by it too: their headers were checked by our own parser
(pipeline.audio.info.checked_info) before they got a Job, and the frame counts planned from
those headers are what is read (a file that holds fewer frames fails, see below).

Exactness. Each chunk is resampled on its own, yet its samples equal those of the whole file
decoded, mixed down and resampled at once (up to float rounding): a chunk's read starts on an
input frame where the resampler's polyphase pattern restarts and reaches a kernel length beyond
the samples wanted on either side (pipeline.detection.plan.plan_read).

Reading. Each file is opened once and decoded front to back. Consecutive chunks' reads overlap
(the windows across their boundary, the context, the resampler's reach): the overlap is kept
from the previous read and only the new frames are decoded, so nothing seeks back and no frame
is decoded twice. A chunk's peak and NaN/Inf count are over the frames decoded for it, so a
file's are the maximum and the sum over its chunks, each frame counted once.

Threads. One background thread per stream decodes (libsndfile releases the GIL) and resamples
(a TensorFlow function per input rate, which runs without the GIL) while the caller runs the
model on the other core. At most `prefetch` chunks wait in the queue, so memory is bounded by
the chunk length, whatever the file length. The thread starts when chunk_stream is called (so
reading overlaps the caller's start-up) and ends at the end of the stream; close() (or leaving
the `with` block) stops it early and waits for it.

Failures. A chunk whose frames cannot be read (libsndfile fails, the file vanished or holds
fewer frames than its header promised) is yielded with `problem` set (read_failure naming the
file and the chunk's start) and empty samples; the file's remaining chunks are not read and are
each yielded with that same problem; the stream goes on with the next file. Any other error
(a bug) is raised by the iterator, after which the stream is closed.
"""
from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from typing import Iterator, Optional, Sequence

import numpy as np
import soundfile as sf
import tensorflow as tf

from pipeline.audio import problems
from pipeline.audio import resample as resample_lib
from pipeline.audio.info import AudioInfo
from pipeline.audio.problems import Problem
from pipeline.detection.plan import Job

# Chunks ready ahead of the model. Two keep the reader busy while the model scores; more only
# add memory.
PREFETCH_CHUNKS = 2

# How often (seconds) a thread waiting on a full queue checks whether the stream was closed.
_POLL_S = 0.1


@dataclasses.dataclass
class ChunkAudio:
    """One chunk of one job, as chunk_stream yields it."""

    job: int  # index into jobs
    chunk: int  # index into jobs[job].chunks
    samples: np.ndarray  # float32 [chunk.length + 2 * context] mono at rate_out, zeros outside the file
    peak: float  # max |sample| over the input frames decoded for this chunk (NaN/Inf left out)
    non_finite: int  # NaN/Inf samples among them (they are zeroed before resampling)
    problem: Optional[Problem] = None  # set when the chunk could not be read (samples then empty)


# ---------------------------------------------------------------------------------------------
# Reading


class _Unreadable(Exception):
    """A file whose frames do not match what its header promised."""


# Errors that mean a chunk could not be read; any other error is a bug and reaches the caller.
_READ_ERRORS = (sf.SoundFileError, OSError, _Unreadable)


class _FileReader:
    """One open file's frames, decoded front to back: a read takes the frames it shares with the
    previous one from what that read kept, and decodes only the rest. Every read fills the same
    buffer, sized for the file's longest read: the only other array kept is the overlap."""

    def __init__(self, path: str, info: AudioInfo, max_frames: int):
        self.path = path
        self.file = sf.SoundFile(path)
        found = (self.file.samplerate, self.file.channels)
        if found != (info.sample_rate_hz, info.channels):
            self.file.close()
            raise _Unreadable(f"{path}: libsndfile reads {found[0]} Hz, {found[1]} channel(s); the header "
                              f"check found {info.sample_rate_hz} Hz, {info.channels} channel(s)")
        self.buffer = np.empty([max_frames, info.channels], np.float32)  # [max_frames, channels]
        self.kept = self.buffer[:0].copy()  # [frames, channels] from frame kept_from
        self.kept_from = 0
        self.position = 0  # the file's read position, in frames

    def read(self, first: int, last: int, keep_from: int) -> tuple[np.ndarray, float, int]:
        """Frames [first, last) as float32 [frames, channels] with NaN/Inf zeroed (a view of the
        buffer: valid until the next read), and the peak and NaN/Inf count of the frames decoded
        now (those not kept from the previous read). Frames from keep_from on (the next read's
        first frame) are kept for the next read."""
        kept_to = self.kept_from + len(self.kept)
        reused = self.kept[first - self.kept_from:last - self.kept_from] if self.kept_from <= first <= kept_to \
            else self.kept[:0]  # [reused, channels]
        frames = self.buffer[:last - first]  # [frames, channels]
        frames[:len(reused)] = reused
        start = first + len(reused)
        if start < last:
            if self.position != start:
                self.file.seek(start)
            got = len(self.file.read(last - start, out=frames[len(reused):]))
            self.position = start + got
            if got < last - start:
                raise _Unreadable(f"{self.path}: the audio ends at frame {start + got}, the header "
                                  f"promised {last - start - got} more")
        peak, non_finite = _clean(frames[len(reused):])
        self.kept = frames[max(keep_from, first) - first:].copy()  # [kept, channels]
        self.kept_from = max(keep_from, first)
        return frames, peak, non_finite

    def close(self) -> None:
        self.file.close()


def _clean(frames: np.ndarray) -> tuple[float, int]:
    """Zeroes the NaN/Inf samples of frames [n, channels] in place; returns the peak |sample| (0
    when there are none) and how many samples were NaN/Inf."""
    if frames.size == 0:
        return 0.0, 0
    # max and min are NaN or infinite when any sample is: no separate pass to look for them.
    high, low = frames.max(), frames.min()
    if np.isfinite(high) and np.isfinite(low):
        return float(max(high, -low)), 0
    bad = ~np.isfinite(frames)  # [n, channels]
    frames[bad] = 0.0
    return float(max(frames.max(), -frames.min())), int(bad.sum())


def _mono(frames: np.ndarray, rule: str | int) -> np.ndarray:
    """[n, channels] -> [n] by the audio.mono rule, as pipeline.audio.read.to_mono does it: the
    channels' mean (summed in channel order, then divided) or one channel. Column by column:
    numpy's and TensorFlow's means over a short last axis take 10x longer."""
    channels = frames.shape[1]
    if rule != "mean":
        return np.ascontiguousarray(frames[:, rule])  # [n]
    if channels == 1:
        return frames[:, 0].copy()  # [n]
    y = frames[:, 0] + frames[:, 1]  # [n]
    for c in range(2, channels):
        y += frames[:, c]
    y /= np.float32(channels)
    return y  # [n]


# ---------------------------------------------------------------------------------------------
# Resampling


@functools.lru_cache(maxsize=None)
def _resampler(rate_in: int, rate_out: int):
    """A TensorFlow function (mono [n], offset, lead, valid, length) -> [length]: `lead` zeros,
    the resampled samples [offset, offset + valid) of the n frames at rate_in, then zeros. One
    per input rate, traced once: the resampler's weights are built then, and each call runs in
    TensorFlow, without the GIL."""
    rates = (rate_in,) if rate_in != rate_out else ()
    scalar = tf.TensorSpec([], tf.int64)

    def resample(mono, offset, lead, valid, length):
        y = resample_lib.resample_segment(mono, rate_in, rate_out, offset, valid, rates)  # [valid]
        return tf.pad(y, [[lead, length - lead - valid]])  # [length]

    return tf.function(resample, autograph=False, input_signature=[tf.TensorSpec([None], tf.float32)] + [scalar] * 4)


def _job_chunks(index: int, job: Job, rate_out: int, mono: str | int,
                stop: threading.Event) -> Iterator[ChunkAudio]:
    """The ChunkAudio of every chunk of one job, in order (see the module docstring for failures)."""
    resample = _resampler(job.info.sample_rate_hz, rate_out)
    reader = None
    try:
        for c, (chunk, read) in enumerate(zip(job.chunks, job.reads)):
            if stop.is_set():
                return
            keep_from = job.reads[c + 1].first_frame if c + 1 < len(job.reads) else read.last_frame
            try:
                if reader is None:
                    reader = _FileReader(job.path, job.info, max(r.last_frame - r.first_frame for r in job.reads))
                frames, peak, non_finite = reader.read(read.first_frame, read.last_frame, keep_from)
            except _READ_ERRORS:
                problem = problems.read_failure(job.path, at_s=chunk.start / rate_out)
                for k in range(c, len(job.chunks)):
                    yield ChunkAudio(index, k, np.zeros([0], np.float32), 0.0, 0, problem)
                return
            y = _mono(frames, mono)  # [frames]
            del frames
            y = resample(y, read.offset, read.lead, read.valid, read.length).numpy()  # [length]
            yield ChunkAudio(index, c, y, peak, non_finite)
    finally:
        if reader is not None:
            reader.close()


# ---------------------------------------------------------------------------------------------
# The stream


_END = object()  # put after the last chunk


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Puts item in the queue once there is room; False (not put) once the stream is closed."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(jobs: Sequence[Job], rate_out: int, mono: str | int, out: queue.Queue, stop: threading.Event) -> None:
    """The background thread: every chunk of every job into `out`, then _END (or the error that
    stopped it)."""
    try:
        for j, job in enumerate(jobs):
            for audio in _job_chunks(j, job, rate_out, mono, stop):
                if not _put(out, audio, stop):
                    return
        _put(out, _END, stop)
    except BaseException as err:  # raised again by the caller's next()
        _put(out, err, stop)


class ChunkStream:
    """The iterator chunk_stream returns: ChunkAudio of every chunk of every job, in order, from a
    background thread that starts at once. It ends the thread at the end of the stream, or on
    close() (also at the end of a `with` block, and when garbage collected)."""

    def __init__(self, jobs: Sequence[Job], rate_out: int, mono: str | int, prefetch: int):
        self._queue: queue.Queue = queue.Queue(max(1, prefetch))
        self._stop = threading.Event()
        # The thread holds no reference to the stream, so a dropped stream is collected and stops it.
        self._thread = threading.Thread(target=_produce, args=(list(jobs), rate_out, mono, self._queue, self._stop),
                                        name="chunk_stream", daemon=True)
        self._thread.start()

    def __iter__(self) -> "ChunkStream":
        return self

    def __next__(self) -> ChunkAudio:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, ChunkAudio):
            return item
        self.close()
        if item is _END:
            raise StopIteration
        raise item

    def close(self) -> None:
        """Stops the thread (after the chunk it is reading) and waits for it; queued chunks are dropped."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> "ChunkStream":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()  # the thread ends at its next chunk; not waited for here


def _check(jobs: Sequence[Job], mono: str | int, context: int) -> None:
    """ValueError naming the file for a job the stream cannot read as asked."""
    if mono != "mean" and (isinstance(mono, bool) or not isinstance(mono, int) or mono < 0):
        raise ValueError(f"mono rule must be 'mean' or a channel index >= 0, got {mono!r}")
    for job in jobs:
        if job.context != context:
            raise ValueError(f"{job.path}: its reads were planned with {job.context} context samples, "
                             f"the stream wants {context} (make_job(..., context={context}))")
        problem = problems.mono_problem(mono, job.info.channels)
        if problem is not None:
            raise ValueError(f"{job.path}: {problem}")


def chunk_stream(jobs: Sequence[Job], rate_out: int, mono: str | int, context: int = 0,
                 prefetch: int = PREFETCH_CHUNKS) -> ChunkStream:
    """Every chunk of every job, in order, as ChunkAudio: samples [chunk.length + 2 * context] at
    rate_out, read and resampled in a background thread, at most `prefetch` chunks ahead.

    jobs: from make_job(..., rate_out, ..., context=context). mono: the audio.mono rule ("mean"
    or a channel index). See the module docstring for failures and the thread's end.
    """
    _check(jobs, mono, context)
    return ChunkStream(jobs, rate_out, mono, prefetch)
