"""Scores of a split and the metrics a run reports, the same each epoch (validation) and at the end
(metrics.json): accuracy, macro F1, PR-AUC, per-class precision/recall/F1."""
from __future__ import annotations

import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from pipeline.records.labels import LabelSpec


def scoring_step(model: keras.Model) -> Callable:
    """The model's forward pass (no augmentation) as one traced graph, for predict_scores.

    Called eagerly, a model runs op by op from Python, a recurrent layer's every time step too:
    validating the small CRNN of the frame tests took 6-10 s an epoch that way and 0.1 s through
    a graph traced once per run. reduce_retracing: the last, smaller batch of a split does not
    add a graph for each new size."""
    return tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)


def predict_scores(model: keras.Model, dataset: tf.data.Dataset,
                   step: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, targets) of every batch of a finite dataset, by a Trainer (no augmentation).
    `step`: the model's scoring_step, kept by callers that score every epoch (tracing it costs
    about a second); by default one is traced for this call."""
    step = step or scoring_step(model)
    scores, targets = [], []
    for inputs, y in dataset:
        scores.append(step(inputs).numpy())
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
    """Accuracy, macro F1, PR-AUC and per-class precision/recall/F1, plus the text report.

    Frame outputs [n, frames, 2K] are scored as multi-label rows (LabelSpec.per_output)."""
    from sklearn.metrics import (accuracy_score, average_precision_score, classification_report,
                                 f1_score, precision_recall_fscore_support)

    scores, targets, labels = labels.per_output(scores, targets)
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
