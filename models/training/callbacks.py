"""Keras callbacks of a training run: BatchNormalization statistics before each validation, the
validation metrics the run reports (macro F1, PR-AUC) with their TensorBoard pictures, the best
epoch's model and early stopping by train.monitor, and the augmented inputs as images."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from models.training import reports
from models.training.evaluation import classification_metrics, decisions, predict_scores, scoring_step
from pipeline.atomic import atomic_write
from pipeline.records.labels import LabelSpec

# Examples over which BatchNormalization statistics are recomputed (at most one pass over the
# training split): each gives a channel's values at every cell of its feature map, so the means and
# variances are settled long before, at a fraction of an epoch's cost.
STATISTICS_EXAMPLES = 256


class BatchStatistics(keras.callbacks.Callback):
    """Recomputes every BatchNormalization layer's statistics before each validation: the mean of
    their batch means and variances in training mode, over `batches` batches of the training split
    without augmentation ("precise BN", Wu & Johnson 2021).

    The moving averages Keras keeps (momentum 0.99) weigh the last ~100 steps and start from 0 and
    1: with a few steps per epoch they lag far behind the weights, and validation scores jump from
    epoch to epoch while training scores climb. The model saved after a validation carries the
    recomputed statistics; training then goes on updating them as before.
    """

    def __init__(self, dataset: tf.data.Dataset, batches: int):
        super().__init__()
        self.dataset = dataset
        self.batches = max(1, batches)
        self.iterator = None  # opened at the first validation: no extra pipeline at start-up
        self.step = None

    def recompute(self) -> None:
        layers = [layer for layer in batchnorm_layers(self.model.classifier.backbone) if layer.trainable]
        if not layers:
            return
        if self.iterator is None:
            self.iterator = iter(self.dataset)
        momentum = [layer.momentum for layer in layers]
        if self.step is None:
            # Traced once with momentum 0: each call leaves the batch's own statistics in the
            # moving averages, which are read back and averaged here.
            for layer in layers:
                layer.momentum = 0.0
            trainer = self.model

            def step(inputs, targets):
                features, _ = trainer.features(inputs, targets, training=False)
                trainer(features, training=True)
                return [layer.moving_mean.value for layer in layers] + [layer.moving_variance.value for layer in layers]
            self.step = tf.function(step)
        totals = None
        for _ in range(self.batches):
            inputs, targets = next(self.iterator)
            values = [v.numpy().astype(np.float64) for v in self.step(inputs, targets)]
            totals = values if totals is None else [a + b for a, b in zip(totals, values)]
        for layer, mean, variance, m in zip(layers, totals[:len(layers)], totals[len(layers):], momentum):
            layer.moving_mean.assign(mean / self.batches)
            layer.moving_variance.assign(variance / self.batches)
            layer.momentum = m

    def on_test_begin(self, logs=None):
        self.recompute()


def batchnorm_layers(model: keras.Model) -> list:
    """Every BatchNormalization layer of a model, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += batchnorm_layers(layer)
    return found


def epoch_rank(logs: dict, monitor: str) -> tuple[float, float]:
    """An epoch's standing by `monitor` (higher is better, NaN worst), ties broken by the lower
    validation loss."""
    def value(name: str, sign: float) -> float:
        v = float(logs.get(name, math.nan))
        return -math.inf if math.isnan(v) else sign * v
    return value(monitor, -1.0 if monitor.endswith("loss") else 1.0), value("val_loss", -1.0)


class ValidationScores(keras.callbacks.Callback):
    """Scores the validation set once per epoch with the metrics of metrics.json: adds val_macro_f1
    and val_pr_auc to the epoch's logs (callbacks after this one see them), and writes the
    confusion matrix and a PR curve per output to TensorBoard (`log_dir`; None: no pictures)."""

    def __init__(self, val_ds: tf.data.Dataset, labels: LabelSpec, log_dir: Optional[Path] = None):
        super().__init__()
        self.val_ds = val_ds
        self.labels = labels
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "validation_images")) if log_dir else None
        self.step = None

    def set_model(self, model):
        super().set_model(model)
        self.step = scoring_step(model)  # traced at the first epoch's end, then reused

    def on_epoch_end(self, epoch, logs=None):
        scores, targets = predict_scores(self.model, self.val_ds, self.step)
        if not len(targets):
            return
        metrics, _ = classification_metrics(scores, targets, self.labels)
        if logs is not None:
            logs["val_macro_f1"] = metrics["macro_f1"]
            logs["val_pr_auc"] = metrics["pr_auc"]
        if self.writer is not None:
            self._pictures(epoch, *self.labels.per_output(scores, targets))

    def _pictures(self, epoch: int, scores: np.ndarray, targets: np.ndarray, labels: LabelSpec) -> None:
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


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the trainer's AudioClassifier to `path` (atomically) whenever an epoch ranks above
    every earlier one (epoch_rank), including, after a resume, the epochs in history.csv.
    keep="last" (train.keep) saves every epoch instead: the file holds the last one trained."""

    def __init__(self, path: Path, monitor: str, history_csv: Optional[Path] = None, keep: str = "best"):
        super().__init__()
        if keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
        self.path = Path(path)
        self.monitor = monitor
        self.history_csv = history_csv
        self.keep = keep
        self.best = (-math.inf, -math.inf)

    def on_train_begin(self, logs=None):
        if self.path.exists() and self.history_csv is not None and Path(self.history_csv).exists():
            try:
                history = pd.read_csv(self.history_csv)
            except (ValueError, pd.errors.EmptyDataError):
                return
            for row in history.to_dict("records"):
                self.best = max(self.best, epoch_rank(row, self.monitor))

    def on_epoch_end(self, epoch, logs=None):
        rank = epoch_rank(logs or {}, self.monitor)
        if self.keep == "last" or rank > self.best:
            self.best = rank
            atomic_write(self.path, self.model.classifier.save)


class EarlyStopping(keras.callbacks.Callback):
    """Stops training when `monitor` has not improved for `patience` epochs in a row (NaN never
    improves). The best-epoch checkpoint breaks ties; stopping goes by the monitor alone."""

    def __init__(self, monitor: str, patience: int):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.best = -math.inf
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best, self.wait = -math.inf, 0

    def on_epoch_end(self, epoch, logs=None):
        value = epoch_rank(logs or {}, self.monitor)[0]
        if value > self.best:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.model.stop_training = True


class InputImages(keras.callbacks.Callback):
    """A grid of augmented training spectrograms (the model's real input) each epoch."""

    def __init__(self, train_ds: tf.data.Dataset, log_dir: Path, examples: int = 16):
        super().__init__()
        self.train_ds = train_ds
        self.iterator = None  # opened at the first epoch's end: no second pipeline at start-up
        self.examples = examples
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "images"))
        self.features = None

    def on_epoch_end(self, epoch, logs=None):
        if self.iterator is None:
            self.iterator = iter(self.train_ds)
            self.features = tf.function(lambda x, y: self.model.features(x, y, training=True)[0])
        inputs, targets = next(self.iterator)
        features = np.asarray(self.features(inputs, targets))[: self.examples]
        with self.writer.as_default():
            tf.summary.image("augmented_inputs", reports.spectrogram_grid(features), step=epoch)
        self.writer.flush()
