"""Resampling: synthetic signals with known answers, parity with soxr, segment == full, lengths."""
import math

import numpy as np
import pytest
import tensorflow as tf

from pipeline.audio import resample as rs

RATE_OUT = 16000
# The two paths of the plan: exact ratios with a small `up`, and approximated large ones.
EXACT_PAIR = (81920, 16000)  # up = 25
APPROXIMATED_PAIR = (81920, 22050)  # up = 2205, replaced by a simpler fraction


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """resample() with the input rate as a tensor: the general path a tf.data pipeline takes."""
    return rs.resample(x, tf.constant(rate_in), rate_out).numpy()


def _tone(rate: int, freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _interior(y: np.ndarray, rate: int, margin_s: float = 0.05) -> np.ndarray:
    """y without `margin_s` at each end, where the kernel meets the signal's edges."""
    m = int(margin_s * rate)
    return y[m : len(y) - m]


def _band_limited_noise(rate: int, seconds: float, top_hz: float, seed: int) -> np.ndarray:
    n = int(rate * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum[np.fft.rfftfreq(n, 1 / rate) > top_hz] = 0
    x = np.fft.irfft(spectrum, n)
    return (0.3 * x / np.std(x)).astype(np.float32)


def _effective_rate_in(rate_in: int, rate_out: int) -> float:
    """The input rate the plan actually resamples from (differs from rate_in when approximated)."""
    factor, up, down = (int(v) for v in rs._plan(tf.constant(rate_in, tf.int64), rate_out))
    return rate_out * factor * down / up


@pytest.mark.parametrize("rate_in", [5120, 8000, 22050, 44100, 48000, 81920, 96000, 166600, 44056])
def test_sine_keeps_frequency_and_amplitude(rate_in):
    y = _resample(_tone(rate_in, 1000.0, 0.5), rate_in, RATE_OUT)
    e = _interior(y, RATE_OUT)
    spectrum = np.abs(np.fft.rfft(e * np.hanning(len(e))))
    peak_hz = np.argmax(spectrum) * RATE_OUT / len(e)
    assert abs(peak_hz - 1000.0) <= RATE_OUT / len(e)
    gain_db = 20 * np.log10(np.sqrt(2 * np.mean(e**2)) / 0.5)
    assert abs(gain_db) < 0.1


@pytest.mark.parametrize("rate_in", [44100, 48000, 81920, 166600])
@pytest.mark.parametrize("freq", [8100.0, 10000.0, 15000.0])
def test_tone_above_new_nyquist_is_suppressed(rate_in, freq):
    y = _resample(_tone(rate_in, freq, 0.3), rate_in, RATE_OUT)
    level_db = 20 * np.log10(np.sqrt(2 * np.mean(_interior(y, RATE_OUT) ** 2)) / 0.5 + 1e-12)
    assert level_db < -60.0


def test_passband_is_flat():
    gains = []
    for freq in np.linspace(50.0, 0.85 * RATE_OUT / 2, 12):
        y = _resample(_tone(81920, freq, 0.3), 81920, RATE_OUT)
        gains.append(20 * np.log10(np.sqrt(2 * np.mean(_interior(y, RATE_OUT) ** 2)) / 0.5))
    assert max(np.abs(gains)) < 0.1


def test_upsampling_adds_nothing_above_the_old_nyquist():
    x = np.random.default_rng(0).standard_normal(5120).astype(np.float32) * 0.3
    e = _interior(_resample(x, 5120, RATE_OUT), RATE_OUT)
    power = np.abs(np.fft.rfft(e * np.hanning(len(e)))) ** 2
    freqs = np.fft.rfftfreq(len(e), 1 / RATE_OUT)
    in_band = power[(freqs > 100) & (freqs < 2000)].mean()
    above = power[freqs > 2560 + 40].max()
    assert 10 * np.log10(above / in_band) < -60.0


@pytest.mark.parametrize(
    "rate_in, rate_out",
    [
        (5120, 16000),
        (44100, 16000),
        (48000, 16000),
        EXACT_PAIR,
        (166600, 16000),
        (44100, 22050),
        APPROXIMATED_PAIR,
    ],
)
def test_parity_with_soxr(rate_in, rate_out):
    soxr = pytest.importorskip("soxr")
    x = _band_limited_noise(rate_in, 1.0, 0.8 * min(rate_in, rate_out) / 2, seed=rate_in)
    y = _resample(x, rate_in, rate_out)
    # soxr at the ratio the plan uses (the exact one unless the ratio was approximated).
    ref = soxr.resample(x, _effective_rate_in(rate_in, rate_out), rate_out, quality="VHQ")
    n = min(len(y), len(ref))
    e, r = _interior(y[:n], rate_out, 0.1), _interior(ref[:n], rate_out, 0.1)
    snr_db = 10 * np.log10(np.sum(r**2) / np.sum((e - r) ** 2))
    assert snr_db >= 40.0


def test_approximated_ratio_is_close_and_small():
    rate_in, rate_out = APPROXIMATED_PAIR
    factor, up, down = (int(v) for v in rs._plan(tf.constant(rate_in, tf.int64), rate_out))
    assert up <= rs._MAX_APPROX_UP
    exact_up = rate_out * factor // math.gcd(rate_in, rate_out * factor)
    assert exact_up > rs._MAX_EXACT_UP
    assert abs(_effective_rate_in(rate_in, rate_out) / rate_in - 1.0) <= rs._RATIO_TOL


def test_exact_ratio_is_kept():
    assert _effective_rate_in(*EXACT_PAIR) == EXACT_PAIR[0]
    assert _effective_rate_in(166600, 16000) == 166600


@pytest.mark.parametrize(
    "rate_in, rate_out", [EXACT_PAIR, APPROXIMATED_PAIR, (5120, 16000), (44100, 16000)]
)
def test_segment_equals_full(rate_in, rate_out):
    x = np.random.default_rng(1).standard_normal(int(0.4 * rate_in)).astype(np.float32)
    rate = tf.constant(rate_in)
    full = rs.resample(x, rate, rate_out).numpy()
    assert np.array_equal(full, rs.resample_segment(x, rate, rate_out, 0, len(full)).numpy())
    padded = np.concatenate([np.zeros(3000, np.float32), full, np.zeros(3000, np.float32)])
    n = len(full)
    windows = [(0, 100), (777, 1234), (n - 50, 300), (-200, 500), (-3000, n + 6000)]
    windows += [(n + 10, 40), (-900, 100)]
    for start, length in windows:
        got = rs.resample_segment(x, rate, rate_out, start, length).numpy()
        assert got.shape == (length,)
        np.testing.assert_allclose(got, padded[start + 3000 : start + 3000 + length], atol=2e-6)


@pytest.mark.parametrize("rate_in", [81920, 166600, 5120])
def test_segment_reads_only_the_input_it_needs(rate_in):
    """Inputs far from the requested outputs are never read: NaNs there would reach the output."""
    x = np.full(int(10.0 * rate_in), np.nan, np.float32)
    start_s, seconds = 4.0, 1.0
    margin = int(0.05 * rate_in)
    lo, hi = int(start_s * rate_in) - margin, int((start_s + seconds) * rate_in) + margin
    x[lo:hi] = np.random.default_rng(2).standard_normal(hi - lo)
    start, length = int(start_s * RATE_OUT), int(seconds * RATE_OUT)
    y = rs.resample_segment(x, tf.constant(rate_in), RATE_OUT, start, length)
    assert np.all(np.isfinite(y.numpy()))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1001, 44101])
