"""Tests for pipeline.features.augment: exact effects of each stage, seeding, and graph/tf.data use."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipeline.features import augment
from pipeline.config import AugmentConfig

SEED = tf.constant([12, 34], tf.int64)
OTHER_SEED = tf.constant([12, 35], tf.int64)
PY_CALLBACK_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}

FULL_CFG = AugmentConfig(
    enabled=True, time_masks=2, time_mask_max_frames=5, freq_masks=2, freq_mask_max_bins=3,
    time_shift_max_s=0.01, gain_db_range=6.0, noise_prob=0.5, noise_snr_db_min=0.0,
    noise_snr_db_max=20.0, noise_glob="noise/*.wav", mixup_alpha=0.4,
)
SAMPLE_RATE_HZ = 1000


def _waves(batch=6, samples=400, seed=(1, 2)):
    """Random waveforms with no exact zeros, so zeros in an output can only come from a shift."""
    w = tf.random.stateless_normal([batch, samples], seed)
    return tf.where(tf.abs(w) < 1e-3, 1e-3, w)


def _spec(batch=5, frames=40, bins=16, channels=1, seed=(3, 4)):
    return tf.random.stateless_uniform([batch, frames, bins, channels], seed, 1.0, 2.0)


def _runs(flags):
    """Lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[0::2]


def _op_types(concrete):
    """Op types in a concrete function's graph, including the functions it calls."""
    graph_def = concrete.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for fn in graph_def.library.function:
        types |= {node.op for node in fn.node_def}
    return types


# --- random_gain ------------------------------------------------------------------------------


def test_gain_is_one_factor_per_example_within_range():
    w = _waves(batch=64, samples=50)
    out = augment.random_gain(w, SEED, 6.0).numpy()
    ratio = out / w.numpy()
    per_example = ratio[:, :1]
    np.testing.assert_allclose(ratio, np.broadcast_to(per_example, ratio.shape), rtol=1e-5)
    gain_db = 20 * np.log10(per_example[:, 0])
    assert np.all(np.abs(gain_db) <= 6.0 + 1e-4)
    assert np.abs(gain_db).max() > 5.0 and gain_db.min() < 0 < gain_db.max()


# --- mix_noise --------------------------------------------------------------------------------


def _snr_db(signal, added):
    rms = lambda x: np.sqrt(np.mean(np.square(x.astype(np.float64)), axis=-1))
    return 20 * np.log10(rms(signal) / rms(added))


def test_mix_noise_reaches_requested_snr():
    w = _waves() * tf.constant([[0.01], [0.1], [1.0], [3.0], [10.0], [0.5]])
    noise = tf.random.stateless_uniform(w.shape, (5, 6), -2.0, 2.0)
    out = augment.mix_noise(w, noise, SEED, prob=1.0, snr_db_min=10.0, snr_db_max=10.0)
    added = out.numpy() - w.numpy()
    np.testing.assert_allclose(_snr_db(w.numpy(), added), 10.0, atol=0.01)
    scale = added[:, :1] / noise.numpy()[:, :1]
    np.testing.assert_allclose(added, scale * noise.numpy(), rtol=1e-3, atol=1e-6)


def test_mix_noise_snr_within_range():
    w = _waves(batch=32)
    noise = tf.random.stateless_normal(w.shape, (7, 8))
    out = augment.mix_noise(w, noise, SEED, prob=1.0, snr_db_min=-5.0, snr_db_max=15.0)
    snr = _snr_db(w.numpy(), out.numpy() - w.numpy())
    assert np.all(snr >= -5.0 - 0.01) and np.all(snr <= 15.0 + 0.01)
    assert np.ptp(snr) > 1.0


def test_mix_noise_prob_zero_is_identity_and_prob_picks_some():
    w = _waves(batch=64)
    noise = tf.random.stateless_normal(w.shape, (7, 8))
    untouched = augment.mix_noise(w, noise, SEED, prob=0.0, snr_db_min=0.0, snr_db_max=20.0)
    np.testing.assert_array_equal(untouched.numpy(), w.numpy())
    half = augment.mix_noise(w, noise, SEED, prob=0.5, snr_db_min=0.0, snr_db_max=20.0).numpy()
    changed = np.any(half != w.numpy(), axis=1)
    assert 0 < changed.sum() < len(changed)
    np.testing.assert_array_equal(half[~changed], w.numpy()[~changed])


