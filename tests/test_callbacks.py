"""The callbacks that decide a run's outcome: which epoch is kept (train.monitor), when training
stops, the BatchNormalization statistics recomputed before each validation, and the validation
scores each epoch."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.training.callbacks import BatchStatistics, BestCheckpoint, EarlyStopping, ValidationScores, epoch_rank
from pipeline.records.labels import LabelSpec

# Four epochs whose best differs by monitor: loss best at 2, macro F1 best at 1 and 3 (tie: the
# lower loss, 3), PR-AUC best at 0, accuracy best at 3.
HISTORY = [
    {"val_loss": 0.50, "val_macro_f1": 0.70, "val_pr_auc": 0.95, "val_accuracy": 0.70},
    {"val_loss": 0.45, "val_macro_f1": 0.90, "val_pr_auc": 0.90, "val_accuracy": 0.85},
    {"val_loss": 0.30, "val_macro_f1": 0.80, "val_pr_auc": 0.91, "val_accuracy": 0.80},
    {"val_loss": 0.40, "val_macro_f1": 0.90, "val_pr_auc": 0.92, "val_accuracy": 0.90},
]


class Scripted(keras.Model):
    """A model whose classifier's single weight records the epoch it was saved at."""

    def __init__(self):
        super().__init__()
        inputs = keras.Input((1,))
        self.classifier = keras.Model(inputs, keras.layers.Dense(1, name="epoch")(inputs))


def run_epochs(callback, model, history):
    model.stop_training = False
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, logs in enumerate(history):
        model.classifier.get_layer("epoch").set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])
        callback.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            return epoch
    return None


@pytest.mark.parametrize("monitor, best", [("val_loss", 2), ("val_macro_f1", 3), ("val_pr_auc", 0),
                                           ("val_accuracy", 3)])
def test_the_checkpoint_keeps_the_epoch_the_monitor_names(tmp_path, monitor, best):
    path = tmp_path / "model.keras"
    run_epochs(BestCheckpoint(path, monitor), Scripted(), HISTORY)
    kept = keras.saving.load_model(path)
    assert kept.get_layer("epoch").get_weights()[0][0, 0] == best


def test_keep_last_holds_the_last_epoch_whatever_the_monitor(tmp_path):
    path = tmp_path / "model.keras"
    run_epochs(BestCheckpoint(path, "val_pr_auc", keep="last"), Scripted(), HISTORY)
    kept = keras.saving.load_model(path)
    assert kept.get_layer("epoch").get_weights()[0][0, 0] == len(HISTORY) - 1


def test_nan_epochs_never_win_and_ties_go_to_the_lower_loss():
    assert epoch_rank({"val_macro_f1": math.nan, "val_loss": 0.1}, "val_macro_f1") < \
        epoch_rank({"val_macro_f1": 0.1, "val_loss": 9.0}, "val_macro_f1")
    assert epoch_rank({"val_macro_f1": 0.9, "val_loss": 0.2}, "val_macro_f1") > \
        epoch_rank({"val_macro_f1": 0.9, "val_loss": 0.3}, "val_macro_f1")


@pytest.mark.parametrize("monitor, patience, stop", [("val_loss", 1, 3), ("val_macro_f1", 2, 3),
                                                     ("val_macro_f1", 3, None), ("val_pr_auc", 2, 2),
                                                     ("val_pr_auc", 3, 3)])
def test_early_stopping_follows_the_monitor(monitor, patience, stop):
    """A tie is no improvement: F1 0.9 again at epoch 3 counts as the second epoch without one."""
    model = Scripted()
    assert run_epochs(EarlyStopping(monitor, patience), model, HISTORY) == stop


def test_batch_statistics_are_the_training_split_averages():
    """After a recompute each BatchNormalization layer holds the mean of its batch means and
    variances over the statistics stream, computed here by hand."""
    from models.training.trainer import Trainer

    inputs = keras.Input((4, 3, 1))
    x = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    backbone = keras.Model(inputs, keras.layers.Flatten()(x))

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def scores(self, features, training=False):
            return self.backbone(features, training=training)

    trainer = Trainer(Classifier(), stage=None)
    batches = [tf.random.stateless_normal([5, 4, 3, 1], [i, 1]) * (i + 1) for i in range(3)]
    dataset = tf.data.Dataset.from_tensor_slices([b.numpy() for b in batches]).map(
        lambda f: ({"features": f}, tf.zeros([5, 1])))
    callback = BatchStatistics(dataset.repeat(), batches=3)
    callback.set_model(trainer)
    callback.on_test_begin()
    conv = backbone.get_layer("conv")
    outputs = [conv(b).numpy() for b in batches]  # [5, 4, 3, 2] each
    bn = backbone.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([o.mean(axis=(0, 1, 2)) for o in outputs], 0),
                               rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([o.var(axis=(0, 1, 2)) for o in outputs], 0),
                               rtol=1e-4)
    assert bn.momentum == 0.99  # training goes on with its own momentum


def test_validation_scores_follow_the_weights_through_one_traced_graph():
    """Each epoch's val_pr_auc is that of the weights at that epoch (scores computed here by hand),
    while the model's Python code runs only while the first epoch traces the graph, not for every
    batch of every epoch as an eager call would (slow for recurrent layers)."""
    from models.training.evaluation import classification_metrics
    from models.training.trainer import Trainer

    calls = []

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, activation="sigmoid")

        def scores(self, features, training=False):
            calls.append(features.shape)  # at tracing only, in a graph
            return self.dense(keras.ops.reshape(features, (-1, 2)))

    trainer = Trainer(Classifier(), stage=None)
    features = np.random.default_rng(0).normal(size=(7, 2, 1, 1)).astype(np.float32)
    targets = np.array([[0], [1], [0], [1], [1], [0], [0]], np.float32)
    val = tf.data.Dataset.from_tensor_slices((features, targets)).batch(3).map(lambda f, y: ({"features": f}, y))
    labels = LabelSpec(("noise", "call"), "binary")
    callback = ValidationScores(val, labels)
    callback.set_model(trainer)
    trainer.classifier.scores(features[:1])
    traced = []
    for epoch, weights in enumerate([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]):
        trainer.classifier.dense.set_weights([np.array(weights, np.float32)[:, None], np.zeros(1, np.float32)])
        logs = {}
        callback.on_epoch_end(epoch, logs)
        scores = 1 / (1 + np.exp(-features.reshape(7, 2) @ np.array(weights)[:, None]))
        expected = classification_metrics(scores, targets, labels)[0]["pr_auc"]
        assert logs["val_pr_auc"] == pytest.approx(expected), epoch
        traced.append(len(calls))
    assert traced[0] == traced[-1], traced
