"""What detect.py writes, each file atomically: tables, per-window scores, the per-file record that
marks a file as finished (for resuming), and where each input's files go (Outputs).

Atomic: everything is written to a temporary file in the same folder and renamed over the
target, so a killed run leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.atomic import write_csv
from pipeline.audio.problems import REPORT_COLUMNS
from pipeline.detection.events import Event

EVENT_COLUMNS = ["file", "label", "start_s", "end_s", "max_score", "mean_score"]
COUNT_COLUMNS = ["file", "label", "count"]
RANKING_COLUMNS = ["file", "rank", "label", "score"]


def events_frame(file: str, events: Sequence[Event], low_hz: float = math.nan,
                 high_hz: float = math.nan) -> pd.DataFrame:
    """Events of one file as a table; low_hz/high_hz (the band the model sees) for Raven."""
    table = pd.DataFrame([(file, e.label, e.start_s, e.end_s, e.max_score, e.mean_score) for e in events],
                         columns=EVENT_COLUMNS)
    return table.assign(low_hz=float(low_hz), high_hz=float(high_hz))


def write_scores(path: Path, scores: np.ndarray, labels: Sequence[str], columns: Sequence[int],
                 hop_s: float, window_s: float, offset_s: float = 0.0) -> None:
    """Per-window (or per-frame) scores: start_s, end_s and one column per label; row i starts
    at offset_s + i * hop_s (clipped at 0)."""
    starts = offset_s + np.arange(len(scores)) * hop_s
    table = pd.DataFrame({"start_s": np.maximum(starts, 0.0), "end_s": starts + window_s})
    for label, column in zip(labels, columns):
        table[label] = scores[:, column]
    write_csv(table, path, float_format="%.5g")


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


def write_tables(out: Path, records: list[dict], bad: list[tuple[str, str]], calls: list[str], top_k: int) -> None:
    """counts.csv, events.csv, bad_files.csv and (top_k > 0) ranking.csv over the finished files."""
    write_csv(pd.DataFrame([(r["file"], label, n) for r in records for label, n in r["counts"].items()],
                           columns=COUNT_COLUMNS), out / "counts.csv")
    write_csv(pd.DataFrame([(r["file"], *e) for r in records for e in r["events"]], columns=EVENT_COLUMNS),
              out / "events.csv")
    write_csv(pd.DataFrame(bad, columns=REPORT_COLUMNS), out / "bad_files.csv")
    if top_k > 0:
        rows = []
        for r in records:
            best = sorted(r["best"].items(), key=lambda kv: -kv[1])[:top_k]
            rows += [(r["file"], rank, label, score) for rank, (label, score) in enumerate(best, 1)]
        write_csv(pd.DataFrame(rows, columns=RANKING_COLUMNS), out / "ranking.csv")
