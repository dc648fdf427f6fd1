"""Throughput of the training input pipeline (a benchmark command, not a test).

python -m pipeline.tools.bench_input --files '../shared/data/watkins10/*.wav' --sample-rate-hz 16000 \
    --clip-s 3 --frontend logmel --n-fft 512 --hop 128 --n-mels 64 [--augment]

Scans the files as train.py does (bad files out, input rates known; timed separately as
scan_s), then runs the training dataset (read, decode, resample, random crop, batch, frontend
and, with --augment, time shift, gain, mixup and SpecAugment masks) with placement "pipeline",
so every stage is counted on this machine's CPU, and prints one JSON line.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import numpy as np
import pandas as pd

from models.backbones.registry import model_framing
from pipeline.config import from_dict
from pipeline.datasets.build import make_dataset
from pipeline.records.labels import LabelSpec
from pipeline.records.scan import scan_files


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", required=True, help="glob of audio files")
    parser.add_argument("--sample-rate-hz", type=int, default=16000)
    parser.add_argument("--clip-s", type=float, default=3.0)
    parser.add_argument("--frontend", default="logmel")
    parser.add_argument("--n-fft", type=int, default=512)
    parser.add_argument("--hop", type=int, default=128)
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="passes over the files after a warm-up pass")
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args(argv)

    files = sorted(glob.glob(args.files, recursive=True))
    if not files:
        raise SystemExit(f"--files {args.files!r}: no files match")
    cfg = from_dict({
        "audio": {"sample_rate_hz": args.sample_rate_hz, "clip_s": args.clip_s, "pad_position": "random"},
        "frontend": {"kind": args.frontend, "n_fft": args.n_fft, "hop_samples": args.hop, "n_mels": args.n_mels},
        "augment": {"enabled": args.augment, "gain_db_range": 6.0, "time_shift_max_s": 0.25,
                    "mixup_alpha": 0.2},
        "pipeline": {"batch_size": args.batch_size, "placement": "pipeline", "deterministic": False},
    }, "bench")
    scan_start = time.perf_counter()
    info, bad = scan_files(files)  # as train.py does: bad files out, input rates known
    scan_s = time.perf_counter() - scan_start
    records = pd.DataFrame({"file": info["file"], "start_s": np.nan, "end_s": np.nan,
                            "label": [os.path.basename(os.path.dirname(f)) or "x" for f in info["file"]],
                            "group": info["file"], "sample_rate_hz": info["sample_rate_hz"]})
    labels = LabelSpec.from_records(records, "multiclass")
    # The endless stream train.py fits on (one iterator for all epochs).
    batches = iter(make_dataset(records, labels, cfg, model_framing(cfg), training=True, repeat=True))
    per_epoch = len(records) // args.batch_size
    for _ in range(per_epoch):  # warm-up epoch: tracing, file cache, autotuning
        next(batches)
    clips = 0
    start = time.perf_counter()
    for _ in range(args.epochs * per_epoch):
        inputs, _targets = next(batches)
        clips += int(inputs["features"].shape[0])
    seconds = time.perf_counter() - start
    print(json.dumps({
        "files": len(files), "bad_files": len(bad), "scan_s": round(scan_s, 2), "clips": clips, "seconds": round(seconds, 3),
        "clips_per_s": round(clips / seconds, 1),
        "audio_s_per_s": round(clips * args.clip_s / seconds, 1),
        "augment": args.augment, "frontend": args.frontend, "batch_size": args.batch_size,
    }))


if __name__ == "__main__":
    main()
