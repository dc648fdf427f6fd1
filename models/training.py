"""One training path for train.py and the tuner: records -> datasets -> compiled model -> fit
-> evaluation artifacts and export.

    data = prepare_run(cfg, run_dir)          # records, split manifest, labels.json
    sets = make_datasets(cfg, data)           # the tf.data pipelines for this config
    model = build_model(cfg, data.labels, total_steps)
    model.fit(sets.train, ..., callbacks=standard_callbacks(...))
    finish_run(model, cfg, data, sets, run_dir, train_s)   # metrics, plots, export/

The tuner rebuilds datasets and model per trial from the trial's config through the same
functions, so a tuned config trains identically with train.py.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from models.classifier import AudioClassifier, build_classifier
from models.registry import build_backbone, check_task
from pipeline.config import Config, dump_config
from pipeline.dataset import LabelSpec, make_dataset
from pipeline.frontend import frontend_output_shape
from pipeline.records import prepare_records
from pipeline.splits import write_manifest

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
    steps_per_epoch: int


def prepare_run(cfg: Config, run_dir: Path, quiet: bool = False) -> RunData:
    """Writes config.yaml, bad_files.csv, split_manifest.csv (+ sha256) and labels.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    records, _bad = prepare_records(cfg, run_dir)
    digest = write_manifest(records, run_dir)
    labels = LabelSpec.from_records(records, cfg.train.task, cfg.data.negative_label)
    write_labels(labels, run_dir)
    data = RunData(records, labels, digest, noise_files(cfg))
    if not quiet:
        sizes = ", ".join(f"{s} {len(data.part(s))}" for s in SPLITS)
        print(f"records: {len(records)} ({sizes}); labels: {', '.join(labels.names)}; manifest {digest}")
    return data


def noise_files(cfg: Config) -> list[str]:
    """Background recordings for noise mixing: augment.noise_glob under data.root. Listed
    whenever the glob is set (the tuner may turn mixing on for a config that has it off)."""
    if not (cfg.augment.enabled and cfg.augment.noise_glob):
        return []
    return sorted(str(p) for p in Path(cfg.data.root).glob(cfg.augment.noise_glob))


def steps_per_epoch(cfg: Config, data: RunData) -> int:
    """Training batches per epoch: one pass over the training split."""
    return max(1, len(data.part("train")) // cfg.pipeline.batch_size)


def write_labels(labels: LabelSpec, run_dir: Path) -> None:
    (run_dir / "labels.json").write_text(json.dumps({"names": list(labels.names), "task": labels.task}, indent=2))


def make_datasets(cfg: Config, data: RunData, data_service: str = "",
                  data_service_job: Optional[str] = None) -> Datasets:
    """One endless training stream (tf.data builds its iterator once instead of per epoch).

    `data_service`: a tf.data service dispatcher (HOST:PORT) that runs the input pipelines;
    `data_service_job`: the training stream's job name, shared by a multi-worker run's trainers.
    """
    train = make_dataset(data.part("train"), data.labels, cfg, training=True, noise_files=data.noise_files,
                         repeat=True, data_service=data_service, data_service_job=data_service_job)
    steps = steps_per_epoch(cfg, data)
    val = make_dataset(data.part("val"), data.labels, cfg, training=False, data_service=data_service)
    test = make_dataset(data.part("test"), data.labels, cfg, training=False, data_service=data_service)
    return Datasets(train, val, test, steps)


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


def learning_rate(cfg: Config, total_steps: int):
    if cfg.train.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.train.learning_rate, max(1, total_steps))
    return cfg.train.learning_rate


def compile_model(model: keras.Model, cfg: Config, labels: LabelSpec, total_steps: int = 1) -> None:
    rate = learning_rate(cfg, total_steps)
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(rate),
        "adamw": lambda: keras.optimizers.AdamW(rate),
        "sgd": lambda: keras.optimizers.SGD(rate, momentum=0.9),
    }
    if labels.task == "multiclass":
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.BinaryCrossentropy()
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    metrics += [keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall"),
                keras.metrics.AUC(curve="PR", name="pr_auc", multi_label=labels.task == "multilabel")]
    model.compile(optimizer=optimizers[cfg.train.optimizer](), loss=loss, metrics=metrics)


