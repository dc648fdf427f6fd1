"""A run's data: records split and written down, the label encoding, and the tf.data pipelines.

    data = prepare_run(cfg, run_dir)     # records, split manifest, labels.json, bad_files.csv
    sets = make_datasets(cfg, data)      # the pipelines for this config

The tuner prepares the records once and builds the datasets per trial from the trial's config.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pandas as pd
import tensorflow as tf

from models.backbones.registry import model_framing, model_frontend
from pipeline.config import Config, dump_config
from pipeline.datasets import service
from pipeline.datasets.build import make_dataset
from pipeline.records.labels import LabelSpec
from pipeline.records.prepare import prepare_records
from pipeline.records.splits import write_manifest

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class RunData:
    """The records of a run, split, and the label encoding."""

    records: pd.DataFrame
    labels: LabelSpec
    digest: str
    noise_files: list[str]

    def part(self, split: str) -> pd.DataFrame:
        return self.records[self.records["split"] == split]

    @property
    def eval_split(self) -> str:
        """The split final metrics are computed on: test, or val when there is no test split."""
        return "test" if len(self.part("test")) else "val"


@dataclasses.dataclass
class Datasets:
    train: tf.data.Dataset  # endless; an epoch is steps_per_epoch batches
    val: tf.data.Dataset
    test: tf.data.Dataset
    # The training split without augmentation, endless: BatchNormalization statistics are
    # computed over it (models.training.callbacks.BatchStatistics).
    statistics: tf.data.Dataset
    steps_per_epoch: int


def prepare_run(cfg: Config, run_dir: Path, quiet: bool = False) -> RunData:
    """Writes config.yaml, bad_files.csv, split_manifest.csv (+ sha256) and labels.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    records, _bad = prepare_records(cfg, run_dir)
    digest = write_manifest(records, run_dir)
    labels = LabelSpec.from_records(records, cfg.train.task, cfg.data.negative_label)
    labels.save(run_dir)
    data = RunData(records, labels, digest, noise_files(cfg))
    if not quiet:
        sizes = ", ".join(f"{s} {len(data.part(s))}" for s in SPLITS)
        print(f"records: {len(records)} ({sizes}); labels: {', '.join(labels.names)}; manifest {digest}")
    return data


def load_run_data(cfg: Config, run_dir: Path) -> RunData:
    """The RunData prepare_run wrote into run_dir, read back without scanning the archive again."""
    records = pd.read_csv(run_dir / "split_manifest.csv", keep_default_na=True)
    if "events" in records:
        records["events"] = records["events"].fillna("[]")
    digest = (run_dir / "split_manifest.sha256").read_text().strip()
    return RunData(records, LabelSpec.load(run_dir), digest, noise_files(cfg))


def noise_files(cfg: Config) -> list[str]:
    """Background recordings for noise mixing: augment.noise_glob under data.root, when
    augmentation is on and the glob is set (whether noise is mixed is augment.noise_prob's call,
    so the tuner may turn mixing on for a config that has it off)."""
    if not (cfg.augment.enabled and cfg.augment.noise_glob):
        return []
    return sorted(str(p) for p in Path(cfg.data.root).glob(cfg.augment.noise_glob))


def steps_per_epoch(cfg: Config, data: RunData) -> int:
    """Training batches per epoch: one pass over the training split."""
    return max(1, len(data.part("train")) // cfg.pipeline.batch_size)


def make_datasets(cfg: Config, data: RunData, data_service: str = "",
                  data_service_job: Optional[str] = None) -> Datasets:
    """One endless training stream (tf.data builds its iterator once instead of per epoch).

    `data_service`: a tf.data service dispatcher (HOST:PORT) whose workers run the input
    pipelines (pipeline.datasets.service); `data_service_job`: the training stream's job name,
    shared by a multi-worker run's trainers.
    """
    if data_service:
        service.check_wav_inputs(list(data.records["file"]) + list(data.noise_files))

    def served(ds: tf.data.Dataset, job: Optional[str] = None) -> tf.data.Dataset:
        return service.distribute(ds, data_service, job_name=job) if data_service else ds

    frames = model_framing(cfg)
    frontend = model_frontend(cfg, frames) if cfg.pipeline.placement == "pipeline" else None

    def dataset(split: str, training: bool, repeat: bool = False) -> tf.data.Dataset:
        return make_dataset(data.part(split), data.labels, cfg, frames, training,
                            noise_files=data.noise_files if training else (), repeat=repeat, frontend=frontend)

    train = served(dataset("train", training=True, repeat=True), data_service_job)
    val = served(dataset("val", training=False))
    test = served(dataset("test", training=False))
    statistics = dataset("train", training=False, repeat=True)
    return Datasets(train, val, test, statistics, steps_per_epoch(cfg, data))


def class_weights(cfg: Config, data: RunData) -> Optional[dict[int, float]]:
    """Inverse-frequency loss weights from the training split (train.balance: class_weights)."""
    if cfg.train.balance != "class_weights" or data.labels.task == "frames":
        return None
    train = data.part("train")
    counts = train["label"].value_counts()
    index = {name: i for i, name in enumerate(data.labels.names)}
    if data.labels.task == "binary":
        # One output: weights by target value (0 = negative class, 1 = the call).
        return {int(index[name] > 0): len(train) / (len(counts) * n) for name, n in counts.items()}
    return {index[name]: len(train) / (len(counts) * n) for name, n in counts.items()}
