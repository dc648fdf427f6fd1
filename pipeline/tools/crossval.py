"""How well a detector finds and counts calls in recordings it has never seen: leave one recording
out, in turn, over an annotated archive.

python -m pipeline.tools.crossval --config configs/piha.yaml --out runs/cv-piha [--set k=v ...]
                                  [--folds 0,3] [--with configs/piha_cnn.yaml ...] [--refit]

For every recording R of the archive (its annotation table's files): a model is trained by the
path train.py runs (models.training.run.train) on the other recordings, one of which (the next,
in a fixed rotation) only picks the best epoch; then R's calls are detected and matched to R's
true calls (pipeline.detection.evaluate). The detection settings never look at R: per call label
the threshold (of THRESHOLDS), the longest event (of MAX_EVENT_S; longer events are split into
calls) and, for a frame model, the onset score that splits a call (of ONSET_THRESHOLDS), with the
best event F1 over the validation recordings of all folds pooled (each scored by
its own fold's model), R's own left out; ties go to the config's. One validation recording (6 to
51 calls here) is too few to choose on: chosen fold by fold, the piha thresholds ranged from 0.2
to 0.95 and pooled F1 fell from 0.742 (the config's settings) to 0.641; pooled, they were 0.35 to
0.65 for 0.702.

Writes OUT/fold_<k>/ (a train.py run directory, with the detected events), OUT/crossval.json
(per fold and pooled: precision, recall, event F1, true and detected counts, per-file count
errors, the settings chosen, seconds; and `settings`, those of best F1 over every validation
recording, for a model trained on the whole archive), OUT/fold_<k>/traces.npz (the model's traces of the
validation and held-out recordings) and OUT/<recording>.png (spectrogram, scores, detected
and true events, misses and false alarms marked), and prints one table. Finished folds are kept:
the same command resumes.

--refit measures what a user does once the settings are chosen: train on every recording. Each
fold also trains its config(s) on all recordings but R (OUT/fold_<k>/refit/, no validation split)
for as many epochs as the fold's model took to the epoch it kept, and R is scored by that model;
the validation recordings, which choose the settings, are still scored by the fold's models.

Recordings that cannot be read (their header refused before any training, or their audio while
it is scored) are named with the reason on stderr and in crossval.json's `bad_files`; the
rotation runs over the readable ones, and a fold that cannot score its recordings is left out.

--with CONFIG (repeatable; --set applies to --config only) measures an ensemble, as
`detect.py --model A --model B` runs it: each fold also trains CONFIG (OUT/fold_<k>/with_1/, ...)
and the models' scores are averaged on --config's windows (pipeline.detection.ensemble) before
the settings are chosen.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from models.training.callbacks import epoch_rank  # noqa: E402
from models.training.run import train  # noqa: E402
from pipeline.atomic import write_json  # noqa: E402
from pipeline.audio.info import BadAudio, Limits, checked_info  # noqa: E402
from pipeline.config import (Config, ConfigError, add_config_arguments, config_from_arguments,  # noqa: E402
                             exit_on_config_error, load_config)
from pipeline.detection.detector import ClipDetector, FrameDetector, load_detector  # noqa: E402
from pipeline.detection.display import Progress, write_plot  # noqa: E402
from pipeline.detection.ensemble import check_members, mean_trace  # noqa: E402
from pipeline.detection.evaluate import evaluate  # noqa: E402
from pipeline.detection.run import plan_jobs  # noqa: E402
from pipeline.detection.scoring import FileState, score_files  # noqa: E402
from pipeline.records.prepare import annotation_table, one_frame_s  # noqa: E402

# Score thresholds tried on each fold's validation recording, and the longest events (seconds;
# longer ones are split into calls, None: never) tried with them.
THRESHOLDS = tuple(np.round(np.arange(0.1, 0.96, 0.05), 2))
MAX_EVENT_S = (None, 1.0, 1.5, 2.0, 3.0)
# Frame models: the onset scores that split a run of call frames into calls (1.0: hardly ever).
ONSET_THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TABLE_COLUMNS = ["fold", "recording", "validation", "true", "detected", "matched", "precision", "recall", "f1",
                 "count_error", "seconds"]


@dataclasses.dataclass
class Scored:
    """A recording's model outputs (the detector's trace) and what it takes to draw them."""

    path: str
    name: str
    duration_s: float
    trace: np.ndarray
    state: FileState


def recordings(cfg: Config) -> list[str]:
    """The annotated recordings of the config's archive, sorted."""
    if cfg.data.source != "annotations":
        raise ConfigError("data.source: cross-validation by recording needs an annotation table "
                          "(data.source: annotations)")
    return sorted(set(annotation_table(cfg)["file"]))


