"""The one spectrogram frontend: TF ops over a batch of waveforms, shared by training, detection
and the exported SavedModel so features cannot drift between them.

Everything here is plain TensorFlow (no Python callbacks), so it runs on whichever device
executes it and serialises into graphs. Constants (window, mel matrix, DCT) are computed once
with NumPy per (config, sample rate) and baked in as graph constants.

Conventions follow librosa 0.10 so features can be checked against it:
  * window: periodic 'hann' / 'hamming' of frame_length samples, zero-padded (centred) to the FFT
    length when the window is shorter (librosa's win_length < n_fft);
  * center=True pads fft_length // 2 zeros each side, so frame t is centred at sample t * hop;
  * mel_scale only picks the Hz<->mel mapping: both scales use librosa's default area ('slaney')
    normalisation, i.e. librosa.filters.mel(htk=mel_scale == 'htk'). Keeping the norm fixed means
    switching the scale in a sweep compares scales, not feature magnitudes ~1000x apart;
  * cfg.power applies to every kind (librosa.feature.melspectrogram(power=...)); the log is
    always 10 * log10 (librosa.power_to_db).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import FrontendConfig

# Guards divisions in the per-example normalisation (silent clips have zero spread).
_NORM_EPS = 1e-6
# PCEN smoother block length in frames when the frame count is only known at run time.
_PCEN_BLOCK = 64
# Bytes of framed signal per chunk when a CPU computes the features (see compute_features).
_CHUNK_BYTES = 3 << 20


# ---------------------------------------------------------------------------------------------
# NumPy constants


def _hz_to_mel(hz: np.ndarray, htk: bool) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above (librosa.hz_to_mel).
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(hz >= min_log_hz,
                    min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep,
                    hz / f_sp)


def _mel_to_hz(mel: np.ndarray, htk: bool) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mel >= min_log_mel,
                    min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    f_sp * mel)


def mel_filterbank(cfg: FrontendConfig, sample_rate_hz: int) -> np.ndarray:
    """Triangular mel filters over fmin..fmax, float32 [fft_bins, n_mels].

    Equals librosa.filters.mel(sr=sample_rate_hz, n_fft=cfg.fft_length(sr), n_mels=cfg.n_mels,
    fmin=cfg.fmin_hz, fmax=cfg.fmax(sr), htk=cfg.mel_scale == 'htk').T with librosa's default
    norm='slaney' (each triangle has unit area in Hz) for both scales.
    """
    htk = cfg.mel_scale == "htk"
    n_fft = cfg.fft_length(sample_rate_hz)
    fft_hz = np.linspace(0.0, sample_rate_hz / 2.0, n_fft // 2 + 1)  # [fft_bins]
    edges_mel = np.linspace(_hz_to_mel(cfg.fmin_hz, htk), _hz_to_mel(cfg.fmax(sample_rate_hz), htk),
                            cfg.n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel, htk)  # [n_mels + 2]
    widths = np.diff(edges_hz)  # [n_mels + 1]
    ramps = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, fft_bins]
    lower = -ramps[:-2] / widths[:-1, None]  # [n_mels, fft_bins]
    upper = ramps[2:] / widths[1:, None]  # [n_mels, fft_bins]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [n_mels, fft_bins]
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)  # [fft_bins, n_mels]


def _window(cfg: FrontendConfig, sample_rate_hz: int) -> np.ndarray:
    """Periodic window of frame_length samples centred in fft_length zeros, float32 [fft_length]."""
    frame = cfg.frame_length_samples(sample_rate_hz)
    n_fft = cfg.fft_length(sample_rate_hz)
    phase = 2.0 * np.pi * np.arange(frame) / frame
    if cfg.window == "hann":
        win = 0.5 - 0.5 * np.cos(phase)
    elif cfg.window == "hamming":
        win = 0.54 - 0.46 * np.cos(phase)
    else:
        raise ValueError(f"frontend.window: expected 'hann' or 'hamming', got {cfg.window!r}")
    left = (n_fft - frame) // 2
    return np.pad(win, (left, n_fft - frame - left)).astype(np.float32)


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix, float32 [n_in, n_out] (scipy.fft.dct(norm='ortho'))."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)  # [n_in, n_out]
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def _band_bins(cfg: FrontendConfig, sample_rate_hz: int) -> tuple[int, int]:
    """First and one-past-last FFT bin whose centre frequency lies within [fmin_hz, fmax_hz]."""
    n_fft = cfg.fft_length(sample_rate_hz)
    lo = int(np.ceil(cfg.fmin_hz * n_fft / sample_rate_hz - 1e-9))
    hi = int(np.floor(cfg.fmax(sample_rate_hz) * n_fft / sample_rate_hz + 1e-9))
    return lo, min(hi, n_fft // 2) + 1


class _Plan(NamedTuple):
    """Everything derived from (config, sample rate) once: sizes and NumPy constants."""

    frame_step: int
    fft_length: int
    window: np.ndarray  # [fft_length]
    band: tuple[int, int]  # linear kind: bin slice
    mel: Optional[np.ndarray]  # [fft_bins, n_mels]
    dct: Optional[np.ndarray]  # [n_mels, n_mfcc]
    pcen_smoothing: float  # s in M[t] = (1 - s) M[t-1] + s E[t]


def _check(cfg: FrontendConfig, sample_rate_hz: int) -> None:
    """The checks the frontend itself relies on (config.load_config checks more)."""
    nyquist = sample_rate_hz / 2.0
    problems = [
        (cfg.kind not in ("linear", "mel", "logmel", "mfcc", "pcen"), f"unknown kind {cfg.kind!r}"),
        (cfg.frame_length_samples(sample_rate_hz) < 2, "a window of at least 2 samples"),
        (cfg.hop_length_samples(sample_rate_hz) < 1, "a hop of at least 1 sample"),
        (cfg.frame_length_samples(sample_rate_hz) > cfg.fft_length(sample_rate_hz),
         "a window no longer than n_fft"),
        (not 0 <= cfg.fmin_hz < cfg.fmax(sample_rate_hz) <= nyquist,
         f"0 <= fmin_hz < fmax_hz <= Nyquist ({nyquist:g} Hz)"),
        (not 1 <= cfg.n_mfcc <= cfg.n_mels, "1 <= n_mfcc <= n_mels"),
        (cfg.normalize not in ("none", "standardize", "minmax"),
         f"unknown normalize {cfg.normalize!r}"),
    ]
    for bad, msg in problems:
        if bad:
            raise ValueError(f"frontend at {sample_rate_hz} Hz: expected {msg}")


@functools.lru_cache(maxsize=32)
def _plan(cfg: FrontendConfig, sample_rate_hz: int) -> _Plan:
    _check(cfg, sample_rate_hz)
    hop = cfg.hop_length_samples(sample_rate_hz)
    uses_mel = cfg.kind != "linear"
    # librosa.pcen's choice of s: the one-pole filter's squared response has its half-power
    # point at the time constant.
    t_frames = cfg.pcen_time_constant_s * sample_rate_hz / hop
    smoothing = (np.sqrt(1.0 + 4.0 * t_frames**2) - 1.0) / (2.0 * t_frames**2)
    return _Plan(
        frame_step=hop,
        fft_length=cfg.fft_length(sample_rate_hz),
        window=_window(cfg, sample_rate_hz),
        band=_band_bins(cfg, sample_rate_hz),
        mel=mel_filterbank(cfg, sample_rate_hz) if uses_mel else None,
        dct=_dct_matrix(cfg.n_mels, cfg.n_mfcc) if cfg.kind == "mfcc" else None,
        pcen_smoothing=float(smoothing),
    )


def frontend_output_shape(cfg: FrontendConfig, sample_rate_hz: int,
                          num_samples: int) -> tuple[int, int]:
    """(frames, bins) that compute_features returns for clips of num_samples samples."""
    plan = _plan(cfg, sample_rate_hz)
    padded = num_samples + (2 * (plan.fft_length // 2) if cfg.center else 0)
    frames = max(0, 1 + (padded - plan.fft_length) // plan.frame_step)
    if cfg.kind == "linear":
        bins = plan.band[1] - plan.band[0]
    elif cfg.kind == "mfcc":
        bins = cfg.n_mfcc
    else:
        bins = cfg.n_mels
    return frames, bins


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


def _normalize(x: tf.Tensor, how: str) -> tf.Tensor:
    """Per-example normalisation over frames and bins of x [batch, frames, bins]."""
    if how == "standardize":
        mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)  # [batch, 1, 1]
        return (x - mean) / tf.maximum(tf.sqrt(var), _NORM_EPS)
    if how == "minmax":
        lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
        hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
        return (x - lo) / tf.maximum(hi - lo, _NORM_EPS)
    return x


def _features(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int) -> tf.Tensor:
    """float32 waveforms [batch, samples] -> float32 features [batch, frames, bins]."""
    plan = _plan(cfg, sample_rate_hz)
    if cfg.center:
        half = plan.fft_length // 2
        waves = tf.pad(waves, [[0, 0], [half, half]])  # [batch, samples + 2 * half]
    frames = tf.signal.frame(waves, plan.fft_length, plan.frame_step)  # [batch, frames, fft_len]
    frames = frames * plan.window  # [batch, frames, fft_len]
    # rfft rather than a DFT matmul: GPUs run matmuls in TF32 by default, whose ~1e-3 relative
    # error would leak loud bins' energy into quiet ones (a noise floor ~60 dB down).
    stft = tf.signal.rfft(frames, fft_length=[plan.fft_length])  # [batch, frames, fft_bins]
    if cfg.power == 2.0:
        real, imag = tf.math.real(stft), tf.math.imag(stft)  # [batch, frames, fft_bins] each
        spec = real * real + imag * imag  # [batch, frames, fft_bins]
    elif cfg.power == 1.0:
        spec = tf.abs(stft)  # [batch, frames, fft_bins]
    else:
        spec = tf.math.pow(tf.abs(stft), cfg.power)  # [batch, frames, fft_bins]

    if cfg.kind == "linear":
        feats = spec[:, :, plan.band[0]:plan.band[1]]  # [batch, frames, band_bins]
    else:
        mel = tf.linalg.matmul(spec, plan.mel)  # [batch, frames, n_mels]
        if cfg.kind == "mel":
            feats = mel
        elif cfg.kind == "pcen":
            smooth = _pcen_smooth(mel, plan.pcen_smoothing)  # [batch, frames, n_mels]
            gain = tf.math.pow(cfg.pcen_eps + smooth, -cfg.pcen_gain)  # [batch, frames, n_mels]
            feats = (tf.math.pow(mel * gain + cfg.pcen_bias, cfg.pcen_power)
                     - cfg.pcen_bias ** cfg.pcen_power)  # [batch, frames, n_mels]
        else:
            db_per_neper = float(10.0 / np.log(10.0))
            floored = tf.maximum(mel, cfg.log_floor)  # [batch, frames, n_mels]
            feats = db_per_neper * tf.math.log(floored)  # [batch, frames, n_mels]
            if cfg.top_db is not None:
                peak = tf.reduce_max(feats, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
                feats = tf.maximum(feats, peak - cfg.top_db)  # [batch, frames, n_mels]
            if cfg.kind == "mfcc":
                feats = tf.linalg.matmul(feats, plan.dct)  # [batch, frames, n_mfcc]

    return _normalize(feats, cfg.normalize)  # [batch, frames, bins]


def _chunk_examples(cfg: FrontendConfig, sample_rate_hz: int, num_samples: Optional[int]) -> int:
    """Examples per chunk so that one chunk's frames (~_CHUNK_BYTES) stay in the CPU cache."""
    plan = _plan(cfg, sample_rate_hz)
    frames = frontend_output_shape(cfg, sample_rate_hz, num_samples)[0] if num_samples else 376
    return max(1, _CHUNK_BYTES // max(1, frames * plan.fft_length * 4))


def compute_features(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int) -> tf.Tensor:
    """float32 waveforms [batch, samples] -> float32 features [batch, frames, bins, 1].

    On a CPU the batch is processed a few examples at a time (_features_in_chunks); a GPU gets
    the whole batch at once. Both give the same values.
    """
    waves = tf.cast(tf.convert_to_tensor(waves), tf.float32)  # [batch, samples]
    if tf.config.list_physical_devices("GPU"):
        return _features(waves, cfg, sample_rate_hz)[..., tf.newaxis]  # [batch, frames, bins, 1]
    return _features_in_chunks(waves, cfg, sample_rate_hz)[..., tf.newaxis]  # [batch, frames, bins, 1]


def _features_in_chunks(waves: tf.Tensor, cfg: FrontendConfig, sample_rate_hz: int) -> tf.Tensor:
    """_features a few examples at a time: the framed signal of a whole batch (~50 MB for 64
    clips of 3 s) overflows a CPU's caches, and every elementwise pass then runs at memory
    speed; chunks of a few MB run 2-4x faster."""
    chunk = _chunk_examples(cfg, sample_rate_hz, waves.shape[1])
    static_batch = waves.shape[0]
    if static_batch is not None and static_batch <= chunk:
        return _features(waves, cfg, sample_rate_hz)  # [batch, frames, bins]
    batch = tf.shape(waves)[0]
    n_chunks = (batch + chunk - 1) // chunk
    padded = tf.pad(waves, [[0, n_chunks * chunk - batch], [0, 0]])  # [n_chunks * chunk, samples]
    pieces = tf.reshape(padded, [n_chunks, chunk, -1])  # [n_chunks, chunk, samples]
    feats = tf.map_fn(lambda w: _features(w, cfg, sample_rate_hz), pieces,
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
    """compute_features as a layer: waves [batch, samples] -> features [batch, frames, bins, 1].

    Always float32 (its own dtype policy, also under a mixed_float16 global policy): log and
    PCEN of float16 power spectra would overflow and lose the quiet bins. Has no weights.
    """

    def __init__(self, frontend: dict | FrontendConfig, sample_rate_hz: int, **kwargs):
        # The policy is fixed, so a saved 'dtype' (from get_config) is dropped on reload.
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.frontend = _as_config(frontend)
        self.sample_rate_hz = int(sample_rate_hz)
        _plan(self.frontend, self.sample_rate_hz)

    def call(self, waves):
        return compute_features(waves, self.frontend, self.sample_rate_hz)

    def compute_output_shape(self, input_shape):
        batch, num_samples = input_shape[0], input_shape[-1]
        frames, bins = frontend_output_shape(self.frontend, self.sample_rate_hz, num_samples or 0)
        return batch, (frames if num_samples is not None else None), bins, 1

    def get_config(self):
        config = super().get_config()
        config.update(frontend=dataclasses.asdict(self.frontend),
                      sample_rate_hz=self.sample_rate_hz)
        return config
