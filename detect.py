"""Find and count calls in recordings of any length with a trained run.

python detect.py --model RUN_DIR --input FILE_OR_DIR --out OUT_DIR [--recursive] [--split test]
                 [--window-s S] [--hop-s S] [--threshold T | --threshold label=T ...]
                 [--min-gap-s S] [--min-duration-s S] [--max-event-s S] [--chunk-s S] [--truth TABLE]
                 [--top-k N] [--save-scores] [--plot] [--overwrite]

Every file is streamed in chunks (pipeline/stream.py: bounded memory, windows identical to a
whole-file decode), windows of the trained clip length are scored by the run's model (its
frontend inside), and runs of windows above a label's threshold become events
(pipeline/events.py). Outputs in OUT_DIR, each written atomically:

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
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import models.classifier  # noqa: F401  (registers AudioClassifier for load_model)
from pipeline.annotations import AnnotationError, detect_format, read_annotations, read_raven, write_raven
from pipeline.config import Config, load_config
from pipeline.dataset import frame_centres_s
from pipeline.detect_outputs import (BAD_COLUMNS, COUNT_COLUMNS, EVENT_COLUMNS, RANKING_COLUMNS, Progress,
                                     Spectrogram, events_frame, write_csv, write_json, write_plot,
                                     write_scores)
from pipeline.evaluate import align_truth_files, evaluate, format_report
from pipeline.events import (ONSET_PEAK_RADIUS_S, Event, count_events, events_from_scores, frame_events, samples,
                             stitch_frames, windows_per_chunk)
from pipeline.frontend import frontend_output_shape
from pipeline.scan import sample_problem
from pipeline.sources import AUDIO_EXTENSIONS
from pipeline.stream import (SPECTROGRAM_BANDS, SPECTROGRAM_FRAME, BadAudio, Job, audio_info, limit_heap_growth,
                             make_job, window_dataset)

RAVEN_LABEL_COLUMNS = ("Call type", "Label", "Annotation", "Species", "Class")


def parse_thresholds(values: list[str], default: float, names: list[str]) -> dict[str, float]:
    """`T` sets every label, `label=T` one label (later values win)."""
    out = {name: default for name in names}
    for value in values:
        label, _, text = value.rpartition("=")
        if label and label not in out:
            raise SystemExit(f"--threshold {value}: unknown label {label!r} (labels: {', '.join(names)})")
        try:
            t = float(text)
        except ValueError:
            raise SystemExit(f"--threshold {value}: {text!r} is not a number") from None
        if not 0 < t < 1:
            raise SystemExit(f"--threshold {value}: expected a score in (0, 1)")
        out.update({label: t} if label else {name: t for name in out})
    return out


def target_labels(names: list[str], task: str, negative: str) -> list[str]:
    """The labels that count as calls: every class but the negative (background) one (a frame
    model's labels are all calls)."""
    if task == "binary":
        return [names[1]]
    return [n for n in names if n != negative]


def score_columns(names: list[str], task: str, calls: list[str]) -> dict[str, int]:
    """Call label -> its column of the model's output (a binary model has one output; a frame
    model's label k has presence column k, and Detector.events reads its onset column
    len(names) + k)."""
    return {label: 0 if task == "binary" else names.index(label) for label in calls}


def audio_files(inputs: str, recursive: bool) -> list[str]:
    path = Path(inputs)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise SystemExit(f"--input {inputs}: no such file or folder")
    found = path.rglob("*") if recursive else path.glob("*")
    return sorted(str(p) for p in found if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def split_files(run: Path, split: str) -> set[str]:
    """Resolved paths of the recordings the run's split_manifest.csv puts in `split`."""
    manifest = pd.read_csv(run / "split_manifest.csv")
    files = manifest.loc[manifest["split"] == split, "file"]
    if files.empty:
        raise SystemExit(f"--split {split}: {run / 'split_manifest.csv'} has no {split!r} records")
    return {str(Path(f).resolve()) for f in files}


def output_names(paths: list[str], inputs: str) -> dict[str, str]:
    """Path -> the file's name in the outputs: relative to an --input folder, else its name."""
    root = Path(inputs)
    if root.is_dir():
        return {p: Path(os.path.relpath(p, root)).as_posix() for p in paths}
    return {p: Path(p).name for p in paths}


@dataclasses.dataclass(frozen=True)
class Detector:
    """A run's model settings resolved with the command line: everything a file's events depend on."""

    run: Path
    cfg: Config
    names: tuple[str, ...]
    task: str
    calls: tuple[str, ...]       # the labels that count as calls
    columns: dict[str, int]      # call label -> column of the model's scores
    thresholds: dict[str, float]
    window: int                  # samples at the model rate
    hop: int
    min_gap_s: float
    min_duration_s: float
    max_event_s: float | None    # longer events are split into calls (None: never)
    onset_threshold: float       # frame models: split events where a call starts

    @property
    def sample_rate_hz(self) -> int:
        return self.cfg.audio.sample_rate_hz

    @property
    def frame_model(self) -> bool:
        return self.task == "frames"

    @property
    def frame_hop(self) -> int:
        return self.cfg.frontend.hop_length_samples(self.sample_rate_hz)

    @property
    def frame_s(self) -> float:
        return self.frame_hop / self.sample_rate_hz

    @property
    def frame_offset_s(self) -> float:
        """Where frame 0's span starts: its centre (as in training) minus half a frame."""
        return float(frame_centres_s(1, self.cfg.frontend, self.sample_rate_hz)[0]) - self.frame_s / 2

    @property
    def onset_radius_s(self) -> float:
        """Onset peaks closer than this are one call start: the model was trained to place starts
        no finer than its onset tolerance."""
        return max(ONSET_PEAK_RADIUS_S, self.cfg.train.onset_tolerance_s)

    # What the rows of trace() stand for: windows, or a frame model's frames.
    @property
    def row_hop_s(self) -> float:
        return self.frame_s if self.frame_model else self.hop_s

    @property
    def row_window_s(self) -> float:
        return self.frame_s if self.frame_model else self.window_s

    @property
    def row_offset_s(self) -> float:
        return self.frame_offset_s if self.frame_model else 0.0

    def trace(self, scores: np.ndarray, duration_s: float) -> np.ndarray:
        """The model's outputs for a file -> one row per window, or per frame for a frame model
        (its windows' frames stitched: pipeline.events.stitch_frames, up to the file's end)."""
        if not self.frame_model:
            return scores
        frames = stitch_frames(scores, self.hop // self.frame_hop)
        return frames[: math.ceil((duration_s - self.frame_offset_s) / self.frame_s)]

    # Times follow the window and hop rounded to samples, so they do not drift over long files.
    @property
    def window_s(self) -> float:
        return self.window / self.sample_rate_hz

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate_hz

    def settings(self) -> dict:
        model = (self.run / "model.keras").resolve()
        return {"model": str(model), "model_stamp": f"{model.stat().st_size}-{model.stat().st_mtime_ns}",
                "sample_rate_hz": self.sample_rate_hz, "mono": self.cfg.audio.mono, "window": self.window,
                "hop": self.hop, "window_s": self.window_s, "hop_s": self.hop_s, "thresholds": self.thresholds,
                "min_gap_s": self.min_gap_s, "min_duration_s": self.min_duration_s,
                "max_event_s": self.max_event_s, "labels": list(self.calls),
                **({"task": self.task, "onset_threshold": self.onset_threshold,
                    "onset_radius_s": self.onset_radius_s} if self.frame_model else {})}

    def digest(self) -> str:
        """Changes whenever a file's events could: a finished file with another digest is redone."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def events(self, trace: np.ndarray, duration_s: float) -> list[Event]:
        """Events of a file from its trace()."""
        if not self.frame_model:
            return events_from_scores(trace, self.columns, self.thresholds, self.hop_s, self.window_s,
                                      self.min_gap_s, self.min_duration_s, duration_s, self.max_event_s)
        onsets = len(self.names)
        events = []
        for label, column in self.columns.items():
            events += frame_events(trace[:, column], trace[:, onsets + column], self.frame_s,
                                   self.thresholds[label], self.onset_threshold, label, self.min_gap_s,
                                   self.min_duration_s, duration_s, self.max_event_s, self.frame_offset_s,
                                   self.onset_radius_s)
        return sorted(events, key=lambda e: (e.start_s, e.label))


def load_detector(args) -> Detector:
    run = Path(args.model)
    for name in ("config.yaml", "labels.json", "model.keras"):
        if not (run / name).is_file():
            raise SystemExit(f"--model {run}: no {name} (expected a run directory written by train.py)")
    cfg = load_config(run / "config.yaml")
    meta = json.loads((run / "labels.json").read_text())
    names, task = list(meta["names"]), meta["task"]
    sr = cfg.audio.sample_rate_hz
    window_s = args.window_s or cfg.detect.window_s or cfg.audio.clip_s
    hop_s = args.hop_s or cfg.detect.hop_s or window_s / (2 if task == "frames" else 4)
    window, hop = samples(window_s, sr), samples(hop_s, sr)
    if task == "frames":  # windows start on frame boundaries, so their frames line up
        step = cfg.frontend.hop_length_samples(sr)
        frames = frontend_output_shape(cfg.frontend, sr, window)[0]
        hop = int(np.clip(round(hop / step), 1, frames)) * step
    if window != cfg.audio.clip_samples:
        raise SystemExit(f"--window-s {window_s}: the model was trained on {cfg.audio.clip_s} s clips "
                         f"({cfg.audio.clip_samples} samples at {sr} Hz); use that window")
    if hop < 1:
        raise SystemExit(f"--hop-s {hop_s}: expected at least one sample at {sr} Hz")
    onset_threshold = cfg.detect.onset_threshold if args.onset_threshold is None else args.onset_threshold
    if not 0 < onset_threshold <= 1:
        raise SystemExit(f"--onset-threshold {onset_threshold}: expected a score in (0, 1]")
    max_event_s = cfg.detect.max_event_s if args.max_event_s is None else args.max_event_s
    if max_event_s is not None and max_event_s <= 0:
        raise SystemExit(f"--max-event-s {max_event_s}: expected a positive duration in seconds")
    calls = target_labels(names, task, cfg.data.negative_label)
    return Detector(
        run, cfg, tuple(names), task, tuple(calls), score_columns(names, task, calls),
        parse_thresholds(args.threshold, cfg.detect.threshold, calls), window, hop,
        float(cfg.detect.min_gap_s if args.min_gap_s is None else args.min_gap_s),
        float(cfg.detect.min_duration_s if args.min_duration_s is None else args.min_duration_s),
        max_event_s, float(onset_threshold))


@dataclasses.dataclass
class Outputs:
    """Where each input's outputs go: OUT/<name without extension>.selections.txt (.scores.csv,
    .png) with <name> the file's name relative to --input, and OUT/parts/<name>.json, the record
    written last that marks the file as finished."""

    out: Path
    names: dict[str, str]  # input path -> name in the tables
    plot: bool
    save_scores: bool

    def __post_init__(self):
        stems: dict[str, list[str]] = {}
        for path, name in self.names.items():
            stems.setdefault(str(Path(name).with_suffix("")), []).append(path)
        # a.wav and a.mp3 in one folder keep their extensions
        self.stems = {p: self.out / (Path(self.names[p]) if len(group) > 1 else Path(stem))
                      for stem, group in stems.items() for p in group}

    def stem(self, path: str) -> Path:
        return self.stems[path]

    def file(self, path: str, kind: str) -> Path:
        stem = self.stem(path)
        return stem.with_name(stem.name + kind)

    def part(self, path: str) -> Path:
        return self.out / "parts" / (self.names[path] + ".json")

    def finished(self, path: str, digest: str) -> dict | None:
        """The record of a file finished with the same settings and all the outputs asked for."""
        part = self.part(path)
        if not part.is_file():
            return None
        record = json.loads(part.read_text())
        wanted = [".selections.txt"] + [".png"] * self.plot + [".scores.csv"] * self.save_scores
        ok = record.get("digest") == digest and all(self.file(path, kind).is_file() for kind in wanted)
        return record if ok else None


def read_truth(path: str) -> pd.DataFrame:
    """A truth table in any format pipeline.annotations reads; for Raven tables the label column
    is the first of RAVEN_LABEL_COLUMNS present (detect.py's own tables use `Label`)."""
    if detect_format(path) == "raven":
        return read_raven(path, label_column=RAVEN_LABEL_COLUMNS)
    return read_annotations(path)


class FileState:
    """Scores and checks of one file while its chunks arrive."""

    def __init__(self, job: Job, plot: bool, sample_rate_hz: int):
        self.scores: list[np.ndarray] = []  # per chunk: [windows, outputs]
        self.peak = 0.0
        self.non_finite = 0
        frame_s = SPECTROGRAM_FRAME / sample_rate_hz
        self.spectrogram = Spectrogram(job.info.duration_s, frame_s, SPECTROGRAM_BANDS) if plot else None

    def problem(self) -> str | None:
        """Why the file, read to the end, is still bad (NaN/Inf samples, silence), or None."""
        return sample_problem(self.non_finite, self.peak)


def score_files(detector: Detector, jobs: list[Job], plot: bool, progress: Progress,
                batch_size: int) -> Iterator[tuple[Job, FileState | str]]:
    """Streams every job's chunks through the model: yields (job, its FileState) once the file is
    read and scored, or (job, reason) when a chunk of it fails to read.

    The model is loaded, traced and run once in a thread while the stream starts: building the
    iterator and decoding the first chunks run in TensorFlow without holding the GIL, so the
    1-2 s of model start-up no longer come before the first chunk is read.
    """
    def load_predict():
        model = keras.saving.load_model(detector.run / "model.keras")
        predict = tf.function(lambda x: model(x, training=False),
                              input_signature=[tf.TensorSpec([None, detector.window], tf.float32)])
        predict(tf.zeros([1, detector.window]))  # traced and instantiated here, off the critical path
        return predict

    def scores(windows: tf.Tensor, count: int) -> list[np.ndarray]:
        """The model's scores of windows [count, window], in batches of batch_size."""
        predict = loading.result()
        return [predict(windows[i:i + batch_size]).numpy() for i in range(0, count, batch_size)]

    pool = concurrent.futures.ThreadPoolExecutor(1)
    loading = pool.submit(load_predict)
    pool.shutdown(wait=False)
    sr = detector.sample_rate_hz
    stream = iter(window_dataset(jobs, sr, detector.cfg.audio.mono, detector.window, detector.hop,
                                 spectrogram=plot))
    for job in jobs:
        state, reason = FileState(job, plot, sr), None
        for chunk in job.chunks:
            try:
                element = next(stream)
            except tf.errors.OpError as err:  # the stream goes on with the next chunk
                if reason is None:
                    reason = f"unreadable at {chunk.start / sr:.1f} s: " + " ".join(err.message.strip().splitlines()[:2])
                continue
            if reason is not None:
                continue
            state.scores += scores(element["windows"], chunk.num_windows)  # windows: [num_windows, window]
            state.peak = max(state.peak, float(element["peak"]))
            state.non_finite += int(element["non_finite"])
            if state.spectrogram is not None:
                state.spectrogram.add(element["spectrogram"].numpy(), chunk.start / sr, SPECTROGRAM_FRAME / sr)
            # Audio done: up to the next chunk's start, or to the end of the file for the last one.
            remaining = max(job.info.duration_s * sr - chunk.start, 0)
            own = remaining if chunk is job.chunks[-1] else min(chunk.num_windows * detector.hop, remaining)
            progress.advance(own / sr)
        yield job, (reason or state.problem() or state)
    # Released here rather than with the generator's frame, whose cleanup was seen to stall for
    # seconds after the last file.
    del stream, loading


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run directory written by train.py or the tuner")
    parser.add_argument("--input", required=True, help="an audio file or a folder of them")
    parser.add_argument("--out", required=True)
    parser.add_argument("--recursive", action="store_true", help="also files in sub-folders of --input")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="only the recordings the run's split_manifest.csv puts in this split")
    parser.add_argument("--window-s", type=float, help="window length (default: the trained clip length)")
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

    detector = load_detector(args)
    limit_heap_growth()  # a 3-hour file needs no more memory than a 3-minute one
    cfg, sr = detector.cfg, detector.sample_rate_hz
    paths = audio_files(args.input, args.recursive)
    if args.split:
        wanted = split_files(detector.run, args.split)
        paths = [p for p in paths if str(Path(p).resolve()) in wanted]
    if not paths:
        raise SystemExit(f"--input {args.input}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})"
                         + (f" of the {args.split} split" if args.split else ""))
    outputs = Outputs(Path(args.out), output_names(paths, args.input), args.plot, args.save_scores)
    digest = detector.digest()
    write_json({**detector.settings(), "digest": digest}, outputs.out / "detect.json")

    records = {p: None if args.overwrite else outputs.finished(p, digest) for p in paths}
    pending = [p for p in paths if records[p] is None]
    if len(pending) < len(paths):
        print(f"{len(paths) - len(pending)} file(s) already finished in {outputs.out} (skipped; --overwrite redoes them)")
    bad: list[tuple[str, str]] = []
    jobs: list[Job] = []
    chunk_windows = windows_per_chunk(args.chunk_s or cfg.detect.chunk_s, sr, detector.window, detector.hop)
    for path in pending:
        try:
            jobs.append(make_job(path, audio_info(path, cfg.audio.mono), sr, detector.window, detector.hop,
                                 chunk_windows))
        except BadAudio as err:
            bad.append((path, str(err)))
    if jobs:
        progress = Progress(len(jobs), sum(j.info.duration_s for j in jobs))
        for job, result in score_files(detector, jobs, args.plot, progress, cfg.detect.batch_size):
            if isinstance(result, str):
                bad.append((job.path, result))
            else:
                scores = np.concatenate(result.scores)  # [windows, outputs]
                records[job.path] = finish_file(job, detector, outputs, scores, digest, result.spectrogram)
            progress.advance(files=1, name=outputs.names[job.path])
        progress.close()

    done = [records[p] for p in paths if records[p] is not None]
    write_tables(outputs.out, done, bad, list(detector.calls), args.top_k)
    if args.truth:
        report_truth(args.truth, done, detector, outputs.out)
    else:
        counts = pd.read_csv(outputs.out / "counts.csv")
        print(counts.to_string(index=False) if len(counts) else "no files processed")
    if bad:
        print(f"{len(bad)} file(s) could not be read: see {outputs.out / 'bad_files.csv'}")
    return 0


def finish_file(job: Job, detector: Detector, outputs: Outputs, scores: np.ndarray, digest: str,
                spectrogram: Spectrogram | None) -> dict:
    """Events of one scored file and its outputs; the finished-record goes last and is returned."""
    name, calls = outputs.names[job.path], list(detector.calls)
    columns = [detector.columns[c] for c in calls]
    windows = len(scores)
    scores = detector.trace(scores, job.info.duration_s)  # [rows, outputs]
    events = detector.events(scores, job.info.duration_s)
    outputs.stem(job.path).parent.mkdir(parents=True, exist_ok=True)
    frontend = detector.cfg.frontend
    band = (frontend.fmin_hz, frontend.fmax(detector.sample_rate_hz))  # what the model looks at
    write_raven(events_frame(name, events, *band), outputs.file(job.path, ".selections.txt"))
    if outputs.save_scores:
        write_scores(outputs.file(job.path, ".scores.csv"), scores, calls, columns, detector.row_hop_s,
                     detector.row_window_s, detector.row_offset_s)
    if spectrogram is not None:
        write_plot(outputs.file(job.path, ".png"), name, spectrogram, scores, calls, columns, detector.thresholds,
                   events, detector.row_hop_s, detector.row_window_s, detector.sample_rate_hz)
    record = {
        "file": name, "path": job.path, "digest": digest, "duration_s": job.info.duration_s,
        "windows": int(windows), "counts": count_events(events, calls),
        "events": [[e.label, e.start_s, e.end_s, e.max_score, e.mean_score] for e in events],
        "best": {label: float(scores[:, column].max()) for label, column in zip(calls, columns)},
    }
    write_json(record, outputs.part(job.path))
    return record


def write_tables(out: Path, records: list[dict], bad: list[tuple[str, str]], calls: list[str], top_k: int) -> None:
    """counts.csv, events.csv, bad_files.csv and (top_k > 0) ranking.csv over the finished files."""
    write_csv(pd.DataFrame([(r["file"], label, n) for r in records for label, n in r["counts"].items()],
                           columns=COUNT_COLUMNS), out / "counts.csv")
    write_csv(pd.DataFrame([(r["file"], *e) for r in records for e in r["events"]], columns=EVENT_COLUMNS),
              out / "events.csv")
    write_csv(pd.DataFrame(bad, columns=BAD_COLUMNS), out / "bad_files.csv")
    if top_k > 0:
        rows = []
        for r in records:
            best = sorted(r["best"].items(), key=lambda kv: -kv[1])[:top_k]
            rows += [(r["file"], rank, label, score) for rank, (label, score) in enumerate(best, 1)]
        write_csv(pd.DataFrame(rows, columns=RANKING_COLUMNS), out / "ranking.csv")


def report_truth(path: str, records: list[dict], detector: Detector, out: Path) -> None:
    """eval.json and the console table: the finished files' events against the truth table."""
    try:
        truth = read_truth(path)
    except (AnnotationError, OSError) as err:
        raise SystemExit(f"--truth {path}: {err}") from None
    files = [r["file"] for r in records]
    truth, ignored = align_truth_files(truth, {r["file"]: r["path"] for r in records})
    detected = pd.DataFrame([(r["file"], *e[:3]) for r in records for e in r["events"]],
                            columns=["file", "label", "start_s", "end_s"])
    report = evaluate(detected, truth, files, detector.calls, detector.cfg.detect.match_min_overlap)
    report.update({"truth": str(path), "truth_rows_ignored": ignored})
    write_json(report, out / "eval.json")
    print(format_report(report))
    if ignored:
        print(f"({ignored} truth row(s) name files that were not processed and were left out)")


if __name__ == "__main__":
    sys.exit(main())
