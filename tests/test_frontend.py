"""The TF frontend against librosa 0.10 and against known answers.

Tolerances (float32 TF vs librosa's float64-FFT reference, 3 s of noise + sine at 16 kHz):
  * STFT magnitude, linear and mel power: |err| <= 1e-4 * value + 1e-6 * max
    (measured ~4e-7 of the max);
  * logmel: 1e-3 dB (measured < 1e-4 dB over a ~110 dB range);
  * mfcc: 1e-5 * max |mfcc| (measured ~4e-7);
  * pcen: 1e-5 absolute on outputs of order 1..6 (measured ~3e-6).
"""
import dataclasses

import keras
import librosa
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from pipeline.config import FrontendConfig
from pipeline.features.filters import frontend_output_shape, mel_filterbank
from pipeline.features.framing import framing
from pipeline.features.frontend import (Frontend, _features_in_chunks, _pcen_smooth, compute_features,
                                        spectral_features)

SR = 16000
HOP = 128


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    """3 s of a 1 kHz tone in noise whose first quarter second is 60 dB quieter."""
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    y = 0.3 * np.sin(2 * np.pi * 1000.0 * t) + 0.05 * rng.standard_normal(t.size)
    y[:4000] *= 1e-3
    return y.astype(np.float32)


def features(y: np.ndarray, **fields) -> np.ndarray:
    """One clip [samples] through compute_features -> [frames, bins]."""
    out = compute_features(tf.constant(y[None]), FrontendConfig(**fields), SR)
    assert out.dtype == tf.float32
    return out.numpy()[0, :, :, 0]


def librosa_stft_kwargs(cfg: FrontendConfig) -> dict:
    return dict(n_fft=cfg.fft_length(SR), hop_length=cfg.hop_length_samples(SR),
                win_length=cfg.frame_length_samples(SR), window=cfg.window, center=True,
                pad_mode="constant")


def librosa_mel(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """librosa's mel power spectrogram for cfg, [frames, n_mels]."""
    return librosa.feature.melspectrogram(
        y=y, sr=SR, power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.fmin_hz, fmax=cfg.fmax(SR),
        htk=cfg.mel_scale == "htk", **librosa_stft_kwargs(cfg)).T


def assert_close_to_max(actual, expected, rel_to_max=1e-6, rtol=1e-4):
    atol = rel_to_max * np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Parity with librosa


@pytest.mark.parametrize("fields", [
    {},
    {"window": "hamming"},
    {"window_s": 0.025, "n_fft": None, "hop_s": 0.01, "hop_samples": None},  # 400 in a 512 FFT
])
def test_stft_magnitude_matches_librosa(wave, fields):
    cfg = FrontendConfig(kind="linear", power=1.0, **fields)
    ref = np.abs(librosa.stft(wave, **librosa_stft_kwargs(cfg))).T
    assert_close_to_max(features(wave, **dataclasses.asdict(cfg)), ref)


@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
@pytest.mark.parametrize("band", [{}, {"fmin_hz": 300.0, "fmax_hz": 6000.0}])
def test_mel_matches_librosa(wave, mel_scale, band):
    cfg = FrontendConfig(kind="mel", mel_scale=mel_scale, **band)
    ref_bank = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=cfg.fmin_hz,
                                   fmax=cfg.fmax(SR), htk=mel_scale == "htk")
    bank = mel_filterbank(cfg, SR)
    assert bank.dtype == np.float32 and bank.shape == (257, 64)
    np.testing.assert_allclose(bank, ref_bank.T, rtol=1e-6, atol=1e-9)
    assert_close_to_max(features(wave, **dataclasses.asdict(cfg)), librosa_mel(wave, cfg))


