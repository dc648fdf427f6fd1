"""read_audio_range: a window of a WAV / FLAC / Ogg Vorbis / MP3 file is exactly the full decode sliced.

Tolerance: none. WAV windows are the same bytes through the same sample decoder; FLAC, Vorbis and
MP3 windows come from the same tfio decoder as the full decode, seeking instead of starting at
frame 0, and were measured bit-identical (MP3 included: the encoder-delay trimming is the same).
So every comparison below is exact equality.
"""
import math
import os
import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from pipeline.audio import read as decode

from pipeline.audio import compressed as tfio_audio
from tests.wavfiles import _fmt, _riff

NAN = float("nan")
# (start_s, end_s): inside, an odd start, across the end (clipped), beyond the end (0 frames),
# a negative start, end before start (0 frames), NaN = whole file.
WINDOWS = [(0.0, 0.25), (0.1234567, 0.5), (0.3, 100.0), (50.0, 51.0), (-1.0, 0.01), (0.2, 0.1), (NAN, NAN)]


def _noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (frames, channels))


def _expected_range(start_s: float, end_s: float, rate: int, frames: int) -> tuple[int, int]:
    """[round(start * rate), round(end * rate)) clipped to the file; Python's round is half-to-even like tf.round."""
    first = 0 if math.isnan(start_s) else min(max(round(start_s * rate), 0), frames)
    last = frames if math.isnan(end_s) else min(max(round(end_s * rate), first), frames)
    return first, last


def _check(window, full: np.ndarray, full_rate: int, start_s: float, end_s: float, what=""):
    samples, rate, first = window
    samples, rate, first = np.asarray(samples), int(rate), int(first)
    assert samples.dtype == np.float32 and samples.ndim == 2, what
    assert rate == full_rate, what
    want_first, want_last = _expected_range(start_s, end_s, rate, full.shape[0])
    assert (first, first + samples.shape[0]) == (want_first, want_last), (what, start_s, end_s)
    np.testing.assert_array_equal(samples, full[want_first:want_last], err_msg=f"{what} {start_s} {end_s}")


def _mapped(cases) -> list:
    """read_audio_range over (path, start_s, end_s) inside one parallel tf.data map (graph mode)."""
    paths, starts, ends = zip(*[(str(p), s, e) for p, s, e in cases])
    ds = tf.data.Dataset.from_tensor_slices((list(paths), np.array(starts), np.array(ends))).map(
        decode.read_audio_range, num_parallel_calls=4, deterministic=True)
    return [tuple(t.numpy() for t in item) for item in ds]


def _full(path) -> tuple[np.ndarray, int]:
    samples, rate = decode.read_audio(tf.constant(str(path)))
    return samples.numpy(), int(rate)


def _check_files(paths, windows=WINDOWS, eager_windows=1):
    """Every window of every file through one tf.data map, and the first ones eagerly too."""
    fulls = {p: _full(p) for p in paths}
    cases = [(p, s, e) for p in paths for s, e in windows]
    for (p, s, e), got in zip(cases, _mapped(cases)):
        _check(got, *fulls[p], s, e, f"{p} (map)")
    for p in paths:
        for s, e in windows[:eager_windows]:
            _check(decode.read_audio_range(tf.constant(str(p)), s, e), *fulls[p], s, e, f"{p} (eager)")


# ---------------------------------------------------------------------------------------------
# WAV




WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]


def test_wav_variants_match_full_decode(tmp_path):
    """Every supported layout, WAV and WAVE_FORMAT_EXTENSIBLE, 1-3 channels (8-bit mono fits in the
    8 KiB head read, the others are read in two ranges)."""
    paths = []
    for i, (container, channels) in enumerate([("WAV", 1), ("WAV", 2), ("WAVEX", 3)]):
        for subtype in WAV_SUBTYPES:
            path = tmp_path / f"{container}_{channels}_{subtype}.wav"
            sf.write(path, _noise(5003, channels, seed=i), 8000, subtype=subtype, format=container)
            paths.append(path)
    assert paths[-1].read_bytes()[20:22] == b"\xfe\xff", "expected WAVE_FORMAT_EXTENSIBLE"
    _check_files(paths)