def test_mix_noise_silent_inputs_stay_finite():
    w = _waves(batch=4)
    silent = tf.zeros_like(w)
    noise = tf.random.stateless_normal(w.shape, (7, 8))
    tiny = noise * 1e-30
    for signal, bg in [(silent, noise), (w, silent), (silent, silent), (w, tiny)]:
        out = augment.mix_noise(signal, bg, SEED, 1.0, 0.0, 20.0).numpy()
        assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(augment.mix_noise(w, silent, SEED, 1.0, 0, 20).numpy(),
                                  w.numpy())


# --- spec_augment -----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_spec_augment_changes_only_whole_frames_and_bins(channels):
    spec = _spec(batch=8, channels=channels)
    out = augment.spec_augment(spec, SEED, 2, 5, 2, 3).numpy()
    cells = augment.spec_mask(tf.shape(spec), SEED, 2, 5, 2, 3).numpy()  # [batch, frames, bins]
    masked = np.broadcast_to(cells[..., None], out.shape)  # [batch, frames, bins, channels]
    np.testing.assert_array_equal(out[~masked], spec.numpy()[~masked])
    np.testing.assert_allclose(out[masked], np.broadcast_to(spec.numpy().mean(axis=(1, 2), keepdims=True),
                                                            out.shape)[masked], rtol=1e-6)
    for example in cells:
        frames = example.all(axis=1)
        bins = example.all(axis=0)
        np.testing.assert_array_equal(example, frames[:, None] | bins[None, :])
        assert frames.sum() <= 2 * 5 and bins.sum() <= 2 * 3
        assert len(_runs(frames)) <= 2 and len(_runs(bins)) <= 2
    assert cells.any()


def test_spec_augment_single_mask_width_within_maximum():
    spec = _spec(batch=64)
    seen = set()
    for example in augment.spec_mask(tf.shape(spec), SEED, 1, 7, 1, 4).numpy():
        frame_runs = _runs(example.all(axis=1))
        bin_runs = _runs(example.all(axis=0))
        assert len(frame_runs) <= 1 and len(bin_runs) <= 1
        assert all(r <= 7 for r in frame_runs) and all(r <= 4 for r in bin_runs)
        seen.update(int(r) for r in frame_runs)
    assert len(seen) > 2


def test_spec_augment_default_value_is_example_mean():
    spec = _spec(batch=4, channels=2) * tf.constant([1.0, 5.0, 10.0, 20.0])[:, None, None, None]
    out = augment.spec_augment(spec, SEED, 2, 6, 2, 4).numpy()
    means = spec.numpy().mean(axis=(1, 2), keepdims=True)  # [batch, 1, 1, channels]
    changed = out != spec.numpy()
    assert changed.any()
    for b, c in zip(*np.nonzero(changed.any(axis=(1, 2)))):
        np.testing.assert_allclose(out[b, :, :, c][changed[b, :, :, c]], means[b, 0, 0, c],
                                   rtol=1e-6)


def test_spec_augment_widths_larger_than_axes_and_zero_counts():
    spec = _spec(batch=3, frames=6, bins=4)
    out = augment.spec_augment(spec, SEED, 3, 100, 3, 100)
    assert out.shape == spec.shape and np.all(np.isfinite(out.numpy()))
    same = augment.spec_augment(spec, SEED, 0, 10, 0, 10)
    np.testing.assert_array_equal(same.numpy(), spec.numpy())


def test_spec_augment_rank3():
    spec = _spec(batch=3)[..., 0]
    out = augment.spec_augment(spec, SEED, 1, 5, 1, 3).numpy()
    masked = augment.spec_mask(tf.shape(spec), SEED, 1, 5, 1, 3).numpy()
    assert masked.any()
    np.testing.assert_array_equal(out[~masked], spec.numpy()[~masked])


# --- mixup ------------------------------------------------------------------------------------


