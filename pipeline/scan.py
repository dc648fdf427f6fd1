"""Checks every audio file once before training and lists the bad ones with a reason.

Field archives hold corrupt, empty, truncated, silent and odd files; each one is reported
(file, reason) and left out, and the run goes on with the rest, unless fail_fast is set. No
bad file is ever replaced by zeros.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import tensorflow as tf

from pipeline.decode import read_audio
from pipeline.wav import parse_wav_header

INFO_COLUMNS = ["file", "sample_rate_hz", "channels", "frames", "duration_s"]


@dataclasses.dataclass(frozen=True)
class Limits:
    min_duration_s: float = 0.0
    min_sample_rate_hz: int = 1000
    max_sample_rate_hz: int = 400_000
    max_channels: int = 16


class BadFileError(RuntimeError):
    """Raised in fail-fast mode for the first bad file."""


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _stats(path):
    samples, rate = read_audio(path)  # [frames, channels], int32
    finite = tf.math.is_finite(samples)  # [frames, channels]
    peak = tf.reduce_max(tf.abs(tf.where(finite, samples, 0.0)))  # -inf when empty
    return {
        "rate": rate,
        "frames": tf.shape(samples, out_type=tf.int64)[0],
        "channels": tf.shape(samples, out_type=tf.int64)[1],
        "non_finite": tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64)),
        "peak": peak,
    }


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _wav_sizes(contents):
    header = parse_wav_header(contents)
    return header["declared_data_bytes"], header["data_offset"], header["block_align"]


def _truncation(path: str) -> Optional[str]:
    """A WAV whose data chunk claims more bytes than the file holds: how much is missing."""
    if Path(path).suffix.lower() not in (".wav", ".wave"):
        return None
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    size = Path(path).stat().st_size
    try:
        declared, offset, block = (int(v) for v in _wav_sizes(tf.constant(head)))
    except tf.errors.OpError:
        return None  # the full decode reports the problem
    return truncation_problem(declared, size - offset, block)


def truncation_problem(declared_bytes: int, available_bytes: int, block_align: int) -> Optional[str]:
    """Why a WAV data chunk is cut short (it declares more bytes than the file holds), or None."""
    block = max(block_align, 1)
    # 0xFFFFFFFF: streaming writers that never patched the size; not a truncation.
    if declared_bytes > available_bytes + 1 and declared_bytes != 0xFFFFFFFF:
        return (f"truncated: the data chunk declares {declared_bytes // block} frames, "
                f"the file holds {available_bytes // block}")
    return None


NO_SAMPLES = "empty: no samples"


def file_problem(path: Path) -> Optional[str]:
    """Why a path holds no audio at all (missing, 0 bytes), or None."""
    if not path.is_file():
        return "missing: no such file"
    if path.stat().st_size == 0:
        return "empty: 0 bytes"
    return None


def limit_problem(rate: int, channels: int, limits: Limits) -> Optional[str]:
    """Why a file's sample rate or channel count is outside the limits, or None."""
    if not limits.min_sample_rate_hz <= rate <= limits.max_sample_rate_hz:
        return f"sample rate {rate} Hz outside {limits.min_sample_rate_hz}..{limits.max_sample_rate_hz} Hz"
    if channels > limits.max_channels:
        return f"{channels} channels, more than {limits.max_channels}"
    return None


def sample_problem(non_finite: int, peak: float) -> Optional[str]:
    """Why a file's decoded samples are unusable (NaN/Inf, all zero), or None."""
    if non_finite > 0:
        return f"corrupt: {non_finite} NaN/Inf samples"
    if peak == 0.0:
        return "silent: every sample is zero"
    return None


def check_file(path: str, limits: Limits) -> tuple[Optional[dict], Optional[str]]:
    """(info, None) for a usable file, (None, reason) for a bad one."""
    reason = file_problem(Path(path))
    if reason is not None:
        return None, reason
    try:
        stats = {k: v.numpy() for k, v in _stats(tf.constant(str(path))).items()}
    except tf.errors.OpError as err:
        return None, "unreadable: " + err.message.strip().splitlines()[0]
    rate, frames, channels = int(stats["rate"]), int(stats["frames"]), int(stats["channels"])
    if frames == 0:
        return None, NO_SAMPLES
    duration = frames / rate if rate > 0 else 0.0
    reason = (_truncation(str(path)) or sample_problem(int(stats["non_finite"]), float(stats["peak"]))
              or limit_problem(rate, channels, limits))
    if reason is None and duration < limits.min_duration_s:
        reason = f"too short: {duration:.3f} s, below the minimum {limits.min_duration_s} s"
    if reason is not None:
        return None, reason
    return {"file": str(path), "sample_rate_hz": rate, "channels": channels, "frames": frames,
            "duration_s": duration}, None


def scan_files(paths: Iterable[str], limits: Limits = Limits(), fail_fast: bool = False,
               workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(info of the good files, bad files with reasons), in the order of `paths`."""
    paths = list(dict.fromkeys(str(p) for p in paths))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda p: check_file(p, limits), paths))
    good, bad = [], []
    for path, (info, reason) in zip(paths, results):
        if reason is not None:
            if fail_fast:
                raise BadFileError(f"{path}: {reason}")
            bad.append((path, reason))
        else:
            good.append(info)
    return (pd.DataFrame(good, columns=INFO_COLUMNS),
            pd.DataFrame(bad, columns=["file", "reason"]))


def summarize(bad: pd.DataFrame, total: int, report_path: Optional[Path] = None) -> str:
    """One console line for the bad-file report."""
    if bad.empty:
        return f"checked {total} files: all usable"
    kinds = bad["reason"].str.split(":").str[0].value_counts()
    parts = ", ".join(f"{n} {k}" for k, n in kinds.items())
    where = f" (listed in {report_path})" if report_path else ""
    return f"checked {total} files: {len(bad)} bad and left out: {parts}{where}"
