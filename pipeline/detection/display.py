"""What a person watches or looks at: the progress line of a detection run, and the overview
picture of a file (spectrogram, score trace, events)."""
from __future__ import annotations

import functools
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.atomic import atomic_write
from pipeline.detection.evaluate import match_events
from pipeline.detection.events import Event

# Columns of the overview spectrogram (--plot): FFT frames of this many model-rate samples,
# log-mel with this many bands.
SPECTROGRAM_FRAME = 512
SPECTROGRAM_BANDS = 64


@functools.lru_cache(maxsize=8)
def _mel_weights(rate_out: int) -> tf.Tensor:
    """[bins, SPECTROGRAM_BANDS]: the overview's mel filter bank (an eager tensor, safe to cache)."""
    with tf.init_scope():
        return tf.signal.linear_to_mel_weight_matrix(SPECTROGRAM_BANDS, SPECTROGRAM_FRAME // 2 + 1, rate_out,
                                                     min(100.0, rate_out / 4), rate_out / 2)


def overview_spectrogram(y: np.ndarray | tf.Tensor, own: int, rate_out: int) -> np.ndarray:
    """Log10-mel frames [frames, SPECTROGRAM_BANDS] of y[:own] in non-overlapping FFT frames of
    SPECTROGRAM_FRAME samples (own is raised to one frame).

    y: a chunk's samples from the chunk's start, ChunkAudio.samples[context:]; own: those that
    are the chunk's own and in the file, min(chunk.num_windows * hop, file samples - chunk.start)
    at rate_out, so that consecutive chunks' frames follow each other through the file.
    """
    own = max(int(own), SPECTROGRAM_FRAME)
    y = tf.convert_to_tensor(y, tf.float32)
    frames = tf.signal.frame(y[:own], SPECTROGRAM_FRAME, SPECTROGRAM_FRAME)  # [frames, SPECTROGRAM_FRAME]
    power = tf.square(tf.abs(tf.signal.rfft(frames * tf.signal.hann_window(SPECTROGRAM_FRAME))))  # [frames, bins]
    mel = tf.matmul(power, _mel_weights(rate_out))  # [frames, bands]
    return (tf.math.log(mel + 1e-10) / math.log(10.0)).numpy()  # [frames, bands]


class Spectrogram:
    """A fixed-size overview spectrogram of a whole file, filled chunk by chunk (bounded memory):
    log-mel frames are averaged into at most `max_columns` time columns."""

    def __init__(self, duration_s: float, frame_s: float, bands: int, max_columns: int = 2400):
        self.duration_s = duration_s
        self.columns = max(1, min(max_columns, math.ceil(duration_s / frame_s)))
        self.sum = np.zeros((self.columns, bands), np.float64)
        self.count = np.zeros(self.columns, np.int64)

    def add(self, frames: np.ndarray, start_s: float, frame_s: float) -> None:
        times = start_s + (np.arange(len(frames)) + 0.5) * frame_s  # frame centres
        index = np.clip((times / self.duration_s * self.columns).astype(np.int64), 0, self.columns - 1)
        np.add.at(self.sum, index, frames)
        np.add.at(self.count, index, 1)

    def image(self) -> np.ndarray:
        """[bands, columns]; a column without frames repeats the one before it."""
        filled = np.flatnonzero(self.count > 0)
        if not len(filled):
            return np.zeros(self.sum.shape[::-1])
        source = filled[np.clip(np.searchsorted(filled, np.arange(self.columns), side="right") - 1, 0, None)]
        return (self.sum[source] / self.count[source, None]).T


