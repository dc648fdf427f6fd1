"""Find and count calls in recordings of any length with a trained run.

python detect.py --model RUN_DIR [--model RUN_DIR ...] --input FILE_OR_DIR --out OUT_DIR [--recursive] [--split test]
                 [--hop-s S] [--threshold T | --threshold label=T ...] [--min-gap-s S]
                 [--min-duration-s S] [--max-event-s S] [--onset-threshold T] [--chunk-s S]
                 [--truth TABLE] [--top-k N] [--save-scores] [--plot] [--overwrite]

Every file is streamed in chunks (bounded memory), windows of the trained clip length are scored
by the run's model (its frontend inside), and runs of windows above a label's threshold become
events (pipeline.detection). Outputs in OUT_DIR, each written atomically:

  counts.csv        file,label,count for every file and call label, zeros included
  events.csv        file,label,start_s,end_s,max_score,mean_score
  <stem>.selections.txt   a Raven Pro selection table per file (folders as under --input)
  <stem>.scores.csv       per-window scores (--save-scores); <stem>.png overview (--plot)
  ranking.csv       the N most probable labels per file (--top-k N)
  bad_files.csv     inputs that could not be read, with the reason; all others are processed
  eval.json         with --truth: per class precision/recall/F1, per file count error
  parts/            one record per finished file: a rerun skips those unless --overwrite
"""
from __future__ import annotations

import argparse
import sys

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

from pipeline.detection.detector import DetectError, Settings  # noqa: E402
from pipeline.detection.run import Options, detect  # noqa: E402


def parse_args(argv=None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, action="append",
                        help="run directory written by train.py or the tuner; given again, the runs' scores are "
                             "averaged (an ensemble of clip models; events with the first run's settings)")
    parser.add_argument("--input", required=True, help="an audio file or a folder of them")
    parser.add_argument("--out", required=True)
    parser.add_argument("--recursive", action="store_true", help="also files in sub-folders of --input")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="only the recordings the run's split_manifest.csv puts in this split")
    parser.add_argument("--hop-s", type=float, help="hop between windows (default detect.hop_s or window/4)")
    parser.add_argument("--threshold", action="append", default=[], metavar="T|LABEL=T")
    parser.add_argument("--min-gap-s", type=float, help="join events closer than this")
    parser.add_argument("--min-duration-s", type=float, help="drop events shorter than this")
    parser.add_argument("--max-event-s", type=float,
                        help="split events longer than this into calls in a row, at the score's dips")
    parser.add_argument("--onset-threshold", type=float,
                        help="frame models: split events where a call's onset score peaks above this")
    parser.add_argument("--chunk-s", type=float, help="audio decoded and scored per step (bounds the memory)")
    parser.add_argument("--truth", help="table of true calls (Raven, Audacity or CSV) to evaluate against")
    parser.add_argument("--top-k", type=int, default=0, metavar="N", help="write ranking.csv: N best labels per file")
    parser.add_argument("--save-scores", action="store_true", help="write <stem>.scores.csv per file")
    parser.add_argument("--plot", action="store_true", help="write <stem>.png per file")
    parser.add_argument("--overwrite", action="store_true", help="redo files finished by an earlier run")
    args = parser.parse_args(argv)
    settings = Settings(args.hop_s, tuple(args.threshold), args.min_gap_s, args.min_duration_s, args.max_event_s,
                        args.onset_threshold)
    return Options(args.model[0], args.input, args.out, args.recursive, args.split, settings, args.chunk_s,
                   args.truth, args.top_k, args.save_scores, args.plot, args.overwrite, tuple(args.model[1:]))


def main(argv=None) -> int:
    options = parse_args(argv)
    try:
        detect(options)
    except DetectError as err:
        raise SystemExit(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