class Unreadable(Exception):
    """A recording that cannot be scored: its path and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def readable(cfg: Config, paths: list[str]) -> tuple[list[str], dict[str, str]]:
    """The recordings whose header detection accepts, and the reason for each of the others."""
    limits = Limits(min_duration_s=one_frame_s(cfg))
    ok, bad = [], {}
    for path in paths:
        try:
            checked_info(path, mono=cfg.audio.mono, limits=limits)
            ok.append(path)
        except BadAudio as err:
            bad[path] = str(err)
    return ok, bad


def score(detector: ClipDetector, paths: list[str], plot: bool = False) -> dict[str, Scored]:
    """Each recording's trace (windows or frames, see ClipDetector.trace); Unreadable for the
    first that cannot be read."""
    jobs, bad = plan_jobs(detector, paths)
    if bad:
        raise Unreadable(*bad[0])
    progress = Progress(len(jobs), sum(j.info.duration_s for j in jobs))
    out = {}
    for job, result in score_files(detector, jobs, plot, progress, detector.cfg.detect.batch_size):
        progress.advance(files=1)
        if not isinstance(result, FileState):
            progress.close()
            raise Unreadable(job.path, str(result))
        trace = detector.trace(np.concatenate(result.scores), job.info.duration_s)
        out[job.path] = Scored(job.path, Path(job.path).name, job.info.duration_s, trace, result)
    progress.close()
    return out


def events_table(detector: ClipDetector, scored: dict[str, Scored]) -> pd.DataFrame:
    rows = [(s.name, e.label, e.start_s, e.end_s) for s in scored.values()
            for e in detector.events(s.trace, s.duration_s)]
    return pd.DataFrame(rows, columns=["file", "label", "start_s", "end_s"])


def choose_thresholds(detector: ClipDetector, scored: dict[str, Scored], truth: pd.DataFrame) -> dict[str, float]:
    """Per call label, the threshold of THRESHOLDS with the best event F1 on `scored` (ties: the
    one nearest the detector's own)."""
    chosen = {}
    files = [s.name for s in scored.values()]
    for label in detector.calls:
        def f1(threshold: float) -> float:
            trial = dataclasses.replace(detector, thresholds={**detector.thresholds, label: threshold})
            report = evaluate(events_table(trial, scored), truth, files, [label], detector.cfg.detect.match_min_overlap)
            return report["classes"][label]["f1"]
        scores = {t: f1(float(t)) for t in THRESHOLDS}
        best = max(scores.values())
        chosen[label] = float(min((t for t, f in scores.items() if f == best),
                                  key=lambda t: abs(t - detector.thresholds[label])))
    return chosen


def choose_settings(detector: ClipDetector, scored: dict[str, Scored], truth: pd.DataFrame) -> ClipDetector:
    """The detector with the settings of best event F1 on `scored`: for each longest event of
    MAX_EVENT_S (and, for a frame model, each onset threshold of ONSET_THRESHOLDS), the thresholds
    of choose_thresholds; ties go to the config's longest event and onset threshold."""
    files = [s.name for s in scored.values()]
    candidates = [{"max_event_s": m} for m in sorted(MAX_EVENT_S, key=lambda m: m != detector.max_event_s)]
    if isinstance(detector, FrameDetector):
        onsets = sorted(ONSET_THRESHOLDS, key=lambda t: abs(t - detector.onset_threshold))
        candidates = [{**c, "onset_threshold": t} for c in candidates for t in onsets]
    best, best_f1 = None, -1.0
    for candidate in candidates:  # the config's first
        trial = dataclasses.replace(detector, **candidate)
        trial = dataclasses.replace(trial, thresholds=choose_thresholds(trial, scored, truth))
        f1 = evaluate(events_table(trial, scored), truth, files, trial.calls,
                      detector.cfg.detect.match_min_overlap)["totals"]["f1"]
        if f1 > best_f1:
            best, best_f1 = trial, f1
    return best


def event_settings(detector: ClipDetector) -> dict:
    """The chosen settings besides the thresholds: the longest event and a frame model's onset
    threshold (detect: section names)."""
    settings = {"max_event_s": detector.max_event_s}
    if isinstance(detector, FrameDetector):
        settings["onset_threshold"] = detector.onset_threshold
    return settings


def named_truth(cfg: Config) -> pd.DataFrame:
    table = annotation_table(cfg)
    return table.assign(file=[Path(f).name for f in table["file"]])[["file", "label", "start_s", "end_s"]]


@dataclasses.dataclass
class Fold:
    """A fold's model and its traces of its validation and held-out recordings."""

    number: int
    detector: ClipDetector
    validation: Scored
    test: Scored
    seconds: float  # training (or, resumed, the training it took then) and scoring


def trained(cfg: Config, test: str, validation: str, run: Path) -> ClipDetector:
    """The fold's model of `cfg` in `run`, trained unless finished before."""
    if not (run / "metrics.json").exists():
        train(dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, test_groups=[Path(test).name], val_groups=[Path(validation).name])), run, verbose=2)
    return load_detector(run)


