"""AudioClassifier, the inference model: raw waveforms in, scores out (frontend + backbone + head).

Input: mono float32 windows with their context [batch, framing.input_samples] at the trained
rate (pipeline.features.framing: the clip and real audio on each side). The model carries what a
user of its file needs without the run's config (as Koogu's saved models do): the class names,
the task, the sample rate, the clip length, the framing and the frontend settings. Training
machinery (augmentation, the batch stage) lives in models.training.trainer.Trainer, which wraps
this model and is never saved.
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from typing import Optional, Sequence

import keras
import tensorflow as tf

import models.backbones.registry  # noqa: F401  (registers every backbone's layers for load_model)
from pipeline.config import FrontendConfig
from pipeline.features.framing import Framing, legacy_framing
from pipeline.features.frontend import Frontend

ACTIVATIONS = {"binary": "sigmoid", "multilabel": "sigmoid", "multiclass": "softmax", "frames": "sigmoid"}


@keras.saving.register_keras_serializable(package="bioacoustics")
class AudioClassifier(keras.Model):
    def __init__(self, backbone: keras.Model, frontend: dict | keras.layers.Layer, sample_rate_hz: int,
                 task: str = "multiclass", class_names: Sequence[str] = (), clip_samples: int = 0,
                 framing: Optional[dict] = None, **kwargs):
        """`frontend`: the settings of the project's Frontend (a FrontendConfig as a dict), or a
        backbone family's own frontend layer (models.backbones.birdnet), serialized or not."""
        # Files written before the inference model held only inference also saved the
        # augmentation settings; they mean nothing here.
        kwargs.pop("augment", None)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.sample_rate_hz = int(sample_rate_hz)
        self.task = task
        self.class_names = tuple(class_names)
        if isinstance(frontend, dict) and "class_name" in frontend:
            frontend = keras.saving.deserialize_keras_object(frontend)
        # The project's frontend settings, or None for a family's own frontend layer.
        self.frontend_config = None if isinstance(frontend, keras.layers.Layer) else dict(frontend)
        if framing is None:  # a file written before models had a framing: its clip, no context frames
            fe = FrontendConfig(**self.frontend_config)
            clip = int(clip_samples) or int(backbone.input_shape[1] - 1) * fe.hop_length_samples(self.sample_rate_hz)
            framing = dataclasses.asdict(legacy_framing(fe, self.sample_rate_hz, clip))
        self.framing = Framing(**framing)
        self.clip_samples = self.framing.window
        self.frontend = frontend if self.frontend_config is None else Frontend(
            self.frontend_config, self.sample_rate_hz, self.framing, name="frontend")
        self.activation = keras.layers.Activation(ACTIVATIONS[task], dtype="float32", name="scores")

    def call(self, waves, training=False):
        """Windows with their context [batch, framing.input_samples] -> scores [batch, outputs]."""
        return self.scores(self.frontend(waves), training=training)  # [batch, outputs]

    def scores(self, features, training=False):
        """Features [batch, frames, bins, 1] -> scores [batch, outputs] (frame models: [batch,
        frames, outputs])."""
        return self.activation(self.backbone(features, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "frontend": self.frontend_config if self.frontend_config is not None
            else keras.saving.serialize_keras_object(self.frontend),
            "sample_rate_hz": self.sample_rate_hz,
            "task": self.task,
            "class_names": list(self.class_names),
            "clip_samples": self.clip_samples,
            "framing": dataclasses.asdict(self.framing),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_classifier(backbone: keras.Model, frontend: FrontendConfig | keras.layers.Layer, sample_rate_hz: int,
                     framing: Framing, task: str, class_names: Sequence[str] = ()) -> AudioClassifier:
    """A new AudioClassifier: the project's frontend with these settings, or a family's own
    frontend layer, then `backbone`."""
    settings = frontend if isinstance(frontend, keras.layers.Layer) else dataclasses.asdict(frontend)
    model = AudioClassifier(backbone, settings, sample_rate_hz, task, class_names, framing.window,
                            dataclasses.asdict(framing), name="audio_classifier")
    model(tf.zeros([1, framing.input_samples]))
    return model


def load_classifier(path) -> AudioClassifier:
    """An AudioClassifier saved as .keras (a run's model.keras)."""
    return keras.saving.load_model(path)


def saved_framing(path) -> Optional[Framing]:
    """The Framing recorded in a saved AudioClassifier's config (read from the .keras archive,
    without TensorFlow), or None for files written before models had one."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    return Framing(**config["framing"]) if "framing" in config else None
