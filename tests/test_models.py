"""Model registry: the pinned names, every backbone builds, trains a step and keeps float32
logits under mixed precision; the knobs change the models; the baselines match their
references; the parameter table command."""
import dataclasses

import keras
import numpy as np
import pytest

from models.backbones.registry import FRAME_MODELS, OWN_FRONTEND, REGISTRY, build_backbone, main, parameter_count
from pipeline.config import ModelConfig

SMALL_INPUT = (40, 32, 1)  # [frames, bins, 1]
NUM_OUTPUTS = 3
# Small knobs keep the whole file fast; the fixed models ignore them.
SMALL = ModelConfig(width=8, depth=2, kernel_size=3, block_pooling="max", global_pooling="avg", dropout=0.1)
TUNABLE = ["small_cnn", "resnet", "mobilenet"]
# The families built on the project's frontend features (the others bring their own frontend).
ON_PROJECT_FEATURES = sorted(set(REGISTRY) - set(OWN_FRONTEND))
POOLED = ["small_cnn", "resnet", "mobilenet", "efficientnet_b0"]


def build(name: str, params: ModelConfig = SMALL, input_shape=SMALL_INPUT, num_outputs=NUM_OUTPUTS):
    return build_backbone(dataclasses.replace(params, name=name), input_shape, num_outputs)


def features(batch: int, input_shape=SMALL_INPUT) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, *input_shape)).astype("float32")


def test_registry_names_are_pinned():
    assert set(REGISTRY) == {"small_cnn", "capuchin_baseline", "watkins_cnn", "resnet", "mobilenet",
                             "efficientnet_b0", "crnn", "birdnet", "birdnet_frames"}
    assert set(OWN_FRONTEND) == {"birdnet", "birdnet_frames"}
    assert FRAME_MODELS == {"crnn", "birdnet_frames"}


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="model.name: unknown model 'resnet50'") as err:
        build("resnet50")
    assert all(name in str(err.value) for name in REGISTRY)


@pytest.mark.parametrize("name", ON_PROJECT_FEATURES)
def test_builds_and_trains_one_step(name):
    keras.utils.set_random_seed(0)
    model = build(name)
    x = features(4)
    y = keras.utils.to_categorical([0, 1, 2, 0], NUM_OUTPUTS)
    if name in FRAME_MODELS:  # a row of logits per frame
        y = np.repeat(y[:, None, :], SMALL_INPUT[0], axis=1)
    logits = model(x, training=False)
    assert tuple(logits.shape) == y.shape
    assert logits.dtype == "float32"
    # Eager: tracing EfficientNetB0's train step into a graph alone takes ~30 s on 2 cores.
    model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    before = np.array(model.get_layer("logits").kernel)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert not np.allclose(before, np.array(model.get_layer("logits").kernel))


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ON_PROJECT_FEATURES)
def test_mixed_precision_keeps_float32_logits(name, mixed_precision):
    model = build(name)
    # The policy reached the model (so float32 logits are the logits layer's doing).
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    assert model(features(2), training=False).dtype == "float32"


@pytest.mark.parametrize("name", TUNABLE)
@pytest.mark.parametrize("field, value", [("width", 16), ("depth", 3), ("kernel_size", 5)])
def test_width_depth_kernel_size_grow_the_model(name, field, value):
    bigger = dataclasses.replace(SMALL, **{field: value})
    assert parameter_count(name, SMALL_INPUT, NUM_OUTPUTS, bigger) > parameter_count(
        name, SMALL_INPUT, NUM_OUTPUTS, SMALL)


@pytest.mark.parametrize("name", POOLED)
@pytest.mark.parametrize("pooling, layer_type", [("avg", keras.layers.GlobalAveragePooling2D),
                                                 ("max", keras.layers.GlobalMaxPooling2D)])
def test_pooling_and_dropout_set_the_head(name, pooling, layer_type):
    model = build(name, dataclasses.replace(SMALL, global_pooling=pooling, dropout=0.35))
    assert type(model.get_layer("global_pool")) is layer_type
    assert model.get_layer("dropout").rate == 0.35


