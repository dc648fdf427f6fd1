"""Sample-rate conversion as plain TensorFlow ops, for use inside tf.data graphs.

API: resampled_length(n, rate_in, rate_out), resample(x, rate_in, rate_out) and
resample_segment(x, rate_in, rate_out, start, length). rate_in may be a runtime int tensor
(read from the file header in the graph); rate_out is a Python int. Optional `rates`: the input
rates to expect, whose plans and weights are then built once with the graph (0.2-0.4 ms less
per call); other rates still work.

Method. With ``up / down`` the reduced ratio ``rate_out / rate_in``, output sample ``n`` sits
at input position ``n * down / up`` and its weights repeat every ``up`` outputs: polyphase
resampling. One period of ``k * up`` outputs reads ``k * down`` new inputs (``k`` makes a
period at least one kernel long). The input is cut into periods and framed so that column
``q`` holds period ``q`` and the next one; the outputs of a period are split into groups of
about ``_GROUP_OUTPUTS`` consecutive outputs, each of which reads only the frame rows its
kernels cover, so the conversion is one batched product
``[groups, outputs, rows] @ [groups, rows, periods]``. The weights are the continuous kernel
at the exact output-to-input distances, built in the graph from the runtime input rate.

Dense product. For the input rates given in ``rates`` (or as a Python int) whose period is
short, long segments skip the framing: ``periods[:-1] @ W[:period_in] + periods[1:] @
W[period_in:]`` with the same weights laid out as one dense ``[2 * period_in, period_out]``
matrix, mostly zeros. It does 1.5-4x the multiplications but copies nothing (building the frame and
gathering the groups' rows moves ~15 floats per output, which costs more): 48,000 -> 22,050 Hz
for 60 s, 24 ms instead of 80 ms on one thread (44,100 Hz: 15 instead of 70 ms). Results equal
the grouped product up to float rounding (~1e-7). Like the first stage, it multiplies every
input of the two periods around an output, so a NaN or Inf reaches the outputs of its period
and the next, not only those whose kernel covers it.

Kernel (``t`` in samples of the lower of the two rates)::

    h(t) = 0.918 * sinc(0.918 * t) * kaiser(t / 26.5, beta=6.75),   |t| < 26.5

Measured with sine sweeps (5,120-166,600 Hz into 16,000 and 22,050 Hz): passband gain within
-0.07 / +0.02 dB up to 0.85 x the lower Nyquist; any tone above the new Nyquist (down-sampling)
or image above the old Nyquist (up-sampling) at least 70 dB down. Each output's weights sum to
1 (exact DC gain). Against soxr VHQ on band-limited noise the difference is 70-80 dB below the
signal. Arithmetic is float32 (weights computed in float64 where positions matter).

Two stages for large down-sampling ratios: first an integer decimation by ``factor`` (Kaiser
windowed sinc, 72 dB, passband to 0.85 x the new Nyquist, stopband from where aliases would
reach the new band), then the kernel above from ``rate_in / factor`` to ``rate_out``. The first
stage only has to keep aliases out of the new band, so its kernel is short; the sharp kernel
then runs near the output rate. ``factor`` minimizes an operation count: 4 for 81,920 ->
16,000 Hz, 7 for 166,600 -> 16,000 Hz, 1 below about twice the output rate.

Large ``up``: when the exact ``up`` exceeds ``_MAX_EXACT_UP`` (81,920 -> 22,050 Hz has
``up = 2205``), building a period's weights in every call would cost more than the filtering,
so the ratio is replaced by the fraction with the smallest ``up`` within a relative error of
``_RATIO_TOL = 1e-5`` (81,920 -> 22,050 Hz: 309 / 574 after decimating by 2): a pitch change
below 0.02 cent and a time drift below 10 microseconds per second of signal. Output lengths
always follow the exact ratio, and resample() and resample_segment() use the same mapping. A
ratio without such a fraction up to ``_MAX_APPROX_UP`` keeps its exact ``up`` (correct, slower).

Cost on this project's 2-core CPU, one thread: a 3 s segment from 81,920 Hz input about
0.8-1.0 ms (soxr HQ: 1.0 ms), from 166,600 Hz 1.1-1.3 ms (soxr HQ: 2.0 ms); a fixed part of
about 0.4 ms per call (0.15-0.25 ms with `rates`) plus a part proportional to the input read.

Equal rates return the input unchanged.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

# Main kernel, in samples of the lower rate (see the module docstring for its response).
_CUTOFF = 0.918
_HALF_WIDTH = 26.5
_KAISER_BETA = 6.75

# First stage: stopband attenuation, passband edge (fraction of rate_out), candidate factors,
# and the lowest rate it may leave (fraction of rate_out) so its transition band stays wide.
_DECIMATION_ATTENUATION_DB = 72.0
_DECIMATION_PASSBAND = 0.425
_MAX_DECIMATION = 16
_MIN_DECIMATED_RATE = 1.25
# Costs in multiply-add equivalents for choosing the factor: copying one sample of the second
# stage's input into its frame, and building one weight (once per call; 3 s of output assumed).
_COPY_COST = 60.0
_WEIGHT_COST = 60.0

# Exact ratios up to this `up` are used as they are; larger ones are approximated.
_MAX_EXACT_UP = 320
_MAX_APPROX_UP = 4096
_RATIO_TOL = 1e-5

# Outputs per group: each group multiplies only the frame rows its outputs need.
_GROUP_OUTPUTS = 16

# Dense product: the most weights it may hold per rate ([2 * period_in, period_out] floats).
_MAX_DENSE_WEIGHTS = 1 << 20

# Outputs per first-stage row that make a row of `factor` inputs a multiple of 16 samples.
_ALIGN_STEPS = np.array([16 // math.gcd(d, 16) for d in range(1, _MAX_DECIMATION + 1)], dtype=np.int64)

Source = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _window_polynomial() -> np.ndarray:
    """Kaiser window as a polynomial in s = 1 - (t / half)^2, highest power first, times _CUTOFF.

    kaiser = I0(beta * sqrt(s)) / I0(beta) is a power series in s; the degree-7 fit is within
    3e-7 on [0, 1] and costs no table look-ups (gathers are slow per element on CPU).
    """
    s = np.linspace(0.0, 1.0, 4001)
    window = np.i0(_KAISER_BETA * np.sqrt(s)) / np.i0(_KAISER_BETA)
    return np.polynomial.polynomial.polyfit(s, window, 7)[::-1] * _CUTOFF


_WINDOW_POLYNOMIAL = _window_polynomial()


def _ceil_div(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return -tf.math.floordiv(-a, b)


def _main_kernel(t: tf.Tensor) -> tf.Tensor:
    """The main kernel at times t (float32, lower-rate samples), any shape."""
    phase = t * (math.pi * _CUTOFF) + 1e-30  # the offset turns 0 / 0 into 1 at t = 0
    s = 1.0 - tf.square(t * (1.0 / _HALF_WIDTH))
    window = s * float(_WINDOW_POLYNOMIAL[0]) + float(_WINDOW_POLYNOMIAL[1])
    for c in _WINDOW_POLYNOMIAL[2:]:
        window = window * s + float(c)
    return tf.where(s > 0.0, tf.sin(phase) / phase * window, 0.0)


def _divisor_table(rate_out: int) -> np.ndarray:
    """Divisors of d * rate_out for d = 1.._MAX_DECIMATION: int64 [factors, divisors], padded with 1."""
    rows = []
    for d in range(1, _MAX_DECIMATION + 1):
        n = d * rate_out
        small = [i for i in range(1, math.isqrt(n) + 1) if n % i == 0]
        rows.append(sorted(set(small + [n // i for i in small])))
    width = max(len(r) for r in rows)
    return np.array([r + [1] * (width - len(r)) for r in rows], dtype=np.int64)


def _decimation_half(rate_in: tf.Tensor, factor: tf.Tensor, rate_out: int) -> tf.Tensor:
    """First-stage kernel half-width in input samples (Kaiser's length formula), float64."""
    rate = tf.cast(rate_in, tf.float64)
    transition = rate / tf.cast(factor, tf.float64) - (0.5 + _DECIMATION_PASSBAND) * rate_out
    return (_DECIMATION_ATTENUATION_DB - 7.95) / (4.0 * 2.285 * math.pi) * rate / transition


def _decimation_row(num_taps: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Outputs per first-stage row: enough that a row's taps fit in it and the next row, rounded
    up so that a row is a multiple of 16 samples. Then the row slices in _decimate stay 64-byte
    aligned and share memory instead of being copied, which saves more than the extra products.
    """
    k = tf.maximum(_ceil_div(num_taps - factor, factor), 1)
    step = tf.gather(_ALIGN_STEPS, factor - 1)
    return _ceil_div(k, step) * step


def _approximate(up: tf.Tensor, down: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(up, down), or if up is large the (up', down') with the smallest up' whose ratio
    down' / up' is within _RATIO_TOL of down / up."""

    def search() -> tuple[tf.Tensor, tf.Tensor]:
        ratio = tf.cast(down, tf.float64) / tf.cast(up, tf.float64)
        candidates = tf.range(1, _MAX_APPROX_UP + 1, dtype=tf.float64)  # [candidates]
        numerators = tf.maximum(tf.round(candidates * ratio), 1.0)  # [candidates]
        good = tf.abs(numerators / candidates - ratio) <= _RATIO_TOL * ratio  # [candidates]
        best = tf.argmax(tf.cast(good, tf.int32), output_type=tf.int64)
        use = tf.reduce_any(good)
        return tf.where(use, best + 1, up), tf.where(use, tf.cast(numerators[best], tf.int64), down)

    return tf.cond(up > _MAX_EXACT_UP, search, lambda: (up, down))


def _plan(rate_in: tf.Tensor, rate_out: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(factor, up, down): decimate by `factor` (1: no first stage), then resample by up / down.

    `factor` minimizes a cost per output second in multiply-add equivalents: the first stage's
    products (two rows of inputs per output), the second stage's kernel span and frame copies,
    and the second stage's weights (built once per call).
    """
    factors = tf.range(1, _MAX_DECIMATION + 1, dtype=tf.int64)  # [factors]
    divisors = tf.constant(_divisor_table(rate_out))  # [factors, divisors]
    gcd = tf.reduce_max(tf.where(rate_in % divisors == 0, divisors, 1), axis=1)  # [factors]
    ups = factors * rate_out // gcd  # [factors]
    decimated = tf.cast(rate_in, tf.float64) / tf.cast(factors, tf.float64)  # [factors]
    half1 = tf.maximum(_decimation_half(rate_in, factors, rate_out), 0.0)  # [factors]
    taps1 = 2 * tf.cast(tf.math.ceil(half1), tf.int64) + 1  # [factors]
    row1 = tf.cast(factors * _decimation_row(taps1, factors), tf.float64)  # [factors]
    first = tf.where(factors > 1, 2.0 * row1 * decimated, 0.0)  # [factors]
    stretch = tf.maximum(decimated / rate_out, 1.0)  # [factors]
    span = (2.0 * _HALF_WIDTH + 2.0 + _GROUP_OUTPUTS) * stretch  # [factors]
    weights = tf.cast(tf.minimum(ups, _MAX_EXACT_UP), tf.float64) * span  # [factors]
    cost = first + rate_out * span + _COPY_COST * decimated + _WEIGHT_COST * weights  # [factors]
    allowed = (factors == 1) | (decimated >= _MIN_DECIMATED_RATE * rate_out)  # [factors]
    best = tf.argmin(tf.where(allowed, cost, np.inf), output_type=tf.int64)
    up, down = _approximate(ups[best], rate_in // gcd[best])
    return best + 1, up, down


def period(rate_in: int, rate_out: int) -> tuple[int, int]:
    """(period_in, period_out): the resampler's pattern repeats every period_in input frames,
    which give period_out output samples. A segment read from a multiple of period_in yields
    exactly the whole signal's output samples from index (start / period_in) * period_out on
    (chunked streaming relies on it)."""
    if rate_in == rate_out:
        return 1, 1
    with tf.init_scope():
        factor, up, down = (int(v) for v in _plan(tf.constant(rate_in, tf.int64), rate_out))
    return factor * down, up


def input_reach(rate_in: int, rate_out: int) -> int:
    """Input frames beyond those under the requested outputs that resample_segment may read on
    either side: the kernels' half-spans of both stages, with their output grouping. A segment
    read with this much context on each side gives the whole signal's output samples."""
    if rate_in == rate_out:
        return 0
    with tf.init_scope():
        factor = int(_plan(tf.constant(rate_in, tf.int64), rate_out)[0])
        decimated = rate_in / factor
        # Second stage: the main kernel and a group of outputs, in samples at the decimated rate.
        main = (_HALF_WIDTH + 1.0 + _GROUP_OUTPUTS) * max(1.0, decimated / rate_out)
        first = 0
        if factor > 1:
            half1 = float(_decimation_half(tf.constant(rate_in, tf.int64), tf.constant(factor, tf.int64), rate_out))
            taps1 = 2 * math.ceil(half1) + 1
            row1 = int(_decimation_row(tf.constant(taps1, tf.int64), tf.constant(factor, tf.int64)))
            first = math.ceil(half1) + factor * row1
    return math.ceil(main * factor) + first


def _slice_padded(x: tf.Tensor, begin: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """x[begin:begin + size] (int64 bounds) with zeros wherever the range leaves x."""
    n = tf.size(x, out_type=tf.int64)
    lo = tf.clip_by_value(begin, 0, n)
    hi = tf.clip_by_value(begin + size, lo, n)
    left = tf.clip_by_value(lo - begin, 0, size)
    return tf.pad(x[lo:hi], [[left, size - left - (hi - lo)]])


class _Decimation(NamedTuple):
    """First stage, everything that depends only on the rates: `k` outputs per row of
    `k * factor` inputs, weights [2 * k * factor, k] (the taps shifted by `factor` per column),
    and the taps' half-width `half`. int64 scalars and float32 weights."""

    factor: tf.Tensor
    k: tf.Tensor
    half: tf.Tensor
    weights: tf.Tensor


class _Polyphase(NamedTuple):
    """Second stage, everything that depends only on the rates: a period of `period_out`
    outputs reads `period_in` inputs; output group g reads frame rows start[g] + [0, window)
    with weights[g] [group_outputs, window]; `half` is the kernel half-width in inputs.
    `dense`: the same weights as a [2 * period_in, period_out] matrix over the frame rows, or
    [0, 0] when the grouped product is always used."""

    half: tf.Tensor
    period_in: tf.Tensor
    period_out: tf.Tensor
    start: tf.Tensor
    weights: tf.Tensor
    dense: tf.Tensor


def _decimation_setup(rate_in: tf.Tensor, factor: tf.Tensor, rate_out: int) -> _Decimation:
    """First-stage kernel (Kaiser-windowed sinc at integer offsets, sum 1) and its weight matrix."""
    half = tf.cast(tf.math.ceil(_decimation_half(rate_in, factor, rate_out)), tf.int64)
    rate = tf.cast(rate_in, tf.float64)
    # Twice the cutoff in cycles per sample: midway between passband and stopband edges.
    cutoff = (rate / tf.cast(factor, tf.float64) - (0.5 - _DECIMATION_PASSBAND) * rate_out) / rate
    t = tf.cast(tf.range(-half, half + 1), tf.float64)  # [taps]
    s = tf.maximum(1.0 - tf.square(t / tf.cast(half, tf.float64)), 0.0)  # [taps]
    window = tf.math.bessel_i0(0.1102 * (_DECIMATION_ATTENUATION_DB - 8.7) * tf.sqrt(s))  # [taps]
    phase = math.pi * cutoff * t + 1e-300  # [taps]
    taps = tf.sin(phase) / phase * window  # [taps]
    taps = tf.cast(taps / tf.reduce_sum(taps), tf.float32)  # [taps]
    num_taps = 2 * half + 1
    k = _decimation_row(num_taps, factor)
    offset = tf.range(2 * k * factor)[:, None] - tf.range(k) * factor  # [2 * row, k]
    outside = (offset < 0) | (offset >= num_taps)  # [2 * row, k]
    weights = tf.gather(tf.pad(taps, [[0, 1]]), tf.where(outside, num_taps, offset))  # [2 * row, k]
    return _Decimation(factor, k, half, weights)


def _decimate(source: Source, stage: _Decimation, first: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """Outputs [first, first + count) of `source` through the first stage, float32 [count].

    Rows of k * factor inputs give k outputs each; a row's taps span that row and the next, so
    the result is rows @ W[:row] + next rows @ W[row:]. Both row slices share the segment's
    memory (rows are a multiple of 16 samples), so nothing is copied.
    """
    k = stage.k
    row = k * stage.factor
    r0 = tf.math.floordiv(first, k)
    rows = _ceil_div(first + count, k) - r0
    segment = source(r0 * row - stage.half, (rows + 1) * row)  # [(rows + 1) * row]
    segment = tf.reshape(segment, [rows + 1, row])  # [rows + 1, row]
    y = tf.matmul(segment[:-1], stage.weights[:row])  # [rows, k]
    y += tf.matmul(segment[1:], stage.weights[row:])  # [rows, k]
    return tf.slice(tf.reshape(y, [-1]), [first - r0 * k], [count])


def _polyphase_setup(up: tf.Tensor, down: tf.Tensor) -> _Polyphase:
    """Periods, groups and weights of the main kernel for the ratio up / down."""
    down_f = tf.cast(down, tf.float64)
    up_f = tf.cast(up, tf.float64)
    # Lower-rate samples per input sample, and the kernel half-width in input samples.
    scale = tf.minimum(up_f / down_f, 1.0)
    half = tf.cast(tf.math.ceil(_HALF_WIDTH / scale), tf.int64) + 1
    k = _ceil_div(2 * half + 2, down)
    period_in = k * down
    period_out = k * up
    group_outputs = _ceil_div(period_out, _ceil_div(period_out, _GROUP_OUTPUTS))
    groups = _ceil_div(period_out, group_outputs)
    # Frame row r is input r - half of a period (rows >= period_in: of the next period).
    # Group g reads rows start[g] + [0, window): from its first output's floor position to
    # past its last output's kernel. Outputs past the period are computed and dropped.
    p = tf.range(groups)[:, None] * group_outputs + tf.range(group_outputs)  # [groups, group_outputs]
    start = (p[:, :1] * down) // up  # [groups, 1]
    window = (group_outputs * down) // up + 2 * half + 3
    # Distance in inputs from row 0 of the group's window to each output: [groups, group_outputs].
    lead = tf.cast(p, tf.float64) * (down_f / up_f) + tf.cast(half - start, tf.float64)
    rows = tf.cast(tf.range(window), tf.float64)  # [window]
    t = tf.cast(lead[:, :, None] * scale - rows * scale, tf.float32)  # [groups, group_outputs, window]
    weights = _main_kernel(t)  # [groups, group_outputs, window]
    weights /= tf.reduce_sum(weights, axis=2, keepdims=True)  # [groups, group_outputs, window]
    return _Polyphase(half, period_in, period_out, start, weights, tf.zeros([0, 0]))


def _polyphase(source: Source, stage: _Polyphase, first: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """Outputs [first, first + count) of `source` resampled with the main kernel, float32 [count].

    `source(begin, size)` gives input samples [begin, begin + size), zero outside the signal.
    """
    period_in, period_out = stage.period_in, stage.period_out
    q0 = tf.math.floordiv(first, period_out)
    periods = _ceil_div(first + count, period_out) - q0
    segment = source(q0 * period_in - stage.half, (periods + 1) * period_in)  # [(periods+1) * period_in]
    segment = tf.reshape(segment, [periods + 1, period_in])  # [periods + 1, period_in]
    # The dense matrix is read whole once per call: worth it from as many periods as it has rows.
    dense = tf.logical_and(tf.size(stage.dense) > 0, periods >= 2 * period_in)
    y = tf.cond(dense, lambda: _dense_product(segment, stage), lambda: _grouped_product(segment, stage))
    return tf.slice(tf.reshape(y, [-1]), [first - q0 * period_out], [count])


def _grouped_product(segment: tf.Tensor, stage: _Polyphase) -> tf.Tensor:
    """Periods [periods + 1, period_in] -> outputs [periods, period_out], each output group
    multiplying only the frame rows it needs."""
    period_in, period_out = stage.period_in, stage.period_out
    frame = tf.transpose(tf.concat([segment[:-1], segment[1:]], axis=1))  # [2 * period_in, periods]
    # Rows past the frame only meet zero weights: clamp them.
    window = tf.shape(stage.weights, tf.int64)[2]
    rows = tf.minimum(stage.start + tf.range(window), 2 * period_in - 1)  # [groups, window]
    y = tf.matmul(stage.weights, tf.gather(frame, rows))  # [groups, group_outputs, periods]
    periods = tf.shape(frame, tf.int64)[1]
    return tf.reshape(tf.transpose(y, [2, 0, 1]), [periods, -1])[:, :period_out]  # [periods, period_out]


def _dense_product(segment: tf.Tensor, stage: _Polyphase) -> tf.Tensor:
    """Periods [periods + 1, period_in] -> outputs [periods, period_out] with the dense weights:
    each period and the next times their halves of the matrix (row slices, no copies)."""
    period_in = stage.period_in
    y = tf.matmul(segment[:-1], stage.dense[:period_in])  # [periods, period_out]
    return y + tf.matmul(segment[1:], stage.dense[period_in:])  # [periods, period_out]


def _setup(rate_in: tf.Tensor, rate_out: int) -> tuple[_Decimation, _Polyphase]:
    """Both stages for rate_in (int64 scalar tensor), computed in the graph. The first stage
    is a placeholder with factor 1 when there is none."""
    factor, up, down = _plan(rate_in, rate_out)
    stage1 = tf.cond(
        factor > 1,
        lambda: _decimation_setup(rate_in, factor, rate_out),
        lambda: _Decimation(factor, tf.ones([], tf.int64), tf.zeros([], tf.int64), tf.zeros([2, 1])),
    )
    return stage1, _polyphase_setup(up, down)


class _Table(NamedTuple):
    """The setups of several input rates, computed when the graph is built: per rate one row of
    `sizes` (factor, k, half1, half2, period_in, period_out, groups, group_outputs, window,
    dense rows) and `offsets` into the flat `weights1`, `weights2`, `starts` and `dense`
    (float32, float32, int64, float32)."""

    rates: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    weights1: np.ndarray
    weights2: np.ndarray
    starts: np.ndarray
    dense: np.ndarray


def _dense_pays(period_in: int, period_out: int, group_outputs: int, window: int) -> bool:
    """Whether the dense product costs less than the grouped one, per output in multiply-add
    equivalents: 2 * period_in products, against `window` products plus the floats the grouped
    product copies (the frame and the groups' rows) at _COPY_COST each."""
    copies = window / group_outputs + 2 * period_in / period_out
    small = 2 * period_in * period_out <= _MAX_DENSE_WEIGHTS
    return small and 2 * period_in < window + _COPY_COST * copies


def _dense_weights(stage: _Polyphase) -> np.ndarray:
    """The grouped weights of a setup (NumPy values) as one [2 * period_in, period_out] matrix."""
    period_in, period_out = int(stage.period_in), int(stage.period_out)
    groups, group_outputs, window = stage.weights.shape
    dense = np.zeros([2 * period_in, groups * group_outputs], np.float32)
    outputs = np.arange(groups * group_outputs).reshape(groups, group_outputs)  # [groups, group_outputs]
    # Rows past the frame carry zero weights (as in _polyphase): clamping them adds zeros.
    rows = np.minimum(stage.start + np.arange(window), 2 * period_in - 1)  # [groups, window]
    np.add.at(dense, (rows[:, None, :], outputs[:, :, None]), stage.weights)
    return dense[:, :period_out]  # [2 * period_in, period_out]


@functools.lru_cache(maxsize=32)
def _table(rates: tuple[int, ...], rate_out: int) -> _Table:
    """Setups for `rates`, computed now and outside any graph (once per set of rates)."""
    sizes, offsets, weights1, weights2, starts, dense = [], [], [], [], [], []
    with tf.init_scope():
        for rate in rates:
            setup = _setup(tf.constant(rate, tf.int64), rate_out)
            stage1, stage2 = tf.nest.map_structure(lambda t: t.numpy(), setup)
            _, group_outputs, window = stage2.weights.shape
            matrix = (_dense_weights(stage2)
                      if _dense_pays(stage2.period_in, stage2.period_out, group_outputs, window)
                      else np.zeros([0, 0], np.float32))
            sizes.append([stage1.factor, stage1.k, stage1.half, stage2.half, stage2.period_in])
            sizes[-1].extend([stage2.period_out, *stage2.weights.shape, matrix.shape[0]])
            offsets.append([sum(v.size for v in flat) for flat in (weights1, weights2, starts, dense)])
            weights1.append(stage1.weights.ravel())
            weights2.append(stage2.weights.ravel())
            starts.append(stage2.start.ravel())
            dense.append(matrix.ravel())
    return _Table(
        np.array(rates, np.int64),
        np.array(sizes, np.int64),
        np.array(offsets, np.int64),
        np.concatenate(weights1).astype(np.float32),
        np.concatenate(weights2).astype(np.float32),
        np.concatenate(starts).astype(np.int64),
        np.concatenate(dense).astype(np.float32),
    )


def _lookup(table: _Table, index: tf.Tensor) -> tuple[_Decimation, _Polyphase]:
    """The setups of table row `index` (int scalar tensor)."""
    sizes = tf.unstack(tf.gather(table.sizes, index))
    factor, k, half1, half2, period_in, period_out, groups, group_outputs, window, dense_rows = sizes
    offset1, offset2, offset_start, offset_dense = tf.unstack(tf.gather(table.offsets, index))
    weights1 = tf.slice(table.weights1, [offset1], [2 * k * factor * k])
    weights1 = tf.reshape(weights1, [2 * k * factor, k])  # [2 * row, k]
    weights2 = tf.slice(table.weights2, [offset2], [groups * group_outputs * window])
    weights2 = tf.reshape(weights2, [groups, group_outputs, window])  # [groups, group_outputs, window]
    start = tf.reshape(tf.slice(table.starts, [offset_start], [groups]), [groups, 1])  # [groups, 1]
    dense_cols = tf.where(dense_rows > 0, period_out, 0)
    dense = tf.slice(table.dense, [offset_dense], [dense_rows * dense_cols])
    dense = tf.reshape(dense, [dense_rows, dense_cols])  # [2 * period_in, period_out] or [0, 0]
    stage1 = _Decimation(factor, k, half1, weights1)
    return stage1, _Polyphase(half2, period_in, period_out, start, weights2, dense)


def _convert(
    x: tf.Tensor, setup: tuple[_Decimation, _Polyphase], first: tf.Tensor, count: tf.Tensor
) -> tf.Tensor:
    """Outputs [first, first + count) of x resampled, within [0, resampled length)."""
    stage1, stage2 = setup

    def read(begin: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
        return _slice_padded(x, begin, size)

    def decimated(begin: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
        return tf.cond(
            stage1.factor > 1, lambda: _decimate(read, stage1, begin, size), lambda: read(begin, size)
        )

    return _polyphase(decimated, stage2, first, count)


def _check_rate_out(rate_out: int) -> None:
    if not isinstance(rate_out, int) or isinstance(rate_out, bool) or rate_out <= 0:
        raise ValueError(f"rate_out must be a positive Python int, got {rate_out!r}")


def _is_static(rate_in: tf.Tensor | int) -> bool:
    """Whether rate_in is a Python/NumPy int (checked to be positive) rather than a tensor."""
    if not isinstance(rate_in, (int, np.integer)):
        return False
    if rate_in <= 0:
        raise ValueError(f"rate_in must be positive, got {rate_in}")
    return True


@tf.autograph.experimental.do_not_convert
def resampled_length(num_in: tf.Tensor | int, rate_in: tf.Tensor | int, rate_out: int) -> tf.Tensor | int:
    """ceil(num_in * rate_out / rate_in), computed exactly in int64, in num_in's integer dtype (a
    Python int for Python ints)."""
    _check_rate_out(rate_out)
    if isinstance(num_in, (int, np.integer)) and _is_static(rate_in):
        return -(-int(num_in) * rate_out // int(rate_in))
    num_in = tf.convert_to_tensor(num_in)
    r_in = tf.cast(rate_in, tf.int64)
    return tf.cast(_ceil_div(tf.cast(num_in, tf.int64) * rate_out, r_in), num_in.dtype)


@tf.autograph.experimental.do_not_convert
def resample(x: tf.Tensor, rate_in: tf.Tensor, rate_out: int, rates: Sequence[int] = ()) -> tf.Tensor:
    """Mono float32 x [n] at rate_in -> float32 [resampled_length(n)] at rate_out.

    rate_in: int32/int64 scalar tensor or int. rates: see resample_segment. The output shape is
    static when x's length and rate_in are.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    if _is_static(rate_in) and x.shape.rank == 1 and x.shape[0] is not None:
        _check_rate_out(rate_out)
        count = -(-x.shape[0] * rate_out // int(rate_in))
    else:
        count = resampled_length(tf.size(x, out_type=tf.int64), rate_in, rate_out)
    return resample_segment(x, rate_in, rate_out, 0, count, rates)


@tf.autograph.experimental.do_not_convert
def resample_segment(
    x: tf.Tensor,
    rate_in: tf.Tensor,
    rate_out: int,
    start: tf.Tensor,
    length: int | tf.Tensor,
    rates: Sequence[int] = (),
) -> tf.Tensor:
    """Output samples [start, start + length) of resample(x, rate_in, rate_out), computing only those.

    The window may reach outside [0, resampled_length(n)) (start negative or past the end): those
    samples are zeros, so this is also the crop-or-pad of a clip. Only the input samples under
    the requested outputs (plus the kernel half-widths) are read, so a 3 s crop of a 60 s file
    costs about as much as 3 s of audio.

    rate_in: int32/int64 scalar tensor (e.g. read from the file header in the graph) or int;
    start, length: ints or int scalar tensors. rates: input rates to expect. The plan and
    weights of each are computed once, when the graph is built, instead of on every call
    (0.2-0.4 ms less per call); other rates still work, on the general path.
    Returns float32 [length], with a static shape when length is an int.
    """
    _check_rate_out(rate_out)
    if any(not isinstance(r, (int, np.integer)) or r <= 0 for r in rates):
        raise ValueError(f"rates must be positive ints, got {rates!r}")
    x = tf.ensure_shape(tf.convert_to_tensor(x, tf.float32), [None])
    r_in = tf.cast(rate_in, tf.int64)
    start = tf.cast(start, tf.int64)
    count = tf.cast(length, tf.int64)
    static_rate = _is_static(rate_in)
    if static_rate and rate_in == rate_out:
        y = _slice_padded(x, start, count)
    else:
        tf.debugging.assert_positive(r_in, message="rate_in must be positive")
        known = tuple(sorted({int(r) for r in ([rate_in] if static_rate else rates)} - {rate_out}))
        total = resampled_length(tf.size(x, out_type=tf.int64), r_in, rate_out)
        # Only outputs inside [0, resampled_length) are computed; the rest are zeros.
        first = tf.clip_by_value(start, 0, total)
        stop = tf.clip_by_value(start + count, first, total)
        left = tf.clip_by_value(first - start, 0, count)

        def convert() -> tf.Tensor:
            if static_rate:
                setup = _lookup(_table(known, rate_out), 0)
            elif known:
                table = _table(known, rate_out)
                matches = tf.equal(r_in, table.rates)  # [known]
                setup = tf.cond(
                    tf.reduce_any(matches),
                    lambda: _lookup(table, tf.argmax(tf.cast(matches, tf.int32))),
                    lambda: _setup(r_in, rate_out),
                )
            else:
                setup = _setup(r_in, rate_out)
            y = _convert(x, setup, first, stop - first)  # [stop - first]
            return tf.pad(y, [[left, count - left - (stop - first)]])  # [length]

        if static_rate:
            y = convert()
        else:
            y = tf.cond(tf.equal(r_in, rate_out), lambda: _slice_padded(x, start, count), convert)
    if isinstance(length, (int, np.integer)):
        y = tf.reshape(y, [int(length)])
    return y
