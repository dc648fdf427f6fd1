"""Config -> checked record table: the one entry point train.py, tuning and export use.

sources (folders / glob / manifest / annotation tables) -> scan every file once (bad files
listed, not used) -> annotation tables become call and non-call windows (or, for frame targets, regions tiling
each recording with the calls inside them) -> split by group.
"""
from __future__ import annotations

import glob as globlib
from pathlib import Path
from typing import Optional

import pandas as pd

from pipeline.records.annotations import read_annotations, validate_annotations
from pipeline.config import Config, ConfigError
from pipeline.audio.info import Limits
from pipeline.audio.problems import REPORT_COLUMNS
from pipeline.records.scan import scan_files, summarize
from pipeline.records.sources import apply_label_map, load_records
from pipeline.records.splits import split_records
from pipeline.records.windows import annotation_records, frame_records


def annotation_table(cfg: Config) -> pd.DataFrame:
    """All annotation tables named by data.annotations (a path or a glob under data.root)."""
    root = Path(cfg.data.root)
    pattern = cfg.data.annotations
    if not pattern:
        raise ConfigError("data.annotations: expected a table path or glob for source 'annotations'")
    paths = sorted(globlib.glob(str(root / pattern), recursive=True)) or [str(root / pattern)]
    tables = []
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"data.annotations: no table at {path}")
        kwargs = {"audio_dir": str(root)}
        if path.lower().endswith(".txt") and "selection" in path.lower():
            kwargs["label_column"] = cfg.data.label_column
        elif path.lower().endswith(".csv"):
            columns = dict(cfg.data.columns)
            if cfg.data.label_column != "label":
                columns.setdefault("label", cfg.data.label_column)
            if columns:
                kwargs["columns"] = columns
        tables.append(read_annotations(path, **kwargs))
    table = apply_label_map(pd.concat(tables, ignore_index=True), cfg.data.label_map)
    table["file"] = [f if Path(f).is_absolute() else str(root / f) for f in table["file"]]
    return table


def one_frame_s(cfg: Config) -> float:
    """One frontend window: a shorter file holds no spectrogram frame (training's default minimum,
    detection's only one)."""
    return cfg.frontend.frame_length_samples(cfg.audio.sample_rate_hz) / cfg.audio.sample_rate_hz


def min_duration_s(cfg: Config) -> float:
    """data.min_duration_s, or by default one frontend window."""
    if cfg.data.min_duration_s is not None:
        return cfg.data.min_duration_s
    return one_frame_s(cfg)


def records_seed(cfg: Config) -> int:
    """The seed of the sampled non-call windows and of the split: data.seed, else pipeline.seed."""
    return cfg.data.seed if cfg.data.seed is not None else cfg.pipeline.seed


def prepare_records(cfg: Config, run_dir: Optional[Path] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records with a split column, bad files and annotations with reasons).

    Writes bad_files.csv into run_dir when given and prints a one-line summary.
    """
    d = cfg.data
    limits = Limits(min_duration_s=min_duration_s(cfg))
    unlabelled = pd.DataFrame(columns=REPORT_COLUMNS)
    if d.source == "annotations":
        table = annotation_table(cfg)
        files = sorted(set(table["file"]))
    else:
        records = load_records(d)
        missing = records["label"].isna()
        unlabelled = pd.DataFrame({"file": records.loc[missing, "file"],
                                   "reason": f"unlabelled: the name does not match data.label_regex {d.label_regex!r}"})
        records = records[~missing]
        files = list(dict.fromkeys(records["file"]))
    info, bad = scan_files(files, limits, fail_fast=cfg.pipeline.fail_fast, mono=cfg.audio.mono)
    bad = pd.concat([unlabelled, bad], ignore_index=True) if len(unlabelled) else bad
    durations = dict(zip(info["file"], info["duration_s"]))
    if d.source == "annotations":
        good, problems = validate_annotations(table[table["file"].isin(durations)], durations)
        bad = pd.concat([bad, problems[["file", "reason"]].assign(
            reason=lambda t: "annotation: " + t["reason"].astype(str))], ignore_index=True)
        if cfg.train.task == "frames":
            records = frame_records(good, durations, cfg.audio.clip_s, d.negative_label)
        else:
            records = annotation_records(good, durations, cfg.audio.clip_s, d.negative_label,
                                         d.negatives_per_positive, d.negative_margin_s,
                                         records_seed(cfg), multilabel=cfg.train.task == "multilabel",
                                         call_windows=d.call_windows)
    else:
        records = records[records["file"].isin(durations)].reset_index(drop=True)
    # The rates build the resampling filters once; the durations size the decoded-audio cache.
    records = records.merge(info[["file", "sample_rate_hz", "duration_s"]], on="file", how="left")
    if records.empty:
        raise ConfigError(f"data: no usable examples ({len(bad)} bad files or annotations)")
    try:
        records = split_records(records, d.val_fraction, d.test_fraction, records_seed(cfg),
                                d.val_groups, d.test_groups)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    report = None
    if run_dir is not None:
        report = Path(run_dir) / "bad_files.csv"
        bad.to_csv(report, index=False)
    print(summarize(bad, len(files), report))
    return records, bad