def write_plot(path: Path, title: str, spectrogram: Spectrogram, scores: np.ndarray, labels: Sequence[str],
               columns: Sequence[int], thresholds: dict, events: Sequence[Event], hop_s: float,
               window_s: float, sample_rate_hz: int, truth: Optional[pd.DataFrame] = None,
               min_overlap: float = 0.3) -> None:
    """PNG: the spectrogram, the score trace of every label with its threshold, and the events.
    With `truth` (the file's true calls: label, start_s, end_s), also the true calls, and the
    misses (true calls no event matches) and false alarms (events that match no call) marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = spectrogram.duration_s
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    top.imshow(spectrogram.image(), origin="lower", aspect="auto", cmap="magma",
               extent=[0, duration, 0, spectrogram.sum.shape[1]])
    top.set_ylabel(f"mel band (to {sample_rate_hz / 2000:g} kHz)")
    top.set_title(title)
    centres = np.arange(len(scores)) * hop_s + window_s / 2
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, column) in enumerate(zip(labels, columns)):
        colour = colours[k % len(colours)]
        bottom.plot(centres, scores[:, column], color=colour, lw=0.8, label=label)
        bottom.axhline(thresholds[label], color=colour, ls="--", lw=0.6)
        for e in events:
            if e.label == label:
                bottom.axvspan(e.start_s, e.end_s, fc=colour, alpha=0.25, ec="white", lw=0.6)  # edges part neighbours
                top.axvspan(e.start_s, e.end_s, ymin=0.97, ymax=1.0, color=colour, lw=0)
    if truth is not None:
        _mark_truth(top, bottom, truth, events, labels, colours, min_overlap)
    bottom.set_ylim(0, 1.02)
    bottom.set_xlim(0, duration)
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("score")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


def _mark_truth(top, bottom, truth: pd.DataFrame, events: Sequence[Event], labels: Sequence[str], colours,
                min_overlap: float) -> None:
    """True calls as bars under the score axis; misses (red x) and false alarms (red o)."""
    for k, label in enumerate(labels):
        calls = truth[truth["label"] == label]
        true_spans = list(zip(calls["start_s"].astype(float), calls["end_s"].astype(float)))
        found = [(e.start_s, e.end_s) for e in events if e.label == label]
        matched = match_events(found, true_spans, min_overlap)
        hit_true, hit_found = {t for _, t in matched}, {d for d, _ in matched}
        colour = colours[k % len(colours)]
        for i, (start, end) in enumerate(true_spans):
            bottom.plot([start, end], [-0.04 - 0.02 * k] * 2, color=colour, lw=3, solid_capstyle="butt",
                        clip_on=False)
            if i not in hit_true:
                top.plot((start + end) / 2, 0.5, "x", color="red", ms=9, mew=2, transform=top.get_xaxis_transform())
        for i, (start, end) in enumerate(found):
            if i not in hit_found:
                top.plot((start + end) / 2, 0.5, "o", mfc="none", color="red", ms=9, mew=1.5,
                         transform=top.get_xaxis_transform())


class Progress:
    """One console line: files done, hours of audio done and the real-time factor
    (processing time / audio time). Redrawn in place on a terminal, a line per file otherwise."""

    def __init__(self, files: int, audio_s: float, stream=None, interval_s: float = 0.5):
        self.files, self.audio_s = files, audio_s
        self.done_files, self.done_s = 0, 0.0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.interval_s, self.last = interval_s, 0.0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        share = self.done_s / self.audio_s if self.audio_s else 1.0
        bar = "#" * int(20 * share) + "-" * (20 - int(20 * share))
        speed = f"{self.done_s / elapsed:.1f}x real time, RTF {elapsed / self.done_s:.3f}" if self.done_s else "-"
        return (f"[{bar}] files {self.done_files}/{self.files} | audio {self.done_s / 3600:.2f}/"
                f"{self.audio_s / 3600:.2f} h | {speed}")

    def advance(self, audio_s: float = 0.0, files: int = 0, name: str = "") -> None:
        self.done_s += audio_s
        self.done_files += files
        now = time.perf_counter()
        if self.tty and (files or now - self.last >= self.interval_s):
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()
            self.last = now
        elif not self.tty and files:
            self.stream.write(self.line() + (f" {name}" if name else "") + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
