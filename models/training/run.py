"""A whole training run from a config, as train.py runs it:

    records -> split -> datasets -> Trainer -> fit (callbacks) -> best epoch -> metrics and export

The tuner runs its trials through the same pieces (setup, compile, callbacks, fit, artifacts).
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import keras
import tensorflow as tf

from models.backbones.registry import check_model, check_task
from models.classifier import load_classifier
from models.training import artifacts, compile, setup
from models.training.callbacks import (STATISTICS_EXAMPLES, BatchStatistics, BestCheckpoint, EarlyStopping,
                                       InputImages, ValidationScores)
from models.training.evaluation import summary_table
from models.training.fit import fit
from models.training.strategy import (barrier, check_batch_size, choose_strategy, describe, is_chief,
                                      num_workers)
from pipeline.config import Config

# train.balance "auto" samples classes equally when the largest has this many times the examples
# of the smallest in the training split.
SKEW_FOR_BALANCE = 2.0


def resolved_balance(cfg: Config, data: setup.RunData) -> str:
    """train.balance with "auto" decided from the training split's class counts (frame targets:
    "none", their regions are not examples of one class)."""
    if cfg.train.balance != "auto":
        return cfg.train.balance
    counts = data.part("train")["label"].value_counts()
    if data.labels.task == "frames" or len(counts) < 2:
        return "none"
    return "sample" if counts.max() >= SKEW_FOR_BALANCE * counts.min() else "none"


def with_balance(cfg: Config, data: setup.RunData) -> Config:
    """cfg with train.balance resolved (see resolved_balance)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, balance=resolved_balance(cfg, data)))


def without_validation(cfg: Config) -> Config:
    """A run with no validation records has no score to stop early on or to pick an epoch by:
    every epoch of train.epochs is trained and the last one kept. (Otherwise early stopping would
    end it after early_stopping_patience epochs, since a missing score never improves.)"""
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, keep="last", early_stopping_patience=cfg.train.epochs))


def statistics_batches(cfg: Config, data: setup.RunData) -> int:
    """Batches over which BatchStatistics averages: STATISTICS_EXAMPLES examples, at most one pass
    over the training split."""
    train = max(1, len(data.part("train")) // cfg.pipeline.batch_size)
    return max(1, min(train, STATISTICS_EXAMPLES // cfg.pipeline.batch_size))


def training_callbacks(cfg: Config, sets: setup.Datasets, data: setup.RunData, run_dir: Optional[Path],
                       chief: bool = True) -> list[keras.callbacks.Callback]:
    """The callbacks of every run (and tuner trial): batch statistics before each validation, the
    validation scores (val_macro_f1, val_pr_auc), early stopping and the best epoch's model.keras by
    train.monitor, and with a `run_dir` history.csv and TensorBoard (scalars, augmented inputs,
    validation confusion matrix and PR curves, optional profiler). `chief=False` (other workers of
    a multi-worker run): only the callbacks that steer training, no files."""
    callbacks: list[keras.callbacks.Callback] = []
    if cfg.train.batchnorm_statistics == "recompute":
        callbacks.append(BatchStatistics(sets.statistics, statistics_batches(cfg, data)))
    logs = run_dir / "logs" if run_dir is not None and chief else None
    callbacks += [ValidationScores(sets.val, data.labels, logs),
                  EarlyStopping(cfg.train.monitor, cfg.train.early_stopping_patience)]
    if logs is None:
        return callbacks
    profile = tuple(int(b) for b in cfg.train.profile_batches.split(",")) if cfg.train.profile_batches else 0
    callbacks += [
        BestCheckpoint(run_dir / "model.keras", cfg.train.monitor, run_dir / "history.csv", cfg.train.keep),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(logs), profile_batch=profile),
    ]
    if cfg.train.image_examples > 0:
        callbacks.append(InputImages(sets.train, logs, cfg.train.image_examples))
    return callbacks


def train(cfg: Config, run_dir: Path, data_service: str = "", verbose: Optional[int] = None) -> Optional[dict]:
    """Trains a run into `run_dir` (resuming it if it was killed) and returns its metrics (None
    on the workers of a multi-worker run other than the chief)."""
    check_task(cfg.model.name, cfg.train.task)  # before the data scan, which can take minutes
    check_model(cfg)
    strategy = choose_strategy()  # before any other TensorFlow op (MultiWorkerMirroredStrategy)
    print(describe(strategy))
    check_batch_size(cfg.pipeline.batch_size, strategy)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(cfg.pipeline.seed)
    if cfg.pipeline.deterministic:
        tf.config.experimental.enable_op_determinism()

    # The other workers of a multi-worker run write their copies of the run files aside.
    data = setup.prepare_run(cfg, run_dir if chief else Path(tempfile.mkdtemp(prefix="worker_run_")),
                             quiet=not chief)
    cfg = with_balance(cfg, data)
    validate = not data.part("val").empty
    if not validate:
        cfg = without_validation(cfg)
        print(f"no validation records: all {cfg.train.epochs} epochs are trained and the last one kept")
    if cfg.train.balance != "none":
        print(f"class balance: {cfg.train.balance}")
    # A multi-worker run's trainers share one service job: each training batch goes to one of them.
    job = f"{run_dir.resolve().name}-{data.digest[:12]}" if num_workers(strategy) > 1 else None
    sets = setup.make_datasets(cfg, data, data_service=data_service, data_service_job=job)
    compile.set_precision(cfg)
    with strategy.scope():
        trainer = compile.build_model(cfg, data.labels, cfg.train.epochs * sets.steps_per_epoch, sets.steps_per_epoch)
    frames, bins = trainer.classifier.backbone.input_shape[1:3]
    print(f"model {cfg.model.name}: {trainer.classifier.backbone.count_params():,} parameters; "
          f"features {frames}x{bins}")
    class_weight = setup.class_weights(cfg, data)
    if class_weight:
        print("class weights: " + ", ".join(f"{k}: {w:.2f}" for k, w in class_weight.items()))

    start = time.time()
    fit(trainer, sets.train, strategy, epochs=cfg.train.epochs, steps_per_epoch=sets.steps_per_epoch,
        validation_data=sets.val if validate else None,
        callbacks=training_callbacks(cfg, sets, data, run_dir, chief=chief),
        class_weight=class_weight, backup_dir=run_dir / "backup",
        verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    train_s = time.time() - start
    if not chief:
        barrier(strategy)  # wait while the chief evaluates and exports (see strategy.barrier)
        return None
    best = run_dir / "model.keras"
    if best.exists():
        model = load_classifier(best)  # the epoch train.keep names
    else:  # no epoch with a finite validation score
        model = trainer.classifier
        model.save(best)
    metrics = artifacts.finish_run(model, cfg, data, sets, run_dir, train_s)
    print(summary_table(metrics))
    print(f"-> {run_dir}")
    barrier(strategy)
    return metrics

