"""Archive layouts -> one record table.

Every source yields the same columns (RECORD_COLUMNS), so splitting, balancing and reporting
are written once. `start_s`/`end_s` are NaN when the record is the whole file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.audio.formats import find_audio
from pipeline.config import ConfigError, DataConfig

RECORD_COLUMNS = ["file", "start_s", "end_s", "label", "group"]


def _audio_files(folder: Path, pattern: str) -> list[Path]:
    """Everything the pattern names in the folder, for the file scan to use or report (a text
    file, a directory named x.wav or a broken link among the recordings is listed with its reason
    in bad_files.csv, never skipped silently)."""
    return [Path(p) for p in find_audio(folder, pattern, every_file=True)]


def from_folders(root: str | Path, pattern: str = "**/*") -> pd.DataFrame:
    """One sub-folder per class (the capuchin layout); the group is the file itself."""
    root = Path(root)
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in _audio_files(class_dir, pattern):
            rows.append((str(path), np.nan, np.nan, class_dir.name, path.stem))
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def from_glob(root: str | Path, pattern: str, label_regex: str) -> pd.DataFrame:
    """Files matching `pattern`; label and group from named groups of `label_regex` on the name.

    Example (Watkins `3_BW_17_2.wav`): `^\\d+_(?P<label>[A-Z]+)_(?P<cut>\\d+)_\\d+` gives label
    `BW` and group `BW_17` (the named groups other than `label`, joined by `_`). A file whose
    name the regex does not match gets no label (None), for prepare_records to report.
    """
    regex = re.compile(label_regex)
    if "label" not in regex.groupindex:
        raise ConfigError(f"data.label_regex: expected a named group (?P<label>...), got {label_regex!r}")
    rows = []
    for path in _audio_files(Path(root), pattern):
        m = regex.search(path.name)
        if m is None:
            rows.append((str(path), np.nan, np.nan, None, path.stem))
            continue
        label = m.group("label")
        others = [m.group(g) for g in regex.groupindex if g != "label"]
        group = "_".join([label, *others]) if others else path.stem
        rows.append((str(path), np.nan, np.nan, label, group))
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def from_manifest(root: str | Path, manifest: str | Path, columns: dict | None = None) -> pd.DataFrame:
    """CSV with `file,label[,group][,start_s,end_s]`; relative files resolve against root.

    `columns` maps our names to the table's ({"file": "path", "label": "species"}).
    """
    root = Path(root)
    path = Path(manifest) if Path(manifest).is_absolute() else root / manifest
    table = pd.read_csv(path)
    missing_mapped = sorted(set((columns or {}).values()) - set(table.columns))
    if missing_mapped:
        raise ConfigError(f"{path}: data.columns names column(s) {missing_mapped} the manifest lacks")
    table = table.rename(columns={theirs: ours for ours, theirs in (columns or {}).items()})
    missing = {"file", "label"} - set(table.columns)
    if missing:
        raise ConfigError(f"{path}: manifest lacks column(s) {sorted(missing)}")
    files = [str(f if Path(f).is_absolute() else root / f) for f in table["file"]]
    return pd.DataFrame({
        "file": files,
        "start_s": table["start_s"].astype(float) if "start_s" in table else np.nan,
        "end_s": table["end_s"].astype(float) if "end_s" in table else np.nan,
        "label": table["label"].astype(str),
        "group": table["group"].astype(str) if "group" in table else [Path(f).stem for f in files],
    })[RECORD_COLUMNS]


def load_records(data: DataConfig) -> pd.DataFrame:
    """The record table for a data config."""
    root = Path(data.root)
    if not root.is_dir():
        raise ConfigError(f"data.root: folder {root} does not exist")
    if data.source == "folders":
        records = from_folders(root, data.pattern)
    elif data.source == "glob":
        records = from_glob(root, data.pattern, data.label_regex)
    elif data.source == "manifest":
        records = from_manifest(root, data.manifest, data.columns)
    else:
        raise ConfigError(f"data.source: {data.source!r} is not supported yet")
    if records.empty:
        raise ConfigError(f"data: no audio files found under {root} for source {data.source!r}")
    return apply_label_map(records, data.label_map).reset_index(drop=True)


def apply_label_map(table: pd.DataFrame, label_map: dict) -> pd.DataFrame:
    """Renames labels by data.label_map (each part of a multi-label 'a;b' string too)."""
    if not label_map:
        return table
    renamed = [None if label is None else ";".join(label_map.get(part, part) for part in str(label).split(";"))
               for label in table["label"]]
    return table.assign(label=renamed)
