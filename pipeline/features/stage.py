"""The batch stage: waveform batch -> features, with augmentation in training only.

Run in a tf.data map (pipeline.placement "pipeline") or inside the trainer's step on its device
(placement "device", the GPU when there is one): the same object, the same features.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from pipeline.config import AugmentConfig
from pipeline.features import augment as aug


class BatchStage:
    """Waveform batch -> features: augmentation (training only) and the frontend.

    The same object runs in a tf.data map (placement "pipeline") or inside the model's train
    step (placement "device"); both give identical features for the same batch and seed.
    """

    def __init__(self, frontend: Callable[[tf.Tensor], tf.Tensor], augment: AugmentConfig, sample_rate_hz: int):
        """`frontend`: windows with their context [batch, input_samples] -> features [batch,
        frames, bins, channels]; the model's own frontend layer (one frontend for training,
        detection and export)."""
        self.frontend = frontend
        self.augment = augment
        self.sample_rate_hz = sample_rate_hz

    def features(self, waves: tf.Tensor) -> tf.Tensor:
        return self.frontend(waves)  # [batch, frames, bins, channels]

    def __call__(self, batch: dict, labels: tf.Tensor, training: bool):
        waves = batch["audio"]  # [batch, input_samples]
        if not (training and self.augment.enabled):
            return self.features(waves), labels
        seed = tf.cast(batch["seed"], tf.int64)
        wave_seed, spec_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        waves, labels = aug.augment_waveforms(waves, labels, wave_seed, self.augment,
                                              self.sample_rate_hz, noise=batch.get("noise"))
        spec = self.features(waves)  # [batch, frames, bins, 1]
        spec = aug.augment_spectrograms(spec, spec_seed, self.augment)
        return spec, labels
