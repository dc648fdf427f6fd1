"""Trainer: the inference model wrapped with the batch stage, for fit, evaluate and predict.

Batches come from pipeline.datasets.build as (inputs, targets) with `inputs` either
{"audio", "seed"?, "noise"?} (placement "device": the batch stage runs here, inside the step, on
the trainer's device) or {"features"} (placement "pipeline": it ran in tf.data). Training steps
augment; evaluation and prediction do not. Only the wrapped AudioClassifier is ever saved.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from models.classifier import AudioClassifier
from pipeline.features.stage import BatchStage


class Trainer(keras.Model):
    def __init__(self, classifier: AudioClassifier, stage: BatchStage, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.stage = stage

    def features(self, inputs: dict, targets: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """(features [batch, frames, bins, 1], targets) of a batch; training: with augmentation
        (mixup changes the targets)."""
        if "features" in inputs:
            return inputs["features"], targets
        return self.stage(inputs, targets, training=training)

    def call(self, inputs, training=False):
        """Scores of a batch's inputs (a dict, as above) or of features [batch, frames, bins, 1]."""
        if isinstance(inputs, dict):
            inputs = self.features(inputs, None, training=False)[0]
        return self.classifier.scores(inputs, training=training)

    def train_step(self, data):
        inputs, targets, *rest = data  # rest: sample weights, if any
        features, targets = self.features(inputs, targets, training=True)
        return super().train_step((features, targets, *rest))

    def test_step(self, data):
        inputs, targets, *rest = data
        features, targets = self.features(inputs, targets, training=False)
        return super().test_step((features, targets, *rest))
