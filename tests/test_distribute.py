"""Strategy choice as a pure function; the written-out training loop against model.fit and
resuming it (in this process, default strategy); model.fit under MirroredStrategy (two logical
CPUs); training under MultiWorkerMirroredStrategy (two worker processes on localhost).

The distributed runs are subprocesses of this file (`python tests/test_distribute.py ROLE ...`):
logical devices and TF_CONFIG must be set before TensorFlow starts. Each has a timeout, so a
hung collective fails the test instead of blocking CI.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a worker script
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.training.strategy import StrategyPlan, plan_strategy  # noqa: E402
from tests.helpers import free_ports  # noqa: E402

SR = 8000
TIMEOUT_S = 240  # generous: CI machines may be busy; a hang still ends


def tf_config(workers, index, job="worker", **extra):
    return json.dumps({"cluster": {job: workers, **extra}, "task": {"type": job, "index": index}})


# ---------------------------------------------------------------------------------------------
# Choice (no TensorFlow state)


@pytest.mark.parametrize("environ, gpus, expected", [
    ({}, [], StrategyPlan("default")),
    ({}, ["/device:GPU:0"], StrategyPlan("default")),
    ({}, ["/device:GPU:0", "/device:GPU:1"], StrategyPlan("mirrored", devices=("/device:GPU:0", "/device:GPU:1"))),
    # A one-task cluster is no cluster: the GPUs decide.
    ({"TF_CONFIG": tf_config(["host0:2222"], 0)}, ["/device:GPU:0", "/device:GPU:1"],
     StrategyPlan("mirrored", devices=("/device:GPU:0", "/device:GPU:1"))),
    ({"TF_CONFIG": ""}, [], StrategyPlan("default")),
    # Two tasks win over local GPUs (MultiWorkerMirroredStrategy uses them all).
    ({"TF_CONFIG": tf_config(["host0:2222", "host1:2222"], 1)}, ["/device:GPU:0", "/device:GPU:1"],
     StrategyPlan("multi_worker", cluster={"worker": ("host0:2222", "host1:2222")}, task_type="worker",
                  task_id=1)),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
                               "task": {"type": "chief", "index": 0}})},
     [], StrategyPlan("multi_worker", cluster={"chief": ("c:1",), "worker": ("w:1",)}, task_type="chief")),
])
def test_plan_from_tf_config_and_gpus(environ, gpus, expected):
    assert plan_strategy(environ, gpus) == expected


@pytest.mark.parametrize("tf_config_text, message", [
    ("{not json", "TF_CONFIG: not valid JSON"),
    (tf_config(["a:1", "b:1"], 0, ps=["p:1"]), "job 'ps' is not supported"),
    (tf_config(["a:1", "b:1"], 2), "TF_CONFIG.task"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}}), "TF_CONFIG.task"),
])
def test_bad_tf_config_is_named(tf_config_text, message):
    with pytest.raises(ValueError, match=message):
        plan_strategy({"TF_CONFIG": tf_config_text}, [])


def test_default_strategy_description_and_chief():
    import tensorflow as tf

    from models.training.strategy import check_batch_size, choose_strategy, describe, is_chief
    strategy = choose_strategy({}, gpus=[])
    assert strategy is tf.distribute.get_strategy()
    assert describe(strategy) == "default strategy: 1 replica" and is_chief(strategy)
    check_batch_size(3, strategy)


def test_class_weights_become_sample_weights():
    import tensorflow as tf

    from models.training.replicas import _class_weight_fn
    add = _class_weight_fn({0: 0.5, 1: 2.0, 2: 1.0})
    _, _, weights = add(tf.zeros([3, 4]), tf.constant([[0, 1, 0], [1, 0, 0], [0, 0, 1]], tf.float32))
    np.testing.assert_allclose(weights.numpy(), [2.0, 0.5, 1.0])
    _, _, weights = _class_weight_fn({0: 1.0, 1: 3.0})(tf.zeros([2, 4]), tf.constant([[1.0], [0.0]]))
    np.testing.assert_allclose(weights.numpy(), [3.0, 1.0])
    with pytest.raises(ValueError, match="class 1 is missing"):
        _class_weight_fn({0: 1.0, 2: 1.0})


# ---------------------------------------------------------------------------------------------
# The written-out loop in this process (default strategy): same results as model.fit, resume


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """() -> (train_ds, val_ds, model): the same data and initial weights on every call (each
    iterator over one training dataset draws other seeds, so each run gets its own)."""
    import keras

    from models.backbones.registry import model_framing
    from pipeline.datasets.build import make_dataset
    records, labels, cfg, build_model = tiny_run(tmp_path_factory.mktemp("local"))
    val_ds = make_dataset(records[:5], labels, cfg, model_framing(cfg), training=False)  # 2 batches, the last of 1

    def setup():
        keras.utils.set_random_seed(3)
        return make_dataset(records, labels, cfg, model_framing(cfg), training=True, repeat=True), val_ds, build_model()
    return setup


def test_train_loop_matches_model_fit(local_run):
    """Same losses, metrics and weights, class weights included."""
    import keras
    import tensorflow as tf

    from models.training.replicas import train_loop
    runs = []
    class_weight = {0: 0.7, 1: 1.6}
    for train in ("fit", "loop"):
        train_ds, val_ds, model = local_run()
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)]
        if train == "fit":
            history = model.fit(train_ds, validation_data=val_ds, epochs=2, steps_per_epoch=3, verbose=0,
                                callbacks=callbacks, class_weight=class_weight)
        else:
            history = train_loop(model, train_ds, tf.distribute.get_strategy(), epochs=2, steps_per_epoch=3,
                                 validation_data=val_ds, callbacks=callbacks, verbose=0, class_weight=class_weight)
        runs.append((history.history, model.get_weights()))
    (fit_logs, fit_weights), (loop_logs, loop_weights) = runs
    assert set(loop_logs) == set(fit_logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for name in fit_logs:
        np.testing.assert_allclose(loop_logs[name], fit_logs[name], rtol=1e-5, err_msg=name)
    for a, b in zip(fit_weights, loop_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class Interrupted(Exception):
    pass


def test_fit_resumes_after_last_finished_epoch(local_run, tmp_path):
    import keras
    import tensorflow as tf

    from models.training.fit import fit
    train_ds, val_ds, model = local_run()
    backup = tmp_path / "backup"

    class StopBeforeThirdEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise Interrupted

    with pytest.raises(Interrupted):
        fit(model, train_ds, tf.distribute.get_strategy(), epochs=3, steps_per_epoch=2,
            callbacks=[StopBeforeThirdEpoch()], verbose=0, backup_dir=backup)
    saved = model.get_weights()
    assert [p.name for p in backup.glob("*.index")] == ["ckpt-2.index"]

    train_ds, val_ds, model = local_run()  # a restarted process builds everything afresh
    history = fit(model, train_ds, tf.distribute.get_strategy(), epochs=3, steps_per_epoch=2,
                  validation_data=val_ds, verbose=0, backup_dir=backup,
                  callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "logs"))])
    assert history.epoch == [2]  # only the epoch left
    assert int(model.optimizer.iterations.numpy()) == 3 * 2  # optimizer state restored too
    assert not any(np.array_equal(a, b) for a, b in zip(saved, model.get_weights()) if a.size > 1)
    assert not backup.exists()  # removed once training finished
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------------------------
# Distributed runs (subprocesses)


def run_processes(role, arg_lists, tmp_path, envs=None):
    """Run `python tests/test_distribute.py ROLE ARGS...` once per argument list, all at once.

    Returns the exit codes and the logs. A run still going after TIMEOUT_S (a hung collective)
    is killed, with all the others, and fails the test.
    """
    envs = envs or [{}] * len(arg_lists)
    logs = [tmp_path / f"{role}_{i}.log" for i in range(len(arg_lists))]
    procs = []
    for args, extra, log in zip(arg_lists, envs, logs):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update({"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **extra})
        with open(log, "w") as out:
            procs.append(subprocess.Popen([sys.executable, __file__, role, *map(str, args)], cwd=REPO,
                                          env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        tails = "\n".join(log.read_text()[-3000:] for log in logs)
        pytest.fail(f"{role} run still going after {TIMEOUT_S} s:\n{tails}")
    return codes, [l.read_text() for l in logs]


@pytest.fixture(scope="module")
def mirrored_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mirrored")
    codes, logs = run_processes("mirrored", [[tmp]], tmp)
    assert codes == [0], logs[0][-4000:]
    return json.loads((tmp / "result.json").read_text())


def test_mirrored_strategy_fit_on_two_logical_cpus(mirrored_result):
    """Trains, with augmentation on the model's device; the validation loss is that of the whole
    validation set (model.fit under MirroredStrategy would report the first replica's share)."""
    for name in ("plain", "augmented"):
        result = mirrored_result[name]
        assert result["describe"] == "MirroredStrategy: 2 replicas on CPU:0, CPU:1"
        assert result["epochs"] == [0] and result["iterations"] == 3
        assert np.isfinite(result["loss"]).all()
    plain = mirrored_result["plain"]
    np.testing.assert_allclose(plain["val_loss"][-1], plain["single_device_val_loss"], rtol=1e-5)


def test_two_workers_on_localhost_train_alike(tmp_path):
    """Two MultiWorkerMirroredStrategy workers on localhost: both finish with the same finite
    loss history and identical weights (BatchNormalization statistics included); only the chief
    writes files."""
    workers = [f"localhost:{p}" for p in free_ports(2)]
    codes, logs = run_processes("worker", [[tmp_path, i] for i in range(2)], tmp_path,
                                [{"TF_CONFIG": tf_config(workers, i)} for i in range(2)])
    assert codes == [0, 0], "\n".join(l[-3000:] for l in logs)
    results = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert results[0]["describe"] == "MultiWorkerMirroredStrategy: 2 workers, 2 replicas (this is worker 0, chief)"
    assert [r["chief"] for r in results] == [True, False]
    for r in results:
        assert r["epochs"] == [0, 1] and r["iterations"] == 2 * 3
        assert all(np.isfinite(r["loss"] + r["val_loss"]))
    assert results[0]["loss"] == results[1]["loss"] and results[0]["val_loss"] == results[1]["val_loss"]
    weights = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    assert len(weights[0].files) == 7  # conv kernel; BatchNormalization gamma, beta, mean, variance; dense
    for key in weights[0].files:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])
    assert (tmp_path / "best.keras").exists() and (tmp_path / "history.csv").exists()
    assert not list(tmp_path.glob("worker1_*"))
    assert not (tmp_path / "backup").exists()  # saved every epoch, removed once training finished


