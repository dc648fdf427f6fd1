"""ResNet's strided projection shortcut: training a narrow ResNet on CPU must not crash
(oneDNN's strided 1x1 backward_weights overruns its workspace when a conv has fewer input
channels than the channel block, uxlfoundation/oneDNN#6035), and the subsample + 1x1 conv
that replaces the strided conv computes the same thing."""
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from models.backbones.resnet import Subsample2D, projection_shortcut, resnet
from pipeline.config import ModelConfig

REPO = Path(__file__).resolve().parent.parent

# Before the fix this died in the first epoch on every run on an AVX-512 machine (SIGSEGV,
# SIGABRT 'corrupted size vs. prev_size' / 'double free', even SIGILL): width 8 < the channel
# block of 16, stride 2 in stage 1. Smaller batches or maps overrun into slack and survive, so
# the shapes are the tuner trial's (batch 64, 94x48 features). A crash kills the interpreter,
# hence the subprocess; the timeout catches the hang the same bug can cause.
TRAIN_NARROW_RESNET = """
import keras, numpy as np
from models.backbones.resnet import resnet
from pipeline.config import ModelConfig
keras.utils.set_random_seed(0)
shape, batch, steps = (94, 48, 1), 64, 8
model = resnet(shape, 4, ModelConfig(name="resnet", width=8, depth=2, kernel_size=3, dropout=0.0))
model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.standard_normal((batch * steps, *shape)).astype("float32")
y = keras.utils.to_categorical(rng.integers(0, 4, batch * steps), 4)
model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
print("trained")
"""


def test_training_a_narrow_resnet_on_cpu_does_not_crash():
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-X", "faulthandler", "-c", TRAIN_NARROW_RESNET], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"exit {run.returncode}:\n{run.stderr[-3000:]}"
    assert "trained" in run.stdout


def test_no_strided_1x1_convolutions():
    model = resnet((94, 48, 1), 4, ModelConfig(name="resnet", width=8, depth=3, kernel_size=5))
    pointwise = [layer for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)]
    assert [layer.name for layer in pointwise] == ["stage1_proj", "stage2_proj"]
    assert all(tuple(layer.strides) == (1, 1) for layer in pointwise)


def test_projection_equals_a_strided_1x1_convolution():
    for height, width in [(94, 48), (47, 24), (5, 3)]:
        x = tf.random.stateless_normal([2, height, width, 8], seed=[1, 2])
        inputs = keras.Input((height, width, 8))
        model = keras.Model(inputs, projection_shortcut(inputs, 16, 2, "s"))
        kernel = model.get_layer("s_proj").kernel
        # Forward only: the strided conv's weight gradient is the faulty kernel.
        want = tf.nn.conv2d(x, kernel, strides=2, padding="VALID")
        bn = model.get_layer("s_proj_bn")
        want = (want - bn.moving_mean) / tf.sqrt(bn.moving_variance + bn.epsilon) * bn.gamma + bn.beta
        got = model(x, training=False)
        assert got.shape == want.shape == (2, -(-height // 2), -(-width // 2), 16)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_subsample_round_trips_through_its_config():
    layer = Subsample2D(3, name="sub")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, Subsample2D) and again.strides == 3
    assert again.compute_output_shape((None, 10, 9, 4)) == (None, 4, 3, 4)
    np.testing.assert_array_equal(again(np.arange(90.0).reshape(1, 10, 9, 1))[0, :, :, 0],
                                  np.arange(90.0).reshape(10, 9)[::3, ::3])
