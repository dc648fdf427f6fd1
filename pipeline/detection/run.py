"""A whole detection run, as detect.py runs it:

    inputs -> header checks -> chunk plans -> one stream through the model -> per file: trace,
    events, outputs (a record marks it finished) -> counts.csv, events.csv, bad_files.csv,
    [ranking.csv], [eval.json against a truth table]

A rerun with the same --out skips the files finished with the same settings (Outputs.finished).
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.atomic import write_json
from pipeline.audio.formats import AUDIO_EXTENSIONS, find_audio
from pipeline.audio.info import BadAudio, Limits, checked_info
from pipeline.audio.problems import Problem
from pipeline.detection.detector import ClipDetector, DetectError, Settings, load_detector, settings_digest
from pipeline.detection.display import Progress, Spectrogram, write_plot
from pipeline.detection.ensemble import check_members, mean_trace
from pipeline.detection.evaluate import align_truth_files, evaluate, format_report
from pipeline.detection.events import count_events
from pipeline.detection.outputs import Outputs, events_frame, write_scores, write_tables
from pipeline.detection.plan import Job, make_job, windows_per_chunk
from pipeline.detection.scoring import score_files
from pipeline.records.annotations import AnnotationError, read_truth_table, write_raven
from pipeline.records.prepare import one_frame_s


@dataclasses.dataclass(frozen=True)
class Options:
    """A detection run: the command line of detect.py."""

    model: str
    input: str
    out: str
    recursive: bool = False
    split: Optional[str] = None  # only the recordings the run's split_manifest.csv puts in this split
    settings: Settings = Settings()
    chunk_s: Optional[float] = None
    truth: Optional[str] = None
    top_k: int = 0
    save_scores: bool = False
    plot: bool = False
    overwrite: bool = False
    members: tuple[str, ...] = ()  # more runs whose scores are averaged with model's (an ensemble)


@dataclasses.dataclass
class Result:
    records: list[dict]  # one per finished file (counts, events, best scores)
    bad: list[tuple[str, str]]  # (file, reason)
    report: Optional[dict]  # against the truth table
    startup_s: Optional[float] = None  # from the call until the first chunk was scored


def input_files(inputs: str, recursive: bool) -> list[str]:
    """The audio files of --input (a file, or the audio names in a folder: see find_audio)."""
    path = Path(inputs)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise DetectError(f"--input {inputs}: no such file or folder")
    return find_audio(path, "**/*" if recursive else "*")


def split_files(run: Path, split: str) -> set[str]:
    """Resolved paths of the recordings the run's split_manifest.csv puts in `split`."""
    manifest = pd.read_csv(run / "split_manifest.csv")
    files = manifest.loc[manifest["split"] == split, "file"]
    if files.empty:
        raise DetectError(f"--split {split}: {run / 'split_manifest.csv'} has no {split!r} records")
    return {str(Path(f).resolve()) for f in files}


def output_names(paths: list[str], inputs: str) -> dict[str, str]:
    """Path -> the file's name in the outputs: relative to an --input folder, else its name."""
    root = Path(inputs)
    if root.is_dir():
        return {p: Path(os.path.relpath(p, root)).as_posix() for p in paths}
    return {p: Path(p).name for p in paths}


def plan_jobs(detector: ClipDetector, paths: list[str], chunk_s: Optional[float] = None
              ) -> tuple[list[Job], list[tuple[str, str]]]:
    """(a Job per file to stream, (file, reason) for each file its header check refuses).

    A file shorter than one frontend window is refused as too short: it holds no spectrogram
    frame, and its only window would be padding the model was never shown."""
    cfg, sr = detector.cfg, detector.sample_rate_hz
    chunk_windows = windows_per_chunk(chunk_s or cfg.detect.chunk_s, sr, detector.window, detector.hop)
    limits = Limits(min_duration_s=one_frame_s(cfg))
    jobs, bad = [], []
    for path in paths:
        try:
            info = checked_info(path, mono=cfg.audio.mono, limits=limits)
        except BadAudio as err:
            bad.append((path, str(err)))
            continue
        jobs.append(make_job(path, info, sr, detector.window, detector.hop, chunk_windows,
                             context=detector.framing.context_samples))
    return jobs, bad