def kept_epochs(cfg: Config, run: Path) -> int:
    """Epochs a finished run trained up to the one it saved (train.keep; the best: the first of the
    highest epoch_rank, as BestCheckpoint keeps it)."""
    history = pd.read_csv(run / "history.csv").to_dict("records")
    if cfg.train.keep == "last":
        return len(history)
    ranks = [epoch_rank(row, cfg.train.monitor) for row in history]
    return max(range(len(ranks)), key=ranks.__getitem__) + 1


def refitted(cfg: Config, test: str, fold_run: Path) -> ClipDetector:
    """`cfg` trained on every recording but `test` (fold_run/refit/, unless finished before): no
    validation split, for kept_epochs of the fold's model, the last epoch saved."""
    run = fold_run / "refit"
    if not (run / "metrics.json").exists():
        epochs = kept_epochs(cfg, fold_run)
        train(dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, test_groups=[Path(test).name], val_groups=[], val_fraction=0.0),
            train=dataclasses.replace(cfg.train, epochs=epochs)), run, verbose=2)  # no validation: the last kept
    return load_detector(run)


def score_fold(cfg: Config, fold: int, test: str, validation: str, out: Path, members: list[Config],
               refit: bool = False) -> Fold:
    """Trains the fold's model (unless finished before) and scores its validation and held-out
    recordings; their traces also go to fold_<k>/traces.npz. With `members` (other configs of the
    same archive), each is trained for the fold too (fold_<k>/with_<i>/) and the traces are the
    models' mean (pipeline.detection.ensemble). With `refit`, the held-out recording is scored by
    each config's refitted model instead (fold_<k>/refit/, fold_<k>/with_<i>/refit/)."""
    fold_dir = out / f"fold_{fold}"
    configs = [cfg, *members]
    runs = [fold_dir] + [fold_dir / f"with_{i}" for i in range(1, len(members) + 1)]
    start = time.time()
    # A resumed model's training took place in an earlier run: its seconds come from metrics.json.
    earlier = sum(json.loads((r / "metrics.json").read_text())["train_seconds"] or 0.0
                  for run in runs for r in ([run, run / "refit"] if refit else [run])
                  if (r / "metrics.json").exists())
    detectors = [trained(c, test, validation, r) for c, r in zip(configs, runs)]
    if members:
        check_members(detectors)
    if refit:
        refits = [refitted(c, test, r) for c, r in zip(configs, runs)]
        validation_each = [score(d, [validation]) for d in detectors]
        test_each = [score(d, [test], plot=d is refits[0]) for d in refits]
    else:  # each model loaded once for both recordings
        refits = detectors
        validation_each = test_each = [score(d, [validation, test], plot=d is detectors[0]) for d in detectors]

    def combined(models: list[ClipDetector], each: list[dict[str, Scored]], path: str) -> Scored:
        trace = mean_trace(models, [s[path].trace for s in each]) if members else each[0][path].trace
        return dataclasses.replace(each[0][path], trace=trace)

    validation_scored = combined(detectors, validation_each, validation)
    test_scored = combined(refits, test_each, test)
    scored = [validation_scored, test_scored]
    np.savez(fold_dir / "traces.npz", **{s.name: s.trace for s in scored})
    return Fold(fold, detectors[0], validation_scored, test_scored, time.time() - start + earlier)


