"""Distribution strategies: which one a run uses, and one `fit` for all of them.

`choose_strategy` picks from the environment:
  TF_CONFIG with two or more chief/worker tasks  -> MultiWorkerMirroredStrategy
  several GPUs visible                           -> MirroredStrategy over them
  otherwise                                      -> the default strategy (one device)
Build and compile the model under `strategy.scope()`, then train with `fit`. The batch size of
the datasets is the global one; it must divide evenly over the replicas.

`fit` calls `model.fit` when there is one replica. With several it runs `train_loop` instead:
Keras 3.6's model.fit fails under MultiWorkerMirroredStrategy before its first step (it hands
the whole first input batch to `strategy.reduce`: "Attempt to convert a value (PerReplica ...)",
keras-team/keras#20585), and under MirroredStrategy its epoch and validation metrics are those
of the first replica's share of each batch only (Keras 3 metric variables have no aggregation,
so reading one gives replica 0's copy): val_loss, which early stopping and the best-model
checkpoint follow, would come from half of the validation set on two GPUs. `train_loop` is
model.fit's epoch loop written out: it runs the model's own `train_step` through `strategy.run`
over `strategy.experimental_distribute_dataset` and drives the same Keras callbacks through a
`keras.callbacks.CallbackList` (under the default strategy it gives model.fit's numbers; see the
tests). What differs from model.fit:
- Seeds: make_dataset's "device" batches carry one [2] augmentation seed, which tf.distribute
  would split like a batch axis; it is tiled per example before distribution, and each replica
  seeds its part with row 0 folded with its replica id. Per-example seeds pass through.
- Sharding: each worker runs the whole input pipeline and keeps its share of every global
  batch (DATA auto-sharding: a record table has no files to shard by).
- Epoch metrics: metric states (additive in all Keras built-in metrics) are summed over every
  replica of every worker before they are read, and BatchNormalization's moving statistics,
  which each replica updates from its own examples, are averaged (as tf.keras' MEAN-aggregated
  variables were). So all workers hold the same weights and log the same numbers.
- Validation: every worker evaluates the whole validation set on one device (same weights,
  same data: same numbers, without collectives), so EarlyStopping stops all workers at the
  same epoch; a worker stopping alone would leave the others waiting in a collective.
- Callbacks that write files belong on the chief only (ModelCheckpoint, TensorBoard and
  CSVLogger are dropped on the other workers; so is the progress bar).
- Resume: `backup_dir`, or the backup_dir of a BackupAndRestore callback, which is taken out
  of the callbacks (it cannot work in this loop). After every epoch a
  tf.train.CheckpointManager saves model, optimizer and the number of finished epochs (the chief
  into `backup_dir`, other workers into a scratch folder they delete, as in the TF multi-worker
  guide); a restarted run continues after the last finished epoch, and `backup_dir` is removed
  when training ends. As with BackupAndRestore, the data stream starts again from its
  beginning and EarlyStopping's patience count restarts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import keras
import tensorflow as tf

TRAINING_JOBS = ("chief", "worker")
# Keras callbacks that write files: under MultiWorkerMirroredStrategy only the chief runs them.
_CHIEF_ONLY = (keras.callbacks.ModelCheckpoint, keras.callbacks.TensorBoard, keras.callbacks.CSVLogger)


# ---------------------------------------------------------------------------------------------
# Choosing a strategy


@dataclasses.dataclass(frozen=True)
class StrategyPlan:
    """Which strategy to build, decided from TF_CONFIG and the GPU list alone (no TF state)."""

    kind: str  # "default" | "mirrored" | "multi_worker"
    devices: tuple[str, ...] = ()  # mirrored: the devices
    cluster: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # multi_worker
    task_type: str = ""
    task_id: int = 0


def plan_strategy(environ: Mapping[str, str], gpus: Sequence[str]) -> StrategyPlan:
    """The strategy for TF_CONFIG in `environ` and the visible `gpus` (device names).

    TF_CONFIG counts when its cluster has more than one chief/worker task; a one-task cluster
    is ignored. Parameter-server and evaluator jobs are refused (ValueError naming TF_CONFIG).
    """
    raw = environ.get("TF_CONFIG", "").strip()
    if raw:
        try:
            tf_config = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"TF_CONFIG: not valid JSON ({err})") from None
        cluster = tf_config.get("cluster") or {}
        if not isinstance(cluster, dict):
            raise ValueError(f"TF_CONFIG.cluster: expected a mapping of job name -> addresses, got {cluster!r}")
        other_jobs = sorted(set(cluster) - set(TRAINING_JOBS))
        if other_jobs:
            raise ValueError(f"TF_CONFIG.cluster: job {other_jobs[0]!r} is not supported (expected only "
                             f"{' and '.join(TRAINING_JOBS)} jobs, for MultiWorkerMirroredStrategy)")
        addresses = {job: tuple(cluster.get(job) or ()) for job in TRAINING_JOBS if cluster.get(job)}
        if sum(len(a) for a in addresses.values()) > 1:
            task = tf_config.get("task") or {}
            task_type, task_id = task.get("type"), task.get("index", 0)
            if task_type not in addresses or not isinstance(task_id, int) \
                    or not 0 <= task_id < len(addresses[task_type]):
                raise ValueError(f"TF_CONFIG.task: expected a type among {sorted(addresses)} and an index "
                                 f"within its job's addresses, got {task!r}")
            return StrategyPlan("multi_worker", cluster=addresses, task_type=task_type, task_id=task_id)
    if len(gpus) > 1:
        return StrategyPlan("mirrored", devices=tuple(gpus))
    return StrategyPlan("default")


def build_strategy(plan: StrategyPlan) -> tf.distribute.Strategy:
    if plan.kind == "multi_worker":
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({job: list(a) for job, a in plan.cluster.items()}),
            task_type=plan.task_type, task_id=plan.task_id, rpc_layer="grpc")
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if plan.kind == "mirrored":
        return tf.distribute.MirroredStrategy(list(plan.devices))
    return tf.distribute.get_strategy()


def choose_strategy(environ: Mapping[str, str] = os.environ,
                    gpus: Optional[Sequence] = None) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy, MirroredStrategy or the default strategy (see plan_strategy).

    `gpus`: device names (or tf.config devices) standing for the visible GPUs; None lists the
    physical GPUs, which leaves TensorFlow uninitialized. Call this first thing in a program:
    MultiWorkerMirroredStrategy must be created before TensorFlow runs any op.
    """
    if gpus is None:
        gpus = [f"/gpu:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]
    return build_strategy(plan_strategy(environ, [getattr(d, "name", d) for d in gpus]))


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and num_workers(strategy) > 1


def num_workers(strategy: tf.distribute.Strategy) -> int:
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None:
        return 1
    spec = resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in TRAINING_JOBS if job in spec.jobs)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always, except on a multi-worker cluster's
    non-chief tasks (the chief is task "chief", or worker 0 when the cluster has none)."""
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 \
        and "chief" not in resolver.cluster_spec().jobs


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for the log, e.g. "MultiWorkerMirroredStrategy: 2 workers, 2 replicas (this is worker 1)"."""
    replicas = strategy.num_replicas_in_sync
    plural = "replica" if replicas == 1 else "replicas"
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        role = ", chief" if is_chief(strategy) else ""
        return (f"MultiWorkerMirroredStrategy: {num_workers(strategy)} workers, {replicas} {plural} "
                f"(this is {resolver.task_type} {resolver.task_id}{role})")
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        devices = ", ".join(d.rsplit("device:", 1)[-1] for d in strategy.extended.worker_devices)
        return f"MirroredStrategy: {replicas} {plural} on {devices}"
    return f"default strategy: {replicas} {plural}"


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker has come here (a no-op with one worker). End a multi-worker
    program with it: a worker that exits first is reported failed ("heartbeat timeout") by the
    cluster's coordination service, and a chief that exits first takes that service with it."""
    if is_multi_worker(strategy):
        def meet():
            return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", tf.constant(0.0)))
        tf.function(meet, autograph=False)()


