"""Training-only augmentation of whole batches, in TensorFlow ops only.

Every function takes an explicit `seed` (an int32 or int64 tensor of shape [2]) and draws all its
randomness from `tf.random.stateless_*` ops, so the same seed always gives the same batch, a run
is reproducible from its run seed, and the functions trace into `tf.function`s and `tf.data`
maps on any device without Python callbacks. Strengths are Python numbers read at trace time.
"""
from __future__ import annotations

import tensorflow as tf

from pipeline.config import AugmentConfig

# Below this RMS a noise clip counts as silent: it cannot be scaled to any SNR without blowing
# up, so it adds nothing. Far under the quantisation step of 16-bit audio (about 3e-5).
_SILENT_RMS = 1e-12


def _split(seed, n: int):
    """n independent seeds (each [2]) derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def _per_example(values, like):
    """Reshapes per-example values [batch] to [batch, 1, ...] to broadcast against `like`."""
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


def random_gain(waves, seed, gain_db_range: float):
    """Scales each example by 10**(g/20) with g ~ U(-gain_db_range, +gain_db_range) dB."""
    batch = tf.shape(waves)[0]
    gain_db = tf.random.stateless_uniform(
        [batch], seed, minval=-float(gain_db_range), maxval=float(gain_db_range))  # [batch]
    factor = tf.cast(tf.pow(10.0, gain_db / 20.0), waves.dtype)  # [batch]
    return waves * _per_example(factor, waves)


def _rms(x):
    """RMS over all axes but the batch axis, in float32: [batch]."""
    x = tf.cast(x, tf.float32)
    return tf.sqrt(tf.reduce_mean(tf.square(tf.reshape(x, [tf.shape(x)[0], -1])), axis=1))


def mix_noise(waves, noise, seed, prob: float, snr_db_min: float, snr_db_max: float):
    """With probability `prob` per example, adds `noise` at an SNR (by RMS) of U(min, max) dB.

    `noise` has the shape of `waves` and holds background (non-call) audio. Examples not picked
    are returned bit-identical. A silent noise clip adds nothing; a silent signal gets no noise
    either, as zero noise is the only level that gives it a finite SNR. Neither gives NaN/Inf.
    """
    seed_pick, seed_snr = _split(seed, 2)
    batch = tf.shape(waves)[0]
    picked = tf.random.stateless_uniform([batch], seed_pick) < float(prob)  # [batch]
    snr_db = tf.random.stateless_uniform(
        [batch], seed_snr, minval=float(snr_db_min), maxval=float(snr_db_max))  # [batch]
    signal_rms = _rms(waves)  # [batch]
    noise_rms = _rms(noise)  # [batch]
    audible = noise_rms > _SILENT_RMS
    target_rms = signal_rms * tf.pow(10.0, -snr_db / 20.0)  # [batch]
    scale = tf.where(audible, target_rms / tf.where(audible, noise_rms, 1.0), 0.0)  # [batch]
    mixed = waves + tf.cast(_per_example(scale, waves), waves.dtype) * tf.cast(noise, waves.dtype)
    return tf.where(_per_example(picked, waves), mixed, waves)


def _span_mask(seed, batch, length, count: int, max_width: int):
    """Union of `count` random spans per example, each of width U{0..max_width}: [batch, length].

    A span of width w starts at U{0..length - w}, so it always lies inside the axis; widths
    above the axis length are clipped to it.
    """
    seed_width, seed_start = _split(seed, 2)
    width = tf.random.stateless_uniform(
        [batch, count], seed_width, minval=0, maxval=int(max_width) + 1, dtype=tf.int32)
    width = tf.minimum(width, length)  # [batch, count]
    room = tf.cast(length - width + 1, tf.float32)  # [batch, count]
    start = tf.cast(tf.floor(tf.random.stateless_uniform([batch, count], seed_start) * room),
                    tf.int32)
    start = tf.minimum(start, length - width)  # [batch, count]
    position = tf.range(length)[tf.newaxis, tf.newaxis, :]  # [1, 1, length]
    inside = ((position >= start[:, :, tf.newaxis])
              & (position < (start + width)[:, :, tf.newaxis]))  # [batch, count, length]
    return tf.reduce_any(inside, axis=1)  # [batch, length]


def spec_mask(shape, seed, time_masks: int, time_mask_max_frames: int, freq_masks: int,
              freq_mask_max_bins: int):
    """Which cells SpecAugment masks, bool [batch, frames, bins] for a spectrogram `shape`
    ([batch, frames, bins, ...], a tensor): `time_masks` spans of U{0..time_mask_max_frames}
    frames and `freq_masks` spans of U{0..freq_mask_max_bins} bins per example."""
    seed_time, seed_freq = _split(seed, 2)
    batch, frames, bins = shape[0], shape[1], shape[2]
    masked = tf.zeros([batch, frames, bins], tf.bool)
    if time_masks > 0:
        time = _span_mask(seed_time, batch, frames, time_masks, time_mask_max_frames)
        masked = masked | time[:, :, tf.newaxis]  # [batch, frames, bins]
    if freq_masks > 0:
        freq = _span_mask(seed_freq, batch, bins, freq_masks, freq_mask_max_bins)
        masked = masked | freq[:, tf.newaxis, :]  # [batch, frames, bins]
    return masked


def spec_augment(spec, seed, time_masks: int, time_mask_max_frames: int, freq_masks: int,
                 freq_mask_max_bins: int):
    """SpecAugment time and frequency masking of a batch of spectrograms.

    `spec` is [batch, frames, bins, channels] (or [batch, frames, bins]); the cells of spec_mask
    become the example's own mean (per channel), because a fixed 0 is far out of range for
    log-scale features and would teach the model to spot the mask. Cells outside the masks are
    unchanged.
    """
    if time_masks == 0 and freq_masks == 0:
        return spec
    masked = spec_mask(tf.shape(spec), seed, time_masks, time_mask_max_frames, freq_masks,
                       freq_mask_max_bins)  # [batch, frames, bins]
    if spec.shape.rank == 4:
        masked = masked[..., tf.newaxis]  # [batch, frames, bins, 1]
    value = tf.reduce_mean(spec, axis=[1, 2], keepdims=True)  # [batch, 1, 1(, channels)]
    return tf.where(masked, value, spec)


def mixup(x, y, seed, alpha: float):
    """Mixes each example with a partner from the same batch: (x_mixed, y_mixed).

    lam ~ Beta(alpha, alpha) per example, drawn as g1 / (g1 + g2) with g1, g2 ~ Gamma(alpha);
    the partners are a random permutation of the batch (argsort of stateless uniforms).
    x_mixed = lam * x + (1 - lam) * x[perm], and the float labels `y` [batch, classes]
    (one-hot or multi-hot) mix with the same lam.
    """
    if not y.dtype.is_floating:
        raise TypeError(f"mixup needs float labels (one-hot or multi-hot), got {y.dtype.name}")
    seed_a, seed_b, seed_perm = _split(seed, 3)
    batch = tf.shape(x)[0]
    g1 = tf.random.stateless_gamma([batch], seed_a, alpha=float(alpha))  # [batch]
    g2 = tf.random.stateless_gamma([batch], seed_b, alpha=float(alpha))  # [batch]
    total = g1 + g2
    # For tiny alpha both draws can underflow to 0; Beta then sits at 0 or 1, so keep x.
    lam = tf.where(total > 0.0, g1 / tf.where(total > 0.0, total, 1.0), 1.0)  # [batch]
    perm = tf.argsort(tf.random.stateless_uniform([batch], seed_perm))  # [batch]

    def mix(t):
        weight = tf.cast(_per_example(lam, t), t.dtype)
        return weight * t + (1.0 - weight) * tf.gather(t, perm)

    return mix(x), mix(y)


def augment_waveforms(waves, labels, seed, cfg: AugmentConfig, sample_rate_hz: int,
                      noise=None):
    """Waveform-stage augmentation of a training batch: (waves, labels).

    In order: random_gain, mix_noise (only when `noise` is given and cfg.noise_prob > 0) and
    mixup. Stages with zero strength are left out of the graph, and nothing is applied when
    cfg.enabled is False. Each stage has its own seed split from `seed`, always into the same
    three, so switching one stage on or off does not change the draws of the others.
    cfg.time_shift_max_s is applied per example, by moving the crop (pipeline.datasets.clips.load_clip): a
    per-example gather over the whole batch cost as much as the frontend.
    """
    if not cfg.enabled:
        return waves, labels
    seed_gain, seed_noise, seed_mixup = _split(seed, 3)
    if cfg.gain_db_range > 0:
        waves = random_gain(waves, seed_gain, cfg.gain_db_range)
    if noise is not None and cfg.noise_prob > 0:
        waves = mix_noise(waves, noise, seed_noise, cfg.noise_prob,
                          cfg.noise_snr_db_min, cfg.noise_snr_db_max)
    if cfg.mixup_alpha > 0:
        waves, labels = mixup(waves, labels, seed_mixup, cfg.mixup_alpha)
    return waves, labels


def augment_spectrograms(spec, seed, cfg: AugmentConfig):
    """SpecAugment masking with cfg's counts and widths; unchanged when disabled or all zero."""
    if not cfg.enabled:
        return spec
    time_masks = cfg.time_masks if cfg.time_mask_max_frames > 0 else 0
    freq_masks = cfg.freq_masks if cfg.freq_mask_max_bins > 0 else 0
    return spec_augment(spec, seed, time_masks, cfg.time_mask_max_frames,
                        freq_masks, cfg.freq_mask_max_bins)