def test_watkins_cnn_matches_the_reference_summary():
    # Reference 002 (Watkins, 60x560 MFCCs, 32 species): Conv2D 4 (None, 280, 30, 4) 40;
    # MaxPooling2D (None, 140, 15, 4); Conv2D 16 (None, 70, 8, 16) 592; Conv2D 32
    # (None, 18, 2, 32) 4640; Dense 64 20544; total 46,392.
    model = build("watkins_cnn", input_shape=(560, 60, 1), num_outputs=32)
    rows = {"conv1": ((280, 30, 4), 40), "pool1": ((140, 15, 4), 0), "conv2": ((70, 8, 16), 592),
            "conv3": ((18, 2, 32), 4640), "dense": ((64,), 20544)}
    for layer_name, (shape, params) in rows.items():
        layer = model.get_layer(layer_name)
        assert (tuple(layer.output.shape[1:]), layer.count_params()) == (shape, params), layer_name
    assert parameter_count("watkins_cnn", (560, 60, 1), 32) == pytest.approx(46_392, rel=0.03)


def test_capuchin_baseline_is_the_tutorials_network():
    # The tutorial's summary: conv2d 160, conv2d 2320 (unpadded 3x3), Flatten of every cell,
    # Dense 128, Dense 1 (129); no pooling.
    model = build("capuchin_baseline", input_shape=(50, 30, 1), num_outputs=1)
    assert model.get_layer("conv1").count_params() == 160
    assert model.get_layer("conv2").count_params() == 2320
    assert tuple(model.get_layer("flatten").output.shape[1:]) == (46 * 26 * 16,)
    assert model.get_layer("dense").count_params() == 46 * 26 * 16 * 128 + 128
    assert model.get_layer("logits").count_params() == 129
    assert model.count_params() == 160 + 2320 + 46 * 26 * 16 * 128 + 128 + 129


def test_efficientnet_sees_the_features_unscaled():
    model = build("efficientnet_b0", input_shape=(64, 48, 1))
    trunk = model.get_layer("efficientnetb0")
    x = features(2, (64, 48, 1))
    scaled = model.get_layer("undo_b0_rescaling")(x)
    stem_input = keras.Model(trunk.input, trunk.get_layer("stem_conv_pad").input)(scaled)
    np.testing.assert_allclose(np.asarray(stem_input), x, atol=1e-5)


def test_efficientnet_names_its_minimum_input():
    with pytest.raises(ValueError, match="at least 32"):
        build("efficientnet_b0", input_shape=(40, 20, 1))


def write_config(tmp_path, labels, task="multiclass", clip_s=0.5):
    """A manifest config; the table lists files that need not exist to count labels."""
    lines = ["file,label"] + [f"clip{i}.wav,{label}" for i, label in enumerate(labels)]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    path = tmp_path / "run.yaml"
    path.write_text(f"audio:\n  clip_s: {clip_s}\nfrontend:\n  n_fft: 512\n  hop_samples: 160\n"
                    f"  n_mels: 48\ndata:\n  root: .\n  source: manifest\n  manifest: manifest.csv\n"
                    f"model:\n  name: resnet\n  width: 8\n  depth: 2\ntrain:\n  task: {task}\n")
    return path


def test_command_prints_every_model_with_its_count(tmp_path, capsys):
    path = write_config(tmp_path, ["a", "b", "c", "a"])
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "features 67x48x1 (51 of the clip, 8 of context on each side), 3 outputs" in out
    counts = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:]}
    assert set(counts) == set(REGISTRY)
    params = ModelConfig(name="resnet", width=8, depth=2)
    for name in ON_PROJECT_FEATURES:
        assert counts[name] == f"{parameter_count(name, (51, 48, 1), 3, params):,}", name
    assert "birdnet" in counts  # its own features: a count, or why it cannot be built here
    assert "resnet *" in out


def test_command_counts_binary_outputs_and_takes_an_override(tmp_path, capsys):
    path = write_config(tmp_path, ["call", "noise"], task="binary")
    assert main(["--config", str(path), "--set", "model.name=small_cnn"]) == 0
    out = capsys.readouterr().out
    assert "1 outputs" in out and "small_cnn *" in out
    assert main(["--config", str(path), "--num-outputs", "7"]) == 0
    assert "7 outputs" in capsys.readouterr().out


def test_command_without_data_asks_for_num_outputs(tmp_path, capsys):
    path = write_config(tmp_path, ["a"])
    path.write_text(path.read_text().replace("root: .", "root: missing"))
    assert main(["--config", str(path)]) == 2
    assert "pass --num-outputs" in capsys.readouterr().err


@pytest.mark.parametrize("pooling, layer_type", [("avg", keras.layers.AveragePooling2D),
                                                 ("max", keras.layers.MaxPooling2D)])
def test_small_cnn_pooling_sets_the_block_pooling(pooling, layer_type):
    model = build("small_cnn", dataclasses.replace(SMALL, block_pooling=pooling))
    assert type(model.get_layer("pool0")) is layer_type
