"""One trial: the trial's Config from its hyperparameter values, then the model and the datasets
built from that Config through models.training, exactly as train.py builds them.

Per trial (trial id T): TensorBoard scalars in OUT/logs/T/{train,validation}, the trial's
hyperparameters and final metrics for the HParams dashboard in OUT/logs/T, and the epoch
history in OUT/search/trial_T/history.csv.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from models import training
from pipeline.config import Config, ConfigError
from tuning import space

# The metrics compile_model tracks, as fit logs them; final values of each go to HParams.
METRICS = ("loss", "accuracy", "precision", "recall", "pr_auc")
LOGGED = METRICS + tuple(f"val_{m}" for m in METRICS)


def direction(objective: str) -> str:
    """'min' for losses, 'max' for every other metric compile_model tracks."""
    if objective not in LOGGED:
        raise ConfigError(f"tune.objective: expected one of {', '.join(LOGGED)}, got {objective!r}")
    return "min" if objective.endswith("loss") else "max"


class SearchHyperModel(keras_tuner.HyperModel):
    """Builds and trains trials on records prepared once per search (no searched value changes
    which examples there are or their split, only how they are turned into features)."""

    def __init__(self, base: Config, params: tuple[space.Param, ...], data: training.RunData,
                 logs_dir: Path):
        super().__init__(name="audio_classifier")
        self.base = base
        self.params = params
        self.data = data
        self.logs_dir = Path(logs_dir)
        self.objective = base.tune.objective
        self.direction = direction(self.objective)

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        space.define(hp, self.params)

    def trial_config(self, hp: keras_tuner.HyperParameters) -> Config:
        """The trial's Config; an impossible combination fails the trial with the reason."""
        try:
            return space.trial_config(self.base, hp.values)
        except ConfigError as err:
            raise keras_tuner.errors.FailedTrialError(f"invalid {err}") from None

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        space.define(hp, self.params)
        cfg = self.trial_config(hp)
        training.set_precision(cfg)
        keras.utils.set_random_seed(cfg.pipeline.seed)
        steps = training.steps_per_epoch(cfg, self.data)  # only the cosine schedule reads it
        return training.build_model(cfg, self.data.labels, total_steps=cfg.train.epochs * steps)

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, trial_id: str, trial_dir: str,
            callbacks=(), initial_epoch: int = 0, start_from: Optional[str] = None, verbose=2) -> dict[str, float]:
        """Trains one trial to its train.epochs; returns the metrics of its best epoch by the
        objective. `callbacks` are KerasTuner's (best-epoch checkpoint). Hyperband's later rounds
        continue an earlier trial: its weights `start_from`, from `initial_epoch`."""
        cfg = self.trial_config(hp)
        sets = training.make_datasets(cfg, self.data)
        if start_from:
            model.optimizer.build(model.trainable_variables)  # so its state is restored too
            model.load_weights(start_from)
        logdir = self.logs_dir / trial_id
        shutil.rmtree(logdir, ignore_errors=True)  # a trial retried after a kill starts its logs afresh
        own = [
            keras.callbacks.EarlyStopping(monitor=self.objective, mode=self.direction,
                                          patience=cfg.train.early_stopping_patience, restore_best_weights=True),
            keras.callbacks.TensorBoard(str(logdir)),
            keras.callbacks.CSVLogger(str(Path(trial_dir) / "history.csv")),
        ]
        history = model.fit(sets.train, validation_data=sets.val, epochs=cfg.train.epochs,
                            initial_epoch=initial_epoch, steps_per_epoch=sets.steps_per_epoch,
                            callbacks=[*own, *callbacks], class_weight=training.class_weights(cfg, self.data),
                            verbose=verbose)
        metrics = best_epoch(history.history, self.objective, self.direction)
        write_trial_hparams(logdir, hp.values, metrics, trial_id)
        return metrics


def best_epoch(history: dict[str, list], objective: str, direction: str) -> dict[str, float]:
    """The logged metrics of the epoch with the best objective (NaN epochs never win)."""
    scores = np.asarray(history[objective], dtype=float)
    ranked = np.where(np.isnan(scores), np.inf, scores if direction == "min" else -scores)
    best = int(np.argmin(ranked))
    return {name: float(values[best]) for name, values in history.items() if name in LOGGED}


def hparams_domains(params: tuple[space.Param, ...]) -> list:
    """HParams dashboard columns: one per hyperparameter with its domain."""
    columns = []
    for p in params:
        if p.kind in ("choice", "fixed"):
            domain = hparams_api.Discrete(list(p.values))
        elif p.kind == "int":
            domain = hparams_api.IntInterval(int(p.min_value), int(p.max_value))
        else:
            domain = hparams_api.RealInterval(float(p.min_value), float(p.max_value))
        columns.append(hparams_api.HParam(p.name, domain))
    return columns


def write_experiment(logs_dir: Path, params: tuple[space.Param, ...]) -> None:
    """The HParams experiment (columns and metrics) at the root of OUT/logs, written once."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    if any(logs_dir.glob("events.out.tfevents.*")):
        return
    metrics = [hparams_api.Metric(f"final/{m}", display_name=m) for m in LOGGED]
    with tf.summary.create_file_writer(str(logs_dir)).as_default():
        hparams_api.hparams_config(hparams=hparams_domains(params), metrics=metrics)


def write_trial_hparams(logdir: Path, values: dict, metrics: dict[str, float], trial_id: str) -> None:
    """The trial's hyperparameter values and final (best-epoch) metrics, as one HParams session."""
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hparams_api.hparams(dict(values), trial_id=trial_id)
        for name, value in metrics.items():
            tf.summary.scalar(f"final/{name}", value, step=0)
    writer.close()