def _layouts() -> dict:
    """16-bit stereo WAVs (800 frames at 8 kHz) with chunk lists the head read can or cannot follow."""
    x = (_noise(800, 2, seed=3) * 2**15).astype("<i2").tobytes()
    fmt = (b"fmt ", _fmt(1, 2, 8000, 16))
    return {  # name: (file bytes, whether the header is taken from the first 8 KiB)
        "canonical": (_riff([fmt, (b"data", x)]), True),
        "extra chunks": (_riff([fmt, (b"fact", struct.pack("<I", 800)), (b"LIST", b"INFOISFT\x05\0\0\0test\0"),
                                (b"odd ", b"abc"), (b"bext", bytes(10)), (b"data", x)]), True),
        "data before fmt": (_riff([(b"data", x[:4000]), fmt]), True),
        "truncated data": (_riff([fmt, (b"data", x[:3001], 10**6)]), True),  # declared 1 MB, ends mid-frame
        "big chunk first": (_riff([fmt, (b"JUNK", bytes(9000)), (b"data", x)]), False),
        "many chunks": (_riff([fmt] + [(b"junk", bytes(4))] * 7 + [(b"data", x)]), False),
    }


@pytest.mark.parametrize("name", list(_layouts()))
def test_wav_head_follows_chunks(name):
    """Which headers are taken from the first 8 KiB (8 chunks at most) and which send the file to
    the full read."""
    contents, from_head = _layouts()[name]
    n = min(len(contents), decode._WAV_HEAD)
    assert bool(decode._head_has_chunks(tf.constant(contents[:n]), tf.constant(n, tf.int64))) == from_head


def test_wav_chunk_layouts(tmp_path):
    """Extra, odd-sized, reordered and truncated chunks, and headers the head read cannot follow
    (full read instead): the same samples either way."""
    paths = []
    for name, (contents, _) in _layouts().items():
        paths.append(tmp_path / f"{name.replace(' ', '_')}.wav")
        paths[-1].write_bytes(contents)
    _check_files(paths, windows=[(0.0, 0.03), (0.011, 0.07), (0.05, 1.0), (1.0, 2.0), (NAN, NAN)])


def test_wav_reads_only_the_window(tmp_path):
    """A 1-s window of a 2-minute WAV reads the 8 KiB head and the window's bytes, not the file
    (bytes read by this process, from /proc/self/io)."""
    if not os.path.exists("/proc/self/io"):
        pytest.skip("needs Linux /proc/self/io")
    path = tmp_path / "long.wav"
    sf.write(path, _noise(120 * 44100, 2, seed=5), 44100, subtype="PCM_16")  # 21 MB

    def bytes_read():
        with open("/proc/self/io") as f:
            return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])

    decode.read_audio_range(tf.constant(str(path)), 1.0, 2.0)  # first call: tracing, imports
    for start_s in (0.0, 60.0, 119.0):
        before = bytes_read()
        samples, rate, first = decode.read_audio_range(tf.constant(str(path)), start_s, start_s + 1.0)
        used = bytes_read() - before
        assert samples.shape == (44100, 2) and int(first) == round(start_s * 44100)
        assert used < 44100 * 4 + 64 * 1024, f"read {used} bytes for a 176 KB window"
    expected = sf.read(path, start=119 * 44100, dtype="int16")[0] / 2**15
    np.testing.assert_array_equal(samples.numpy(), expected.astype(np.float32))


