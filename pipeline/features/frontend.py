"""The one spectrogram frontend: TF ops over a batch of waveforms, shared by training, detection
and the exported SavedModel so features cannot drift between them.

Everything here is plain TensorFlow (no Python callbacks), so it runs on whichever device
executes it and serialises into graphs. Constants (window, mel matrix, DCT) are computed once
with NumPy per (config, sample rate) (pipeline.features.filters) and baked in as graph constants.

Conventions follow librosa 0.10 so features can be checked against it:
  * window: periodic 'hann' / 'hamming' of frame_length samples, zero-padded (centred) to the FFT
    length when the window is shorter (librosa's win_length < n_fft);
  * center=True frames are centred at samples t * hop: compute_features pads fft_length // 2
    zeros each side, as librosa does; a model's windows carry real audio there instead
    (window_features, pipeline.features.framing);
  * mel_scale only picks the Hz<->mel mapping: both scales use librosa's default area ('slaney')
    normalisation, i.e. librosa.filters.mel(htk=mel_scale == 'htk'). Keeping the norm fixed means
    switching the scale in a sweep compares scales, not feature magnitudes ~1000x apart;
  * cfg.power applies to every kind (librosa.feature.melspectrogram(power=...)); the log is
    always 10 * log10 (librosa.power_to_db).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import FrontendConfig
from pipeline.features.filters import frontend_output_shape, plan
from pipeline.features.framing import Framing

# Guards divisions in the per-example normalisation (silent clips have zero spread).
_NORM_EPS = 1e-6
# PCEN smoother block length in frames when the frame count is only known at run time.
_PCEN_BLOCK = 64
# Bytes of framed signal per chunk when a CPU computes the features (see _features_in_chunks).
_CHUNK_BYTES = 3 << 20


# ---------------------------------------------------------------------------------------------
# TF ops


def _pcen_smooth(energy: tf.Tensor, s: float) -> tf.Tensor:
    """M[t] = (1 - s) M[t-1] + s E[t] along axis 1, starting from M[0] = E[0].

    A sequential scan costs one tiny op per frame; instead frames are cut into blocks of B:
    within a block the recursion is a [B, B] lower-triangular matmul (from a zero state), and
    the state carried into each block is a second, [blocks, blocks] triangular matmul over the
    blocks' last values: O(T * B + (T / B)^2) work in a handful of large ops, any (dynamic) T.
    B ~ sqrt(T) balances the two when T is static.
    """
    a = 1.0 - s
    static_frames = energy.shape[1]
    if static_frames is None:
        block = _PCEN_BLOCK
    else:
        block = max(8, 2 ** round(np.log2(np.sqrt(static_frames))))
    frames = tf.shape(energy)[1]
    n_blocks = (frames + block - 1) // block
    padded = tf.pad(energy, [[0, 0], [0, n_blocks * block - frames], [0, 0]])  # [batch, nb*B, mels]
    blocks = tf.reshape(padded, [tf.shape(energy)[0], n_blocks, block, -1])  # [batch, nb, B, mels]

    lag = np.arange(block)[:, None] - np.arange(block)[None, :]  # [B, B]
    intra = np.where(lag >= 0, s * a ** np.maximum(lag, 0), 0.0).astype(np.float32)  # [B, B]
    local = tf.einsum("tk,bnkm->bntm", intra, blocks)  # [batch, nb, B, mels]

    # State entering block n is m[n-1] = sum_{i<n} a^(B(n-1-i)) local[i, B-1] + a^(Bn) E[0].
    ends = local[:, :, -1, :]  # [batch, nb, mels]
    idx = tf.range(n_blocks, dtype=tf.float32)
    block_lag = idx[:, None] - idx[None, :] - 1.0  # [nb, nb]
    log_a_b = float(block * np.log(a))
    carry_w = tf.where(block_lag >= 0.0, tf.exp(tf.maximum(block_lag, 0.0) * log_a_b), 0.0)
    carry = tf.einsum("ni,bim->bnm", carry_w, ends)  # [batch, nb, mels]
    carry += tf.exp(idx * log_a_b)[None, :, None] * energy[:, :1, :]  # [batch, nb, mels]

    within = (a ** np.arange(1, block + 1)).astype(np.float32)  # [B]
    smooth = local + within[None, None, :, None] * carry[:, :, None, :]  # [batch, nb, B, mels]
    smooth = tf.reshape(smooth, tf.shape(padded))  # [batch, nb*B, mels]
    return smooth[:, :frames, :]  # [batch, frames, mels]


def _normalize(x: tf.Tensor, how: str, reference: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Per-example normalisation of x [batch, frames, bins] by the statistics, over frames and bins,
    of `reference` [batch, some frames, bins] (default: x itself)."""
    reference = x if reference is None else reference
    if how == "standardize":
        mean, var = tf.nn.moments(reference, axes=[1, 2], keepdims=True)  # [batch, 1, 1]
        return (x - mean) / tf.maximum(tf.sqrt(var), _NORM_EPS)
    if how == "minmax":
        lo = tf.reduce_min(reference, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
        hi = tf.reduce_max(reference, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
        return (x - lo) / tf.maximum(hi - lo, _NORM_EPS)
    return x


def spectral_features(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int, pad: int = 0) -> tf.Tensor:
    """float32 waveforms [batch, samples] -> float32 features before normalisation [batch, frames,
    bins], frame t reading samples [t * hop, t * hop + fft_length) of the waveforms with `pad`
    zeros added on each side."""
    constants = plan(cfg, sample_rate_hz)
    if pad:
        waves = tf.pad(waves, [[0, 0], [pad, pad]])  # [batch, samples + 2 * pad]
    frames = tf.signal.frame(waves, constants.fft_length, constants.frame_step)  # [batch, frames, fft_len]
    frames = frames * constants.window  # [batch, frames, fft_len]
    # rfft rather than a DFT matmul: GPUs run matmuls in TF32 by default, whose ~1e-3 relative
    # error would leak loud bins' energy into quiet ones (a noise floor ~60 dB down).
    stft = tf.signal.rfft(frames, fft_length=[constants.fft_length])  # [batch, frames, fft_bins]
    if cfg.power == 2.0:
        real, imag = tf.math.real(stft), tf.math.imag(stft)  # [batch, frames, fft_bins] each
        spec = real * real + imag * imag  # [batch, frames, fft_bins]
    elif cfg.power == 1.0:
        spec = tf.abs(stft)  # [batch, frames, fft_bins]
    else:
        spec = tf.math.pow(tf.abs(stft), cfg.power)  # [batch, frames, fft_bins]

    if cfg.kind == "linear":
        return spec[:, :, constants.band[0]:constants.band[1]]  # [batch, frames, band_bins]
    mel = tf.linalg.matmul(spec, constants.mel)  # [batch, frames, n_mels]
    if cfg.kind == "mel":
        return mel
    if cfg.kind == "pcen":
        smooth = _pcen_smooth(mel, constants.pcen_smoothing)  # [batch, frames, n_mels]
        gain = tf.math.pow(cfg.pcen_eps + smooth, -cfg.pcen_gain)  # [batch, frames, n_mels]
        return (tf.math.pow(mel * gain + cfg.pcen_bias, cfg.pcen_power)
                - cfg.pcen_bias ** cfg.pcen_power)  # [batch, frames, n_mels]
    db_per_neper = float(10.0 / np.log(10.0))
    feats = db_per_neper * tf.math.log(tf.maximum(mel, cfg.log_floor))  # [batch, frames, n_mels]
    if cfg.top_db is not None:
        peak = tf.reduce_max(feats, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
        feats = tf.maximum(feats, peak - cfg.top_db)  # [batch, frames, n_mels]
    if cfg.kind == "mfcc":
        feats = tf.linalg.matmul(feats, constants.dct)  # [batch, frames, n_mfcc]
    return feats


def compute_features(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int) -> tf.Tensor:
    """float32 waveforms [batch, samples] -> float32 features [batch, frames, bins, 1] of whole clips,
    as librosa computes them: zeros padded for centred frames, normalised over all frames."""
    waves = tf.cast(tf.convert_to_tensor(waves), tf.float32)  # [batch, samples]
    pad = plan(cfg, sample_rate_hz).fft_length // 2 if cfg.center else 0
    feats = _on_device(waves, cfg, sample_rate_hz, pad)  # [batch, frames, bins]
    return _normalize(feats, cfg.normalize)[..., tf.newaxis]  # [batch, frames, bins, 1]


def window_features(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int, framing: Framing) -> tf.Tensor:
    """Windows with their context [batch, framing.input_samples] -> the trunk's features [batch,
    framing.trunk_frames, bins, 1]: the window's frames and its trunk context, normalised by the
    statistics of the window's own frames (pipeline.features.framing)."""
    waves = tf.cast(tf.convert_to_tensor(waves), tf.float32)  # [batch, input_samples]
    feats = _on_device(waves, cfg, sample_rate_hz)  # [batch, >= frames + 2 * context_frames, bins]
    return framed_window(feats, cfg, framing)


def framed_window(feats: tf.Tensor, cfg: FrontendConfig, framing: Framing) -> tf.Tensor:
    """spectral_features of windows with their context [batch, >= frames + 2 * context_frames,
    bins] -> the trunk's normalised features [batch, trunk_frames, bins, 1]."""
    own = feats[:, framing.context_frames:framing.context_frames + framing.frames]  # [batch, frames, bins]
    first = framing.warmup_frames
    trunk = feats[:, first:first + framing.trunk_frames]  # [batch, trunk_frames, bins]
    return _normalize(trunk, cfg.normalize, own)[..., tf.newaxis]  # [batch, trunk_frames, bins, 1]


def _chunk_examples(cfg: FrontendConfig, sample_rate_hz: int, num_samples: Optional[int]) -> int:
    """Examples per chunk so that one chunk's frames (~_CHUNK_BYTES) stay in the CPU cache."""
    constants = plan(cfg, sample_rate_hz)
    frames = 1 + (num_samples - constants.fft_length) // constants.frame_step if num_samples else 376
    return max(1, _CHUNK_BYTES // max(1, frames * constants.fft_length * 4))


def _on_device(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int, pad: int = 0) -> tf.Tensor:
    """spectral_features, a few examples at a time on a CPU (_features_in_chunks), the whole batch
    at once on a GPU. Both give the same values."""
    if tf.config.list_physical_devices("GPU"):
        return spectral_features(waves, cfg, sample_rate_hz, pad)  # [batch, frames, bins]
    return _features_in_chunks(waves, cfg, sample_rate_hz, pad)  # [batch, frames, bins]


def _features_in_chunks(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int, pad: int = 0) -> tf.Tensor:
    """spectral_features a few examples at a time: the framed signal of a whole batch (~50 MB for
    64 clips of 3 s) overflows a CPU's caches, and every elementwise pass then runs at memory
    speed; chunks of a few MB run 2-4x faster."""
    chunk = _chunk_examples(cfg, sample_rate_hz, None if waves.shape[1] is None else waves.shape[1] + 2 * pad)
    static_batch = waves.shape[0]
    if static_batch is not None and static_batch <= chunk:
        return spectral_features(waves, cfg, sample_rate_hz, pad)  # [batch, frames, bins]
    batch = tf.shape(waves)[0]
    n_chunks = (batch + chunk - 1) // chunk
    padded = tf.pad(waves, [[0, n_chunks * chunk - batch], [0, 0]])  # [n_chunks * chunk, samples]
    pieces = tf.reshape(padded, [n_chunks, chunk, -1])  # [n_chunks, chunk, samples]
    feats = tf.map_fn(lambda w: spectral_features(w, cfg, sample_rate_hz, pad), pieces,
                      fn_output_signature=tf.float32, parallel_iterations=2)  # [n_chunks, chunk, frames, bins]
    shape = tf.shape(feats)
    return tf.reshape(feats, [n_chunks * chunk, shape[2], shape[3]])[:batch]  # [batch, frames, bins]


# ---------------------------------------------------------------------------------------------
# Keras layer


def _as_config(frontend: dict | FrontendConfig) -> FrontendConfig:
    if isinstance(frontend, FrontendConfig):
        return frontend
    known = {f.name for f in dataclasses.fields(FrontendConfig)}
    unknown = sorted(set(frontend) - known)
    if unknown:
        raise ValueError(
            f"frontend.{unknown[0]}: unknown key (known keys: {', '.join(sorted(known))})")
    return FrontendConfig(**frontend)


@keras.saving.register_keras_serializable(package="bioacoustics")
class Frontend(keras.layers.Layer):
    """window_features as a layer: windows with their context [batch, framing.input_samples] ->
    features [batch, framing.trunk_frames, bins, 1].

    Always float32 (its own dtype policy, also under a mixed_float16 global policy): log and
    PCEN of float16 power spectra would overflow and lose the quiet bins. Has no weights.
    """

    def __init__(self, frontend: dict | FrontendConfig, sample_rate_hz: int, framing: dict | Framing,
                 **kwargs):
        # The policy is fixed, so a saved 'dtype' (from get_config) is dropped on reload.
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.frontend = _as_config(frontend)
        self.sample_rate_hz = int(sample_rate_hz)
        self.framing = framing if isinstance(framing, Framing) else Framing(**framing)
        plan(self.frontend, self.sample_rate_hz)

    def call(self, waves):
        return window_features(waves, self.frontend, self.sample_rate_hz, self.framing)

    def compute_output_shape(self, input_shape):
        bins = frontend_output_shape(self.frontend, self.sample_rate_hz, self.framing.window)[1]
        return input_shape[0], self.framing.trunk_frames, bins, 1

    def get_config(self):
        config = super().get_config()
        config.update(frontend=dataclasses.asdict(self.frontend), sample_rate_hz=self.sample_rate_hz,
                      framing=dataclasses.asdict(self.framing))
        return config
