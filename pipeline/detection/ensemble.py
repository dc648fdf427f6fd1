"""Several clip models' scores of one file averaged into one trace (detect.py --model A --model B,
crossval --with CONFIG).

Members differ in sample rate, window and hop (a BirdNET run's hop is whole 278-sample frames,
a CNN's whole trunk strides), so their windows do not line up: each member's per-window score is
taken as the score at its window's centre and linearly interpolated at the first member's window
centres, then the members' scores are averaged label by label. The first member's settings
(thresholds, event lengths) then turn the averaged trace into events, as for a single model.
Only clip models take part: a frame model's rows are frames, with onset columns of their own.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.detection.detector import ClipDetector, DetectError, FrameDetector


def check_members(detectors: Sequence[ClipDetector]) -> None:
    """Refuses members that cannot be averaged: frame models, or other call labels than the
    first member's."""
    first = detectors[0]
    for detector in detectors:
        if isinstance(detector, FrameDetector):
            raise DetectError(f"--model {detector.run}: a frame model (train.task frames) cannot be averaged "
                              "with other models; ensembles take clip models")
        if set(detector.calls) != set(first.calls):
            raise DetectError(f"--model {detector.run}: its call labels ({', '.join(detector.calls)}) differ "
                              f"from {first.run}'s ({', '.join(first.calls)}); an ensemble averages one "
                              "score per call label")


def window_centres_s(detector: ClipDetector, rows: int) -> np.ndarray:
    return np.arange(rows) * detector.hop_s + detector.window_s / 2


def mean_trace(detectors: Sequence[ClipDetector], traces: Sequence[np.ndarray]) -> np.ndarray:
    """The members' traces of one file ([windows, outputs] each, as ClipDetector.trace gives
    them) averaged on the first member's windows: the first trace with each call label's column
    replaced by the members' mean score there."""
    first, centres = detectors[0], window_centres_s(detectors[0], len(traces[0]))
    out = np.array(traces[0], dtype=np.float32, copy=True)
    for label in first.calls:
        scores = [np.interp(centres, window_centres_s(d, len(t)), t[:, d.columns[label]])
                  for d, t in zip(detectors, traces)]
        out[:, first.columns[label]] = np.mean(scores, axis=0)
    return out
