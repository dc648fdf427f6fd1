"""The frontend's constants, computed once per (config, sample rate) with NumPy: the STFT window,
the mel filterbank, the DCT, the linear kind's band, PCEN's smoothing coefficient, and the output
shape. Conventions follow librosa 0.10 (see pipeline.features.frontend)."""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import numpy as np

from pipeline.config import FrontendConfig
from pipeline.config.checks import frontend_problems


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


class Plan(NamedTuple):
    """Everything derived from (config, sample rate) once: sizes and NumPy constants."""

    frame_step: int
    fft_length: int
    window: np.ndarray  # [fft_length]
    band: tuple[int, int]  # linear kind: bin slice
    mel: Optional[np.ndarray]  # [fft_bins, n_mels]
    dct: Optional[np.ndarray]  # [n_mels, n_mfcc]
    pcen_smoothing: float  # s in M[t] = (1 - s) M[t-1] + s E[t]


def _check(cfg: FrontendConfig, sample_rate_hz: int) -> None:
    """ValueError for a frontend config that cannot run at this rate (one loaded from a saved
    model, say: a config file is checked as a whole by pipeline.config)."""
    problems = frontend_problems(cfg, sample_rate_hz)
    if problems:
        key, msg = problems[0]
        raise ValueError(f"frontend at {sample_rate_hz} Hz: {key}: expected {msg}")


def pcen_smoothing(cfg: FrontendConfig, sample_rate_hz: int) -> float:
    """s in PCEN's smoother M[t] = (1 - s) M[t-1] + s E[t]: librosa.pcen's choice, whose one-pole
    filter has its half-power point at the time constant."""
    t_frames = cfg.pcen_time_constant_s * sample_rate_hz / cfg.hop_length_samples(sample_rate_hz)
    return float((math.sqrt(1.0 + 4.0 * t_frames ** 2) - 1.0) / (2.0 * t_frames ** 2))


@functools.lru_cache(maxsize=32)
def plan(cfg: FrontendConfig, sample_rate_hz: int) -> Plan:
    _check(cfg, sample_rate_hz)
    hop = cfg.hop_length_samples(sample_rate_hz)
    uses_mel = cfg.kind != "linear"
    return Plan(
        frame_step=hop,
        fft_length=cfg.fft_length(sample_rate_hz),
        window=_window(cfg, sample_rate_hz),
        band=_band_bins(cfg, sample_rate_hz),
        mel=mel_filterbank(cfg, sample_rate_hz) if uses_mel else None,
        dct=_dct_matrix(cfg.n_mels, cfg.n_mfcc) if cfg.kind == "mfcc" else None,
        pcen_smoothing=pcen_smoothing(cfg, sample_rate_hz),
    )


def frontend_output_shape(cfg: FrontendConfig, sample_rate_hz: int,
                          num_samples: int) -> tuple[int, int]:
    """(frames, bins) that compute_features returns for clips of num_samples samples."""
    constants = plan(cfg, sample_rate_hz)
    padded = num_samples + (2 * (constants.fft_length // 2) if cfg.center else 0)
    frames = max(0, 1 + (padded - constants.fft_length) // constants.frame_step)
    if cfg.kind == "linear":
        bins = constants.band[1] - constants.band[0]
    elif cfg.kind == "mfcc":
        bins = cfg.n_mfcc
    else:
        bins = cfg.n_mels
    return frames, bins