def limit_heap_growth(threshold_bytes: int = 8 << 20) -> bool:
    """Serve every allocation above threshold_bytes with its own memory map (glibc mallopt).

    glibc raises its mmap threshold each time a large block is freed, after which the chunks'
    buffers (tens of MB, freed every chunk) come from the heap, whose fragmentation grows the
    resident memory chunk after chunk: on a 3-hour file, about 10% more than on a 3-minute one
    after 40 chunks, still growing. A fixed threshold returns them to the system at once.
    Returns whether it took effect (False on systems without glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def detect(options: Options) -> Result:
    start = time.perf_counter()
    detector = load_detector(options.model, options.settings)
    limit_heap_growth()  # a 3-hour file needs no more memory than a 3-minute one
    cfg = detector.cfg
    paths = input_files(options.input, options.recursive)
    if options.split:
        wanted = split_files(detector.run, options.split)
        paths = [p for p in paths if str(Path(p).resolve()) in wanted]
    if not paths:
        raise DetectError(f"--input {options.input}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})"
                          + (f" of the {options.split} split" if options.split else ""))
    outputs = Outputs(Path(options.out), output_names(paths, options.input), options.plot, options.save_scores)
    # The true calls, in the outputs' file names, for the plots (--truth --plot).
    truth = (align_truth_files(read_truth(options.truth), {outputs.names[p]: p for p in paths})[0]
             if options.truth and options.plot else None)
    members = [load_detector(m) for m in options.members]
    if members:
        check_members([detector, *members])
    settings = {**detector.settings(), **({"with": [m.settings() for m in members]} if members else {})}
    digest = settings_digest(settings)
    write_json({**settings, "digest": digest}, outputs.out / "detect.json")

    records = {p: None if options.overwrite else outputs.finished(p, digest) for p in paths}
    pending = [p for p in paths if records[p] is None]
    if len(pending) < len(paths):
        print(f"{len(paths) - len(pending)} file(s) already finished in {outputs.out} (skipped; --overwrite redoes them)")
    member_traces, bad = score_members(members, pending, options.chunk_s)
    refused = {path for path, _ in bad}
    jobs, bad_here = plan_jobs(detector, [p for p in pending if p not in refused], options.chunk_s)
    bad += bad_here
    timing: dict[str, float] = {}
    if jobs:
        progress = Progress(len(jobs), sum(j.info.duration_s for j in jobs))
        for job, result in score_files(detector, jobs, options.plot, progress, cfg.detect.batch_size, timing):
            if isinstance(result, Problem):
                bad.append((job.path, str(result)))
            else:
                scores = np.concatenate(result.scores)  # [windows, outputs]
                others = [(m, traces[job.path]) for m, traces in zip(members, member_traces)]
                records[job.path] = finish_file(job, detector, outputs, scores, digest, result.spectrogram, truth,
                                                others)
            progress.advance(files=1, name=outputs.names[job.path])
        progress.close()

    done = [records[p] for p in paths if records[p] is not None]
    write_tables(outputs.out, done, bad, list(detector.calls), options.top_k)
    report = None
    if options.truth:
        report = report_truth(options.truth, done, detector, outputs.out)
    else:
        counts = pd.read_csv(outputs.out / "counts.csv")
        print(counts.to_string(index=False) if len(counts) else "no files processed")
    if bad:
        print(f"{len(bad)} file(s) could not be read: see {outputs.out / 'bad_files.csv'}")
    first = timing.get("first_chunk_at")
    return Result(done, bad, report, None if first is None else first - start)


def score_members(members: list[ClipDetector], paths: list[str], chunk_s: Optional[float]
                  ) -> tuple[list[dict[str, np.ndarray]], list[tuple[str, str]]]:
    """Each ensemble member's trace of every file (path -> [windows, outputs]; they are small: a
    row per hop), and the files some member could not read, with the reason."""
    traces, bad = [], []
    for member in members:
        refused = {path for path, _ in bad}
        jobs, unreadable = plan_jobs(member, [p for p in paths if p not in refused], chunk_s)
        bad += unreadable
        found = {}
        progress = Progress(len(jobs), sum(j.info.duration_s for j in jobs))
        for job, result in score_files(member, jobs, False, progress, member.cfg.detect.batch_size):
            if isinstance(result, Problem):
                bad.append((job.path, str(result)))
            else:
                found[job.path] = member.trace(np.concatenate(result.scores), job.info.duration_s)
            progress.advance(files=1)
        progress.close()
        traces.append(found)
    return traces, bad


def finish_file(job: Job, detector: ClipDetector, outputs: Outputs, scores: np.ndarray, digest: str,
                spectrogram: Spectrogram | None, truth: Optional[pd.DataFrame] = None,
                others: Sequence[tuple[ClipDetector, np.ndarray]] = ()) -> dict:
    """Events of one scored file and its outputs; the finished-record goes last and is returned.
    `truth` (calls of every file, by output name): drawn on the plot with misses and false alarms.
    `others` (ensemble members and their traces of the file): averaged with the detector's."""
    name, calls = outputs.names[job.path], list(detector.calls)
    columns = [detector.columns[c] for c in calls]
    windows = len(scores)
    scores = detector.trace(scores, job.info.duration_s)  # [rows, outputs]
    if others:
        scores = mean_trace([detector, *(d for d, _ in others)], [scores, *(t for _, t in others)])
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
                   events, detector.row_hop_s, detector.row_window_s, detector.sample_rate_hz,
                   truth=None if truth is None else truth[truth["file"] == name],
                   min_overlap=detector.cfg.detect.match_min_overlap)
    record = {
        "file": name, "path": job.path, "digest": digest, "duration_s": job.info.duration_s,
        "windows": int(windows), "counts": count_events(events, calls),
        "events": [[e.label, e.start_s, e.end_s, e.max_score, e.mean_score] for e in events],
        "best": {label: float(scores[:, column].max()) for label, column in zip(calls, columns)},
    }
    write_json(record, outputs.part(job.path))
    return record


def read_truth(path: str) -> pd.DataFrame:
    """The --truth table (pipeline.records.annotations.read_truth_table), or a DetectError."""
    try:
        return read_truth_table(path)
    except (AnnotationError, OSError) as err:
        raise DetectError(f"--truth {path}: {err}") from None


def report_truth(path: str, records: list[dict], detector: ClipDetector, out: Path) -> dict:
    """eval.json and the console table: the finished files' events against the truth table."""
    truth = read_truth(path)
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
    return report
