"""Which distribution strategy a run uses, decided from the environment:

  TF_CONFIG with two or more chief/worker tasks  -> MultiWorkerMirroredStrategy
  several GPUs visible                           -> MirroredStrategy over them
  otherwise                                      -> the default strategy (one device)

Build and compile the model under `strategy.scope()`, then train with models.training.fit.fit.
The batch size of the datasets is the global one; it must divide evenly over the replicas.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence

import tensorflow as tf

TRAINING_JOBS = ("chief", "worker")


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
    """`dataset` with DATA auto-sharding, unless it chose a policy itself (pipeline.datasets.service
    turns sharding off: the service splits the data). A record table (from_tensor_slices) has no
    files to shard by, so AUTO would warn and fall back to DATA anyway."""
    policy = tf.data.experimental.AutoShardPolicy
    if dataset.options().experimental_distribute.auto_shard_policy != policy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.DATA
    return dataset.with_options(options)
