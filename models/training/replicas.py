"""Training on several replicas: model.fit's epoch loop written out, run through strategy.run.

Keras 3.6's model.fit fails under MultiWorkerMirroredStrategy before its first step (it hands the
whole first input batch to `strategy.reduce`: "Attempt to convert a value (PerReplica ...)",
keras-team/keras#20585), and under MirroredStrategy its epoch and validation metrics are those of
the first replica's share of each batch only (Keras 3 metric variables have no aggregation, so
reading one gives replica 0's copy): val_loss, which early stopping and the best-model checkpoint
follow, would come from half of the validation set on two GPUs. `train_loop` runs the model's own
`train_step` through `strategy.run` over `strategy.experimental_distribute_dataset` and drives
the same Keras callbacks through a `keras.callbacks.CallbackList` (under the default strategy it
gives model.fit's numbers; see the tests). What differs from model.fit:
- Seeds: the "device" batches carry one [2] augmentation seed, which tf.distribute would split
  like a batch axis; it is tiled per example before distribution, and each replica seeds its
  part with row 0 folded with its replica id.
- Sharding: each worker runs the whole input pipeline and keeps its share of every global batch
  (DATA auto-sharding: a record table has no files to shard by).
- Epoch metrics: metric states (additive in all Keras built-in metrics) are summed over every
  replica of every worker before they are read, and BatchNormalization's moving statistics,
  which each replica updates from its own examples, are averaged (as tf.keras' MEAN-aggregated
  variables were). So all workers hold the same weights and log the same numbers.
- Validation: every worker evaluates the whole validation set on one device (same weights, same
  data: same numbers, without collectives), so early stopping stops all workers at the same
  epoch; a worker stopping alone would leave the others waiting in a collective.
- Callbacks that write files belong on the chief only (the best-epoch checkpoint, TensorBoard
  and CSVLogger are dropped on the other workers; so is the progress bar).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import keras
import tensorflow as tf

from models.training.callbacks import BestCheckpoint
from models.training.strategy import barrier, distributable, is_chief

# Callbacks that write files: under MultiWorkerMirroredStrategy only the chief runs them.
_CHIEF_ONLY = (BestCheckpoint, keras.callbacks.ModelCheckpoint, keras.callbacks.TensorBoard,
               keras.callbacks.CSVLogger)


def train_loop(model: keras.Model, train_ds: tf.data.Dataset, strategy: tf.distribute.Strategy,
               epochs: int, steps_per_epoch: int, validation_data: Optional[tf.data.Dataset] = None,
               callbacks: Sequence[keras.callbacks.Callback] = (), initial_epoch: int = 0, verbose: int = 2,
               class_weight: Optional[Mapping[int, float]] = None) -> keras.callbacks.History:
    """model.fit for several replicas (see the module docstring); under the default strategy it
    matches model.fit. On workers other than the chief, pass only callbacks that steer training
    (early stopping, the epoch backup): ModelCheckpoint, TensorBoard and CSVLogger are dropped there.
    """
    chief = is_chief(strategy)
    callbacks = [cb for cb in callbacks if chief or not isinstance(cb, _CHIEF_ONLY)]
    if class_weight:
        train_ds = train_ds.map(_class_weight_fn(class_weight), num_parallel_calls=tf.data.AUTOTUNE)
    # One [2] seed per batch cannot be split over replicas: tile it per example here, and give
    # each replica row 0 folded with its replica id (BatchStage wants one [2] seed).
    tile_seed = "seed" in train_ds.element_spec[0] and strategy.num_replicas_in_sync > 1
    if tile_seed:
        train_ds = train_ds.map(_tile_seed, num_parallel_calls=tf.data.AUTOTUNE)
    _build_state(model, strategy, train_ds.element_spec[1])
    # Made once: a sharded distributed iterator over make_dataset's graph takes seconds to build.
    iterator = iter(strategy.experimental_distribute_dataset(distributable(train_ds)))

    def replica_train_step(data):
        if tile_seed:
            x = dict(data[0])
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            x["seed"] = tf.random.experimental.stateless_fold_in(x["seed"][0], replica)  # [2]
            data = (x,) + tuple(data[1:])
        return model.train_step(data)

    @tf.function
    def train_step():
        logs = strategy.run(tf.autograph.experimental.do_not_convert(replica_train_step),
                            args=(next(iterator),))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    metric_states = [v.value for m in model.metrics for v in m.variables]
    statistics = [v.value for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]

    @tf.function
    def merge_replicas():
        """Metric states summed over all replicas, non-trainable statistics averaged."""
        def replica_fn():
            for op, variables in (("SUM", metric_states), ("MEAN", statistics)):
                if not variables:
                    continue
                local = [tf.identity(v) for v in variables]  # this replica's values
                for variable, merged in zip(variables, tf.distribute.get_replica_context().all_reduce(op, local)):
                    variable.assign(merged)
        strategy.run(replica_fn)

    @tf.function
    def evaluate():
        for data in validation_data:  # the whole set on every worker
            model.test_step(data)

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=chief and verbose != 0, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            callback_list.on_train_batch_end(step, train_step())
            if model.stop_training:
                break
        merge_replicas()
        epoch_logs = model.get_metrics_result()
        if validation_data is not None:
            model.reset_metrics()
            callback_list.on_test_begin()
            with strategy.scope():
                evaluate()
            val_logs = model.get_metrics_result()
            callback_list.on_test_end(val_logs)
            epoch_logs.update({"val_" + name: value for name, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    if epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(epoch_logs)
    barrier(strategy)  # all workers leave together
    return model.history


def _build_state(model: keras.Model, strategy: tf.distribute.Strategy, targets: tf.TensorSpec) -> None:
    """Creates the optimizer's slots and the compiled loss's and metrics' variables under the
    strategy's scope (as model.fit does first): a replica's step cannot create variables. The
    model itself is built (models.training.compile.build_model)."""
    features = tf.zeros([1, *model.classifier.backbone.input_shape[1:]])
    y = tf.zeros([1, *targets.shape[1:]], targets.dtype)
    with strategy.scope():
        y_pred = model(features)
        model.compute_loss(x=features, y=y, y_pred=y_pred)
        model.compute_metrics(features, y, y_pred)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    model.reset_metrics()


def _tile_seed(x, y, *rest):
    x = dict(x)
    x["seed"] = tf.tile(x["seed"][None], [tf.shape(x["audio"])[0], 1])  # [batch, 2]
    return (x, y) + rest


def _class_weight_fn(class_weight: Mapping[int, float]):
    """(x, y) -> (x, y, sample weights [batch]) as model.fit's class_weight: one-hot targets
    by their argmax, single-column (binary) targets by their rounded value."""
    missing = [i for i in range(len(class_weight)) if i not in class_weight]
    if missing:
        raise ValueError(f"class_weight: expected keys 0..{len(class_weight) - 1}, class {missing[0]} is missing")
    table = tf.constant([float(class_weight[i]) for i in range(len(class_weight))], tf.float32)

    def add_weights(x, y):
        index = tf.argmax(y, axis=-1) if y.shape[-1] != 1 else tf.cast(tf.round(y[:, 0]), tf.int64)
        return x, y, tf.gather(table, index)  # [batch]
    return add_weights
