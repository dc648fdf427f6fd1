"""Speed and memory of detect.py (a benchmark command, not a test).

python -m pipeline.tools.bench_detect --model RUN_DIR --input FILE_OR_DIR [--repeats 2] [--no-decode]
                                [--hop-s S] [--chunk-s S]

Times, in this process:
- decode_only_s: the same files decoded alone by libsndfile (soundfile, the decoder detect.py
  streams with), each whole, front to back in blocks of about 60 s, into one reused buffer (no
  mono mix, resampling or model), the least any detector reading these files must do;
- detect_s: a whole detect.py run (model loading, streaming, scoring, events, every output) into
  a fresh output folder, and within it startup_s: from its start until the first chunk is
  scored (loading the run, checking the files, building the graphs, reading the first chunk);
each the best of --repeats runs (the run with the shortest detect_s less startup_s), and prints
one JSON line: audio_s, decode_only_s, detect_s, startup_s, ratio ((detect_s - startup_s) /
decode_only_s), audio_s_per_s (audio seconds per wall second after start-up) and peak_rss_mb
(the process's peak resident memory, getrusage). For memory comparisons run one
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

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from pipeline.detection.detector import Settings, load_detector  # noqa: E402
from pipeline.detection.run import Options, detect, input_files, plan_jobs  # noqa: E402

# Seconds of audio per read in decode_only_s.
DECODE_BLOCK_S = 60


def decode_files(paths: list[str]) -> int:
    """Every file decoded whole by libsndfile (float32, as detect.py reads it) and nothing else;
    returns the frames decoded."""
    frames = 0
    for path in paths:
        with sf.SoundFile(path) as f:
            block = np.empty([DECODE_BLOCK_S * f.samplerate, f.channels], np.float32)  # [frames, channels]
            while True:
                count = len(f.read(out=block))
                frames += count
                if count < len(block):
                    break
    return frames


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
    jobs, bad = plan_jobs(detector, input_files(args.input, recursive=False), chunk_s)  # detect.py's plan
    for path, reason in bad:
        print(f"left out {path}: {reason}")
    audio_s = sum(job.info.duration_s for job in jobs)

    decode_s = None
    if not args.no_decode:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            frames = decode_files([job.path for job in jobs])
            times.append(time.perf_counter() - start)
        decode_s = min(times)
        assert frames >= sum(job.info.frames for job in jobs)

    runs = []  # (detect_s, startup_s)
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench_detect_") as out:
            options = Options(args.model, args.input, out, settings=Settings(hop_s=args.hop_s), chunk_s=chunk_s)
            start = time.perf_counter()
            result = detect(options)
            runs.append((time.perf_counter() - start, result.startup_s or 0.0))
    detect_s, startup_s = min(runs, key=lambda run: run[0] - run[1])
    steady_s = detect_s - startup_s
    print(json.dumps({
        "files": len(jobs), "audio_s": round(audio_s, 1),
        "decode_only_s": None if decode_s is None else round(decode_s, 2),
        "detect_s": round(detect_s, 2), "startup_s": round(startup_s, 2),
        "detect_runs_s": [round(t, 2) for t, _ in runs],
        "ratio": None if decode_s is None else round(steady_s / decode_s, 2),
        "audio_s_per_s": round(audio_s / steady_s, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "sample_rate_hz": sr, "window_s": detector.window_s, "hop_s": detector.hop_s, "chunk_s": chunk_s,
    }))


if __name__ == "__main__":
    main()