def finish_fold(cfg: Config, fold: Fold, detector: ClipDetector, out: Path, truth: pd.DataFrame) -> dict:
    """The held-out recording's events with `detector`'s settings, its plot and its row."""
    test = fold.test
    events = events_table(detector, {test.name: test})
    report = evaluate(events, truth, [test.name], detector.calls, cfg.detect.match_min_overlap)
    write_plot(out / f"{Path(test.name).stem}.png", f"{test.name} (fold {fold.number})", test.state.spectrogram,
               test.trace, list(detector.calls), [detector.columns[c] for c in detector.calls], detector.thresholds,
               detector.events(test.trace, test.duration_s), detector.row_hop_s, detector.row_window_s,
               detector.sample_rate_hz, truth=truth[truth["file"] == test.name],
               min_overlap=cfg.detect.match_min_overlap)
    totals = report["totals"]
    errors = [r["count_error"] for r in report["files"] if r["count_error"] is not None]
    events.to_csv(out / f"fold_{fold.number}" / "crossval_events.csv", index=False)
    return {"fold": fold.number, "recording": test.name, "validation": fold.validation.name,
            "true": totals["true_count"], "detected": totals["detected_count"], "matched": totals["tp"],
            "precision": totals["precision"], "recall": totals["recall"], "f1": totals["f1"],
            "count_error": float(np.mean(errors)) if errors else None, "seconds": round(fold.seconds, 1),
            "thresholds": detector.thresholds, **event_settings(detector)}


def pooled(rows: list[dict], events: pd.DataFrame, truth: pd.DataFrame, cfg: Config, labels) -> dict:
    files = [r["recording"] for r in rows]
    report = evaluate(events, truth, files, labels, cfg.detect.match_min_overlap)
    totals = report["totals"]
    return {"recordings": len(files), "true": totals["true_count"], "detected": totals["detected_count"],
            "matched": totals["tp"], "precision": totals["precision"], "recall": totals["recall"],
            "f1": totals["f1"], "mean_abs_count_error": totals["mean_abs_count_error"],
            "per_file": [{k: r[k] for k in ("file", "label", "true_count", "detected_count", "count_error")}
                         for r in report["files"]]}


