"""A trained run's model settings resolved with the command line: everything a file's events
depend on, and how a file's model outputs become events.

A clip model gives one row of scores per window (ClipDetector); a frame model (train.task
"frames") gives a row per spectrogram frame in every window, stitched into one trace per file
(FrameDetector). load_detector picks the one the run was trained as.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from models.backbones.registry import trunk_stride
from models.classifier import saved_framing
from pipeline.config import Config, load_config
from pipeline.datasets.clips import frame_centres_s
from pipeline.detection.events import (ONSET_PEAK_RADIUS_S, Event, events_from_scores, frame_events,
                                       stitch_frames)
from pipeline.detection.plan import samples
from pipeline.features.framing import Framing, legacy_framing
from pipeline.records.labels import LabelSpec


class DetectError(ValueError):
    """Detection settings or a run directory that cannot describe a detection run."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Command-line choices; None takes the run's `detect:` section."""

    hop_s: Optional[float] = None
    thresholds: Sequence[str] = ()  # "T" for every label, "label=T" for one
    min_gap_s: Optional[float] = None
    min_duration_s: Optional[float] = None
    max_event_s: Optional[float] = None
    onset_threshold: Optional[float] = None


def settings_digest(settings: dict) -> str:
    """Changes whenever a file's events could: a finished file with another digest is redone."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def parse_thresholds(values: Sequence[str], default: float, names: Sequence[str]) -> dict[str, float]:
    """`T` sets every label, `label=T` one label (later values win)."""
    out = {name: default for name in names}
    for value in values:
        label, _, text = value.rpartition("=")
        if label and label not in out:
            raise DetectError(f"--threshold {value}: unknown label {label!r} (labels: {', '.join(names)})")
        try:
            t = float(text)
        except ValueError:
            raise DetectError(f"--threshold {value}: {text!r} is not a number") from None
        if not 0 < t < 1:
            raise DetectError(f"--threshold {value}: expected a score in (0, 1)")
        out.update({label: t} if label else {name: t for name in out})
    return out


def target_labels(names: Sequence[str], task: str, negative: str) -> list[str]:
    """The labels that count as calls: every class but the negative (background) one (a frame
    model's labels are all calls)."""
    if task == "binary":
        return [names[1]]
    return [n for n in names if n != negative]


def score_columns(names: Sequence[str], task: str, calls: Sequence[str]) -> dict[str, int]:
    """Call label -> its column of the model's output (a binary model has one output; a frame
    model's label k has presence column k and onset column len(names) + k)."""
    return {label: 0 if task == "binary" else list(names).index(label) for label in calls}


@dataclasses.dataclass(frozen=True)
class ClipDetector:
    """Windows of the trained clip length every `hop` samples, one row of scores per window."""

    run: Path
    cfg: Config
    names: tuple[str, ...]
    task: str
    calls: tuple[str, ...]       # the labels that count as calls
    columns: dict[str, int]      # call label -> column of the model's scores
    thresholds: dict[str, float]
    window: int                  # samples at the model rate
    hop: int
    framing: Framing             # the model's windows and their context (pipeline.features.framing)
    min_gap_s: float
    min_duration_s: float
    max_event_s: Optional[float]  # longer events are split into calls (None: never)

    @property
    def sample_rate_hz(self) -> int:
        return self.cfg.audio.sample_rate_hz

    # Times follow the window and hop rounded to samples, so they do not drift over long files.
    @property
    def window_s(self) -> float:
        return self.window / self.sample_rate_hz

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate_hz

    # What the rows of trace() stand for.
    @property
    def row_hop_s(self) -> float:
        return self.hop_s

    @property
    def row_window_s(self) -> float:
        return self.window_s

    @property
    def row_offset_s(self) -> float:
        return 0.0

    def trace(self, scores: np.ndarray, duration_s: float) -> np.ndarray:
        """The model's outputs for a file [windows, ...] -> one row per trace step [rows, outputs]."""
        return scores

    def events(self, trace: np.ndarray, duration_s: float) -> list[Event]:
        """Events of a file from its trace()."""
        return events_from_scores(trace, self.columns, self.thresholds, self.hop_s, self.window_s,
                                  self.min_gap_s, self.min_duration_s, duration_s, self.max_event_s)

    def settings(self) -> dict:
        model = (self.run / "model.keras").resolve()
        return {"model": str(model), "model_stamp": f"{model.stat().st_size}-{model.stat().st_mtime_ns}",
                "sample_rate_hz": self.sample_rate_hz, "mono": self.cfg.audio.mono, "window": self.window,
                "hop": self.hop, "window_s": self.window_s, "hop_s": self.hop_s, "thresholds": self.thresholds,
                "min_gap_s": self.min_gap_s, "min_duration_s": self.min_duration_s,
                "max_event_s": self.max_event_s, "labels": list(self.calls)}

    def digest(self) -> str:
        return settings_digest(self.settings())


@dataclasses.dataclass(frozen=True)
class FrameDetector(ClipDetector):
    """A frame model: windows every `hop` (whole frames), each frame's scores taken from the window
    it sits most centrally in (pipeline.detection.events.stitch_frames); events split where a
    call's onset score peaks."""

    onset_threshold: float = 0.5

    @property
    def frame_hop(self) -> int:
        return self.framing.hop

    @property
    def frame_s(self) -> float:
        return self.frame_hop / self.sample_rate_hz

    @property
    def frame_offset_s(self) -> float:
        """Where frame 0's span starts: its centre (as in training) minus half a frame."""
        return float(frame_centres_s(1, self.framing, self.sample_rate_hz)[0]) - self.frame_s / 2

    @property
    def onset_radius_s(self) -> float:
        """Onset peaks closer than this are one call start: the model was trained to place starts
        no finer than its onset tolerance."""
        return max(ONSET_PEAK_RADIUS_S, self.cfg.train.onset_tolerance_s)

    @property
    def row_hop_s(self) -> float:
        return self.frame_s

    @property
    def row_window_s(self) -> float:
        return self.frame_s

    @property
    def row_offset_s(self) -> float:
        return self.frame_offset_s

    def trace(self, scores: np.ndarray, duration_s: float) -> np.ndarray:
        frames = stitch_frames(scores, self.hop // self.frame_hop)  # [file frames, outputs]
        return frames[: math.ceil((duration_s - self.frame_offset_s) / self.frame_s)]

    def events(self, trace: np.ndarray, duration_s: float) -> list[Event]:
        onsets = len(self.names)
        events = []
        for label, column in self.columns.items():
            events += frame_events(trace[:, column], trace[:, onsets + column], self.frame_s,
                                   self.thresholds[label], self.onset_threshold, label, self.min_gap_s,
                                   self.min_duration_s, duration_s, self.max_event_s, self.frame_offset_s,
                                   self.onset_radius_s)
        return sorted(events, key=lambda e: (e.start_s, e.label))

    def settings(self) -> dict:
        return {**super().settings(), "task": self.task, "onset_threshold": self.onset_threshold,
                "onset_radius_s": self.onset_radius_s}


RUN_FILES = ("config.yaml", "labels.json", "model.keras")


def load_detector(run: str | Path, settings: Settings = Settings()) -> ClipDetector:
    """The detector of a run directory written by train.py (or the tuner's best/), with the
    command line's settings over the run's `detect:` section."""
    run = Path(run)
    for name in RUN_FILES:
        if not (run / name).is_file():
            raise DetectError(f"--model {run}: no {name} (expected a run directory written by train.py)")
    cfg = load_config(run / "config.yaml")
    labels = LabelSpec.load(run)
    names, task = list(labels.names), labels.task
    sr = cfg.audio.sample_rate_hz
    window = cfg.audio.clip_samples
    frames = task == "frames"
    model_frames = saved_framing(run / "model.keras") or legacy_framing(cfg.frontend, sr, window)
    hop_s = settings.hop_s or cfg.detect.hop_s or cfg.audio.clip_s / (2 if frames else 4)
    hop = samples(hop_s, sr)
    if hop < 1:
        raise DetectError(f"--hop-s {hop_s}: expected at least one sample at {sr} Hz")
    # Windows start on frame boundaries (their frames are cut from a chunk's), and on the trunk's
    # stride where the trunk runs once per chunk (models.streaming).
    step = model_frames.hop * (trunk_stride(cfg.model.name, cfg.model) if model_frames.trunk_context_frames else 1)
    steps = max(1, round(hop / step))
    if frames:  # a frame model's windows must overlap, to stitch their frames
        steps = min(steps, model_frames.frames * model_frames.hop // step)
    hop = steps * step
    max_event_s = cfg.detect.max_event_s if settings.max_event_s is None else settings.max_event_s
    if max_event_s is not None and max_event_s <= 0:
        raise DetectError(f"--max-event-s {max_event_s}: expected a positive duration in seconds")
    calls = target_labels(names, task, cfg.data.negative_label)
    common = dict(
        run=run, cfg=cfg, names=tuple(names), task=task, calls=tuple(calls),
        columns=score_columns(names, task, calls),
        thresholds=parse_thresholds(settings.thresholds, cfg.detect.threshold, calls), window=window, hop=hop,
        framing=model_frames,
        min_gap_s=float(cfg.detect.min_gap_s if settings.min_gap_s is None else settings.min_gap_s),
        min_duration_s=float(cfg.detect.min_duration_s if settings.min_duration_s is None
                             else settings.min_duration_s),
        max_event_s=max_event_s)
    if not frames:
        return ClipDetector(**common)
    onset = cfg.detect.onset_threshold if settings.onset_threshold is None else settings.onset_threshold
    if not 0 < onset <= 1:
        raise DetectError(f"--onset-threshold {onset}: expected a score in (0, 1]")
    return FrameDetector(**common, onset_threshold=float(onset))
