"""Cross-field checks of a Config: values each fine alone that cannot describe a run together."""
from __future__ import annotations

from pipeline.config.schema import Config, ConfigError, FrontendConfig


def frontend_problems(fe: FrontendConfig, sr: int) -> list[tuple[str, str]]:
    """(dotted key, what was expected) for each frontend setting that cannot run at `sr` Hz:
    checked with the whole config, and by the frontend itself for configs loaded from a model."""
    problems: list[tuple[str, str]] = []
    nyquist = sr / 2.0

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            problems.append((key, msg))

    need(fe.kind in ("linear", "mel", "logmel", "mfcc", "pcen"), "frontend.kind", "a known kind")
    need(fe.normalize in ("none", "standardize", "minmax"), "frontend.normalize", "a known normalisation")
    need((fe.window_s is None) != (fe.n_fft is None), "frontend.window_s",
         "exactly one of frontend.window_s and frontend.n_fft (set the other to null)")
    need((fe.hop_s is None) != (fe.hop_samples is None), "frontend.hop_s",
         "exactly one of frontend.hop_s and frontend.hop_samples (set the other to null)")
    if not problems:
        frame = fe.frame_length_samples(sr)
        need(frame >= 2, "frontend.window_s" if fe.window_s is not None else "frontend.n_fft",
             f"a window of at least 2 samples at {sr} Hz")
        need(fe.hop_length_samples(sr) >= 1, "frontend.hop_s" if fe.hop_s is not None else "frontend.hop_samples",
             f"a hop of at least 1 sample at {sr} Hz")
        need(frame <= fe.fft_length(sr), "frontend.n_fft", "a window no longer than n_fft")
    need(0 <= fe.fmin_hz < nyquist, "frontend.fmin_hz", f"0 <= fmin_hz < Nyquist ({nyquist:g} Hz)")
    if fe.fmax_hz is not None:
        need(fe.fmax_hz <= nyquist, "frontend.fmax_hz",
             f"at most Nyquist ({nyquist:g} Hz for audio.sample_rate_hz={sr}), got {fe.fmax_hz:g}")
        need(fe.fmax_hz > fe.fmin_hz, "frontend.fmax_hz", f"above fmin_hz ({fe.fmin_hz:g})")
    need(fe.n_mels >= 1, "frontend.n_mels", "at least 1")
    need(1 <= fe.n_mfcc <= fe.n_mels, "frontend.n_mfcc", f"between 1 and n_mels ({fe.n_mels})")
    need(fe.power in (1.0, 2.0), "frontend.power", "1.0 (magnitude) or 2.0 (power)")
    need(fe.log_floor > 0, "frontend.log_floor", "a positive floor")
    need(fe.pcen_time_constant_s > 0, "frontend.pcen_time_constant_s", "a positive time in s")
    return problems