def test_mixup_is_convex_combination_with_partner():
    batch = 8
    x = tf.random.stateless_normal([batch, 5, 3], (9, 9))
    y = tf.eye(batch)
    xm, ym = augment.mixup(x, y, SEED, alpha=0.4)
    xm, ym, x = xm.numpy(), ym.numpy(), x.numpy()
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)
    perm = []
    for i in range(batch):
        others = np.delete(np.arange(batch), i)
        partner = others[np.argmax(ym[i, others])] if ym[i, others].max() > 0 else i
        lam = ym[i, i] if partner != i else 1.0
        assert 0.0 <= lam <= 1.0
        np.testing.assert_allclose(xm[i], lam * x[i] + (1 - lam) * x[partner], atol=1e-5)
        perm.append(partner)
    assert sorted(perm) == list(range(batch))
    assert perm != list(range(batch))


def test_mixup_multi_hot_uses_same_lambda_for_labels():
    x = tf.random.stateless_normal([6, 10], (1, 1))
    y = tf.constant(np.random.default_rng(0).integers(0, 2, (6, 4)), tf.float32)
    xm, ym = augment.mixup(x, y, SEED, alpha=1.0)
    # Re-derive lam and perm from a second, label-only call with a known structure.
    _, probe = augment.mixup(x, tf.eye(6), SEED, alpha=1.0)
    probe = probe.numpy()
    lam = np.diag(probe).copy()
    perm = [int(np.argmax(np.where(np.arange(6) == i, -1, row))) if lam[i] < 1 else i
            for i, row in enumerate(probe)]
    expected_y = lam[:, None] * y.numpy() + (1 - lam[:, None]) * y.numpy()[perm]
    expected_x = lam[:, None] * x.numpy() + (1 - lam[:, None]) * x.numpy()[perm]
    np.testing.assert_allclose(ym.numpy(), expected_y, atol=1e-6)
    np.testing.assert_allclose(xm.numpy(), expected_x, atol=1e-5)


def test_mixup_rejects_integer_labels():
    with pytest.raises(TypeError):
        augment.mixup(_waves(), tf.constant([0, 1, 2, 0, 1, 2]), SEED, 0.4)


# --- seeding ----------------------------------------------------------------------------------


def _all_stages(seed):
    w, noise = _waves(), tf.random.stateless_normal([6, 400], (7, 8))
    y = tf.one_hot([0, 1, 2, 0, 1, 2], 3)
    return [
        augment.random_gain(w, seed, 6.0),
        augment.mix_noise(w, noise, seed, 1.0, 0.0, 20.0),
        augment.spec_augment(_spec(), seed, 2, 5, 2, 3),
        *augment.mixup(w, y, seed, 0.4),
        *augment.augment_waveforms(w, y, seed, FULL_CFG, SAMPLE_RATE_HZ, noise=noise),
        augment.augment_spectrograms(_spec(), seed, FULL_CFG),
    ]


def test_same_seed_same_output_different_seed_different_output():
    first, again, other = _all_stages(SEED), _all_stages(SEED), _all_stages(OTHER_SEED)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert not np.array_equal(a.numpy(), c.numpy())


def test_int32_and_int64_seeds_are_accepted():
    w = _waves()
    for dtype in (tf.int32, tf.int64):
        seed = tf.constant([5, 6], dtype)
        out, _ = augment.augment_waveforms(w, tf.one_hot([0] * 6, 2), seed, FULL_CFG,
                                           SAMPLE_RATE_HZ, noise=w)
        assert np.all(np.isfinite(out.numpy()))


# --- composed stages --------------------------------------------------------------------------


def test_disabled_or_zero_strength_config_is_identity():
    w, y = _waves(), tf.one_hot([0, 1, 0, 1, 0, 1], 2)
    for cfg in [dataclasses.replace(FULL_CFG, enabled=False),
                AugmentConfig(enabled=True, time_masks=0, freq_masks=0)]:
        out_w, out_y = augment.augment_waveforms(w, y, SEED, cfg, SAMPLE_RATE_HZ, noise=w)
        assert out_w is w and out_y is y
        spec = _spec()
        assert augment.augment_spectrograms(spec, SEED, cfg) is spec