@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
def test_logmel_and_mfcc_match_librosa(wave, mel_scale):
    cfg = FrontendConfig(kind="logmel", mel_scale=mel_scale, fmin_hz=50.0, log_floor=1e-10)
    ref_db = librosa.power_to_db(librosa_mel(wave, cfg), ref=1.0, amin=cfg.log_floor, top_db=None)
    np.testing.assert_allclose(features(wave, **dataclasses.asdict(cfg)), ref_db, rtol=0, atol=1e-3)

    ref_mfcc = librosa.feature.mfcc(S=ref_db.T, n_mfcc=13).T  # DCT-II, norm='ortho'
    got = features(wave, **dataclasses.asdict(dataclasses.replace(cfg, kind="mfcc", n_mfcc=13)))
    np.testing.assert_allclose(got, ref_mfcc, rtol=0, atol=1e-5 * np.abs(ref_mfcc).max())


def test_top_db_clips_each_example_to_its_own_peak(wave):
    cfg = FrontendConfig(kind="logmel", top_db=60.0)
    batch = np.stack([wave, 1e-2 * wave])  # the second clip is 40 dB quieter
    got = compute_features(tf.constant(batch), cfg, SR).numpy()[..., 0]
    for clip, out in zip(batch, got):
        ref = librosa.power_to_db(librosa_mel(clip, cfg), ref=1.0, amin=cfg.log_floor, top_db=60.0)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)
        assert np.isclose(out.max() - out.min(), 60.0, atol=1e-3)