def build_model(cfg: Config, labels: LabelSpec, total_steps: int = 1) -> AudioClassifier:
    """Frontend + registry backbone, compiled. Call inside the strategy's scope."""
    check_task(cfg.model.name, labels.task)
    frames, bins = frontend_output_shape(cfg.frontend, cfg.audio.sample_rate_hz, cfg.audio.clip_samples)
    backbone = build_backbone(cfg.model, (frames, bins, 1), labels.num_outputs)
    model = build_classifier(backbone, cfg.frontend, cfg.augment, cfg.audio.sample_rate_hz,
                             cfg.audio.clip_samples, labels.task)
    compile_model(model, cfg, labels, total_steps)
    return model


def set_precision(cfg: Config) -> None:
    """float16 compute in the backbone under mixed precision; frontend and outputs stay float32."""
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.train.mixed_precision else "float32")


def predict_scores(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = [], []
    for x, y in dataset:
        scores.append(model(x, training=False).numpy())
        targets.append(y.numpy())
    if not scores:  # an empty split
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(scores), np.concatenate(targets)


def decisions(scores: np.ndarray, targets: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Class decisions: argmax for multi-class, score >= 0.5 for binary and multi-label."""
    if task == "multiclass":
        return targets.argmax(1), scores.argmax(1)
    if task == "binary":
        return (targets[:, 0] > 0.5).astype(int), (scores[:, 0] >= 0.5).astype(int)
    return (targets > 0.5).astype(int), (scores >= 0.5).astype(int)


def classification_metrics(scores: np.ndarray, targets: np.ndarray, labels: LabelSpec) -> tuple[dict, str]:
    """Accuracy, macro F1, PR-AUC and per-class precision/recall/F1, plus the text report."""
    from sklearn.metrics import (accuracy_score, average_precision_score, classification_report,
                                 f1_score, precision_recall_fscore_support)

    y_true, y_pred = decisions(scores, targets, labels.task)
    names = list(labels.names)
    single = labels.task != "multilabel"
    label_ids = list(range(len(names))) if single else None
    report = classification_report(y_true, y_pred, labels=label_ids, target_names=names, zero_division=0)
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=label_ids, zero_division=0)
    per_class = {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                        "support": int(support[i])} for i, name in enumerate(names)}
    onehot = targets if labels.task != "binary" else np.stack([1 - targets[:, 0], targets[:, 0]], 1)
    probs = scores if labels.task != "binary" else np.stack([1 - scores[:, 0], scores[:, 0]], 1)
    present = onehot.sum(0) > 0
    pr_auc = float(average_precision_score(onehot[:, present], probs[:, present], average="macro")) \
        if present.any() and len(targets) else float("nan")
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "pr_auc": pr_auc,
        "examples": int(len(targets)),
        "per_class": per_class,
    }
    return metrics, report


def inference_ms_per_example(model: keras.Model, clip_samples: int, batch: int = 32, repeats: int = 5) -> float:
    """Median wall time of one batched forward pass on raw waveforms, per example."""
    waves = tf.random.normal([batch, clip_samples], stddev=0.1)
    fn = tf.function(lambda x: model(x, training=False))
    fn(waves)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(waves).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times) / batch * 1000.0)


def export_savedmodel(model: AudioClassifier, clip_samples: int, path: Path) -> None:
    """SavedModel whose serving signature takes mono waveforms [batch, clip_samples] at the trained
    rate (float32, -1..1) and returns {"scores": [batch, classes]}; the frontend is inside."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda waveform: {"scores": model(waveform, training=False)},
        input_signature=[tf.TensorSpec([None, clip_samples], tf.float32, name="waveform")],
    )
    archive.write_out(str(path), verbose=False)


def standard_callbacks(cfg: Config, sets: Datasets, labels: LabelSpec, run_dir: Path,
                       chief: bool = True) -> list[keras.callbacks.Callback]:
    """Resume (BackupAndRestore), best-model checkpoint by validation loss (model.keras), early
    stopping, history.csv and TensorBoard (scalars, augmented input images, validation confusion
    matrix and PR curves, optional profiler). The best model is read back from model.keras after
    fit, so it is the best of the whole run even when the run was resumed. `chief=False` (other
    workers of a multi-worker run): only the callbacks that steer training, no files."""
    from models.callbacks import AtomicBackupAndRestore, InputImages, ResumableCheckpoint, ValidationImages

    steering = [AtomicBackupAndRestore(str(run_dir / "backup")),
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.train.early_stopping_patience)]
    if not chief:
        return steering
    logs = run_dir / "logs"
    profile = tuple(int(b) for b in cfg.train.profile_batches.split(",")) if cfg.train.profile_batches else 0
    # CSVLogger after the backup: a history.csv row means that epoch's backup is written.
    callbacks = steering + [
        ResumableCheckpoint(str(run_dir / "model.keras"), run_dir / "history.csv"),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(logs), profile_batch=profile),
        ValidationImages(sets.val, labels, logs),
    ]
    if cfg.train.image_examples > 0:
        callbacks.append(InputImages(sets.train, logs, cfg.train.image_examples))
    return callbacks


