"""Pictures and TensorBoard summaries of a run: confusion matrix, training curves, spectrogram
grids, PR curves. Plot functions take arrays and return PNG bytes or image arrays."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def confusion_matrix_png(matrix: np.ndarray, names: Sequence[str], title: str = "") -> bytes:
    plt = _pyplot()
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = matrix.sum(1, keepdims=True)
    ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                color="white" if n > 0.5 * max(rows[i, 0], 1) else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def training_curves_png(history: pd.DataFrame) -> bytes:
    """One panel per metric with its train and validation curves (history: epoch + metric columns)."""
    plt = _pyplot()
    metrics = [c for c in history.columns if c != "epoch" and not c.startswith("val_") and c != "learning_rate"]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.2 * max(1, len(metrics)), 3), squeeze=False)
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for ax, name in zip(axes[0], metrics):
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="val")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    return _png(fig)


def spectrogram_grid(features: np.ndarray, columns: int = 4) -> np.ndarray:
    """[n, frames, bins, 1] -> one [1, H, W, 1] image in [0, 1]: each spectrogram scaled to its
    own range, frequency upwards, time to the right, separated by a 2-pixel border."""
    n = len(features)
    rows = -(-n // columns)
    frames, bins = features.shape[1], features.shape[2]
    grid = np.ones((rows * (bins + 2), columns * (frames + 2)), np.float32)
    for k, spec in enumerate(features[..., 0]):
        lo, hi = float(spec.min()), float(spec.max())
        image = (spec - lo) / (hi - lo) if hi > lo else np.zeros_like(spec)
        r, c = divmod(k, columns)
        grid[r * (bins + 2): r * (bins + 2) + bins, c * (frames + 2): c * (frames + 2) + frames] = image.T[::-1]
    return grid[None, :, :, None]


def pr_curve_summary(name: str, labels: np.ndarray, scores: np.ndarray, step: int,
                     num_thresholds: int = 101) -> None:
    """Writes a TensorBoard PR-curve summary (the pr_curves plugin's data layout) to the
    default writer: rows TP, FP, TN, FN, precision, recall at evenly spaced thresholds."""
    from tensorboard.plugins.pr_curve import metadata

    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    thresholds = np.linspace(0.0, 1.0, num_thresholds)
    predicted = scores[None, :] >= thresholds[:, None]
    tp = (predicted & labels[None, :]).sum(1).astype(np.float64)
    fp = (predicted & ~labels[None, :]).sum(1).astype(np.float64)
    fn = labels.sum() - tp
    tn = (~labels).sum() - fp
    precision = tp / np.maximum(tp + fp, 1.0)
    recall = tp / np.maximum(tp + fn, 1.0)
    data = np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)
    summary_metadata = metadata.create_summary_metadata(display_name=name, description="",
                                                        num_thresholds=num_thresholds)
    tf.summary.write(name, tf.constant(data), step=step, metadata=summary_metadata)
