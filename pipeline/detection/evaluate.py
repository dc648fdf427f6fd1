"""Detected events against true calls: one-to-one matching, per-class and per-file scores (pure).

A detected event and a true call of the same label in the same file can match when their
overlap is at least `min_overlap` times the shorter of the two (and above zero). Each event and
each call matches at most once; among all one-to-one assignments the one with the most matches
is taken (ties: the larger summed overlap), solved per cluster of mutually overlapping
intervals, so long files cost no more than their clusters.
"""
from __future__ import annotations

import math
from pathlib import PurePath
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

Interval = tuple[float, float]


def overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def can_match(a: Interval, b: Interval, min_overlap: float) -> bool:
    shared = overlap(a, b)
    return shared > 0 and shared >= min_overlap * min(a[1] - a[0], b[1] - b[0]) - 1e-12


def _clusters(detected: Sequence[Interval], truth: Sequence[Interval]) -> list[tuple[list[int], list[int]]]:
    """Groups of (detected indices, true indices) whose intervals chain-overlap."""
    items = sorted([(s, e, 0, i) for i, (s, e) in enumerate(detected)] +
                   [(s, e, 1, i) for i, (s, e) in enumerate(truth)])
    groups: list[tuple[list[int], list[int]]] = []
    reach = -math.inf
    for start, end, kind, index in items:
        if not groups or start >= reach:
            groups.append(([], []))
            reach = end
        groups[-1][kind].append(index)
        reach = max(reach, end)
    return [g for g in groups if g[0] and g[1]]


def match_events(detected: Sequence[Interval], truth: Sequence[Interval],
                 min_overlap: float) -> list[tuple[int, int]]:
    """One-to-one matches (detected index, true index), sorted by detected index."""
    pairs = []
    for det_ids, true_ids in _clusters(detected, truth):
        gain = np.zeros((len(det_ids), len(true_ids)))
        for r, d in enumerate(det_ids):
            for c, t in enumerate(true_ids):
                if can_match(detected[d], truth[t], min_overlap):
                    shorter = min(detected[d][1] - detected[d][0], truth[t][1] - truth[t][0])
                    # One match outweighs any overlap bonus (the bonus is below 1 in total).
                    gain[r, c] = 1.0 + overlap(detected[d], truth[t]) / max(shorter, 1e-9) / (len(det_ids) + 1)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        pairs += [(det_ids[r], true_ids[c]) for r, c in zip(rows, cols) if gain[r, c] > 0]
    return sorted(pairs)


def prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def count_error(detected: int, true: int) -> float | None:
    """(detected - true) / true; None when there is no true call."""
    return (detected - true) / true if true else None


def evaluate(detected: pd.DataFrame, truth: pd.DataFrame, files: Iterable[str], labels: Iterable[str],
             min_overlap: float) -> dict:
    """Scores of `detected` events against `truth` calls (both with file,label,start_s,end_s) over
    `files` (the files processed; rows of other files are ignored) and `labels` (plus any label
    the truth has in those files).

    Returns {"min_overlap", "classes": {label: tp/fp/fn/precision/recall/f1},
    "files": [{file, label, true_count, detected_count, matched, count_error}],
    "totals": {tp, fp, fn, precision, recall, f1, true_count, detected_count,
    mean_abs_count_error (over file/label rows with true calls), files}}.
    """
    files = list(dict.fromkeys(files))
    detected = detected[detected["file"].isin(files)]
    truth = truth[truth["file"].isin(files)]
    labels = list(dict.fromkeys([*labels, *sorted(set(truth["label"]))]))
    per_class = {label: [0, 0, 0] for label in labels}  # tp, fp, fn
    rows = []
    for file in files:
        for label in labels:
            d = detected[(detected["file"] == file) & (detected["label"] == label)]
            t = truth[(truth["file"] == file) & (truth["label"] == label)]
            d_iv = list(zip(d["start_s"].astype(float), d["end_s"].astype(float)))
            t_iv = list(zip(t["start_s"].astype(float), t["end_s"].astype(float)))
            matched = len(match_events(d_iv, t_iv, min_overlap))
            per_class[label][0] += matched
            per_class[label][1] += len(d_iv) - matched
            per_class[label][2] += len(t_iv) - matched
            rows.append({"file": file, "label": label, "true_count": len(t_iv), "detected_count": len(d_iv),
                         "matched": matched, "count_error": count_error(len(d_iv), len(t_iv))})
    tp, fp, fn = (sum(v[k] for v in per_class.values()) for k in range(3))
    errors = [abs(r["count_error"]) for r in rows if r["count_error"] is not None]
    totals = {**prf(tp, fp, fn), "true_count": tp + fn, "detected_count": tp + fp,
              "mean_abs_count_error": float(np.mean(errors)) if errors else None, "files": len(files)}
    return {"min_overlap": min_overlap, "classes": {k: prf(*v) for k, v in per_class.items()},
            "files": rows, "totals": totals}


