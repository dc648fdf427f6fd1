"""The project's embedded demo data: synthetic animal-like calls in coloured background noise.

Everything is generated on demand from a seed with NumPy (soundfile only writes the WAVs), so
the repository carries no binary data and the README demo and the tests share one source.

Layout written under the output folder::

    clips/<label>/<label>_<i>.wav   labelled clips (one call wholly inside, or background alone)
    manifest.csv                    file,label,group for the clips (paths relative to the folder)
    long/demo_long.wav              long recording with calls at known, non-overlapping times
    long/demo_long_2.wav            a second, shorter one
    long/truth.csv                  file,start_s,end_s,label for every call in long/
    noise/noise_<i>.wav             background-only clips for noise-mixing augmentation
    synth.json                      the parameters; a matching stamp makes a rerun a no-op

Frequencies are designed for 16 kHz sampling (calls within about 1-6 kHz) and are scaled down
proportionally for lower sample rates so they stay below Nyquist.

Usage: python -m pipeline.tools.synth --out DIR [--seed N] [--clips-per-class N] [--long-s S]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import soundfile as sf

CALL_TYPES = ("upsweep", "whistle", "pulses")
NOISE_LABEL = "noise"
LABELS = CALL_TYPES + (NOISE_LABEL,)

# Bump whenever the generated audio changes, so stale stamped data sets are regenerated.
GENERATOR_VERSION = 1

MIN_CALL_S = 0.3
MAX_CALL_S = 1.5
SNR_DB_RANGE = (3.0, 15.0)
# Background RMS in dBFS; low enough that calls at the top SNR rarely need peak limiting.
BACKGROUND_DBFS_RANGE = (-45.0, -30.0)
# Mean number of non-call distractors (hums, clicks) per second of background.
DISTRACTORS_PER_S = 0.3
# Gap from the end of one call to the start of the next in the long recordings: a share of
# calls follow their neighbour closely so that a detector must keep neighbours apart.
CLOSE_GAP_S = (1.0, 1.4)
WIDE_GAP_S = (2.0, 6.0)
CLOSE_GAP_PROB = 0.3
NUM_NOISE_FILES = 8
PEAK_LIMIT = 0.9

_STAMP = "synth.json"
_MANIFEST = "manifest.csv"
_TRUTH = "truth.csv"
_LONG_FILES = ("demo_long.wav", "demo_long_2.wav")
# Independent random streams per output, so changing one count leaves the other files unchanged.
_STREAM_CLIPS, _STREAM_LONG, _STREAM_NOISE = 1, 2, 3


def _freq_scale(sample_rate_hz: int) -> float:
    return min(1.0, sample_rate_hz / 16000.0)


def envelope(num_samples: int, attack_frac: float = 0.15, release_frac: float = 0.15) -> np.ndarray:
    """Raised-cosine attack and release around a flat middle; no clicks at the call edges."""
    env = np.ones(num_samples)
    n_att = max(1, int(round(attack_frac * num_samples)))
    n_rel = max(1, int(round(release_frac * num_samples)))
    env[:n_att] = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_att) / n_att)
    env[num_samples - n_rel:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(n_rel) + 1) / n_rel)
    return env


def upsweep(sample_rate_hz: int, duration_s: float, f_start_hz: float, f_end_hz: float,
            exponential: bool = True) -> np.ndarray:
    """A unit-amplitude FM sweep from f_start_hz to f_end_hz (no envelope)."""
    n = int(round(duration_s * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    if exponential:
        k = np.log(f_end_hz / f_start_hz) / duration_s
        phase = 2 * np.pi * f_start_hz * np.expm1(k * t) / k
    else:
        phase = 2 * np.pi * (f_start_hz * t + 0.5 * (f_end_hz - f_start_hz) / duration_s * t**2)
    return np.sin(phase)


def whistle(sample_rate_hz: int, duration_s: float, carrier_hz: float, vibrato_rate_hz: float,
            vibrato_depth_hz: float, harmonic_gain: float = 0.0) -> np.ndarray:
    """A tone whose frequency is carrier_hz + depth * sin(2 pi rate t), plus an optional 2nd harmonic."""
    n = int(round(duration_s * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    phase = 2 * np.pi * carrier_hz * t + (vibrato_depth_hz / vibrato_rate_hz) * (
        1.0 - np.cos(2 * np.pi * vibrato_rate_hz * t))
    return np.sin(phase) + harmonic_gain * np.sin(2 * phase)


def pulse_train(sample_rate_hz: int, n_pulses: int, rate_hz: float, pulse_s: float,
                carrier_hz: float, rng: Optional[np.random.Generator] = None,
                jitter_frac: float = 0.02) -> np.ndarray:
    """n_pulses Hann-windowed tone bursts, one every 1/rate_hz seconds.

    Each burst glides down +-20 % around carrier_hz, which widens its band (a click-like
    pulse rather than a pure tone). With an rng each onset is jittered by up to
    jitter_frac of the period.
    """
    period = sample_rate_hz / rate_hz
    n_pulse = max(2, int(round(pulse_s * sample_rate_hz)))
    t = np.arange(n_pulse) / sample_rate_hz
    f0, f1 = 1.2 * carrier_hz, 0.8 * carrier_hz
    burst = np.hanning(n_pulse) * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / pulse_s * t**2))
    onsets = np.arange(n_pulses) * period
    if rng is not None and n_pulses > 2:
        onsets[1:-1] += rng.uniform(-jitter_frac, jitter_frac, n_pulses - 2) * period
    onsets = np.round(onsets).astype(int)
    out = np.zeros(onsets[-1] + n_pulse)
    for onset in onsets:
        out[onset:onset + n_pulse] += burst
    return out


def make_call(kind: str, rng: np.random.Generator, sample_rate_hz: int = 16000) -> np.ndarray:
    """One instance of a call type, with random duration, frequencies, envelope and amplitude.

    Lasts 0.3-1.5 s. The peak amplitude is random in 0.5-1.0, but mixing rescales each call
    to its drawn SNR, so level variation in the outputs comes from the SNR.
    """
    s = _freq_scale(sample_rate_hz)
    if kind == "upsweep":
        x = upsweep(sample_rate_hz, rng.uniform(0.4, 1.2), s * rng.uniform(1200, 2000),
                    s * rng.uniform(3500, 5000), exponential=bool(rng.random() < 0.5))
        x = x * envelope(len(x), rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3))
    elif kind == "whistle":
        carrier, depth = s * rng.uniform(2000, 3500), s * rng.uniform(100, 400)
        # The harmonic only when it stays inside the 1-6 kHz (scaled) call band.
        harmonic = rng.uniform(0.2, 0.4) if 2 * (carrier + depth) <= s * 6000 else 0.0
        x = whistle(sample_rate_hz, rng.uniform(0.5, 1.5), carrier, rng.uniform(4, 8), depth,
                    harmonic)
        x = x * envelope(len(x), rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.3))
    elif kind == "pulses":
        rate, pulse_s = rng.uniform(5, 12), rng.uniform(0.010, 0.025)
        max_pulses = int((MAX_CALL_S - pulse_s) * rate) + 1
        min_pulses = max(3, int(np.ceil((MIN_CALL_S - pulse_s) * rate)) + 1)
        n_pulses = int(rng.integers(min_pulses, max_pulses + 1))
        x = pulse_train(sample_rate_hz, n_pulses, rate, pulse_s, s * rng.uniform(2000, 5000), rng)
    else:
        raise ValueError(f"unknown call kind {kind!r}; expected one of {CALL_TYPES}")
    return rng.uniform(0.5, 1.0) * x / np.max(np.abs(x))


def colored_noise(num_samples: int, exponent: float, rng: np.random.Generator,
                  sample_rate_hz: int = 16000, f_low_hz: float = 20.0) -> np.ndarray:
    """Unit-RMS noise with power spectral density ~ 1/f**exponent (1 pink, 2 brown).

    Shaped in the frequency domain; bins below f_low_hz are zeroed (as a recorder's high-pass
    would) so brown noise does not wander with huge sub-audio energy.
    """
    if num_samples < 2:
        return np.zeros(num_samples)
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate_hz)
    amp = np.zeros_like(freqs)
    keep = freqs >= f_low_hz
    amp[keep] = freqs[keep] ** (-exponent / 2.0)
    spec = (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))) * amp
    x = np.fft.irfft(spec, n=num_samples)
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def _hum(rng: np.random.Generator, sample_rate_hz: int) -> np.ndarray:
    n = int(rng.uniform(0.3, 1.0) * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    f0 = rng.uniform(60, 250)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    return x * envelope(n, 0.2, 0.2)


def _click(rng: np.random.Generator, sample_rate_hz: int) -> np.ndarray:
    n = max(8, int(rng.uniform(0.002, 0.008) * sample_rate_hz))
    return rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 4.0))


def make_background(num_samples: int, rng: np.random.Generator, sample_rate_hz: int = 16000,
                    distractors_per_s: float = DISTRACTORS_PER_S) -> np.ndarray:
    """Coloured noise (exponent between pink and brown) at a random level, plus distractors.

    Distractors are short low-frequency hums and broadband clicks placed at random, so that
    "not a call" is more than "quiet noise" and the background class is not trivial.
    """
    exponent = rng.uniform(1.0, 2.0)
    level = 10 ** (rng.uniform(*BACKGROUND_DBFS_RANGE) / 20.0)
    x = level * colored_noise(num_samples, exponent, rng, sample_rate_hz)
    n_distractors = rng.poisson(distractors_per_s * num_samples / sample_rate_hz)
    for _ in range(n_distractors):
        if rng.random() < 0.5:
            d = _hum(rng, sample_rate_hz)
            d *= level * 10 ** (rng.uniform(0, 10) / 20.0) / np.sqrt(np.mean(d**2))
        else:
            d = _click(rng, sample_rate_hz)
            d *= level * rng.uniform(5, 15) / np.max(np.abs(d))
        d = d[:num_samples]
        start = int(rng.integers(0, num_samples - len(d) + 1))
        x[start:start + len(d)] += d
    return x


def _add_at_snr(background: np.ndarray, call: np.ndarray, start: int, snr_db: float) -> None:
    """Add call into background at start, scaled to snr_db over the background RMS there."""
    segment = background[start:start + len(call)]
    gain = np.sqrt(np.mean(segment**2) / np.mean(call**2)) * 10 ** (snr_db / 20.0)
    segment += gain * call


def _limit(x: np.ndarray) -> np.ndarray:
    """Scale the whole signal down if its peak would come near 16-bit full scale."""
    peak = np.max(np.abs(x))
    return x * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x


def _clip(label: str, rng: np.random.Generator, num_samples: int, sample_rate_hz: int) -> np.ndarray:
    x = make_background(num_samples, rng, sample_rate_hz)
    if label != NOISE_LABEL:
        call = make_call(label, rng, sample_rate_hz)[:num_samples]
        start = int(rng.integers(0, num_samples - len(call) + 1))
        _add_at_snr(x, call, start, rng.uniform(*SNR_DB_RANGE))
    return _limit(x)


def _call_kinds(rng: np.random.Generator) -> Iterator[str]:
    """Call types in shuffled rounds of all three, so every long recording stays balanced."""
    while True:
        yield from (CALL_TYPES[i] for i in rng.permutation(len(CALL_TYPES)))


def long_recording(rng: np.random.Generator, duration_s: float, sample_rate_hz: int
                    ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Background with calls at non-overlapping times; returns (audio, [(start_s, end_s, label)])."""
    n = int(round(duration_s * sample_rate_hz))
    x = make_background(n, rng, sample_rate_hz)
    tail = int(1.0 * sample_rate_hz)
    pos = int(rng.uniform(1.0, 2.0) * sample_rate_hz)
    events = []
    for kind in _call_kinds(rng):
        call = make_call(kind, rng, sample_rate_hz)
        if pos + len(call) > n - tail:
            break
        _add_at_snr(x, call, pos, rng.uniform(*SNR_DB_RANGE))
        events.append((pos / sample_rate_hz, (pos + len(call)) / sample_rate_hz, kind))
        gap_range = CLOSE_GAP_S if rng.random() < CLOSE_GAP_PROB else WIDE_GAP_S
        pos += len(call) + int(rng.uniform(*gap_range) * sample_rate_hz)
    return _limit(x), events