def test_wav_errors_match_read_audio(tmp_path):
    """Malformed or unsupported WAVs raise what read_audio raises."""
    x = (_noise(100, 1) * 2**15).astype("<i2").tobytes()
    cases = {
        "not_riff.wav": (os.urandom(20000), "not a RIFF/WAVE file"),
        "tiny.wav": (b"RIFF", "not a RIFF/WAVE file"),
        "adpcm.wav": (_riff([(b"fmt ", _fmt(2, 1, 8000, 4)), (b"data", x)]), "unsupported WAV encoding"),
        "no_data.wav": (_riff([(b"fmt ", _fmt(1, 1, 8000, 16)), (b"LIST", bytes(20000))]), "no data chunk"),
    }
    for name, (contents, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(contents)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            decode.read_audio(tf.constant(str(path)))
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            decode.read_audio_range(tf.constant(str(path)), 0.0, 1.0)
    with pytest.raises(tf.errors.NotFoundError):
        decode.read_audio_range(tf.constant(str(tmp_path / "missing.wav")), 0.0, 1.0)


def test_other_errors(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"hello")
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported audio file extension"):
        decode.read_audio_range(tf.constant(str(tmp_path / "notes.txt")), 0.0, 1.0)
    wav_bytes = _riff([(b"fmt ", _fmt(1, 1, 8000, 16)), (b"data", bytes(200))])
    for name, contents in [("wav_inside.mp3", wav_bytes), ("empty.ogg", b""), ("short.flac", b"fL")]:
        (tmp_path / name).write_bytes(contents)
        with pytest.raises(tf.errors.InvalidArgumentError, match="not an MP3, FLAC or Ogg Vorbis"):
            decode.read_audio_range(tf.constant(str(tmp_path / name)), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# FLAC, Ogg Vorbis, MP3


@pytest.fixture(scope="module")
def compressed_files(tmp_path_factory) -> list:
    """FLAC 8/16/24-bit, Ogg Vorbis and MP3 (MPEG-1 and -2, with a Xing/LAME header) of 3 s."""
    root = tmp_path_factory.mktemp("compressed")
    specs = [("s8.flac", 16000, 2, dict(subtype="PCM_S8")), ("s16.flac", 16000, 1, dict(subtype="PCM_16")),
             ("s24.flac", 44100, 2, dict(subtype="PCM_24")), ("v.ogg", 22050, 2, dict(subtype="VORBIS")),
             ("m44.mp3", 44100, 1, dict(format="MP3")), ("s22.mp3", 22050, 2, dict(format="MP3"))]
    paths = []
    for i, (name, rate, channels, kwargs) in enumerate(specs):
        paths.append(root / name)
        sf.write(paths[-1], _noise(3 * rate, channels, seed=10 + i) * 0.5, rate, **kwargs)
    return paths


def test_compressed_match_full_decode(compressed_files):
    # Also windows that start one sample before / on an MP3 frame boundary (1152 samples at 44.1
    # kHz, 576 at 22.05 kHz) and at the very end.
    windows = WINDOWS + [(1151 / 44100, 2.0), (1152 / 44100, 1152 / 44100 + 0.01), (575 / 22050, 0.1),
                         (2.99, 3.0), (2.0, 3.0)]
    _check_files(compressed_files, windows, eager_windows=len(windows))


def test_truncated_files_read_lazily(tmp_path, compressed_files):
    """The full decode of a truncated FLAC or MP3 (whose Xing header promises more frames) fails;
    a window in the part present still decodes: only the window is decoded."""
    for name in ("s16.flac", "m44.mp3"):
        source = next(p for p in compressed_files if p.name == name)
        cut = tmp_path / name
        cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode.read_audio(tf.constant(str(cut)))
        full, rate = _full(source)
        _check(decode.read_audio_range(tf.constant(str(cut)), 0.25, 0.75), full, rate, 0.25, 0.75, name)


def test_whole_file_equals_read_audio(tmp_path, compressed_files):
    """start 0, end = duration gives read_audio's result, for every kind of file."""
    wav = tmp_path / "w.wav"
    sf.write(wav, _noise(12345, 2), 11025, subtype="PCM_24")
    paths = [wav] + list(compressed_files)
    fulls = [_full(p) for p in paths]
    cases = [(p, 0.0, full.shape[0] / rate) for p, (full, rate) in zip(paths, fulls)]
    for (full, rate), (samples, got_rate, first) in zip(fulls, _mapped(cases)):
        assert first == 0 and got_rate == rate
        np.testing.assert_array_equal(samples, full)


def test_parallel_map_keeps_files_apart(tmp_path, compressed_files):
    """tfio's reader keeps one resource per graph node; without the lock in tfio_audio, parallel map
    calls read each other's files (measured: 7-10% of results)."""
    paths = list(compressed_files) * 40
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 2.5, len(paths))
    fulls = {p: _full(p) for p in compressed_files}
    for (p, s), got in zip(zip(paths, starts), _mapped([(p, s, s + 0.3) for p, s in zip(paths, starts)])):
        _check(got, *fulls[p], s, s + 0.3, p.name)
    # The spec (rate, frames) used by read_audio: same race, same lock.
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).map(
        lambda p: tfio_audio.info_compressed(p), num_parallel_calls=4)
    for p, info in zip(paths, ds.as_numpy_iterator()):
        full, rate = fulls[p]
        assert (info["frames"], info["channels"], info["sample_rate_hz"]) == (full.shape[0], full.shape[1], rate)


# ---------------------------------------------------------------------------------------------
# Real recordings


def test_real_mp3s(shared_data):
    """Field recordings: mono and stereo, 16 / 22.05 / 44.1 / 48 kHz, 7 s to 3 minutes."""
    paths = sorted((shared_data / "piha").glob("*.mp3")) + sorted((shared_data / "capuchin_forest").glob("*.mp3"))[:1]
    assert len(paths) >= 2
    fulls = {p: _full(p) for p in paths}
    cases = []
    for p, (full, rate) in fulls.items():
        duration = full.shape[0] / rate
        for s in (0.0, 1151 / rate, duration / 2, duration - 1.0, duration - 0.01):
            cases.append((p, s, s + 1.0))
        cases += [(p, duration + 1.0, duration + 2.0), (p, 0.0, duration)]
    for (p, s, e), got in zip(cases, _mapped(cases)):
        _check(got, *fulls[p], s, e, p.name)