def format_report(report: dict) -> str:
    """The console table: per class P/R/F1, per file counts and count error, totals."""
    lines = [f"events matched one-to-one when they overlap >= {report['min_overlap']:g} of the shorter", ""]
    width = max([len("label")] + [len(k) for k in report["classes"]])
    lines.append(f"{'label':<{width}}  {'precision':>9}  {'recall':>6}  {'F1':>5}  {'TP':>5}  {'FP':>5}  {'FN':>5}")
    for label, m in report["classes"].items():
        lines.append(f"{label:<{width}}  {m['precision']:>9.3f}  {m['recall']:>6.3f}  {m['f1']:>5.3f}  "
                     f"{m['tp']:>5}  {m['fp']:>5}  {m['fn']:>5}")
    lines.append("")
    fwidth = max([len("file")] + [len(r["file"]) for r in report["files"]])
    lines.append(f"{'file':<{fwidth}}  {'label':<{width}}  {'true':>5}  {'detected':>8}  {'count error':>11}")
    for r in report["files"]:
        err = "-" if r["count_error"] is None else f"{100 * r['count_error']:+.1f}%"
        lines.append(f"{r['file']:<{fwidth}}  {r['label']:<{width}}  {r['true_count']:>5}  "
                     f"{r['detected_count']:>8}  {err:>11}")
    t = report["totals"]
    mean_err = "-" if t["mean_abs_count_error"] is None else f"{100 * t['mean_abs_count_error']:.1f}%"
    lines += ["", f"total: {t['files']} file(s), {t['true_count']} true, {t['detected_count']} detected, "
                  f"{t['tp']} matched; precision {t['precision']:.3f}, recall {t['recall']:.3f}, "
                  f"event F1 {t['f1']:.3f}; mean |count error| per file {mean_err}"]
    return "\n".join(lines)


def align_truth_files(truth: pd.DataFrame, files: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """Truth rows renamed to the processed files' names, and how many rows name no processed file.

    `files` maps each processed file's name (as in events.csv) to its path. A truth row's file
    matches by that name, by the path, or else by its last component when only one processed
    file has it (tables usually name recordings without their folder). A row without a file
    (an Audacity label track) belongs to the only processed file, if there is only one.
    """
    by_name = {name: name for name in files}
    by_name.update({str(path): name for name, path in files.items()})
    base_count: dict[str, list[str]] = {}
    for name in files:
        base_count.setdefault(_base(name), []).append(name)

    def resolve(value: str) -> str | None:
        if not value and len(files) == 1:  # an Audacity track names no file
            return next(iter(files))
        if value in by_name:
            return by_name[value]
        names = base_count.get(_base(value), [])
        return names[0] if len(names) == 1 else None

    mapped = [resolve(str(f)) for f in truth["file"]]
    keep = np.array([m is not None for m in mapped], dtype=bool)
    out = truth[keep].copy()
    out["file"] = [m for m in mapped if m is not None]
    return out.reset_index(drop=True), int((~keep).sum())


def _base(name: str) -> str:
    return PurePath(name.replace("\\", "/")).name