@pytest.mark.parametrize(
    "rate_in, rate_out",
    [(44100, 16000), (5120, 16000), (16000, 16000), APPROXIMATED_PAIR, (166600, 22050)],
)
def test_output_lengths_are_exact(n, rate_in, rate_out):
    for rate in (rate_in, tf.constant(rate_in)):
        y = rs.resample(np.ones(n, np.float32), rate, rate_out)
        assert y.shape == (-(-n * rate_out // rate_in),)


def test_resampled_length():
    assert int(rs.resampled_length(81920, 81920, 16000)) == 16000
    assert int(rs.resampled_length(1, 44100, 16000)) == 1
    assert int(rs.resampled_length(0, 44100, 16000)) == 0
    assert int(rs.resampled_length(44101, 44100, 16000)) == 16001
    # int64 arithmetic: 10 hours at 166.6 kHz overflows int32 products but not the result.
    n = tf.constant(166600 * 36000, tf.int64)
    assert int(rs.resampled_length(n, tf.constant(166600), 16000)) == 16000 * 36000
    assert rs.resampled_length(tf.constant(5, tf.int32), 8000, 16000).dtype == tf.int32


def test_equal_rates_are_identity():
    x = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    for rate in (16000, tf.constant(16000)):
        np.testing.assert_array_equal(rs.resample(x, rate, 16000).numpy(), x)
        segment = rs.resample_segment(x, rate, 16000, -5, 20).numpy()
        np.testing.assert_array_equal(segment, np.concatenate([np.zeros(5, np.float32), x[:15]]))


def test_dc_gain_is_exactly_one():
    y = _resample(np.ones(20000, np.float32), 44100, RATE_OUT)
    np.testing.assert_allclose(_interior(y, RATE_OUT, 0.01), 1.0, atol=1e-5)


def test_dataset_map_with_rate_tensor():
    rates = [81920, 44100, 16000, 5120, 166600]
    signals = [_tone(r, 440.0, 0.25) for r in rates]

    def generate():
        for x, r in zip(signals, rates):
            yield x, np.int32(r)

    spec = (tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32))
    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    ds = ds.map(
        lambda x, r: rs.resample_segment(x, r, RATE_OUT, -100, 4000), num_parallel_calls=tf.data.AUTOTUNE
    )
    assert ds.element_spec.shape == (4000,)
    for y, x, r in zip(ds, signals, rates):
        expected = rs.resample_segment(x, r, RATE_OUT, -100, 4000).numpy()
        np.testing.assert_allclose(y.numpy(), expected, atol=2e-6)


@pytest.mark.parametrize(
    "rate_in, rate_out",
    [EXACT_PAIR, APPROXIMATED_PAIR, (166600, 16000), (5120, 16000), (44100, 16000)],
)
def test_rate_hints_and_python_ints_take_the_same_values(rate_in, rate_out):
    """Rates given as ints, or expected via `rates`, use precomputed weights: same results."""
    x = _band_limited_noise(rate_in, 0.3, 0.4 * rate_in, seed=4)
    rate = tf.constant(rate_in)
    general = rs.resample_segment(x, rate, rate_out, -10, 3000).numpy()
    hinted = rs.resample_segment(x, rate, rate_out, -10, 3000, rates=[8000, rate_in]).numpy()
    static = rs.resample_segment(x, rate_in, rate_out, -10, 3000).numpy()
    np.testing.assert_allclose(hinted, general, atol=1e-6)
    np.testing.assert_allclose(static, general, atol=1e-6)
    # A rate missing from the hints takes the general path.
    other = rs.resample_segment(x, rate, rate_out, -10, 3000, rates=[8000, 96000]).numpy()
    np.testing.assert_array_equal(other, general)


@pytest.mark.parametrize("rate_in, rate_out", [(48000, 22050), (166600, 16000)])
def test_dense_product_equals_grouped(rate_in, rate_out):
    """Long segments at hinted rates with a short period take the dense product (after the
    decimation for 166,600 Hz): the same values as the grouped product of the general path.
    The dense product needs as many periods as its matrix has rows (4.3 s of output from 48 kHz)."""
    assert rs._table((rate_in,), rate_out).dense.size > 0
    x = _band_limited_noise(rate_in, 10.5, 0.4 * rate_in, seed=5)
    length = 10 * rate_out
    general = rs.resample_segment(x, tf.constant(rate_in), rate_out, -10, length).numpy()
    dense = rs.resample_segment(x, tf.constant(rate_in), rate_out, -10, length, rates=[rate_in]).numpy()
    np.testing.assert_allclose(dense, general, atol=1e-6)


def test_hinted_rates_inside_dataset_map():
    rates = [81920, 44100, 5120]
    signals = [_tone(r, 440.0, 0.25) for r in rates]
    ds = tf.data.Dataset.from_generator(
        lambda: zip(signals, [np.int32(r) for r in rates]),
        output_signature=(tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)),
    )
    ds = ds.map(lambda x, r: rs.resample_segment(x, r, RATE_OUT, 0, 4000, rates=rates[:2]))
    for y, x, r in zip(ds, signals, rates):
        np.testing.assert_allclose(y.numpy(), _resample(x, r, RATE_OUT)[:4000], atol=1e-6)


def test_graph_mode_matches_eager():
    """One traced function serves every rate: exact, two-stage, approximated, up-sampling, equal."""
    resample = tf.function(
        lambda x, r: rs.resample_segment(x, r, 22050, 100, 2000),
        input_signature=(tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)),
    )
    for rate in (81920, 166600, 44056, 8000, 22050):
        x = _band_limited_noise(rate, 0.2, 0.4 * rate, seed=5)
        expected = rs.resample_segment(x, tf.constant(rate), 22050, 100, 2000).numpy()
        np.testing.assert_allclose(resample(x, tf.constant(rate)).numpy(), expected, atol=1e-6)
    assert resample.experimental_get_tracing_count() == 1


def test_rate_checks():
    with pytest.raises(ValueError):
        rs.resample(np.zeros(10, np.float32), 8000, 16000.0)
    with pytest.raises(ValueError):
        rs.resample(np.zeros(10, np.float32), 0, 16000)
    with pytest.raises(tf.errors.InvalidArgumentError):
        rs.resample(np.zeros(10, np.float32), tf.constant(-8000), 16000)
