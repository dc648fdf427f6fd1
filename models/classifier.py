"""AudioClassifier, the inference model: raw waveforms in, scores out (frontend + backbone + head).

Input: mono float32 waveforms [batch, samples] at the trained rate. The model carries what a user
of its file needs without the run's config (as Koogu's saved models do): the class names, the
task, the sample rate, the clip length and the frontend settings. Training machinery
(augmentation, the batch stage) lives in models.training.trainer.Trainer, which wraps this model
and is never saved.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import tensorflow as tf

import models.backbones.registry  # noqa: F401  (registers every backbone's layers for load_model)
from pipeline.config import FrontendConfig
from pipeline.features.frontend import Frontend

ACTIVATIONS = {"binary": "sigmoid", "multilabel": "sigmoid", "multiclass": "softmax", "frames": "sigmoid"}


@keras.saving.register_keras_serializable(package="bioacoustics")
class AudioClassifier(keras.Model):
    def __init__(self, backbone: keras.Model, frontend: dict, sample_rate_hz: int, task: str = "multiclass",
                 class_names: Sequence[str] = (), clip_samples: int = 0, **kwargs):
        # Files written before the inference model held only inference also saved the
        # augmentation settings; they mean nothing here.
        kwargs.pop("augment", None)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.frontend_config = dict(frontend)
        self.sample_rate_hz = int(sample_rate_hz)
        self.task = task
        self.class_names = tuple(class_names)
        self.clip_samples = int(clip_samples)
        self.frontend = Frontend(self.frontend_config, self.sample_rate_hz, name="frontend")
        self.activation = keras.layers.Activation(ACTIVATIONS[task], dtype="float32", name="scores")

    def call(self, waves, training=False):
        return self.scores(self.frontend(waves), training=training)  # [batch, outputs]

    def scores(self, features, training=False):
        """Features [batch, frames, bins, 1] -> scores [batch, outputs] (frame models: [batch,
        frames, outputs])."""
        return self.activation(self.backbone(features, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "frontend": self.frontend_config,
            "sample_rate_hz": self.sample_rate_hz,
            "task": self.task,
            "class_names": list(self.class_names),
            "clip_samples": self.clip_samples,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_classifier(backbone: keras.Model, frontend: FrontendConfig, sample_rate_hz: int, clip_samples: int,
                     task: str, class_names: Sequence[str] = ()) -> AudioClassifier:
    model = AudioClassifier(backbone, dataclasses.asdict(frontend), sample_rate_hz, task, class_names,
                            clip_samples, name="audio_classifier")
    model(tf.zeros([1, clip_samples]))
    return model


def load_classifier(path) -> AudioClassifier:
    """An AudioClassifier saved as .keras (a run's model.keras)."""
    return keras.saving.load_model(path)