def check_batch_size(global_batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """ValueError unless the global batch splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"pipeline.batch_size: expected a multiple of the {replicas} replicas of "
                         f"{describe(strategy)}, got {global_batch_size}")


def distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with DATA auto-sharding, unless it chose a policy itself (pipeline.data_service
    turns sharding off: the service splits the data). A record table (from_tensor_slices) has no
    files to shard by, so AUTO would warn and fall back to DATA anyway."""
    policy = tf.data.experimental.AutoShardPolicy
    if dataset.options().experimental_distribute.auto_shard_policy != policy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.DATA
    return dataset.with_options(options)


# ---------------------------------------------------------------------------------------------
# Training


def fit(model: keras.Model, train_ds: tf.data.Dataset, strategy: tf.distribute.Strategy, epochs: int,
        steps_per_epoch: int, validation_data: Optional[tf.data.Dataset] = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), initial_epoch: int = 0, verbose: int = 2,
        class_weight: Optional[Mapping[int, float]] = None,
        backup_dir: Optional[str | os.PathLike] = None) -> keras.callbacks.History:
    """Train `model` (built and compiled under `strategy.scope()`) as `model.fit` would.

    `backup_dir`: where an interrupted run's state is kept to resume from (Keras'
    BackupAndRestore, or with several replicas a tf.train.CheckpointManager).
    Returns the History (`.history`: metric name -> value per epoch, `.epoch`: epoch indices).
    """
    if model.distribute_strategy is not strategy:
        raise ValueError(f"the model was built under {describe(model.distribute_strategy)}, not under "
                         f"{describe(strategy)}: build and compile it within strategy.scope()")
    batch = train_ds.element_spec[0]
    batch = batch["audio"] if isinstance(batch, dict) else batch
    if batch.shape[0] is not None:
        check_batch_size(batch.shape[0], strategy)
    if strategy.num_replicas_in_sync > 1:
        return train_loop(model, train_ds, strategy, epochs, steps_per_epoch, validation_data, callbacks,
                          initial_epoch, verbose, class_weight, backup_dir)
    callbacks = list(callbacks)
    if backup_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(backup_dir)))
    return model.fit(train_ds, validation_data=validation_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     callbacks=callbacks, verbose=verbose, initial_epoch=initial_epoch,
                     class_weight=dict(class_weight) if class_weight else None)