# ---------------------------------------------------------------------------------------------
# Worker side


def write_corpus(root, n=16, seconds=0.3):
    import pandas as pd
    import soundfile as sf

    rows = []
    for i in range(n):
        label = ("low", "high")[i % 2]
        t = np.arange(int(seconds * SR)) / SR
        wave = 0.5 * np.sin(2 * np.pi * (400 if label == "low" else 2000) * t)
        wave += 0.05 * np.random.default_rng(i).standard_normal(t.size)
        path = Path(root) / f"{label}_{i}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        rows.append((str(path), np.nan, np.nan, label, path.stem))
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label", "group"])


def tiny_run(root, augment=True, batch_size=4):
    """Records, labels, config and a compile function for a tiny small_cnn Trainer."""
    import keras

    from models.backbones.registry import build_backbone, model_framing
    from models.classifier import build_classifier
    from models.training.trainer import Trainer
    from pipeline.features.stage import BatchStage
    from pipeline.config import from_dict
    from pipeline.records.labels import LabelSpec
    from pipeline.features.filters import frontend_output_shape

    records = write_corpus(root)
    cfg = from_dict({
        "audio": {"sample_rate_hz": SR, "clip_s": 0.25},
        "frontend": {"kind": "logmel", "n_fft": 128, "hop_samples": 64, "n_mels": 16, "n_mfcc": 8},
        "augment": {"enabled": augment, "time_masks": 1, "time_mask_max_frames": 3, "freq_masks": 1,
                    "freq_mask_max_bins": 2, "gain_db_range": 3.0},
        "pipeline": {"batch_size": batch_size, "shuffle_buffer": 16, "seed": 5, "placement": "device"},
        "model": {"name": "small_cnn", "width": 4, "depth": 1, "dropout": 0.0},
    })
    labels = LabelSpec.from_records(records, "multiclass")

    def build_model():
        frames = model_framing(cfg)
        bins = frontend_output_shape(cfg.frontend, SR, cfg.audio.clip_samples)[1]
        backbone = build_backbone(cfg.model, (frames.trunk_frames, bins, 1), labels.num_outputs, frames)
        classifier = build_classifier(backbone, cfg.frontend, SR, frames, labels.task, labels.names)
        model = Trainer(classifier, BatchStage(classifier.frontend, cfg.augment, SR))
        model(keras.ops.zeros([1, frames.trunk_frames, bins, 1]))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        return model
    return records, labels, cfg, build_model


