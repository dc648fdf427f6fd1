"""Annotations over long recordings -> call and non-call window records (pure pandas/NumPy).

A record's region [start_s, end_s) is what the pipeline may crop a clip from (pipeline.datasets.clips.load_clip):
a random clip_s inside it in training, the centred one in evaluation. What makes a window a
call window (data.call_windows):
- "whole": it holds the whole call. The region is every clip position that does, so the random
  crop becomes a random shift of the call within the window. Non-call windows lie wholly in
  the gaps, negative_margin_s from every call.
- "centre": a call sounds at its centre, which is what detection reports (each window stands
  for the hop-long slice at its centre, pipeline.detection.events). The region is every clip
  position whose centre lies in the call; non-call windows are centred at least
  negative_margin_s from every call, so the short gaps between calls in quick succession give
  non-call windows too, and a detector learns to let its score fall between them.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from pipeline.records.sources import RECORD_COLUMNS


def call_regions(start_s: float, end_s: float, clip_s: float) -> list[tuple[float, float]]:
    """Regions for one call: clip positions that contain it, or tiles for a long call.

    A call no longer than the clip gives one region [end - clip, start + clip): every clip_s
    window inside it holds the whole call, the centred one holds it in the middle. A longer call
    gives ceil(duration / clip) windows of exactly clip_s spread evenly over it.
    """
    duration = end_s - start_s
    if duration <= clip_s:
        return [(end_s - clip_s, start_s + clip_s)]
    count = math.ceil(duration / clip_s)
    step = (duration - clip_s) / (count - 1)
    return [(start_s + i * step, start_s + i * step + clip_s) for i in range(count)]


def centre_regions(start_s: float, end_s: float, clip_s: float) -> list[tuple[float, float]]:
    """Regions for one call under "centre": clip positions whose centre lies in the call. A call
    longer than the clip is cut into ceil(duration / clip) equal parts, a region each."""
    count = max(1, math.ceil((end_s - start_s) / clip_s))
    part = (end_s - start_s) / count
    return [(start_s + i * part - clip_s / 2, start_s + (i + 1) * part + clip_s / 2) for i in range(count)]


def sample_centred(free: list[tuple[float, float]], clip_s: float, count: int,
                   rng: np.random.Generator) -> list[tuple[float, float]]:
    """`count` clip_s windows centred in the stretches `free`, spread over them in proportion to
    their length."""
    usable = [(s, e) for s, e in free if e > s]
    if count <= 0 or not usable:
        return []
    lengths = np.array([e - s for s, e in usable])
    picks = rng.choice(len(usable), size=count, p=lengths / lengths.sum())
    centres = [usable[i][0] + rng.uniform(0.0, lengths[i]) for i in picks]
    return sorted((c - clip_s / 2, c + clip_s / 2) for c in centres)


def gaps(calls: list[tuple[float, float]], duration_s: float, margin_s: float) -> list[tuple[float, float]]:
    """Stretches of [0, duration_s) at least margin_s away from every call."""
    blocked = sorted((max(0.0, s - margin_s), min(duration_s, e + margin_s)) for s, e in calls)
    out, cursor = [], 0.0
    for s, e in blocked:
        if s > cursor:
            out.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < duration_s:
        out.append((cursor, duration_s))
    return out


def sample_negatives(free: list[tuple[float, float]], clip_s: float, count: int,
                     rng: np.random.Generator) -> list[tuple[float, float]]:
    """`count` clip_s windows inside the gaps, spread over them in proportion to their room."""
    usable = [((s, e), e - s - clip_s) for s, e in free if e - s >= clip_s]  # (gap, room to start in)
    if count <= 0 or not usable:
        return []
    weights = np.array([r for _, r in usable]) + 1e-9
    picks = rng.choice(len(usable), size=count, p=weights / weights.sum())
    out = []
    for i in picks:
        (s, e), r = usable[i]
        start = s + rng.uniform(0.0, r)
        out.append((start, start + clip_s))
    return sorted(out)


def annotation_records(annotations: pd.DataFrame, durations: dict[str, float], clip_s: float,
                       negative_label: str, negatives_per_positive: float, margin_s: float,
                       seed: int, multilabel: bool = False, call_windows: str = "whole") -> pd.DataFrame:
    """Record table (RECORD_COLUMNS) of call windows plus non-call windows from the gaps, by the
    `call_windows` rule of the module docstring.

    The group of every window is its recording, so a split never puts windows of one recording
    on both sides. With multilabel, calls whose regions overlap share one window labelled with
    all their labels joined by ';' ("centre": the calls sounding where its centre may fall).
    """
    centred = call_windows == "centre"
    rng = np.random.default_rng(seed)
    rows = []
    for file, table in annotations.groupby("file", sort=True):
        calls = list(zip(table["start_s"].astype(float), table["end_s"].astype(float)))
        labels = list(table["label"].astype(str))
        for (start, end), label in zip(calls, labels):
            for lo, hi in (centre_regions if centred else call_regions)(start, end, clip_s):
                if multilabel and centred:
                    inside = sorted({l for (s, e), l in zip(calls, labels)
                                     if s < hi - clip_s / 2 and e > lo + clip_s / 2})
                    label_text = ";".join(inside)
                elif multilabel:
                    centre = (lo + hi) / 2.0
                    inside = sorted({l for (s, e), l in zip(calls, labels)
                                     if s < centre + clip_s / 2 and e > centre - clip_s / 2})
                    label_text = ";".join(inside)
                else:
                    label_text = label
                rows.append((file, lo, hi, label_text, file))
        count = int(round(negatives_per_positive * len(calls)))
        duration = durations.get(file)
        if duration is None or count == 0:
            continue
        free = gaps(calls, duration, margin_s)
        negatives = sample_centred(free, clip_s, count, rng) if centred else sample_negatives(free, clip_s, count, rng)
        for lo, hi in negatives:
            rows.append((file, lo, hi, negative_label, file))
    out = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    if multilabel:
        out = out.drop_duplicates().reset_index(drop=True)
    return out


def frame_records(annotations: pd.DataFrame, durations: dict[str, float], clip_s: float,
                  negative_label: str) -> pd.DataFrame:
    """Record table for frame targets (train.task "frames"): every annotated recording tiled
    by regions of 2 * clip_s starting every clip_s / 2 (the last ones cut at the file end), so
    random clip_s crops reach every part of the recording, unlabelled stretches included, and
    each second of audio lies in four regions (about two random crops per epoch).

    Each record carries `events`, the calls overlapping its region as JSON [[start_s, end_s,
    label], ...] in file time (frame targets are drawn from them once the crop is known), and
    as `label` the call labels present joined by ';' (negative_label when none).
    """
    rows = []
    for file, table in annotations.groupby("file", sort=True):
        duration = durations.get(file)
        if duration is None:
            continue
        calls = sorted(zip(table["start_s"].astype(float), table["end_s"].astype(float),
                           table["label"].astype(str)))
        step = clip_s / 2
        for i in range(max(1, math.ceil((duration - clip_s) / step) + 1)):
            lo, hi = i * step, min(duration, i * step + 2 * clip_s)
            inside = [[s, e, l] for s, e, l in calls if s < hi and e > lo]
            label = ";".join(sorted({l for _, _, l in inside})) or negative_label
            rows.append((file, lo, hi, label, file, json.dumps(inside)))
    return pd.DataFrame(rows, columns=[*RECORD_COLUMNS, "events"])
