"""AudioClassifier: frontend + registry backbone + output activation, one Keras model.

Inference input is a raw mono waveform batch [batch, samples] at the trained rate, so the
saved model and the exported SavedModel carry their own frontend. In training, a batch may
instead arrive as a dict from the "device" placement ({"audio", "seed", "noise"?}); the
train step then runs the shared BatchStage (augmentation + frontend) on this model's device.
Batches that already hold features [batch, frames, bins, 1] ("pipeline" placement) skip the
frontend.
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from pipeline.config import AugmentConfig, FrontendConfig
from pipeline.dataset import BatchStage
from pipeline.frontend import Frontend

ACTIVATIONS = {"binary": "sigmoid", "multilabel": "sigmoid", "multiclass": "softmax", "frames": "sigmoid"}


@keras.saving.register_keras_serializable(package="bioacoustics")
class AudioClassifier(keras.Model):
    def __init__(self, backbone: keras.Model, frontend: dict, augment: dict, sample_rate_hz: int,
                 task: str = "multiclass", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.frontend_config = dict(frontend)
        self.augment_config = dict(augment)
        self.sample_rate_hz = int(sample_rate_hz)
        self.task = task
        self.frontend = Frontend(self.frontend_config, self.sample_rate_hz, name="frontend")
        self.activation = keras.layers.Activation(ACTIVATIONS[task], dtype="float32", name="scores")
        self.stage = BatchStage(FrontendConfig(**self.frontend_config),
                                AugmentConfig(**self.augment_config), self.sample_rate_hz)

    def call(self, inputs, training=False):
        x = inputs["audio"] if isinstance(inputs, dict) else inputs
        if len(x.shape) == 2:
            x = self.frontend(x)  # [batch, frames, bins, 1]
        return self.activation(self.backbone(x, training=training))  # [batch, classes]

    def train_step(self, data):
        x, y, rest = data[0], data[1], tuple(data[2:])  # rest: sample weights, if any
        if isinstance(x, dict):
            x, y = self.stage(x, y, training=True)  # [batch, frames, bins, 1]
        return super().train_step((x, y) + rest)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "frontend": self.frontend_config,
            "augment": self.augment_config,
            "sample_rate_hz": self.sample_rate_hz,
            "task": self.task,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_classifier(backbone: keras.Model, frontend: FrontendConfig, augment: AugmentConfig,
                     sample_rate_hz: int, clip_samples: int, task: str) -> AudioClassifier:
    model = AudioClassifier(backbone, dataclasses.asdict(frontend), dataclasses.asdict(augment),
                            sample_rate_hz, task, name="audio_classifier")
    model(tf.zeros([1, clip_samples]))
    return model
