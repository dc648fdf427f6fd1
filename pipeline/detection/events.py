"""Detection post-processing as pure functions over arrays: scores -> events.

Time convention: with `window` and `hop` in samples at the model rate, window i covers samples
[i * hop, i * hop + window), i.e. [i * hop_s, i * hop_s + window_s) with hop_s = hop / rate
(the rounded hop in samples, not the requested seconds, so times never drift over long files).
The last window may reach past the end of the file; it is zero-padded, never dropped.

For events, each window owns its central slice [start + (window - hop)/2, start + (window + hop)/2),
so that a run of positive windows maps to the stretch of audio their centres cover and two calls
separated by a run of negative windows stay two events even when the windows overlap. The first
window of a file owns everything before its slice and the last one everything after.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Event:
    label: str
    start_s: float
    end_s: float
    max_score: float
    mean_score: float


def positive_runs(positive: Sequence[bool]) -> list[tuple[int, int]]:
    """[first, last) index ranges of consecutive True values (itertools.groupby)."""
    runs, index = [], 0
    for is_positive, group in itertools.groupby(bool(p) for p in positive):
        n = sum(1 for _ in group)
        if is_positive:
            runs.append((index, index + n))
        index += n
    return runs


def split_points(scores: np.ndarray, first: int, last: int, pieces: int) -> list[int]:
    """Window indices that cut the run [first, last) into `pieces` parts: for each of the
    pieces - 1 equal divisions, the lowest-scoring window within half a part of it (ties: the
    nearest). Parts never come out empty."""
    size = (last - first) / pieces
    cuts: list[int] = []
    for k in range(1, pieces):
        centre = first + k * size
        lo = max(first + 1, int(math.ceil(centre - size / 2)), cuts[-1] + 1 if cuts else 0)
        hi = min(last - (pieces - k), int(math.floor(centre + size / 2)))
        if hi < lo:
            continue
        candidates = np.arange(lo, hi + 1)
        order = np.lexsort((np.abs(candidates - centre), scores[lo:hi + 1]))  # lowest score, then nearest
        cuts.append(int(candidates[order[0]]))
    return cuts


def merge_windows(scores: Sequence[float], hop_s: float, window_s: float, threshold: float,
                  label: str = "", min_gap_s: float = 0.0, min_duration_s: float = 0.0,
                  duration_s: float | None = None, max_duration_s: float | None = None) -> list[Event]:
    """Consecutive windows with score >= threshold -> events.

    Events whose gap is shorter than `min_gap_s` are joined. An event longer than
    `max_duration_s` (when given) is taken as ceil(duration / max_duration_s) calls in a row and
    cut where the score dips lowest near each equal division (split_points). Events shorter
    than `min_duration_s` are then dropped. Times are clipped to [0, duration_s] when the file
    duration is given. max_score and mean_score are over the windows of the event (a joined
    event's windows in the gap included).
    """
    scores = np.asarray(scores, dtype=np.float64)
    lead = (window_s - hop_s) / 2.0 if window_s > hop_s else 0.0
    slice_s = min(hop_s, window_s)
    spans: list[list] = []  # [start_s, end_s, first window, last window (exclusive)]
    for first, last in positive_runs(scores >= threshold):
        start = first * hop_s + lead
        end = (last - 1) * hop_s + lead + slice_s
        if spans and start - spans[-1][1] < min_gap_s:
            spans[-1][1], spans[-1][3] = end, last
        else:
            spans.append([start, end, first, last])
    pieces = []
    for start, end, first, last in spans:
        if first == 0:
            start = 0.0
        if last == len(scores):
            end = (last - 1) * hop_s + window_s
        if duration_s is not None:
            start, end = max(0.0, start), min(end, duration_s)
        cuts = []
        if max_duration_s and end - start > max_duration_s:
            cuts = split_points(scores, first, last, math.ceil((end - start) / max_duration_s))
        bounds = [first, *cuts, last]
        times = [start, *[c * hop_s + lead for c in cuts], end]
        pieces += [(times[k], times[k + 1], bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    events = []
    for start, end, first, last in pieces:
        if end - start < min_duration_s:
            continue
        chunk = scores[first:last]
        events.append(Event(label, round(start, 4), round(end, 4), float(chunk.max()), float(chunk.mean())))
    return events


def events_from_scores(scores: np.ndarray, columns: Mapping[str, int], thresholds: Mapping[str, float],
                       hop_s: float, window_s: float, min_gap_s: float = 0.0, min_duration_s: float = 0.0,
                       duration_s: float | None = None, max_duration_s: float | None = None) -> list[Event]:
    """Scores [windows, outputs] -> events of every label, sorted by start time.

    `columns` maps each call label to its column of `scores`; `thresholds` gives its threshold.
    """
    scores = np.asarray(scores)
    events = []
    for label, column in columns.items():
        events += merge_windows(scores[:, column], hop_s, window_s, thresholds[label], label,
                                min_gap_s, min_duration_s, duration_s, max_duration_s)
    return sorted(events, key=lambda e: (e.start_s, e.label))


def count_events(events: Sequence[Event], labels: Sequence[str]) -> dict[str, int]:
    """Events per label, every label present (zeros included)."""
    counts = dict.fromkeys(labels, 0)
    for event in events:
        counts[event.label] = counts.get(event.label, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# Frame models (train.task "frames"): scores per spectrogram frame instead of per window.
#
# Frame i of a file covers [offset_s + i * frame_s, offset_s + (i + 1) * frame_s): frame_s is the
# frontend hop and offset_s puts the frame's centre (where its training target was taken) in the
# middle (-frame_s / 2 for centred STFT frames).

# Onset peaks closer than this to a higher one are the same call start (at least; a model trained
# with a wider onset tolerance cannot place starts more finely than that tolerance).
ONSET_PEAK_RADIUS_S = 0.05


def stitch_frames(scores: np.ndarray, hop_frames: int) -> np.ndarray:
    """Per-window frame scores [windows, frames, outputs] (window w starting at frame w * hop_frames)
    -> one score per file frame [(windows - 1) * hop_frames + frames, outputs].

    Each frame is taken from the window it sits most centrally in: window w gives its frames
    [lead, lead + hop_frames) with lead = (frames - hop_frames) // 2, the first window also
    everything before and the last one everything after. Frames near a window's edges see
    less context (padding, recurrent state), so they are never used where a window centred
    nearer exists.
    """
    scores = np.asarray(scores)
    count, frames = scores.shape[:2]
    if not 1 <= hop_frames <= frames:
        raise ValueError(f"hop_frames must be in [1, {frames}], got {hop_frames}")
    lead = (frames - hop_frames) // 2
    parts = []
    for w in range(count):
        first = 0 if w == 0 else lead
        last = frames if w == count - 1 else lead + hop_frames
        parts.append(scores[w, first:last])
    return np.concatenate(parts) if parts else np.zeros((0, *scores.shape[2:]), scores.dtype)


def onset_peaks(onset: np.ndarray, threshold: float, radius: int) -> list[int]:
    """Frames where onset >= threshold and is the highest within `radius` frames either way
    (ties: the first)."""
    peaks = []
    for f in np.flatnonzero(onset >= threshold):
        lo, hi = max(0, f - radius), f + radius + 1
        if onset[f] == onset[lo:hi].max() and not (peaks and f - peaks[-1] <= radius):
            peaks.append(int(f))
    return peaks


def frame_events(presence: Sequence[float], onset: Sequence[float] | None, frame_s: float, threshold: float,
                 onset_threshold: float = 1.0, label: str = "", min_gap_s: float = 0.0,
                 min_duration_s: float = 0.0, duration_s: float | None = None,
                 max_duration_s: float | None = None, offset_s: float = 0.0,
                 peak_radius_s: float = ONSET_PEAK_RADIUS_S) -> list[Event]:
    """Frame scores -> events: runs of frames with presence >= threshold (runs closer than
    min_gap_s joined) are calls, split where a new call starts inside them: at onset peaks
    (onset_peaks, radius peak_radius_s) of at least onset_threshold that leave both
    parts min_duration_s or longer. Then max_duration_s and min_duration_s apply as in
    merge_windows. max_score / mean_score are over the presence scores of the event's frames.
    Times start at offset_s (see above) and never before 0.
    """
    presence = np.asarray(presence, dtype=np.float64)
    spans: list[list[int]] = []
    for first, last in positive_runs(presence >= threshold):
        if spans and (first - spans[-1][1]) * frame_s < min_gap_s:
            spans[-1][1] = last
        else:
            spans.append([first, last])
    min_frames = max(1, math.ceil(round(min_duration_s / frame_s, 6)))
    peaks = [] if onset is None else onset_peaks(np.asarray(onset, np.float64), onset_threshold,
                                                 max(1, round(peak_radius_s / frame_s)))
    pieces = []
    for first, last in spans:
        bounds = [first]
        for p in peaks:
            if p - bounds[-1] >= min_frames and last - p >= min_frames:
                bounds.append(p)
        bounds.append(last)
        for a, b in zip(bounds, bounds[1:]):
            cuts = []
            if max_duration_s and (b - a) * frame_s > max_duration_s:
                cuts = split_points(presence, a, b, math.ceil((b - a) * frame_s / max_duration_s))
            edges = [a, *cuts, b]
            pieces += list(zip(edges, edges[1:]))
    events = []
    for a, b in pieces:
        start, end = max(0.0, offset_s + a * frame_s), offset_s + b * frame_s
        if duration_s is not None:
            end = min(end, duration_s)
        if end - start < min_duration_s or end <= start:
            continue
        chunk = presence[a:b]
        events.append(Event(label, round(start, 4), round(end, 4), float(chunk.max()), float(chunk.mean())))
    return events
