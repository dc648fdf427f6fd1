"""The one way a model is trained, by train.py and by every tuner trial: `fit`.

With one replica it is Keras' model.fit; with several, models.training.replicas.train_loop. Both
resume a killed run from its epoch backup (models.training.backup) when given `backup_dir`.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import keras
import tensorflow as tf

from models.training.backup import EpochBackup
from models.training.replicas import train_loop
from models.training.strategy import check_batch_size, describe


def fit(model: keras.Model, train_ds: tf.data.Dataset, strategy: tf.distribute.Strategy, epochs: int,
        steps_per_epoch: int, validation_data: Optional[tf.data.Dataset] = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), initial_epoch: int = 0, verbose: int = 2,
        class_weight: Optional[Mapping[int, float]] = None,
        backup_dir: Optional[str | os.PathLike] = None) -> keras.callbacks.History:
    """Train `model` (a Trainer built and compiled under `strategy.scope()`) as `model.fit` would.

    `backup_dir`: where the state of an interrupted run is kept; a run started again with the
    same directory goes on after its last finished epoch (the data stream starts afresh, and
    early stopping's patience count restarts).
    Returns the History (`.history`: metric name -> value per epoch, `.epoch`: epoch indices).
    """
    if model.distribute_strategy is not strategy:
        raise ValueError(f"the model was built under {describe(model.distribute_strategy)}, not under "
                         f"{describe(strategy)}: build and compile it within strategy.scope()")
    batch = next(iter(train_ds.element_spec[0].values()))
    if batch.shape[0] is not None:
        check_batch_size(batch.shape[0], strategy)
    callbacks = list(callbacks)
    if backup_dir is not None:
        backup = EpochBackup(model, strategy, backup_dir)
        initial_epoch = max(initial_epoch, backup.restore())
        callbacks.insert(0, backup)  # an epoch is saved before any callback logs it as done
    if strategy.num_replicas_in_sync > 1:
        return train_loop(model, train_ds, strategy, epochs, steps_per_epoch, validation_data, callbacks,
                          initial_epoch, verbose, class_weight)
    return model.fit(train_ds, validation_data=validation_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     callbacks=callbacks, verbose=verbose, initial_epoch=initial_epoch,
                     class_weight=dict(class_weight) if class_weight else None)
