"""TFLiteGraph against tf.lite.Interpreter on small models converted to TFLite inside the test.

The models cover the operators BirdNET uses that TF and Keras can emit: conv, depthwise conv,
pooling, concatenation, padding, reshape, fully connected, mean, and an STFT spectrogram
(RFFT2D, COMPLEX_ABS, REAL, GATHER framing, SHAPE arithmetic). The interpreter runs one row
at a time, so the batch-1 model with RESHAPE shapes baked to batch 1 is checked at batch 3 too.
Outputs are of order 1; measured differences: ~3e-8 (CNN), ~1e-7 (baked batch), ~4e-6 on
outputs up to 3.5 (spectrogram).
"""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from models.backbones.tflite_graph import TFLiteGraph, op_name, tensor_name

ATOL = 1e-5
SIGNAL_SAMPLES = 4000


def to_tflite(module: tf.Module) -> bytes:
    """module.__call__ (a tf.function with an input signature) as a .tflite flatbuffer."""
    concrete = module.__call__.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], module).convert()


def cnn_model() -> bytes:
    """A Keras CNN: conv, depthwise conv, folded batch norm, max|avg pools, swish, flatten, dense."""
    inputs = keras.Input((24, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)  # [batch, 24, 16, 8]
    x = keras.layers.ZeroPadding2D(1)(x)  # [batch, 26, 18, 8]
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid")(x)  # [batch, 12, 8, 8]
    x = keras.layers.BatchNormalization()(x)
    pooled = [keras.layers.MaxPooling2D(2)(x), keras.layers.AveragePooling2D(2)(x)]
    x = keras.layers.Activation("swish")(keras.layers.Concatenate()(pooled))  # [batch, 6, 4, 16]
    flat = keras.layers.Dense(5)(keras.layers.Flatten()(x))  # [batch, 5]
    pooled = keras.layers.Dense(4, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([flat, pooled]))
    return tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()


class Spectrogram(tf.Module):
    """STFT -> |X| and Re(X) on a mel-like matrix -> conv -> mean: RFFT2D, COMPLEX_ABS, REAL."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(1)
        self.mel = tf.constant(rng.uniform(size=(129, 16)).astype(np.float32) / 64)
        self.kernel = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32) / 4)

    @tf.function(input_signature=[tf.TensorSpec([None, SIGNAL_SAMPLES], tf.float32)])
    def __call__(self, x):
        stft = tf.signal.stft(x, 256, 128, window_fn=tf.signal.hann_window)  # [batch, frames, 129]
        # ABS keeps the log's argument positive once training has pushed mel weights below zero.
        magnitude = tf.math.log(tf.abs(tf.tensordot(tf.abs(stft), self.mel, 1)) + 1e-3)  # [batch, frames, 16]
        real = tf.tensordot(tf.math.real(stft), self.mel, 1)  # [batch, frames, 16]
        image = tf.stack([magnitude, real], -1)  # [batch, frames, 16, 2]
        y = tf.nn.relu(tf.nn.conv2d(image, self.kernel, 1, "SAME"))  # [batch, frames, 16, 4]
        return tf.reduce_mean(y, [1, 2])  # [batch, 4]


class BakedBatch(tf.Module):
    """Converted at batch 1: both RESHAPEs get constant shapes starting with 1. The two
    convolutions share one kernel tensor."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.constant(np.random.default_rng(2).normal(size=(3, 3, 1, 1)).astype(np.float32) / 3)

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def __call__(self, x):
        image = tf.reshape(x, [1, 8, 8, 1])
        y = tf.nn.relu(tf.nn.conv2d(image, self.kernel, 1, "VALID"))  # [1, 6, 6, 1]
        y = tf.nn.conv2d(y, self.kernel, 1, "VALID")  # [1, 4, 4, 1]
        return tf.reshape(y, [1, -1])  # [1, 16]


class Cumsum(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def __call__(self, x):
        return tf.math.cumsum(x, 1)


INPUT_SHAPES = {"cnn": (24, 16, 3), "spectrogram": (SIGNAL_SAMPLES,), "baked": (64,)}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict:
    """name -> path of the .tflite file, written once for the module."""
    folder = tmp_path_factory.mktemp("tflite")
    contents = {"cnn": cnn_model(), "spectrogram": to_tflite(Spectrogram()),
                "baked": to_tflite(BakedBatch()), "cumsum": to_tflite(Cumsum())}
    files = {}
    for name, content in contents.items():
        files[name] = folder / f"{name}.tflite"
        files[name].write_bytes(content)
    return files


def inputs_for(name: str, batch: int) -> np.ndarray:
    x = np.random.default_rng(batch).normal(size=(batch,) + INPUT_SHAPES[name]).astype(np.float32)
    if name == "spectrogram":
        x[0, : SIGNAL_SAMPLES // 2] = 0.0  # digital silence: STFT bins that are exactly zero
    return x


def interpreter_outputs(path, x: np.ndarray) -> np.ndarray:
    """The interpreter's output for each row of x run alone at batch 1, stacked."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, (1,) + x.shape[1:])
    interpreter.allocate_tensors()
    rows = []
    for row in x:
        interpreter.set_tensor(index, row[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(rows)


def operator_names(path) -> set:
    model = flatbuffer_utils.read_model(str(path))
    return {op_name(model, op) for op in model.subgraphs[0].operators}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", ["cnn", "spectrogram", "baked"])
def test_matches_interpreter(model_files, name, batch):
    x = inputs_for(name, batch)
    expected = interpreter_outputs(model_files[name], x)
    actual = TFLiteGraph(model_path=str(model_files[name]))(x).numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL)


def test_spectrogram_model_exercises_the_fft_operators(model_files):
    assert {"RFFT2D", "COMPLEX_ABS", "REAL", "GATHER", "SHAPE"} <= operator_names(model_files["spectrogram"])


def test_float32_fft_option_is_kept_in_the_config(model_files):
    """float64_fft=False trades TFLite's double-precision RFFT2D for speed; on this model (whose
    log(|X| + 1e-3) is not sensitive to rounding noise in empty bins) the outputs barely move."""
    layer = TFLiteGraph(model_path=str(model_files["spectrogram"]), float64_fft=False)
    assert layer.get_config()["float64_fft"] is False
    x = inputs_for("spectrogram", 2)
    np.testing.assert_allclose(layer(x).numpy(), interpreter_outputs(model_files["spectrogram"], x), atol=1e-4)


def test_baked_batch_reshapes_take_the_run_time_batch(model_files):
    layer = TFLiteGraph(model_path=str(model_files["baked"]))
    assert [node.fix_batch for node in layer._plan.nodes if node.op == "RESHAPE"] == [True, True]
    assert layer(inputs_for("baked", 5)).shape == (5, 16)


def test_shared_constants_become_one_weight_per_operator(model_files):
    """The two convolutions read one kernel tensor; fine-tuning must be able to move them apart."""
    layer = TFLiteGraph(model_path=str(model_files["baked"]))
    kernels = [w for w in layer.weights if w.name.startswith("conv_2d")]
    assert len(kernels) == 2 and kernels[0] is not kernels[1]
    np.testing.assert_array_equal(kernels[0].numpy(), kernels[1].numpy())


def test_sub_graphs_compose_to_the_whole(model_files):
    """Cut the CNN at the output of its first CONCATENATION: front then back == whole."""
    path = str(model_files["cnn"])
    model = flatbuffer_utils.read_model(path)
    subgraph = model.subgraphs[0]
    cut = next(tensor_name(subgraph, op.outputs[0]) for op in subgraph.operators
               if op_name(model, op) == "CONCATENATION")
    front = TFLiteGraph(output_tensors=[cut], model_path=path)
    back = TFLiteGraph(input_tensors=[cut], model_path=path)
    x = inputs_for("cnn", 3)
    assert front(x).shape == (3, 6, 4, 16)
    np.testing.assert_allclose(back(front(x)).numpy(), TFLiteGraph(model_path=path)(x).numpy(), atol=1e-6)


def test_unsupported_operator_is_named(model_files):
    with pytest.raises(NotImplementedError, match="TFLite operator CUMSUM"):
        TFLiteGraph(model_path=str(model_files["cumsum"]))


def test_unknown_tensor_name_is_reported(model_files):
    with pytest.raises(ValueError, match="exactly one tensor named 'no/such/tensor'"):
        TFLiteGraph(output_tensors=["no/such/tensor"], model_path=str(model_files["cnn"]))


def test_round_trip_through_model_keras_keeps_changed_weights(model_files, tmp_path):
    """Weights come back from model.keras, not re-read from the .tflite file."""
    inputs = keras.Input(INPUT_SHAPES["cnn"])
    model = keras.Model(inputs, TFLiteGraph(model_path=str(model_files["cnn"]), name="cnn")(inputs))
    kernel = model.get_layer("cnn").weights[0]
    kernel.assign(kernel.numpy() * 1.5)
    x = inputs_for("cnn", 3)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("cnn").get_config()["model_path"] == str(model_files["cnn"])


def test_frozen_layer_has_no_trainable_weights(model_files):
    layer = TFLiteGraph(model_path=str(model_files["cnn"]), trainable=False)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == len(layer.weights) > 0


def test_fit_reaches_every_weight(model_files):
    """Gradients reach all weights, and fit lowers the loss of a small regression."""
    layer = TFLiteGraph(model_path=str(model_files["spectrogram"]))
    x = inputs_for("spectrogram", 8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    gradients = tape.gradient(loss, layer.trainable_weights)
    assert len(gradients) == len(layer.weights) > 0
    assert all(g is not None and np.isfinite(g).all() and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)
    inputs = keras.Input(INPUT_SHAPES["spectrogram"])
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    history = model.fit(x, np.zeros((8, 4), np.float32), epochs=5, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_computes_in_float32_under_a_mixed_precision_policy(model_files):
    x = inputs_for("cnn", 2)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        actual = TFLiteGraph(model_path=str(model_files["cnn"]))(x)
    finally:
        keras.config.set_dtype_policy(previous)
    assert actual.dtype == tf.float32
    np.testing.assert_allclose(actual.numpy(), interpreter_outputs(model_files["cnn"], x), atol=ATOL)


def test_runs_inside_tf_data(model_files):
    layer = TFLiteGraph(model_path=str(model_files["spectrogram"]), trainable=False)
    x = inputs_for("spectrogram", 4)
    mapped = tf.data.Dataset.from_tensor_slices(x).batch(2).map(layer)
    np.testing.assert_allclose(np.concatenate(list(mapped.as_numpy_iterator())), layer(x).numpy(), atol=1e-6)


def test_resource_in_an_installed_package(model_files, tmp_path, monkeypatch):
    """A file shipped in a package is found without importing the package, and the config
    stores [package, path] rather than a machine-specific path."""
    package = tmp_path / "fake_model_package"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing the package is not needed')\n")
    (package / "models" / "cnn.tflite").write_bytes(model_files["cnn"].read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path))
    layer = TFLiteGraph(resource=["fake_model_package", "models/cnn.tflite"])
    assert layer.get_config()["resource"] == ["fake_model_package", "models/cnn.tflite"]
    assert layer(inputs_for("cnn", 2)).shape == (2, 3)
    assert "fake_model_package" not in sys.modules
    with pytest.raises(ModuleNotFoundError, match="'no_such_package'"):
        TFLiteGraph(resource=["no_such_package", "model.tflite"])
