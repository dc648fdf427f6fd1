"""Detection scores a chunk of windows at once (frontend once, and the trunk once where the model
allows); each window's scores must equal the model's on that window with its context, the
trained path."""
import dataclasses

import numpy as np
import pytest

from models.backbones.registry import build_backbone, model_framing, shares_trunk, trunk_stride
from models.classifier import build_classifier
from models.streaming import ChunkScorer
from pipeline.config import from_dict
from pipeline.features.filters import frontend_output_shape

SR = 8000
NAMES = ("a", "b", "c")


def model_for(name: str, normalize: str, kind: str = "logmel", task: str = "multiclass"):
    cfg = from_dict({"audio": {"sample_rate_hz": SR, "clip_s": 1.0},
                     "frontend": {"kind": kind, "n_fft": 256, "hop_samples": 64, "n_mels": 24, "normalize": normalize},
                     "model": {"name": name, "width": 4, "depth": 2, "kernel_size": 3}})
    frames = model_framing(cfg)
    bins = frontend_output_shape(cfg.frontend, SR, frames.window)[1]
    outputs = 2 * len(NAMES) if task == "frames" else len(NAMES)
    backbone = build_backbone(cfg.model, (frames.trunk_frames, bins, 1), outputs, frames)
    rng = np.random.default_rng(3)
    for layer in backbone.layers:  # batch statistics of a trained model, not the identity
        if "bn" in layer.name and layer.weights:
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta + rng.normal(0, 0.1, beta.shape), rng.normal(0, 0.2, mean.shape),
                               rng.uniform(0.5, 2.0, var.shape)])
    return cfg, build_classifier(backbone, cfg.frontend, SR, frames, task, NAMES)


def recording(samples: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(samples) / SR
    chirps = 0.3 * np.sin(2 * np.pi * (500 + 300 * np.sin(0.7 * t)) * t) * (np.sin(1.3 * t) > 0.3)
    return (chirps + 0.05 * rng.standard_normal(samples)).astype(np.float32)


def window_scores(model, signal: np.ndarray, hop: int, windows: int) -> np.ndarray:
    n = model.framing.input_samples
    batch = np.stack([signal[w * hop:w * hop + n] for w in range(windows)])
    return model(batch, training=False).numpy()


@pytest.mark.parametrize("name, normalize, kind, tolerance", [
    ("small_cnn", "none", "logmel", 1e-5),     # trunk shared
    ("resnet", "none", "logmel", 1e-5),
    ("mobilenet", "none", "logmel", 1e-5),
    ("small_cnn", "none", "pcen", 2e-3),       # PCEN settles to 1% of its start before each window
    ("small_cnn", "standardize", "logmel", 1e-5),  # frontend shared, trunk per window
    ("watkins_cnn", "none", "logmel", 1e-5),   # a fixed head: trunk per window
])
def test_chunk_scores_equal_each_windows_scores(name, normalize, kind, tolerance):
    cfg, model = model_for(name, normalize, kind)
    assert (model.framing.trunk_context_frames > 0) == shares_trunk(cfg)
    hop = model.framing.hop * trunk_stride(name, cfg.model) * 3
    windows = 9
    scorer = ChunkScorer(model, hop, batch_size=4)
    assert scorer.shared == shares_trunk(cfg)
    signal = recording(scorer.chunk_samples(windows, hop))
    np.testing.assert_allclose(scorer.scores(signal, windows), window_scores(model, signal, hop, windows),
                               atol=tolerance, rtol=0)


def test_frame_model_chunk_scores_equal_each_windows_frame_scores():
    _, model = model_for("crnn", "standardize", task="frames")
    hop, windows = model.framing.hop * 10, 5
    scorer = ChunkScorer(model, hop)
    signal = recording(scorer.chunk_samples(windows, hop))
    got = scorer.scores(signal, windows)
    assert got.shape == (windows, model.framing.frames, 2 * len(NAMES))
    np.testing.assert_allclose(got, window_scores(model, signal, hop, windows), atol=1e-5, rtol=0)


def test_a_hop_off_the_trunk_stride_is_refused():
    cfg, model = model_for("small_cnn", "none")
    stride = trunk_stride("small_cnn", cfg.model)
    with pytest.raises(ValueError, match="trunk strides"):
        ChunkScorer(model, model.framing.hop * (stride + 1))
    with pytest.raises(ValueError, match="frontend hops"):
        ChunkScorer(model, model.framing.hop + 1)


def test_context_covers_the_trunks_receptive_field():
    """Changing the audio just outside a window's context leaves its scores unchanged."""
    cfg, model = model_for("small_cnn", "none")
    n = model.framing.input_samples
    signal = recording(n)
    outside = signal.copy()
    outside[:model.framing.context_samples - model.framing.trunk_context_frames * model.framing.hop] = 0.9
    base = model(signal[None], training=False).numpy()
    # The frames that start outside the context do not reach the window's columns.
    np.testing.assert_allclose(model(outside[None], training=False).numpy(), base, atol=1e-6)
    assert dataclasses.asdict(model.framing)["trunk_context_frames"] > 0
