"""One trial: the trial's Config from its hyperparameter values, then the model, the datasets, the
callbacks and the fit of models.training, exactly as train.py runs them.

Per trial (trial id T): TensorBoard scalars in OUT/logs/T/{train,validation}, the trial's
hyperparameters and final metrics for the HParams dashboard in OUT/logs/T, and the epoch
history in OUT/search/trial_T/history.csv.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from models.training import compile, setup
from models.training.fit import fit
from models.training.run import training_callbacks, with_balance
from pipeline.config import Config, ConfigError
from tuning import space

# The metrics a trial logs each epoch (compile_model's and the validation scores'); the final
# values of each go to HParams.
METRICS = ("loss", "accuracy", "precision", "recall")
LOGGED = METRICS + tuple(f"val_{m}" for m in METRICS) + ("val_macro_f1", "val_pr_auc")


def direction(objective: str) -> str:
    """'min' for losses, 'max' for every other metric a trial logs."""
    if objective not in LOGGED:
        raise ConfigError(f"tune.objective: expected one of {', '.join(LOGGED)}, got {objective!r}")
    return "min" if objective.endswith("loss") else "max"


class SearchHyperModel(keras_tuner.HyperModel):
    """Builds and trains trials on records prepared once per search (no searched value changes
    which examples there are or their split, only how they are turned into features)."""

    def __init__(self, base: Config, params: tuple[space.Param, ...], data: setup.RunData,
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
            cfg = space.trial_config(self.base, hp.values)
        except ConfigError as err:
            raise keras_tuner.errors.FailedTrialError(f"invalid {err}") from None
        # A trial's best epoch and early stop follow the search's objective.
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, monitor=self.objective))

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        space.define(hp, self.params)
        cfg = self.trial_config(hp)
        compile.set_precision(cfg)
        keras.utils.set_random_seed(cfg.pipeline.seed)
        steps = setup.steps_per_epoch(cfg, self.data)  # the schedules read it
        return compile.build_model(cfg, self.data.labels, cfg.train.epochs * steps, steps)

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, trial_id: str, trial_dir: str,
            callbacks=(), initial_epoch: int = 0, start_from: Optional[str] = None, verbose=2) -> dict[str, float]:
        """Trains one trial to its train.epochs; returns the metrics of its best epoch by the
        objective. `callbacks` are KerasTuner's (best-epoch checkpoint). Hyperband's later rounds
        continue an earlier trial: its weights `start_from`, from `initial_epoch`."""
        cfg = with_balance(self.trial_config(hp), self.data)
        sets = setup.make_datasets(cfg, self.data)
        if start_from:
            model.optimizer.build(model.trainable_variables)  # so its state is restored too
            model.load_weights(start_from)
        logdir = self.logs_dir / trial_id
        shutil.rmtree(logdir, ignore_errors=True)  # a trial retried after a kill starts its logs afresh
        own = [*training_callbacks(cfg, sets, self.data, run_dir=None),
               keras.callbacks.TensorBoard(str(logdir)),
               keras.callbacks.CSVLogger(str(Path(trial_dir) / "history.csv"))]
        history = fit(model, sets.train, model.distribute_strategy, epochs=cfg.train.epochs,
                      steps_per_epoch=sets.steps_per_epoch, validation_data=sets.val, callbacks=[*own, *callbacks],
                      initial_epoch=initial_epoch, verbose=verbose, class_weight=setup.class_weights(cfg, self.data))
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
