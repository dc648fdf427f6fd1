"""Checks every audio file once before training and lists the bad ones with a reason.

Field archives hold corrupt, empty, truncated, silent and odd files; each one is reported
(file, reason: pipeline.audio.problems) and left out, and the run goes on with the rest, unless
fail_fast is set. No bad file is ever replaced by zeros. Unlike detection, which checks samples
as it streams them, training decodes every file here once, so that a silent or NaN-filled file
never becomes an example.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

import pandas as pd
import tensorflow as tf

from pipeline.audio import problems
from pipeline.audio.info import AudioInfo, BadAudio, Limits, header_info, usability_problem
from pipeline.audio.read import read_audio

INFO_COLUMNS = ["file", "sample_rate_hz", "channels", "frames", "duration_s"]


class BadFileError(RuntimeError):
    """Raised in fail-fast mode for the first bad file."""


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _stats(path):
    samples, rate = read_audio(path)  # [frames, channels], int32
    finite = tf.math.is_finite(samples)  # [frames, channels]
    return {
        "rate": rate,
        "frames": tf.shape(samples, out_type=tf.int64)[0],
        "channels": tf.shape(samples, out_type=tf.int64)[1],
        "non_finite": tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64)),
        "peak": tf.reduce_max(tf.abs(tf.where(finite, samples, 0.0))),  # -inf when empty
    }


def check_file(path: str, limits: Limits, mono: str | int = "mean") -> tuple[Optional[dict], Optional[str]]:
    """(info, None) for a usable file, (None, reason) for a bad one."""
    try:
        header_info(path)
    except BadAudio as err:
        return None, str(err)
    try:
        stats = {k: v.numpy() for k, v in _stats(tf.constant(str(path))).items()}
    except tf.errors.OpError:
        return None, str(problems.read_failure(path))
    rate, frames, channels = int(stats["rate"]), int(stats["frames"]), int(stats["channels"])
    if frames == 0:
        return None, str(problems.no_samples())
    info = {"file": str(path), "sample_rate_hz": rate, "channels": channels, "frames": frames,
            "duration_s": frames / rate}
    problem = (problems.sample_problem(int(stats["non_finite"]), float(stats["peak"]))
               or usability_problem(AudioInfo(frames, rate, channels), limits, mono))
    return (None, str(problem)) if problem is not None else (info, None)


def scan_files(paths: Iterable[str], limits: Limits = Limits(), fail_fast: bool = False, workers: int = 2,
               mono: str | int = "mean") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(info of the good files, bad files with reasons), in the order of `paths`."""
    paths = list(dict.fromkeys(str(p) for p in paths))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda p: check_file(p, limits, mono), paths))
    good, bad = [], []
    for path, (info, reason) in zip(paths, results):
        if reason is not None:
            if fail_fast:
                raise BadFileError(f"{path}: {reason}")
            bad.append((path, reason))
        else:
            good.append(info)
    return pd.DataFrame(good, columns=INFO_COLUMNS), pd.DataFrame(bad, columns=problems.REPORT_COLUMNS)


def summarize(bad: pd.DataFrame, total: int, report=None) -> str:
    """One console line for the bad-file report."""
    return problems.summarize(list(bad["reason"]), total, str(report) if report else None)
