"""The model a run trains: the registry backbone inside an AudioClassifier, wrapped by a Trainer
and compiled with the run's optimizer, schedule and loss (compile lives here, not in builders)."""
from __future__ import annotations

import keras

from models.backbones.registry import (OWN_FRONTEND, build_backbone, check_model, check_task, features_shape,
                                       model_framing)
from models.classifier import build_classifier
from models.training.trainer import Trainer
from pipeline.config import Config
from pipeline.features.stage import BatchStage
from pipeline.records.labels import LabelSpec

# Variables without weight decay: biases and the normalisation layers' scales and offsets.
NO_DECAY = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable(package="bioacoustics")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """The rate rises linearly to `rate` over `warmup_steps` steps, then stays."""

    def __init__(self, rate: float, warmup_steps: int):
        self.rate = float(rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        share = keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0) / max(1, self.warmup_steps))
        return self.rate * share

    def get_config(self):
        return {"rate": self.rate, "warmup_steps": self.warmup_steps}


def learning_rate(cfg: Config, total_steps: int, steps_per_epoch: int):
    """train.learning_rate under train.schedule, after train.warmup_epochs of linear warm-up."""
    rate = cfg.train.learning_rate
    warmup = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    if cfg.train.schedule == "cosine":
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(rate, max(1, total_steps))
        return keras.optimizers.schedules.CosineDecay(0.0, max(1, total_steps - warmup), warmup_target=rate,
                                                      warmup_steps=warmup)
    return LinearWarmup(rate, warmup) if warmup > 0 else rate


def optimizer(cfg: Config, total_steps: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = learning_rate(cfg, total_steps, steps_per_epoch)
    decay = cfg.train.weight_decay
    if cfg.train.optimizer == "adamw":
        made = keras.optimizers.AdamW(rate, weight_decay=0.004 if decay is None else decay)
    elif cfg.train.optimizer == "sgd":
        made = keras.optimizers.SGD(rate, momentum=0.9, weight_decay=decay or None)
    else:
        made = keras.optimizers.Adam(rate, weight_decay=decay or None)
    made.exclude_from_weight_decay(var_names=NO_DECAY)
    return made


class _HardTargets:
    """Counts an example as positive for a label when its target is at least 0.5: mixup and
    label smoothing make training targets soft, which Keras's threshold metrics would otherwise
    read as never equal to a decision (accuracy) or as positive whenever above 0 (precision,
    recall)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.cast(keras.ops.greater_equal(y_true, 0.5), y_pred.dtype)
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)


class HardBinaryAccuracy(_HardTargets, keras.metrics.BinaryAccuracy):
    pass


class HardPrecision(_HardTargets, keras.metrics.Precision):
    pass


class HardRecall(_HardTargets, keras.metrics.Recall):
    pass


def compile_model(model: keras.Model, cfg: Config, labels: LabelSpec, total_steps: int = 1,
                  steps_per_epoch: int = 1) -> None:
    smoothing = cfg.train.label_smoothing
    if labels.task == "multiclass":
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
        metrics = [HardBinaryAccuracy(name="accuracy")]
    metrics += [HardPrecision(name="precision"), HardRecall(name="recall")]
    model.compile(optimizer=optimizer(cfg, total_steps, steps_per_epoch), loss=loss, metrics=metrics)


def build_model(cfg: Config, labels: LabelSpec, total_steps: int = 1, steps_per_epoch: int = 1) -> Trainer:
    """The compiled Trainer around a new AudioClassifier. Call inside the strategy's scope."""
    check_task(cfg.model.name, labels.task)
    check_model(cfg)
    sr = cfg.audio.sample_rate_hz
    frames = model_framing(cfg)
    shape = features_shape(cfg, frames)
    backbone = build_backbone(cfg.model, shape, labels.num_outputs, frames)
    own = OWN_FRONTEND.get(cfg.model.name)
    classifier = build_classifier(backbone, own.layer() if own else cfg.frontend, sr, frames, labels.task,
                                  labels.names)
    trainer = Trainer(classifier, BatchStage(classifier.frontend, cfg.augment, sr), name="trainer")
    trainer(keras.ops.zeros([1, *shape]))  # built: fit need not trace it symbolically
    compile_model(trainer, cfg, labels, total_steps, steps_per_epoch)
    return trainer


def set_precision(cfg: Config) -> None:
    """float16 compute in the backbone under mixed precision; frontend and outputs stay float32."""
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.train.mixed_precision else "float32")