def history_summary(model, history):
    return {"epochs": history.epoch, "loss": history.history["loss"],
            "val_loss": history.history.get("val_loss", []),
            "iterations": int(model.optimizer.iterations.numpy())}


def mirrored_main(out):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from models.training.fit import fit
    from models.training.strategy import choose_strategy, describe
    from models.backbones.registry import model_framing
    from pipeline.datasets.build import make_dataset

    out = Path(out)
    # Two logical CPUs stand in for two GPUs.
    strategy = choose_strategy({}, gpus=[d.name for d in tf.config.list_logical_devices("CPU")])
    result = {}
    for name, augment in (("plain", False), ("augmented", True)):
        (out / name).mkdir()
        records, labels, cfg, build_model = tiny_run(out / name, augment=augment)
        train_ds = make_dataset(records, labels, cfg, model_framing(cfg), training=True, repeat=True)
        val_ds = make_dataset(records, labels, cfg, model_framing(cfg), training=False) if name == "plain" else None
        with strategy.scope():
            model = build_model()
        history = fit(model, train_ds, strategy, epochs=1, steps_per_epoch=3, validation_data=val_ds,
                      verbose=0, backup_dir=out / name / "backup")
        result[name] = {"describe": describe(strategy), **history_summary(model, history)}
        if val_ds is not None:
            single = build_model()  # outside the scope: one device
            single.set_weights(model.get_weights())
            result[name]["single_device_val_loss"] = single.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    (out / "result.json").write_text(json.dumps(result))


