"""Class names and how a record's label string becomes a target vector, for every task."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.atomic import write_json


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Class names and how a record's label string becomes a target vector.

    For task "frames" the names are the call labels and targets are per frame (frame_targets):
    outputs [0, K) say "label k sounds in this frame", outputs [K, 2K) "a label-k call starts
    here".
    """

    names: tuple[str, ...]
    task: str = "multiclass"  # "binary" | "multiclass" | "multilabel" | "frames"

    @property
    def output_names(self) -> tuple[str, ...]:
        """A name per model output column."""
        if self.task == "frames":
            return (*self.names, *(f"{name}_onset" for name in self.names))
        return self.names if self.task != "binary" else self.names[1:]

    def per_output(self, scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, "LabelSpec"]:
        """(scores, targets, spec) for per-output metrics: frame outputs [n, frames, 2K] become
        [n * frames, 2K] rows scored as a multi-label task over output_names; others pass."""
        if self.task != "frames":
            return scores, targets, self
        width = scores.shape[-1]
        return scores.reshape(-1, width), targets.reshape(-1, width), LabelSpec(self.output_names, "multilabel")

    @property
    def num_outputs(self) -> int:
        if self.task == "frames":
            return 2 * len(self.names)
        return 1 if self.task == "binary" else len(self.names)

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        """Label strings -> float32 targets [n, num_outputs]; multi-label strings use ';'."""
        if self.task == "frames":
            raise ValueError("frame targets come from the records' events (frame_targets), not labels")
        index = {name: i for i, name in enumerate(self.names)}
        if self.task == "binary":
            return np.array([[float(index[l] == 1)] for l in labels], np.float32)
        out = np.zeros((len(labels), len(self.names)), np.float32)
        for row, label in enumerate(labels):
            for part in str(label).split(";") if self.task == "multilabel" else [label]:
                out[row, index[part]] = 1.0
        return out

    FILE = "labels.json"

    def save(self, run_dir: Path) -> None:
        """labels.json in a run directory: the names in output order and the task."""
        write_json({"names": list(self.names), "task": self.task}, Path(run_dir) / self.FILE)

    @classmethod
    def load(cls, run_dir: Path) -> "LabelSpec":
        meta = json.loads((Path(run_dir) / cls.FILE).read_text())
        return cls(tuple(meta["names"]), meta["task"])

    @classmethod
    def from_records(cls, records: pd.DataFrame, task: str, negative_label: str = "") -> "LabelSpec":
        parts = records["label"].astype(str)
        split = task in ("multilabel", "frames")
        names = sorted({p for l in parts for p in (l.split(";") if split else [l])})
        if task == "frames":
            names = [n for n in names if n != negative_label]
            if not names:
                raise ValueError("frame targets need at least one call label, found none")
        if task == "binary":
            if len(names) != 2:
                raise ValueError(f"a binary task needs exactly 2 labels, found {names}")
            if negative_label in names:
                names = [negative_label] + [n for n in names if n != negative_label]
        return cls(tuple(names), task)
