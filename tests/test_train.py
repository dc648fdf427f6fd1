"""train.py end to end on synthesized demo data: artifacts, export parity, TensorBoard content,
accuracy, and resuming a killed run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import train
from pipeline.tools.synth import synthesize
from tests.helpers import set_args

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"
ARTIFACTS = ("config.yaml", "split_manifest.csv", "split_manifest.sha256", "bad_files.csv", "labels.json",
             "model.keras", "export/saved_model.pb", "metrics.json", "classification_report.txt",
             "confusion_matrix.png", "training_curves.png", "history.csv")


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    synthesize(root, seed=2, clips_per_class=24, clip_s=1.5, long_s=10.0)
    return root


@pytest.fixture(scope="module")
def tiny_run(demo_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    overrides = [f"data.root={demo_data}", "train.epochs=2", "model.width=4", "model.depth=1",
                 "pipeline.batch_size=16", "train.image_examples=4"]
    assert train.main(["--config", str(DEMO), "--out", str(run), *set_args(overrides)]) == 0
    return run


def test_run_directory_holds_every_artifact(tiny_run):
    for name in ARTIFACTS:
        assert (tiny_run / name).exists(), name
    assert (tiny_run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tiny_run / "backup").exists()  # removed once training finished
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "pr_auc", "parameters", "inference_ms_per_example", "split"):
        assert key in metrics, key
    assert metrics["split"] == "test"
    assert set(metrics["per_class"]) == {"noise", "pulses", "upsweep", "whistle"}
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_class"]["noise"])
    assert metrics["parameters"] > 0 and metrics["inference_ms_per_example"] > 0
    assert sum(m["support"] for m in metrics["per_class"].values()) == metrics["examples"]
    assert list(pd.read_csv(tiny_run / "history.csv")["epoch"]) == [0, 1]


def test_export_and_model_keras_give_the_same_scores(tiny_run):
    model = keras.saving.load_model(tiny_run / "model.keras")
    exported = tf.saved_model.load(str(tiny_run / "export"))
    serve = exported.signatures["serving_default"]
    clip = serve.structured_input_signature[1]["waveform"].shape[1]
    meta = {k: v.numpy() for k, v in exported.signatures["metadata"]().items()}
    # 1.5 s at 16 kHz and the frontend's half window of real audio on each side: raw waveform
    # in, frontend inside.
    assert meta["clip_samples"] == 24000 and clip == meta["input_samples"] == 24000 + 2 * 256
    wave = np.random.default_rng(0).normal(0, 0.1, (3, clip)).astype(np.float32)
    expected = model(wave, training=False).numpy()
    got = serve(waveform=tf.constant(wave))["scores"].numpy()
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # softmax scores


def _tags(log_dir: Path) -> set[str]:
    tags = set()
    for path in log_dir.rglob("events.out.tfevents*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {v.tag for v in event.summary.value}
    return tags


def test_tensorboard_has_scalars_images_confusion_matrix_and_pr_curves(tiny_run):
    tags = _tags(tiny_run / "logs")
    assert {"epoch_loss", "epoch_accuracy", "augmented_inputs", "confusion_matrix"} <= tags
    assert {"pr/noise", "pr/pulses", "pr/upsweep", "pr/whistle"} <= tags


def test_without_validation_records_every_epoch_is_trained_and_the_last_kept(demo_data, tmp_path, capsys):
    """No validation split: nothing to stop early on, so patience 1 must not end the run after
    its first epoch (a missing score never improves), and Keras is not handed an empty
    validation set (its "input ran out of data" warning)."""
    import warnings

    run = tmp_path / "run"
    overrides = [f"data.root={demo_data}", "data.val_fraction=0", "train.epochs=3", "train.early_stopping_patience=1",
                 "train.monitor=val_loss", "model.width=4", "model.depth=1", "pipeline.batch_size=16",
                 "train.image_examples=0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train.main(["--config", str(DEMO), "--out", str(run), *set_args(overrides)]) == 0
    assert "no validation records: all 3 epochs are trained and the last one kept" in capsys.readouterr().out
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert "val" not in set(pd.read_csv(run / "split_manifest.csv")["split"])
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2] and history.filter(like="val_").isna().all().all()
    assert (run / "model.keras").exists()


def test_killed_run_resumes_at_the_next_epoch(demo_data, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(DEMO), "--out", str(run),
               *set_args([f"data.root={demo_data}", "train.epochs=8", "model.width=4", "model.depth=1",
                       "pipeline.batch_size=16", "train.early_stopping_patience=50"])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run / "history.csv"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and first.poll() is None:
            if history.exists() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    done = len(pd.read_csv(history))
    assert 2 <= done < 8, f"the first run finished {done} epochs before it was killed"
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    epochs = [line.split()[1] for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert epochs[0] == f"{done + 1}/8", epochs  # resumes after the last finished epoch
    assert list(pd.read_csv(history)["epoch"]) == list(range(8))


def test_training_metrics_read_soft_targets_as_decisions():
    """Mixup and label smoothing give targets like 0.7: counted as positive (>= 0.5), so a
    model that gets every decision right scores 1 on the training metrics."""
    from models.training.compile import HardBinaryAccuracy, HardPrecision, HardRecall

    targets = np.array([[0.7], [0.2], [0.6], [0.1]], np.float32)
    scores = np.array([[0.9], [0.3], [0.8], [0.05]], np.float32)
    for metric in (HardBinaryAccuracy(), HardPrecision(), HardRecall()):
        metric.update_state(targets, scores)
        assert float(metric.result()) == 1.0, type(metric).__name__
    plain = keras.metrics.BinaryAccuracy()
    plain.update_state(targets, scores)
    assert float(plain.result()) == 0.0  # what the plain metric reports for the same decisions