def read_history(run_dir: Path) -> pd.DataFrame:
    """history.csv with one row per finished epoch (a resumed run may have rewritten some)."""
    path = run_dir / "history.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    history = pd.read_csv(path)
    history = history[pd.to_numeric(history["epoch"], errors="coerce").notna()]
    history = history.astype(float).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return history.astype({"epoch": int}).reset_index(drop=True)


def finish_run(model: AudioClassifier, cfg: Config, data: RunData, sets: Datasets, run_dir: Path,
               train_s: float) -> dict:
    """Scores the evaluation split and writes metrics.json, classification_report.txt,
    confusion_matrix.png, training_curves.png and export/ (SavedModel on raw waveforms)."""
    from models import reports

    split = data.eval_split
    scores, targets, labels = data.labels.per_output(*predict_scores(model, sets.test if split == "test" else sets.val))
    metrics, report = classification_metrics(scores, targets, labels)
    metrics = {
        "split": split,
        **metrics,
        "model": cfg.model.name,
        "parameters": int(model.backbone.count_params()),
        "train_seconds": round(train_s, 1),
        "inference_ms_per_example": round(inference_ms_per_example(model, cfg.audio.clip_samples), 3),
        "manifest_sha256": data.digest,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "classification_report.txt").write_text(report)
    names = list(labels.names)
    if labels.task != "multilabel":
        y_true, y_pred = decisions(scores, targets, labels.task)
        matrix = reports.confusion_matrix(y_true, y_pred, len(names))
        (run_dir / "confusion_matrix.png").write_bytes(
            reports.confusion_matrix_png(matrix, names, f"{split} split, {len(targets)} examples"))
    history = read_history(run_dir)
    if len(history):
        (run_dir / "training_curves.png").write_bytes(reports.training_curves_png(history))
    export_savedmodel(model, cfg.audio.clip_samples, run_dir / "export")
    return metrics


def summary_table(metrics: dict) -> str:
    """The console summary printed at the end of a run."""
    rows = [
        ("split", f"{metrics['split']} ({metrics['examples']} examples)"),
        ("accuracy", f"{metrics['accuracy']:.3f}"),
        ("macro F1", f"{metrics['macro_f1']:.3f}"),
        ("PR-AUC", f"{metrics['pr_auc']:.3f}"),
        ("model", f"{metrics['model']} ({metrics['parameters']:,} parameters)"),
        ("training", f"{metrics['train_seconds']:.0f} s"),
        ("inference", f"{metrics['inference_ms_per_example']:.2f} ms per example"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append(f"{'class':<16} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>5}")
    for name, m in metrics["per_class"].items():
        lines.append(f"{name[:16]:<16} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>5d}")
    return "\n".join(lines)
