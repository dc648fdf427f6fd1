"""Keras callbacks: pictures for TensorBoard each epoch (the augmented input spectrograms the
model trains on; the validation confusion matrix and PR curves) and resume-safe checkpoints."""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from models import reports
from pipeline.dataset import LabelSpec


class InputImages(keras.callbacks.Callback):
    """A grid of augmented training spectrograms (the model's real input) each epoch."""

    def __init__(self, train_ds: tf.data.Dataset, log_dir: Path, examples: int = 16):
        super().__init__()
        self.train_ds = train_ds
        self.iterator = None  # opened at the first epoch's end: no second pipeline at start-up
        self.examples = examples
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "images"))
        self.stage = None

    def on_epoch_end(self, epoch, logs=None):
        if self.iterator is None:
            self.iterator = iter(self.train_ds)
        x, y = next(self.iterator)[:2]
        if isinstance(x, dict):
            if self.stage is None:
                self.stage = tf.function(lambda x, y: self.model.stage(x, y, training=True)[0])
            x = self.stage(x, y)
        features = np.asarray(x)[: self.examples]
        with self.writer.as_default():
            tf.summary.image("augmented_inputs", reports.spectrogram_grid(features), step=epoch)
        self.writer.flush()


class ValidationImages(keras.callbacks.Callback):
    """Validation confusion matrix image and per-class PR curves each epoch."""

    def __init__(self, val_ds: tf.data.Dataset, labels: LabelSpec, log_dir: Path):
        super().__init__()
        self.val_ds = val_ds
        self.labels = labels
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "validation_images"))

    def on_epoch_end(self, epoch, logs=None):
        from models.training import decisions, predict_scores

        scores, targets, labels = self.labels.per_output(*predict_scores(self.model, self.val_ds))
        if not len(targets):
            return
        with self.writer.as_default():
            if labels.task != "multilabel":
                y_true, y_pred = decisions(scores, targets, labels.task)
                names = list(labels.names)
                matrix = reports.confusion_matrix(y_true, y_pred, len(names))
                png = reports.confusion_matrix_png(matrix, names, f"validation, epoch {epoch + 1}")
                tf.summary.image("confusion_matrix", tf.image.decode_png(png)[None], step=epoch)
            for i, name in enumerate(labels.output_names):
                reports.pr_curve_summary(f"pr/{name}", targets[:, i] > 0.5, scores[:, i], epoch)
        self.writer.flush()


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose files are replaced atomically, so a run killed while the backup
    is written still restarts from the previous epoch's backup instead of a torn file."""

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights_tmp = backup / "saving.weights.h5"
        self.model.save_weights(str(weights_tmp), overwrite=True)
        os.replace(weights_tmp, self._weights_path)
        meta_tmp = backup / "training_metadata.json.tmp"
        meta_tmp.write_text(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))
        os.replace(meta_tmp, self._training_metadata_path)


class ResumableCheckpoint(keras.callbacks.ModelCheckpoint):
    """Best-model checkpoint that remembers, across a resumed run, the best monitored value of
    the epochs before the interruption (read from history.csv)."""

    def __init__(self, filepath, history_csv: Path, monitor: str = "val_loss"):
        super().__init__(filepath, monitor=monitor, save_best_only=True)
        self.history_csv = Path(history_csv)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if Path(self.filepath).exists() and self.history_csv.exists():
            try:
                values = pd.read_csv(self.history_csv)[self.monitor].dropna()
            except (KeyError, ValueError, pd.errors.EmptyDataError):
                return
            if len(values):
                self.best = float(values.min() if self.monitor_op == np.less else values.max())