def _batch_seed_rank(dataset: tf.data.Dataset) -> Optional[int]:
    """Rank of the "seed" of dict batches (make_dataset's "device" placement), else None."""
    x = dataset.element_spec[0]
    return x["seed"].shape.rank if isinstance(x, dict) and "seed" in x else None


def train_loop(model: keras.Model, train_ds: tf.data.Dataset, strategy: tf.distribute.Strategy,
               epochs: int, steps_per_epoch: int, validation_data: Optional[tf.data.Dataset] = None,
               callbacks: Sequence[keras.callbacks.Callback] = (), initial_epoch: int = 0, verbose: int = 2,
               class_weight: Optional[Mapping[int, float]] = None,
               backup_dir: Optional[str | os.PathLike] = None) -> keras.callbacks.History:
    """model.fit's epoch loop written out, for several replicas (see the module docstring). It
    runs under any strategy; under the default one it matches model.fit.

    A BackupAndRestore among `callbacks` (which cannot work here) is replaced by the epoch
    checkpoints, in its backup_dir unless `backup_dir` is given. On workers other than the
    chief, pass only callbacks that steer training (EarlyStopping, ...): callbacks that write
    files would write them once per worker; ModelCheckpoint, TensorBoard and CSVLogger are
    dropped there anyway.
    """
    callbacks = list(callbacks)
    for cb in [cb for cb in callbacks if isinstance(cb, keras.callbacks.BackupAndRestore)]:
        callbacks.remove(cb)
        backup_dir = backup_dir if backup_dir is not None else cb.backup_dir
    chief = is_chief(strategy)
    if not chief:
        callbacks = [cb for cb in callbacks if not isinstance(cb, _CHIEF_ONLY)]
    if class_weight:
        train_ds = train_ds.map(_class_weight_fn(class_weight), num_parallel_calls=tf.data.AUTOTUNE)
    # One [2] seed per batch cannot be split over replicas: tile it per example here, and give
    # each replica row 0 folded with its replica id (BatchStage wants one [2] seed).
    tile_seed = _batch_seed_rank(train_ds) == 1 and strategy.num_replicas_in_sync > 1
    if tile_seed:
        train_ds = train_ds.map(_tile_seed, num_parallel_calls=tf.data.AUTOTUNE)

    with strategy.scope():
        model._symbolic_build(data_batch=train_ds.element_spec)  # what model.fit does first (Keras 3.6)
    backup = _EpochCheckpoint(model, strategy, backup_dir) if backup_dir is not None else None
    if backup is not None:
        restored = backup.restore()
        if is_multi_worker(strategy):
            _check_all_workers_restored(strategy, restored, backup_dir)
        initial_epoch = max(initial_epoch, restored)
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
        if backup is not None:
            backup.save(epoch + 1)
        if model.stop_training:
            break
    if epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(epoch_logs)
    if backup is not None:
        backup.remove()
    barrier(strategy)  # all workers leave together
    return model.history


def _check_all_workers_restored(strategy, epochs_done: int, backup_dir) -> None:
    """RuntimeError on every worker unless all restored the same epoch (else they would train
    different numbers of epochs, and wait for each other's collectives at the end)."""
    def gather():
        return strategy.gather(strategy.run(lambda: tf.constant([epochs_done], tf.int64)), axis=0)
    found = sorted(set(tf.function(gather, autograph=False)().numpy().tolist()))
    if len(found) > 1:
        raise RuntimeError(f"workers resumed after different epochs {found} from {backup_dir}: the "
                           "backup directory must be on storage that all workers share")


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


class _EpochCheckpoint:
    """Model, optimizer and finished epochs, saved after every epoch by every worker (saving may
    take part in collectives): the chief into `directory`, the others into a scratch folder
    deleted after each save."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, directory):
        self.directory = str(directory)
        self.chief = is_chief(strategy)
        with strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=self.epochs_done)

    def restore(self) -> int:
        """Finished epochs of the latest checkpoint in the directory (0 when there is none)."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        print(f"resuming after epoch {int(self.epochs_done)} from {latest}", flush=True)
        return int(self.epochs_done)

    def save(self, epochs_done: int) -> None:
        self.epochs_done.assign(epochs_done)
        if self.chief:
            tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=1).save()
            return
        scratch = tempfile.mkdtemp(prefix="worker_checkpoint_")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def remove(self) -> None:
        if self.chief and Path(self.directory).exists():
            shutil.rmtree(self.directory)