def check(cfg: Config) -> None:
    """Cross-field checks: values each fine alone that cannot describe a run together."""
    sr = cfg.audio.sample_rate_hz
    fe = cfg.frontend
    problems: list[tuple[str, str]] = []

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            problems.append((key, msg))

    need(sr > 0, "audio.sample_rate_hz", "a positive rate in Hz")
    need(cfg.audio.clip_s > 0, "audio.clip_s", "a positive duration in seconds")
    need(cfg.audio.mono == "mean" or cfg.audio.mono >= 0, "audio.mono", "'mean' or a channel index >= 0")
    if sr > 0:
        problems += frontend_problems(fe, sr)
    if not problems:
        need(fe.frame_length_samples(sr) <= cfg.audio.clip_samples, "frontend.n_fft",
             f"a window no longer than the clip ({cfg.audio.clip_samples} samples)")
    aug = cfg.augment
    need(0 <= aug.noise_prob <= 1, "augment.noise_prob", "a probability in [0, 1]")
    need(aug.noise_snr_db_min <= aug.noise_snr_db_max, "augment.noise_snr_db_min",
         "at most noise_snr_db_max")
    need(aug.noise_prob == 0 or bool(aug.noise_glob), "augment.noise_glob",
         "a glob of background audio when noise_prob > 0")
    for key in ("time_masks", "time_mask_max_frames", "freq_masks", "freq_mask_max_bins"):
        need(getattr(aug, key) >= 0, f"augment.{key}", "a count >= 0")
    need(aug.mixup_alpha >= 0, "augment.mixup_alpha", "alpha >= 0 (0 disables mixup)")
    need(aug.gain_db_range >= 0, "augment.gain_db_range", "a range in dB >= 0")
    need(aug.time_shift_max_s >= 0, "augment.time_shift_max_s", "a shift in s >= 0")
    need(cfg.pipeline.batch_size >= 1, "pipeline.batch_size", "at least 1")
    need(cfg.pipeline.shuffle_buffer >= 0, "pipeline.shuffle_buffer", "a size >= 0")
    d = cfg.data
    need(0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1
         and d.val_fraction + d.test_fraction < 1, "data.val_fraction",
         "val_fraction + test_fraction below 1")
    need(d.negatives_per_positive >= 0, "data.negatives_per_positive", "a ratio >= 0")
    need(cfg.train.epochs >= 1, "train.epochs", "at least 1")
    need(not (cfg.train.balance == "class_weights" and cfg.train.task == "multilabel"),
         "train.balance", "'none' or 'sample' for a multilabel task (class weights need one label)")
    need(cfg.train.task != "frames" or d.source == "annotations", "train.task",
         "a source with call times for 'frames' (data.source: annotations)")
    need(cfg.train.task != "frames" or cfg.train.balance != "class_weights", "train.balance",
         "'none' or 'sample' for frame targets")
    need(cfg.train.onset_tolerance_s > 0, "train.onset_tolerance_s", "above 0 s")
    need(cfg.train.task != "frames" or cfg.audio.pad_mode != "repeat", "audio.pad_mode",
         "zero padding for frame targets (repeated audio would repeat calls the targets do not hold)")
    need(cfg.train.learning_rate > 0, "train.learning_rate", "a positive rate")
    need(cfg.train.weight_decay is None or cfg.train.weight_decay >= 0, "train.weight_decay", "a decay >= 0")
    need(cfg.train.warmup_epochs >= 0, "train.warmup_epochs", "epochs >= 0")
    need(0 <= cfg.train.label_smoothing < 1, "train.label_smoothing", "a fraction in [0, 1)")
    need(0 <= cfg.model.dropout < 1, "model.dropout", "a fraction in [0, 1)")
    need(0 < cfg.detect.threshold < 1, "detect.threshold", "a score in (0, 1)")
    need(0 < cfg.detect.onset_threshold <= 1, "detect.onset_threshold", "a score in (0, 1]")
    need(cfg.model.kernel_size >= 1, "model.kernel_size", "at least 1")
    need(cfg.model.trainable_blocks >= 0 and cfg.model.head_units >= 0, "model.trainable_blocks",
         "trainable_blocks and head_units of at least 0")
    need(cfg.model.width >= 1 and cfg.model.depth >= 1, "model.width", "width and depth of at least 1")
    need(cfg.detect.chunk_s > 0, "detect.chunk_s", "a positive duration in seconds")
    need(cfg.detect.max_event_s is None or cfg.detect.max_event_s > 0, "detect.max_event_s",
         "a positive duration in seconds, or null")
    need(0 < cfg.detect.match_min_overlap <= 1, "detect.match_min_overlap", "a fraction in (0, 1]")
    need(cfg.tune.max_trials >= 1, "tune.max_trials", "at least 1")
    need(cfg.tune.max_epochs >= 1, "tune.max_epochs", "at least 1")
    need(cfg.tune.max_hours >= 0, "tune.max_hours", "hours >= 0 (0: no limit)")
    if problems:
        key, msg = problems[0]
        raise ConfigError(f"{key}: expected {msg}")