def worker_main(out, index):
    import keras

    from models.training.callbacks import BestCheckpoint
    from models.training.fit import fit
    from models.training.strategy import choose_strategy, describe, is_chief
    from models.backbones.registry import model_framing
    from pipeline.datasets.build import make_dataset

    out, index = Path(out), int(index)
    strategy = choose_strategy()  # first: before TensorFlow runs any op
    (out / f"data{index}").mkdir()  # each worker its own copy of the same files
    records, labels, cfg, build_model = tiny_run(out / f"data{index}")
    train_ds = make_dataset(records, labels, cfg, model_framing(cfg), training=True, repeat=True)
    val_ds = make_dataset(records[:5], labels, cfg, model_framing(cfg), training=False)  # 2 batches, the last of 1
    with strategy.scope():
        model = build_model()
    name = "" if is_chief(strategy) else f"worker{index}_"  # where the chief-only callbacks would write
    callbacks = [BestCheckpoint(out / f"{name}best.keras", "val_loss"),
                 keras.callbacks.CSVLogger(str(out / f"{name}history.csv")),
                 keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)]
    history = fit(model, train_ds, strategy, epochs=2, steps_per_epoch=3, validation_data=val_ds,
                  callbacks=callbacks, verbose=2, backup_dir=out / "backup")
    result = {"describe": describe(strategy), "chief": is_chief(strategy), **history_summary(model, history)}
    (out / f"worker{index}.json").write_text(json.dumps(result))
    np.savez(out / f"worker{index}.npz", *model.get_weights())


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"mirrored": mirrored_main, "worker": worker_main}[role](*args)
