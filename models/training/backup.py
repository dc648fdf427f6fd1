"""Resuming a killed run: the trainer, its optimizer and the number of finished epochs, saved after
every epoch (tf.train.CheckpointManager, whose index is replaced atomically) and restored when
the same run starts again. The backup is removed once training ends."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from models.training.strategy import is_chief, is_multi_worker


class EpochBackup(keras.callbacks.Callback):
    """Saved by every worker (saving may take part in collectives): the chief into `directory`,
    the others into a scratch folder deleted after each save, as in TensorFlow's multi-worker
    guide. Put it before the callbacks that log an epoch as done (history.csv)."""

    def __init__(self, trainer: keras.Model, strategy: tf.distribute.Strategy, directory):
        super().__init__()
        self.directory = str(directory)
        self.strategy = strategy
        self.chief = is_chief(strategy)
        with strategy.scope():
            if not trainer.optimizer.built:
                trainer.optimizer.build(trainer.trainable_variables)
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=trainer, optimizer=trainer.optimizer,
                                              epochs_done=self.epochs_done)

    def restore(self) -> int:
        """Finished epochs of the latest backup (0 when there is none); on a multi-worker run,
        a RuntimeError on every worker unless all restored the same epoch (else they would train
        different numbers of epochs and wait for each other's collectives at the end)."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is not None:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            print(f"resuming after epoch {int(self.epochs_done)} from {latest}", flush=True)
        done = int(self.epochs_done) if latest is not None else 0
        if is_multi_worker(self.strategy):
            def gather():
                return self.strategy.gather(self.strategy.run(lambda: tf.constant([done], tf.int64)), axis=0)
            found = sorted(set(tf.function(gather, autograph=False)().numpy().tolist()))
            if len(found) > 1:
                raise RuntimeError(f"workers resumed after different epochs {found} from {self.directory}: the "
                                   "backup directory must be on storage that all workers share")
        return done

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done.assign(epoch + 1)
        if self.chief:
            tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=1).save()
            return
        scratch = tempfile.mkdtemp(prefix="worker_checkpoint_")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def on_train_end(self, logs=None):
        if self.chief and Path(self.directory).exists():
            shutil.rmtree(self.directory)