def test_stages_switch_independently_of_each_other():
    """Turning a later stage on leaves the draws of earlier stages unchanged."""
    w, y = _waves(), tf.one_hot([0, 1, 0, 1, 0, 1], 2)
    only_gain = AugmentConfig(enabled=True, gain_db_range=6.0)
    gain_mixup = dataclasses.replace(only_gain, mixup_alpha=0.4)
    a, _ = augment.augment_waveforms(w, y, SEED, only_gain, SAMPLE_RATE_HZ)
    b, mixed_y = augment.augment_waveforms(w, y, SEED, gain_mixup, SAMPLE_RATE_HZ)
    a, b, mixed_y = a.numpy(), b.numpy(), mixed_y.numpy()
    # b is a mixup of the gained batch a: each row a convex mix of two rows of a.
    def mix_residual(row, i, j):
        if i == j:
            return np.abs(row - a[i]).max()
        d = a[i] - a[j]
        lam = np.clip(np.dot(row - a[j], d) / np.dot(d, d), 0.0, 1.0)
        return np.abs(lam * a[i] + (1 - lam) * a[j] - row).max()

    for row in b:
        assert min(mix_residual(row, i, j) for i in range(len(a)) for j in range(len(a))) < 1e-4


# --- graphs and tf.data -----------------------------------------------------------------------


def test_traced_graph_has_no_python_callbacks():
    @tf.function
    def step(waves, labels, noise, spec, seed):
        w, y = augment.augment_waveforms(waves, labels, seed, FULL_CFG, SAMPLE_RATE_HZ, noise)
        s = augment.augment_spectrograms(spec, seed, FULL_CFG)
        return w, y, s

    concrete = step.get_concrete_function(
        tf.TensorSpec([None, None]), tf.TensorSpec([None, 3]), tf.TensorSpec([None, None]),
        tf.TensorSpec([None, None, None, 1]), tf.TensorSpec([2], tf.int64))
    types = _op_types(concrete)
    assert "StatelessRandomUniformV2" in types
    assert not types & PY_CALLBACK_OPS
    assert not any(t.startswith("Random") or t.startswith("Stateful") for t in types)
    w, y = _waves(), tf.one_hot([0, 1, 2, 0, 1, 2], 3)
    eager = augment.augment_waveforms(w, y, SEED, FULL_CFG, SAMPLE_RATE_HZ, w)
    traced = concrete(w, y, w, _spec(), SEED)
    np.testing.assert_allclose(traced[0].numpy(), eager[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(traced[1].numpy(), eager[1].numpy(), rtol=1e-6)


def test_runs_in_tf_data_map_with_dataset_random_seeds():
    waves = _waves(batch=10, samples=200).numpy()
    labels = tf.one_hot(np.arange(10) % 3, 3).numpy()

    def build():
        data = tf.data.Dataset.from_tensor_slices((waves, labels, waves[::-1].copy())).batch(4)
        seeds = tf.data.Dataset.random(seed=99).batch(2)

        def aug(batch, seed):
            w, y, noise = batch
            w, y = augment.augment_waveforms(w, y, seed, FULL_CFG, SAMPLE_RATE_HZ, noise)
            spec = tf.abs(w)[:, :, tf.newaxis, tf.newaxis] * tf.ones([1, 1, 8, 1])
            return w, y, augment.augment_spectrograms(spec, seed, FULL_CFG), seed

        return tf.data.Dataset.zip((data, seeds)).map(
            aug, num_parallel_calls=2, deterministic=True)

    first = list(build().as_numpy_iterator())
    second = list(build().as_numpy_iterator())
    assert [b[0].shape[0] for b in first] == [4, 4, 2]
    for a, b in zip(first, second):
        assert a[3].shape == (2,) and a[3].dtype == np.int64
        for x, z in zip(a, b):
            np.testing.assert_array_equal(x, z)
            assert np.all(np.isfinite(x))
    assert not np.array_equal(first[0][0], waves[:4])
    np.testing.assert_allclose(first[0][1].sum(axis=1), 1.0, rtol=1e-6)
