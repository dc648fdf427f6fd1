"""Speed and memory of detect.py (a benchmark command, not a test).

python -m pipeline.tools.bench_detect --model RUN_DIR --input FILE_OR_DIR [--repeats 2] [--no-decode]
                                [--hop-s S] [--chunk-s S]

Times, in this process:
- decode_only_s: the same files decoded alone, chunk by chunk as detect.py reads them (ranged
  reads of the same input frames, as many at once and prefetched as in detect.py; no mono mix,
  resampling, framing or model), the least any detector reading these files must do;
- detect_s: a whole detect.py run (model loading, streaming, scoring, events, every output) into
  a fresh output folder;
each the best of --repeats runs, and prints one JSON line: audio_s, decode_only_s, detect_s,
ratio (detect_s / decode_only_s), audio_s_per_s (audio seconds detected per wall second) and
peak_rss_mb (the process's peak resident memory, getrusage). For memory comparisons run one
process per input with --no-decode --repeats 1, so that nothing else sets the peak.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import tensorflow as tf  # noqa: E402

from pipeline.audio.info import BadAudio, checked_info  # noqa: E402
from pipeline.audio.read import read_audio_range  # noqa: E402
from pipeline.detection.detector import Settings, load_detector  # noqa: E402
from pipeline.detection.plan import make_job, windows_per_chunk  # noqa: E402
from pipeline.detection.run import Options, detect, input_files  # noqa: E402
from pipeline.detection.stream import PARALLEL_CHUNKS, PREFETCH_CHUNKS  # noqa: E402


def decode_dataset(jobs, parallel: int = PARALLEL_CHUNKS) -> tf.data.Dataset:
    """The input frames of every chunk of every job, decoded (nothing else), as detect.py reads them."""
    rows = [(job.path, job.info.sample_rate_hz, r.first_frame, r.last_frame) for job in jobs for r in job.reads]
    paths, rates, firsts, lasts = (list(column) for column in zip(*rows))
    ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(rates, tf.float64), tf.constant(firsts, tf.float64),
                                             tf.constant(lasts, tf.float64)))

    def load(path, rate, first, last):
        audio, _, _ = read_audio_range(path, first / rate, last / rate)  # [frames, channels]
        return tf.shape(audio)[0]

    return ds.map(load, num_parallel_calls=parallel, deterministic=True).prefetch(PREFETCH_CHUNKS)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-decode", action="store_true", help="time detect.py only (for peak memory)")
    parser.add_argument("--hop-s", type=float)
    parser.add_argument("--chunk-s", type=float)
    args = parser.parse_args(argv)

    detector = load_detector(args.model, Settings(hop_s=args.hop_s))  # the windows detect.py uses
    cfg, sr = detector.cfg, detector.sample_rate_hz
    chunk_s = args.chunk_s or cfg.detect.chunk_s
    chunk_windows = windows_per_chunk(chunk_s, sr, detector.window, detector.hop)
    jobs = []
    for path in input_files(args.input, recursive=False):
        try:
            jobs.append(make_job(path, checked_info(path, mono=cfg.audio.mono), sr, detector.window, detector.hop,
                                 chunk_windows))
        except BadAudio as err:
            print(f"left out {path}: {err}")
    audio_s = sum(job.info.duration_s for job in jobs)

    decode_s = None
    if not args.no_decode:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            frames = sum(int(n) for n in decode_dataset(jobs))
            times.append(time.perf_counter() - start)
        decode_s = min(times)
        assert frames >= sum(job.info.frames for job in jobs)

    detect_times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench_detect_") as out:
            options = Options(args.model, args.input, out, settings=Settings(hop_s=args.hop_s), chunk_s=chunk_s)
            start = time.perf_counter()
            detect(options)
            detect_times.append(time.perf_counter() - start)
    detect_s = min(detect_times)
    print(json.dumps({
        "files": len(jobs), "audio_s": round(audio_s, 1),
        "decode_only_s": None if decode_s is None else round(decode_s, 2),
        "detect_s": round(detect_s, 2), "detect_runs_s": [round(t, 2) for t in detect_times],
        "ratio": None if decode_s is None else round(detect_s / decode_s, 2),
        "audio_s_per_s": round(audio_s / detect_s, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "sample_rate_hz": sr, "window_s": detector.window_s, "hop_s": detector.hop_s, "chunk_s": chunk_s,
    }))


if __name__ == "__main__":
    main()