def pcen_reference(energy: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """The frontend's PCEN formula in float64, frame by frame. energy [frames, mels]."""
    t_frames = cfg.pcen_time_constant_s * SR / HOP
    s = (np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)
    smooth = np.empty_like(energy, dtype=np.float64)
    state = energy[0].astype(np.float64)  # the smoother starts at the first frame's energy
    for t, e in enumerate(energy):
        state = (1 - s) * state + s * e
        smooth[t] = state
    return ((energy / (cfg.pcen_eps + smooth) ** cfg.pcen_gain + cfg.pcen_bias) ** cfg.pcen_power
            - cfg.pcen_bias ** cfg.pcen_power)


def test_pcen_matches_reference_and_librosa_given_the_same_start(wave):
    """Same formula and smoothing coefficient as librosa.pcen. One difference: librosa starts its
    smoother in the steady state of a unit input (M[-1] = 1 whatever the level), the frontend in
    that of the first frame (M[-1] = E[0]), so clips start without a level-dependent transient.
    With librosa's zi set to that state the two agree."""
    cfg = FrontendConfig(kind="pcen")
    mel = librosa_mel(wave, cfg)  # [frames, mels]
    got = features(wave, kind="pcen")
    np.testing.assert_allclose(got, pcen_reference(mel, cfg), rtol=1e-5, atol=1e-5)

    t_frames = cfg.pcen_time_constant_s * SR / HOP
    b = (np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)
    ref = librosa.pcen(mel.T, sr=SR, hop_length=HOP, gain=cfg.pcen_gain, bias=cfg.pcen_bias,
                       power=cfg.pcen_power, time_constant=cfg.pcen_time_constant_s,
                       eps=cfg.pcen_eps, zi=(1 - b) * mel.T[:, :1]).T
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frames", [1, 7, 16, 17, 376, 3000])
@pytest.mark.parametrize("static", [True, False])
def test_pcen_smoother_matches_recursion(frames, static):
    """The blocked-matmul smoother equals the one-pole recursion for any length, block split
    and for frame counts only known at run time."""
    s = 0.02
    energy = np.random.default_rng(frames).random((2, frames, 3)).astype(np.float32)
    expected = scipy.signal.lfilter([s], [1, s - 1], energy, axis=1,
                                    zi=(1 - s) * energy[:, :1, :].astype(np.float64))[0]
    spec = tf.TensorSpec([None, frames if static else None, 3], tf.float32)
    smooth = tf.function(lambda e: _pcen_smooth(e, s), input_signature=[spec])
    np.testing.assert_allclose(smooth(energy).numpy(), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Known answers


def test_sine_peaks_in_its_bin():
    t = np.arange(SR) / SR
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    linear = features(sine, kind="linear")
    assert np.argmax(linear.mean(axis=0)) == round(1000.0 * 512 / SR)  # bin 32, 31.25 Hz apart

    cfg = FrontendConfig(kind="mel")
    bank = mel_filterbank(cfg, SR)
    assert np.argmax(features(sine, kind="mel").mean(axis=0)) == np.argmax(bank[32])


@pytest.mark.parametrize("fmin, fmax, first, last", [
    (1000.0, 4000.0, 32, 128),  # edges on bin centres (31.25 Hz spacing) are kept
    (1010.0, 3990.0, 33, 127),
    (0.0, None, 0, 256),
])
def test_linear_band_crop_keeps_bins_within_band(wave, fmin, fmax, first, last):
    full = features(wave, kind="linear")
    band = features(wave, kind="linear", fmin_hz=fmin, fmax_hz=fmax)
    assert band.shape[1] == last - first + 1
    assert frontend_output_shape(FrontendConfig(kind="linear", fmin_hz=fmin, fmax_hz=fmax), SR,
                                 wave.size)[1] == last - first + 1
    np.testing.assert_array_equal(band, full[:, first:last + 1])


def test_window_in_seconds_equals_window_in_samples(wave):
    in_samples = features(wave, n_fft=512, hop_samples=128)
    in_seconds = features(wave, window_s=0.032, n_fft=None, hop_s=0.008, hop_samples=None)
    np.testing.assert_array_equal(in_seconds, in_samples)


@pytest.mark.parametrize("kind", ["linear", "mel", "logmel", "mfcc", "pcen"])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("num_samples", [4000, 4001, 48000])
def test_output_shape_matches_frontend_output_shape(kind, center, num_samples):
    cfg = FrontendConfig(kind=kind, center=center, fmin_hz=100.0, fmax_hz=7000.0, n_mfcc=13)
    waves = tf.zeros([2, num_samples])
    frames, bins = frontend_output_shape(cfg, SR, num_samples)
    assert compute_features(waves, cfg, SR).shape == (2, frames, bins, 1)
    windows = Frontend(cfg, SR, framing(cfg, SR, num_samples))  # windows of num_samples, with their context
    assert windows.compute_output_shape((None, None)) == (None, frames, bins, 1)
    if center:
        assert frames == 1 + num_samples // HOP  # librosa's frame count with center=True


@pytest.mark.parametrize("kind", ["logmel", "pcen", "linear"])
def test_normalize_per_example(wave, kind):
    batch = tf.constant(np.stack([wave, 0.01 * wave[::-1]]))
    std = compute_features(batch, FrontendConfig(kind=kind, normalize="standardize"), SR).numpy()
    np.testing.assert_allclose(std.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(std.std(axis=(1, 2, 3)), 1.0, atol=1e-4)
    mm = compute_features(batch, FrontendConfig(kind=kind, normalize="minmax"), SR).numpy()
    np.testing.assert_allclose(mm.min(axis=(1, 2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(mm.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
    silent = compute_features(tf.zeros([1, 4000]), FrontendConfig(normalize="standardize"), SR)
    assert np.isfinite(silent.numpy()).all()


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="Nyquist"):
        compute_features(tf.zeros([1, 4000]), FrontendConfig(fmax_hz=9000.0), SR)
    with pytest.raises(ValueError, match="frontend.n_mel: unknown key"):
        Frontend({"n_mel": 40}, SR, framing(FrontendConfig(), SR, 4000))


# ---------------------------------------------------------------------------------------------
# Keras layer, graphs and pipelines


def layer(cfg, window: int = SR, **kwargs) -> Frontend:
    """A Frontend for windows of `window` samples (it takes them with their context)."""
    cfg = cfg if isinstance(cfg, FrontendConfig) else FrontendConfig(**cfg)
    return Frontend(cfg, SR, framing(cfg, SR, window), **kwargs)


def inputs_of(frontend: Frontend, *waves: np.ndarray) -> np.ndarray:
    """The waves tiled to the frontend's input length: [len(waves), input_samples]."""
    return np.stack([np.resize(w, frontend.framing.input_samples) for w in waves]).astype(np.float32)


def small_model(cfg: dict, window: int = SR) -> keras.Model:
    frontend = layer(cfg, window, name="frontend")
    inputs = keras.Input((frontend.framing.input_samples,))
    x = frontend(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize("kind", ["logmel", "pcen"])
def test_layer_round_trips_through_model_keras(tmp_path, wave, kind):
    cfg = {"kind": kind, "mel_scale": "htk", "fmin_hz": 200.0, "normalize": "standardize"}
    model = small_model(cfg)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    frontend = loaded.get_layer("frontend")
    assert frontend.frontend == FrontendConfig(**cfg) and frontend.sample_rate_hz == SR
    assert frontend.framing == model.get_layer("frontend").framing
    batch = inputs_of(frontend, wave, wave[::-1])
    np.testing.assert_array_equal(loaded(batch).numpy(), model(batch).numpy())
    np.testing.assert_array_equal(frontend(batch).numpy(), model.get_layer("frontend")(batch).numpy())


def test_exported_savedmodel_computes_the_same_features(tmp_path, wave):
    frontend = layer({"kind": "logmel"})
    inputs = keras.Input((frontend.framing.input_samples,))
    model = keras.Model(inputs, frontend(inputs))
    model.export(str(tmp_path / "saved"), verbose=False)
    batch = inputs_of(frontend, wave)
    served = tf.saved_model.load(str(tmp_path / "saved")).serve(tf.constant(batch))
    np.testing.assert_allclose(served.numpy(), model(batch).numpy(), rtol=0, atol=1e-4)


def test_mixed_precision_policy_keeps_float32(wave):
    batch = inputs_of(layer({"kind": "logmel"}), wave)
    expected = layer({"kind": "logmel"})(batch).numpy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        frontend = layer({"kind": "logmel"})
        assert frontend.compute_dtype == "float32"
        out = frontend(batch)
        model = small_model({"kind": "logmel"})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), expected)
    assert model.get_layer("frontend").compute_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float16"


@pytest.mark.parametrize("jit_compile", [False, True])
def test_works_in_tf_function_with_unknown_shapes(wave, jit_compile):
    """Keras XLA-compiles train steps on GPUs, so the ops must compile too."""
    cfg = FrontendConfig(kind="pcen", normalize="minmax")
    fn = tf.function(lambda w: compute_features(w, cfg, SR), jit_compile=jit_compile,
                     input_signature=[tf.TensorSpec([None, None], tf.float32)])
    eager = compute_features(tf.constant(wave[None]), cfg, SR).numpy()
    np.testing.assert_allclose(fn(tf.constant(wave[None])).numpy(), eager, rtol=0, atol=1e-5)
    assert fn(tf.zeros([3, 8000])).shape == (3, *frontend_output_shape(cfg, SR, 8000), 1)


def test_works_in_tf_data_map(wave):
    cfg = FrontendConfig(kind="mfcc")
    clips = np.stack([wave, wave[::-1], 0.5 * wave])
    ds = tf.data.Dataset.from_tensor_slices(clips).batch(2).map(
        lambda w: compute_features(w, cfg, SR))
    got = np.concatenate([b.numpy() for b in ds])
    np.testing.assert_allclose(got, compute_features(tf.constant(clips), cfg, SR).numpy(),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 5, 13])
def test_chunked_cpu_path_equals_whole_batch(batch):
    """The cache-friendly chunking on CPUs must not change a single value, for any batch size."""
    cfg = FrontendConfig(kind="logmel", n_fft=512, hop_samples=128, n_mels=64)
    waves = tf.random.stateless_normal([batch, 3 * SR], seed=[1, batch])
    whole = spectral_features(waves, cfg, SR).numpy()
    fn = tf.function(lambda w: _features_in_chunks(w, cfg, SR),
                     input_signature=[tf.TensorSpec([None, 3 * SR], tf.float32)])
    np.testing.assert_array_equal(fn(waves).numpy(), whole)
