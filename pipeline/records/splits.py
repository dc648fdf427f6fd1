"""Leak-free train/validation/test splits: whole groups go to one split, stratified by label."""
from __future__ import annotations

import fnmatch
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def chosen_groups(groups: Sequence[str], patterns: Sequence[str]) -> set[str]:
    """Groups matching any pattern (fnmatch), by file name or by the whole group name."""
    return {g for g in groups for p in patterns if fnmatch.fnmatch(Path(g).name, p) or fnmatch.fnmatch(g, p)}


def split_records(records: pd.DataFrame, val_fraction: float, test_fraction: float,
                  seed: int, val_groups: Sequence[str] = (), test_groups: Sequence[str] = ()) -> pd.DataFrame:
    """Adds a `split` column. Every group lands in exactly one split.

    Groups matching `test_groups` / `val_groups` (patterns, e.g. recording file names) go to
    that split, and such a split takes no other group. The other groups are stratified by their
    most common label: within each label the groups are shuffled (seeded) and dealt to test and
    val until each holds its fraction of that label's records, and the rest go to train. A label
    with a single group stays in train.
    """
    rng = np.random.default_rng(seed)
    names = sorted(records["group"].astype(str).unique())
    assignment: dict[str, str] = {}
    for split, patterns in (("test", test_groups), ("val", val_groups)):
        found = chosen_groups(names, patterns) - set(assignment)
        if patterns and not found:
            raise ValueError(f"data.{split}_groups: no recording matches {list(patterns)}")
        assignment.update(dict.fromkeys(sorted(found), split))
    test_fraction = 0.0 if test_groups else test_fraction
    val_fraction = 0.0 if val_groups else val_fraction
    rest = records[~records["group"].isin(assignment)]
    group_label = rest.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    group_size = rest.groupby("group").size()
    for label in sorted(group_label.unique()):
        groups = np.array(sorted(group_label.index[group_label == label]))
        rng.shuffle(groups)
        total = group_size[groups].sum()
        targets = {"test": test_fraction * total, "val": val_fraction * total}
        filled = {"test": 0, "val": 0}
        for i, group in enumerate(groups):
            remaining = len(groups) - i
            split = "train"
            for name in ("test", "val"):
                if filled[name] < targets[name] and remaining > 1 and targets[name] > 0:
                    split = name
                    break
            filled[split] = filled.get(split, 0) + group_size[group]
            assignment[group] = split
    out = records.copy()
    out["split"] = out["group"].map(assignment)
    return out


def manifest_hash(records: pd.DataFrame) -> str:
    """A short content hash of the split manifest, to tell runs on the same data apart."""
    text = records.to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_manifest(records: pd.DataFrame, run_dir: str | Path) -> str:
    """Writes split_manifest.csv and its hash next to it; returns the hash."""
    run_dir = Path(run_dir)
    records.to_csv(run_dir / "split_manifest.csv", index=False)
    digest = manifest_hash(records)
    (run_dir / "split_manifest.sha256").write_text(digest + "\n")
    return digest
