"""What a file holds, from its header alone, and whether a run can use it: the one file check that
training's archive scan, detection and every tool go through.

    info = header_info(path)                      # BadAudio(problem) when there is nothing to read
    problem = usability_problem(info, limits, mono)   # rate, channels, duration, the mono rule
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import tensorflow as tf

from pipeline.audio import compressed, problems
from pipeline.audio.formats import COMPRESSED_EXTENSIONS, WAV_EXTENSIONS
from pipeline.audio.problems import Problem
from pipeline.audio.wav import wav_header_fields

# A WAV's fmt and data chunk headers are looked for in its first bytes, then in 16x more, up to this.
_MAX_WAV_HEAD = 1 << 24


class BadAudio(Exception):
    """A file that cannot be used; `problem` says why (str(): the reason for bad_files.csv)."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate_hz: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a run accepts. min_duration_s: shorter files are not examples (data.min_duration_s)."""

    min_duration_s: float = 0.0
    min_sample_rate_hz: int = 1000
    max_sample_rate_hz: int = 400_000
    max_channels: int = 16


def _wav_info(path: str, size: int) -> AudioInfo:
    head_bytes = problems.HEAD_BYTES
    while True:
        head = problems.read_head(path, head_bytes)
        fields = wav_header_fields(head)
        # The data chunk may lie beyond the bytes read (long metadata chunks): look further.
        if fields["has_data"] or len(head) >= size or head_bytes >= _MAX_WAV_HEAD:
            break
        head_bytes <<= 4
    problem = problems.wav_problem(fields, size)
    if problem is not None:
        raise BadAudio(problem)
    available = size - fields["data_offset"]
    frames = max(min(fields["declared_data_bytes"], available), 0) // max(fields["block_align"], 1)
    return AudioInfo(frames, fields["sample_rate_hz"], fields["channels"])


def _compressed_info(path: str) -> AudioInfo:
    try:
        spec = compressed.info_compressed(tf.constant(path))
        info = AudioInfo(int(spec["frames"]), int(spec["sample_rate_hz"]), int(spec["channels"]))
    except tf.errors.OpError:
        raise BadAudio(problems.read_failure(path)) from None
    if info.frames == 0 or info.sample_rate_hz <= 0 or info.channels <= 0:
        raise BadAudio(problems.read_failure(path))
    return info


def header_info(path: str) -> AudioInfo:
    """Frames, rate and channels from the file's header (MP3: its frame headers), without decoding;
    BadAudio naming the problem for files that hold nothing to decode."""
    problem = problems.path_problem(path)
    if problem is None:
        problem = problems.content_problem(path, problems.read_head(path))
    if problem is not None:
        raise BadAudio(problem)
    ext = Path(path).suffix.lower().lstrip(".")
    if ext in WAV_EXTENSIONS:
        info = _wav_info(str(path), Path(path).stat().st_size)
    elif ext in COMPRESSED_EXTENSIONS:
        info = _compressed_info(str(path))
    else:  # content_problem has refused other extensions
        raise AssertionError(path)
    if info.frames == 0:
        raise BadAudio(problems.no_samples())
    return info


def usability_problem(info: AudioInfo, limits: Limits, mono: str | int = "mean") -> Optional[Problem]:
    """Why a run with these limits and mono rule cannot use a file, or None."""
    return (problems.limit_problem(info.sample_rate_hz, info.channels, limits.min_sample_rate_hz,
                                   limits.max_sample_rate_hz, limits.max_channels)
            or problems.mono_problem(mono, info.channels)
            or problems.duration_problem(info.frames, info.sample_rate_hz, limits.min_duration_s))


def checked_info(path: str, mono: str | int = "mean", limits: Limits = Limits()) -> AudioInfo:
    """header_info, then usability_problem: BadAudio for any file the run cannot use."""
    info = header_info(path)
    problem = usability_problem(info, limits, mono)
    if problem is not None:
        raise BadAudio(problem)
    return info