def format_table(rows: list[dict], total: dict) -> str:
    table = pd.DataFrame([{k: r[k] for k in TABLE_COLUMNS} for r in rows])
    lines = [table.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    lines.append(f"\npooled over {total['recordings']} recordings, {total['true']} calls: precision "
                 f"{total['precision']:.3f}, recall {total['recall']:.3f}, event F1 {total['f1']:.3f}; "
                 f"mean |count error| per file {total['mean_abs_count_error']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="folder of the folds and crossval.json (rerun to resume)")
    parser.add_argument("--folds", default="", help="only these folds, e.g. 0,3 (default: every recording)")
    parser.add_argument("--refit", action="store_true",
                        help="score each held-out recording with the config(s) trained on all the others "
                             "(no validation split; the epochs of the fold's model)")
    parser.add_argument("--with", dest="members", action="append", default=[], metavar="CONFIG",
                        help="also train this config (same archive) per fold and average its scores with "
                             "--config's (an ensemble, as detect.py --model A --model B); repeatable")
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    out = Path(args.out)
    with exit_on_config_error():
        paths = recordings(cfg)
        members = [load_config(m) for m in args.members]
        for member, path in zip(members, args.members):
            if recordings(member) != paths:
                raise ConfigError(f"--with {path}: its annotated recordings differ from --config's; "
                                  "the members of an ensemble are trained on the same folds")
            if "frames" in (cfg.train.task, member.train.task):
                # Before any training; check_members refuses the trained models for the same reason.
                raise ConfigError("--with: a frame model (train.task frames) cannot be averaged with other "
                                  "models; ensembles take clip models")
        listed = len(paths)
        paths, bad = readable(cfg, paths)
        for path, reason in bad.items():
            print(f"crossval: left out {path}: {reason}", file=sys.stderr)
        if len(paths) < 3:
            raise ConfigError(f"cross-validation by recording needs 3 or more readable recordings, found "
                              f"{len(paths)} (of {listed} annotated)")
    numbers = [int(f) for f in args.folds.split(",") if f.strip()] or list(range(len(paths)))
    truth = named_truth(cfg)
    folds = []
    for k in numbers:
        try:
            folds.append(score_fold(cfg, k, paths[k], paths[(k + 1) % len(paths)], out, members, args.refit))
        except Unreadable as err:
            bad[err.path] = err.reason
            print(f"crossval: fold {k} left out, {err.path} could not be read: {err.reason}", file=sys.stderr)
    if not folds:
        print("crossval: no fold could be scored", file=sys.stderr)
        write_json({"config": str(args.config), "overrides": args.set, "with": args.members, "folds": [],
                    "bad_files": [{"file": f, "reason": r} for f, r in bad.items()]}, out / "crossval.json")
        return 1
    rows, events = [], []
    for fold in folds:
        # Settings from the validation recordings of the folds, pooled, the held-out one left out.
        pool = {f.validation.name: f.validation for f in folds if f.validation.name != fold.test.name}
        detector = choose_settings(fold.detector, pool, truth) if pool else fold.detector
        rows.append(finish_fold(cfg, fold, detector, out, truth))
        events.append(pd.read_csv(out / f"fold_{fold.number}" / "crossval_events.csv"))
    labels = sorted(set(truth["label"]))
    total = pooled(rows, pd.concat(events, ignore_index=True), truth, cfg, labels)
    # For a model trained on the whole archive: the settings of best F1 over every validation recording.
    best = choose_settings(folds[0].detector, {f.validation.name: f.validation for f in folds}, truth)
    settings = {"threshold": best.thresholds, **event_settings(best)}
    write_json({"config": str(args.config), "overrides": args.set, "with": args.members, "refit": args.refit,
                "folds": rows, "pooled": total,
                "settings": settings, "bad_files": [{"file": f, "reason": r} for f, r in bad.items()]},
               out / "crossval.json")
    print(format_table(rows, total))
    print("detection settings of best F1 over all validation recordings (detect: section, --threshold): "
          + ", ".join(f"{label}={t:g}" for label, t in best.thresholds.items())
          + "".join(f"; {k} {v}" for k, v in event_settings(best).items()))
    print(f"-> {out / 'crossval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
