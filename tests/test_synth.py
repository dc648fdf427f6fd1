"""Known-answer tests for the synthetic demo data (pipeline.tools.synth)."""
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.tools import synth

SR = 16000
SMALL = dict(clips_per_class=3, long_s=60.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return synth.synthesize(tmp_path_factory.mktemp("synth"), seed=0, **SMALL)


def _digests(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _dominant_hz(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Peak frequency of every frame holding at least 10 % of the loudest frame's energy."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    loud = power.sum(axis=1) >= 0.1 * power.sum(axis=1).max()
    return np.argmax(power[loud], axis=1) * SR / n_fft


def _pulse_rate_hz(x: np.ndarray) -> float:
    """Rate from the envelope's periodicity: the autocorrelation peak at lags of 1/13..1/4 s."""
    env = np.convolve(np.abs(x), np.ones(80) / 80, mode="same")
    env -= env.mean()
    spec = np.fft.rfft(env, 2 * len(env))
    ac = np.fft.irfft(np.abs(spec) ** 2)[:len(env)]
    lo, hi = SR // 13, SR // 4
    return SR / (lo + int(np.argmax(ac[lo:hi])))


def test_clips_manifest_and_durations(dataset):
    root = dataset["root"]
    manifest = pd.read_csv(dataset["manifest"])
    assert list(manifest.columns) == ["file", "label", "group"]
    assert manifest["label"].value_counts().to_dict() == {k: 3 for k in synth.LABELS}
    for row in manifest.itertuples():
        assert row.file == f"clips/{row.label}/{row.group}.wav"
        info = sf.info(str(root / row.file))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (SR, 3 * SR, 1, "PCM_16")
    assert len(list(dataset["noise_dir"].glob("*.wav"))) == synth.NUM_NOISE_FILES
    assert [sf.info(str(p)).duration for p in dataset["long"]] == [60.0, 30.0]


def test_truth_is_ordered_non_overlapping_and_inside_files(dataset):
    truth = dataset["truth"]
    assert list(truth.columns) == ["file", "start_s", "end_s", "label"]
    assert set(truth["label"]) == set(synth.CALL_TYPES)
    assert set(truth["file"]) == {p.name for p in dataset["long"]}
    durations = truth["end_s"] - truth["start_s"]
    assert durations.between(synth.MIN_CALL_S, synth.MAX_CALL_S).all()
    gaps = []
    for name, calls in truth.groupby("file"):
        length_s = sf.info(str(dataset["root"] / "long" / name)).duration
        assert calls["start_s"].min() >= 0 and calls["end_s"].max() <= length_s
        gaps += list(calls["start_s"].to_numpy()[1:] - calls["end_s"].to_numpy()[:-1])
    assert min(gaps) >= 1.0
    assert min(gaps) < 1.5, "some calls should follow their neighbour closely"


def test_band_energy_is_higher_inside_calls_than_in_gaps(dataset):
    n_fft, hop = 512, 256
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    band = (freqs >= 1000) & (freqs <= 6000)
    ratios = []
    for name, calls in dataset["truth"].groupby("file"):
        x, _ = sf.read(str(dataset["root"] / "long" / name))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
        energy = (np.abs(np.fft.rfft(frames, axis=1))[:, band] ** 2).sum(axis=1)
        centre_s = (np.arange(len(energy)) * hop + n_fft / 2) / SR
        in_gap = np.ones(len(energy), bool)
        for c in calls.itertuples():
            in_gap &= (centre_s < c.start_s - 0.2) | (centre_s > c.end_s + 0.2)
        gap_energy = energy[in_gap].mean()
        for c in calls.itertuples():
            inside = (centre_s >= c.start_s) & (centre_s <= c.end_s)
            ratios.append(energy[inside].mean() / gap_energy)
    ratios = np.array(ratios)
    assert np.mean(ratios > 4.0) >= 0.9, np.round(ratios, 2)


def test_calls_last_0_3_to_1_5_s_and_sit_in_the_1_to_6_khz_band():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        for kind in synth.CALL_TYPES:
            x = synth.make_call(kind, rng, SR)
            assert synth.MIN_CALL_S <= len(x) / SR <= synth.MAX_CALL_S, (kind, seed)
            power = np.abs(np.fft.rfft(x)) ** 2
            freqs = np.fft.rfftfreq(len(x), 1 / SR)
            in_band = power[(freqs >= 1000) & (freqs <= 6000)].sum() / power.sum()
            assert in_band > 0.95, (kind, seed, in_band)
    with pytest.raises(ValueError):
        synth.make_call("grunt", np.random.default_rng(0), SR)


def test_upsweep_dominant_frequency_rises():
    f = _dominant_hz(synth.upsweep(SR, 1.0, 1500.0, 4000.0))
    assert abs(f[0] - 1500) < 150 and abs(f[-1] - 4000) < 150
    for seed in range(5):
        f = _dominant_hz(synth.make_call("upsweep", np.random.default_rng(seed), SR))
        third = len(f) // 3
        assert f[-third:].mean() - f[:third].mean() > 1000, seed
        assert np.mean(np.diff(f) >= 0) > 0.95, seed


def test_whistle_frequency_wobbles_around_its_carrier():
    f = _dominant_hz(synth.whistle(SR, 1.0, 3000.0, 6.0, 300.0))
    assert abs(np.median(f) - 3000) < 100
    assert 2600 < f.min() < 2800 and 3200 < f.max() < 3400


@pytest.mark.parametrize("rate_hz", [5.0, 8.0, 12.0])
def test_pulse_train_has_the_requested_rate(rate_hz):
    x = synth.pulse_train(SR, 10, rate_hz, 0.015, 3000.0, rng=np.random.default_rng(1))
    assert _pulse_rate_hz(x) == pytest.approx(rate_hz, rel=0.03)


def test_random_pulse_calls_have_rates_in_the_designed_range():
    for seed in range(10):
        x = synth.make_call("pulses", np.random.default_rng(seed), SR)
        assert 4.8 <= _pulse_rate_hz(x) <= 12.5, seed


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_colored_noise_has_the_requested_spectral_slope(exponent):
    x = synth.colored_noise(2**16, exponent, np.random.default_rng(0), SR)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    keep = (freqs >= 100) & (freqs <= 6000)
    slope = np.polyfit(np.log(freqs[keep]), np.log(power[keep]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.1)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    params = dict(clips_per_class=2, long_s=10.0)
    a = _digests(synth.synthesize(tmp_path / "a", seed=3, **params)["root"])
    b = _digests(synth.synthesize(tmp_path / "b", seed=3, **params)["root"])
    c = _digests(synth.synthesize(tmp_path / "c", seed=4, **params)["root"])
    assert a == b
    wavs = [k for k in a if k.endswith(".wav")]
    assert all(a[k] != c[k] for k in wavs)


def test_stamp_skips_work_and_changed_parameters_regenerate(tmp_path):
    params = dict(clips_per_class=3, long_s=10.0)
    first = synth.synthesize(tmp_path, seed=0, **params)
    assert first["generated"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = synth.synthesize(tmp_path, seed=0, **params)
    assert not again["generated"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    pd.testing.assert_frame_equal(again["truth"], first["truth"])

    smaller = synth.synthesize(tmp_path, seed=0, clips_per_class=2, long_s=10.0)
    assert smaller["generated"]
    assert sorted(p.name for p in (tmp_path / "clips" / "whistle").iterdir()) == [
        "whistle_000.wav", "whistle_001.wav"]

    (tmp_path / "long" / "demo_long_2.wav").unlink()
    assert synth.synthesize(tmp_path, seed=0, clips_per_class=2, long_s=10.0)["generated"]


def test_cli_writes_the_data_set(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--clips-per-class", "1", "--long-s", "10"]) == 0
    assert "1 per class" in capsys.readouterr().out
    assert (tmp_path / "synth.json").is_file()