def _params(seed: int, clips_per_class: int, clip_s: float, long_s: float,
            sample_rate_hz: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed),
            "clips_per_class": int(clips_per_class), "clip_s": float(clip_s),
            "long_s": float(long_s), "sample_rate_hz": int(sample_rate_hz)}


def _clip_paths(clips_per_class: int) -> list[tuple[str, str, int]]:
    """(path relative to the output folder, label, index) of every clip, in manifest order."""
    return [(f"clips/{label}/{label}_{i:03d}.wav", label, i)
            for label in LABELS for i in range(clips_per_class)]


def _expected_files(out: Path, clips_per_class: int) -> list[Path]:
    files = [out / rel for rel, _, _ in _clip_paths(clips_per_class)]
    files += [out / "long" / name for name in _LONG_FILES + (_TRUTH,)]
    files += [out / "noise" / f"noise_{i:03d}.wav" for i in range(NUM_NOISE_FILES)]
    return files + [out / _MANIFEST]


def _is_complete(out: Path, params: dict) -> bool:
    try:
        stamp = json.loads((out / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp == params and all(p.is_file() for p in _expected_files(out, params["clips_per_class"]))


def _remove_previous(out: Path) -> None:
    """Delete files an earlier generation may have left (e.g. with more clips per class).

    Only this module's own file-name patterns are touched, never anything else in the folder.
    """
    (out / _STAMP).unlink(missing_ok=True)
    stale = [p for label in LABELS for p in (out / "clips" / label).glob(f"{label}_*.wav")]
    stale += list((out / "noise").glob("noise_*.wav")) + list((out / "long").glob("demo_long*.wav"))
    stale += [out / "long" / _TRUTH, out / _MANIFEST]
    for p in stale:
        p.unlink(missing_ok=True)


def _write_wav(path: Path, x: np.ndarray, sample_rate_hz: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sample_rate_hz, subtype="PCM_16")


def _result(out: Path, truth: pd.DataFrame, generated: bool) -> dict:
    return {"root": out, "manifest": out / _MANIFEST, "clips_dir": out / "clips",
            "long": [out / "long" / name for name in _LONG_FILES],
            "truth_csv": out / "long" / _TRUTH, "truth": truth, "noise_dir": out / "noise",
            "stamp": out / _STAMP, "generated": generated}


def synthesize(out_dir: str | os.PathLike, seed: int = 0, clips_per_class: int = 40,
               clip_s: float = 3.0, long_s: float = 120.0, sample_rate_hz: int = 16000) -> dict:
    """Write the demo data set under out_dir, or do nothing if it is already there.

    The second long recording lasts long_s / 2. Returns a dict with keys root, manifest,
    clips_dir, long (the two recordings), truth_csv, truth (DataFrame file,start_s,end_s,label),
    noise_dir, stamp, and generated (False when an existing stamped data set was reused).
    """
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    if clip_s < MAX_CALL_S:
        raise ValueError(f"clip_s must be at least {MAX_CALL_S} s to hold a call, got {clip_s}")
    if long_s < 10.0:
        raise ValueError(f"long_s must be at least 10 s, got {long_s}")
    if sample_rate_hz < 8000:
        raise ValueError(f"sample_rate_hz must be at least 8000, got {sample_rate_hz}")
    out = Path(out_dir)
    params = _params(seed, clips_per_class, clip_s, long_s, sample_rate_hz)
    if _is_complete(out, params):
        return _result(out, pd.read_csv(out / "long" / _TRUTH), generated=False)

    _remove_previous(out)
    clip_n = int(round(clip_s * sample_rate_hz))
    rows = []
    for rel, label, index in _clip_paths(clips_per_class):
        rng = np.random.default_rng([seed, _STREAM_CLIPS, LABELS.index(label), index])
        _write_wav(out / rel, _clip(label, rng, clip_n, sample_rate_hz), sample_rate_hz)
        rows.append((rel, label, Path(rel).stem))
    pd.DataFrame(rows, columns=["file", "label", "group"]).to_csv(out / _MANIFEST, index=False)

    for i in range(NUM_NOISE_FILES):
        rng = np.random.default_rng([seed, _STREAM_NOISE, i])
        _write_wav(out / "noise" / f"noise_{i:03d}.wav",
                   _limit(make_background(clip_n, rng, sample_rate_hz)), sample_rate_hz)

    truth_rows = []
    for i, (name, duration_s) in enumerate(zip(_LONG_FILES, (long_s, long_s / 2.0))):
        rng = np.random.default_rng([seed, _STREAM_LONG, i])
        audio, events = long_recording(rng, duration_s, sample_rate_hz)
        _write_wav(out / "long" / name, audio, sample_rate_hz)
        truth_rows += [(name, start, end, label) for start, end, label in events]
    truth = pd.DataFrame(truth_rows, columns=["file", "start_s", "end_s", "label"])
    truth.to_csv(out / "long" / _TRUTH, index=False, float_format="%.6f")

    # The stamp goes last (atomically), so an interrupted run is never mistaken for complete.
    tmp = out / (_STAMP + ".tmp")
    tmp.write_text(json.dumps(params, indent=2) + "\n")
    tmp.replace(out / _STAMP)
    return _result(out, pd.read_csv(out / "long" / _TRUTH), generated=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.synth", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--clip-s", type=float, default=3.0)
    parser.add_argument("--long-s", type=float, default=120.0,
                        help="length of demo_long.wav; demo_long_2.wav is half as long")
    parser.add_argument("--sample-rate-hz", type=int, default=16000)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        res = synthesize(args.out, seed=args.seed, clips_per_class=args.clips_per_class,
                         clip_s=args.clip_s, long_s=args.long_s, sample_rate_hz=args.sample_rate_hz)
    except ValueError as e:
        parser.error(str(e))
    counts = res["truth"]["label"].value_counts().reindex(CALL_TYPES, fill_value=0)
    state = f"wrote in {time.perf_counter() - t0:.1f} s" if res["generated"] else "already up to date"
    print(f"{res['root']}: {state}; {len(LABELS) * args.clips_per_class} clips "
          f"({args.clips_per_class} per class), long recordings with "
          + ", ".join(f"{n} {k}" for k, n in counts.items()) + " calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
