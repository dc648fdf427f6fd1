"""What a finished run leaves for people and other programs: metrics.json, the classification
report, the confusion matrix and training curves, and export/ (a SavedModel on raw waveforms that
carries its class names and audio settings), and MODEL_LICENCE.txt when pretrained weights carry terms."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from models.backbones.registry import LICENCE_NOTICES
from models.classifier import AudioClassifier
from models.training import reports
from models.training.evaluation import classification_metrics, decisions, inference_ms_per_example, predict_scores
from models.training.setup import Datasets, RunData
from models.training.trainer import Trainer
from pipeline.atomic import write_json, write_text
from pipeline.config import Config
from pipeline.features.stage import BatchStage
from pipeline.records.labels import LabelSpec


# Beside model.keras and in export/assets when the model's weights carry terms of their own.
LICENCE_FILE = "MODEL_LICENCE.txt"


def read_history(run_dir: Path) -> pd.DataFrame:
    """history.csv with one row per finished epoch (a resumed run may have rewritten some)."""
    path = run_dir / "history.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    history = pd.read_csv(path)
    history = history[pd.to_numeric(history["epoch"], errors="coerce").notna()]
    history = history.astype(float).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return history.astype({"epoch": int}).reset_index(drop=True)


def metadata(model: AudioClassifier) -> dict:
    """What a user of the model needs besides the model: its outputs and its input."""
    return {"class_names": list(model.class_names), "task": model.task, "sample_rate_hz": model.sample_rate_hz,
            "clip_samples": model.clip_samples, "context_samples": model.framing.context_samples,
            "input_samples": model.framing.input_samples, "frontend": model.frontend_config}


def export_savedmodel(model: AudioClassifier, path: Path) -> None:
    """SavedModel whose `serve` signature takes mono waveforms at the trained rate (float32, -1..1),
    each a clip with `context_samples` of the recording on either side ([batch, input_samples],
    pipeline.features.framing; zeros where there is no audio), and returns {"scores": [batch,
    outputs]} (the frontend is inside); its `metadata` signature returns the class names, task,
    sample rate, clip and input lengths (also in assets/metadata.json)."""
    info = metadata(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda waveform: {"scores": model(waveform, training=False)},
        input_signature=[tf.TensorSpec([None, model.framing.input_samples], tf.float32, name="waveform")],
    )
    archive.add_endpoint(name="metadata", fn=tf.function(
        lambda: {"class_names": tf.constant(info["class_names"], tf.string), "task": tf.constant(info["task"]),
                 "sample_rate_hz": tf.constant(info["sample_rate_hz"], tf.int64),
                 "clip_samples": tf.constant(info["clip_samples"], tf.int64),
                 "input_samples": tf.constant(info["input_samples"], tf.int64)}, input_signature=[]))
    archive.write_out(str(path), verbose=False)
    write_json(info, Path(path) / "assets" / "metadata.json")


def scorer(model: AudioClassifier, cfg: Config) -> Trainer:
    """`model` wrapped to score a run's evaluation batches (raw audio or features), without augmentation."""
    return Trainer(model, BatchStage(model.frontend, cfg.augment, cfg.audio.sample_rate_hz))


def write_confusion_matrix(scores: np.ndarray, targets: np.ndarray, labels: LabelSpec, run_dir: Path,
                           title: str) -> None:
    """run_dir/confusion_matrix.png of the class decisions (none for multi-label outputs)."""
    scores, targets, labels = labels.per_output(scores, targets)
    if labels.task != "multilabel":
        y_true, y_pred = decisions(scores, targets, labels.task)
        matrix = reports.confusion_matrix(y_true, y_pred, len(labels.names))
        (run_dir / "confusion_matrix.png").write_bytes(reports.confusion_matrix_png(matrix, list(labels.names), title))


def finish_run(model: AudioClassifier, cfg: Config, data: RunData, sets: Datasets, run_dir: Path,
               train_s: float) -> dict:
    """Scores the evaluation split with `model` (the best epoch's) and writes metrics.json,
    classification_report.txt, confusion_matrix.png, training_curves.png and export/."""
    split = data.eval_split
    scores, targets = predict_scores(scorer(model, cfg), sets.test if split == "test" else sets.val)
    metrics, report = classification_metrics(scores, targets, data.labels)
    metrics = {
        "split": split,
        **metrics,
        "model": cfg.model.name,
        "parameters": int(model.backbone.count_params()),
        "train_seconds": round(train_s, 1),
        "inference_ms_per_example": round(inference_ms_per_example(model, model.framing.input_samples), 3),
        "manifest_sha256": data.digest,
    }
    write_json(metrics, run_dir / "metrics.json")
    write_text(run_dir / "classification_report.txt", report)
    write_confusion_matrix(scores, targets, data.labels, run_dir, f"{split} split, {len(targets)} examples")
    history = read_history(run_dir)
    if len(history):
        (run_dir / "training_curves.png").write_bytes(reports.training_curves_png(history))
    export_savedmodel(model, run_dir / "export")
    if cfg.model.name in LICENCE_NOTICES:
        notice = LICENCE_NOTICES[cfg.model.name]()
        write_text(run_dir / LICENCE_FILE, notice)
        write_text(run_dir / "export" / "assets" / LICENCE_FILE, notice)
    return metrics

