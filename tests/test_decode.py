"""Known-answer tests for audio decoding in graph (pipeline.audio.wav, pipeline.audio.compressed, pipeline.audio.read)."""
import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from pipeline.audio import read as decode

from pipeline.audio import compressed as tfio_audio
from pipeline.audio import wav
from tests.wavfiles import _fmt, _riff

# One least significant bit of each WAV subtype as a float in [-1, 1); float32 output keeps ~1e-7.
LSB = {"PCM_U8": 2**-7, "PCM_16": 2**-15, "PCM_24": 2**-23, "PCM_32": 1e-7, "FLOAT": 1e-7, "DOUBLE": 1e-7}


def _signal(sr: int, seconds: float, freqs_hz: tuple, amp: float = 0.5) -> np.ndarray:
    """Sines, one per channel, as [frames, channels] float64."""
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs_hz], axis=1)


def _noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.95, 0.95, (frames, channels))


def _in_dataset(paths) -> list:
    """read_audio over paths inside tf.data.Dataset.map (graph mode, path as a tensor).

    Every new map costs ~0.5 s of tracing, so tests put many files through one dataset.
    """
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).map(
        decode.read_audio, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return [tuple(t.numpy() for t in item) for item in ds]


# Graph mode traced once for the whole module (same graph as in a map, without the tf.data cost).
_read_graph = tf.function(decode.read_audio, input_signature=[tf.TensorSpec([], tf.string)])


def _both(path) -> tuple:
    """(eager result, graph result) of read_audio, as numpy."""
    eager = decode.read_audio(tf.constant(str(path)))
    graph = _read_graph(tf.constant(str(path)))
    return tuple(t.numpy() for t in eager), tuple(t.numpy() for t in graph)


def _dominant_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))




WAV_CASES = [(subtype, container, channels) for container, channels in [("WAV", 1), ("WAV", 2), ("WAVEX", 3)]
             for subtype in LSB]


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory) -> dict:
    """One file per (subtype, container, channels), all decoded in a single tf.data map."""
    root = tmp_path_factory.mktemp("wav")
    paths = {}
    for i, (subtype, container, channels) in enumerate(WAV_CASES):
        paths[subtype, container, channels] = path = root / f"{container}_{channels}_{subtype}.wav"
        sf.write(path, _noise(1001, channels, seed=i), 11025, subtype=subtype, format=container)
    return {case: (path, result) for (case, path), result in zip(paths.items(), _in_dataset(paths.values()))}


@pytest.mark.parametrize("subtype,container,channels", WAV_CASES)
def test_wav_subtypes_match_soundfile(wav_files, subtype, container, channels):
    path, (mapped, mapped_rate) = wav_files[subtype, container, channels]
    if container == "WAVEX":
        assert path.read_bytes()[20:22] == b"\xfe\xff", "expected WAVE_FORMAT_EXTENSIBLE"
    expected = sf.read(path, dtype="float64", always_2d=True)[0]

    samples, rate = decode.read_audio(tf.constant(str(path)))
    assert samples.dtype == tf.float32 and rate.dtype == tf.int32
    assert samples.shape == (1001, channels) and int(rate) == 11025
    np.testing.assert_allclose(samples.numpy(), expected, rtol=0, atol=LSB[subtype])
    np.testing.assert_array_equal(mapped, samples.numpy())
    assert mapped_rate == 11025


def test_wav_extremes_are_in_range(tmp_path):
    """Full-scale integers map to [-1, 1): min -> -1 exactly, max -> just under 1."""
    for bits, lo, hi in [(16, -(2**15), 2**15 - 1), (32, -(2**31), 2**31 - 1)]:
        data = np.array([lo, hi, 0], dtype=f"<i{bits // 8}").tobytes()
        contents = _riff([(b"fmt ", _fmt(1, 1, 8000, bits)), (b"data", data)])
        samples, _ = wav.decode_wav(tf.constant(contents))
        assert samples.numpy()[0, 0] == -1.0 and samples.numpy()[1, 0] < 1.0 and samples.numpy()[2, 0] == 0.0
    data24 = bytes([0x00, 0x00, 0x80, 0xFF, 0xFF, 0x7F, 0x01, 0x00, 0x00])  # min, max, +1 LSB
    contents = _riff([(b"fmt ", _fmt(1, 1, 8000, 24)), (b"data", data24)])
    samples = wav.decode_wav(tf.constant(contents))[0].numpy()[:, 0]
    np.testing.assert_array_equal(samples, [-1.0, (2**23 - 1) / 2**23, 2**-23])


def test_wav_with_extra_and_odd_chunks(tmp_path):
    """LIST and an odd-sized chunk (with its pad byte) before data, fact and bext skipped."""
    x = (_noise(257, 2, seed=1) * 2**15).astype("<i2")
    chunks = [(b"fmt ", _fmt(1, 2, 32000, 16)), (b"fact", struct.pack("<I", 257)),
              (b"LIST", b"INFOISFT\x05\0\0\0test\0"), (b"odd ", b"abc"), (b"bext", bytes(10)),
              (b"data", x.tobytes())]
    contents = _riff(chunks)
    path = tmp_path / "chunks.WAV"
    path.write_bytes(contents)

    header = {k: int(v) for k, v in wav.parse_wav_header(tf.constant(contents)).items()}
    assert header["data_offset"] == contents.index(b"data") + 8
    assert header == dict(header, format=1, channels=2, sample_rate_hz=32000, bits_per_sample=16,
                          block_align=4, num_frames=257, data_bytes=257 * 4)
    expected = x.astype(np.float32) / 2**15
    (samples, rate), (graph_samples, graph_rate) = _both(path)
    np.testing.assert_array_equal(samples, expected)
    np.testing.assert_array_equal(graph_samples, expected)
    assert rate == graph_rate == 32000


def test_truncated_wav_keeps_whole_frames(tmp_path):
    """A data chunk declared longer than the file yields the whole frames present."""
    x = (_noise(100, 2, seed=2) * 2**15).astype("<i2")
    present = x.tobytes()[: 60 * 4 + 2]  # 60 frames and half of one
    contents = _riff([(b"fmt ", _fmt(1, 2, 8000, 16)), (b"data", present, 100 * 4)])
    path = tmp_path / "truncated.wave"
    path.write_bytes(contents)

    header = wav.parse_wav_header(tf.constant(contents))
    assert int(header["num_frames"]) == 60 and int(header["data_bytes"]) == 240
    assert int(header["declared_data_bytes"]) == 400
    (samples, _), (graph_samples, _) = _both(path)
    np.testing.assert_array_equal(samples, x[:60].astype(np.float32) / 2**15)
    np.testing.assert_array_equal(graph_samples, samples)


def test_header_from_a_prefix(tmp_path):
    """Parsing only the first bytes gives the format; frames are clipped to the bytes given."""
    path = tmp_path / "long.wav"
    sf.write(path, _noise(5000, 1), 22050, subtype="PCM_24")
    header = wav.parse_wav_header(tf.constant(path.read_bytes()[:200]))
    assert (int(header["format"]), int(header["bits_per_sample"]), int(header["sample_rate_hz"])) == (1, 24, 22050)
    assert int(header["declared_data_bytes"]) == 5000 * 3
    assert int(header["num_frames"]) == (200 - int(header["data_offset"])) // 3


@pytest.mark.parametrize("contents,message", [
    (b"this is not a wav file at all", "not a RIFF/WAVE file"),
    (b"", "not a RIFF/WAVE file"),
    (_riff([(b"fmt ", _fmt(1, 1, 8000, 16))]), "no data chunk"),
    (_riff([(b"data", bytes(8))]), "no fmt chunk"),
    (_riff([(b"fmt ", _fmt(2, 1, 8000, 4)), (b"data", bytes(8))]), "unsupported WAV encoding"),
    (_riff([(b"fmt ", _fmt(1, 1, 8000, 12)), (b"data", bytes(8))]), "unsupported WAV encoding"),
    (_riff([(b"fmt ", _fmt(3, 1, 8000, 16)), (b"data", bytes(8))]), "unsupported WAV encoding"),
], ids=["text", "empty", "no-data", "no-fmt", "adpcm", "pcm12", "float16"])
def test_bad_wav_raises_naming_the_file(tmp_path, contents, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(contents)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as eager:
        decode.read_audio(tf.constant(str(path)))
    assert str(path) in eager.value.message
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as graph:
        _read_graph(tf.constant(str(path)))
    assert str(path) in graph.value.message


def test_soundfile_mulaw_is_rejected(tmp_path):
    path = tmp_path / "ulaw.wav"
    sf.write(path, _noise(100, 1), 8000, subtype="ULAW")
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported WAV encoding"):
        decode.read_audio(tf.constant(str(path)))


@pytest.mark.parametrize("name,ext", [("clip.aiff", "aiff"), ("clip", ""), ("clip.wav.txt", "txt"),
                                      ("dir.wav/clip", ""), ("UP.WAV", "wav")])
def test_extension(name, ext):
    assert decode._extension(tf.constant(f"/data/{name}")).numpy().decode() == ext


@pytest.mark.parametrize("name", ["clip.aiff", "clip", "clip.wav.txt", "dir.wav/clip"])
def test_unsupported_extension_names_the_path(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"whatever")
    for read in (decode.read_audio, _read_graph):
        with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported audio file extension") as err:
            read(tf.constant(str(path)))
        assert str(path) in err.value.message


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_16", "PCM_24"])
def test_flac_matches_soundfile(tmp_path, subtype):
    path = tmp_path / f"x_{subtype}.FLAC"
    sf.write(path, _noise(3000, 2, seed=3), 48000, subtype=subtype, format="FLAC")
    expected = sf.read(path, dtype="float64", always_2d=True)[0]
    (samples, rate), (graph_samples, graph_rate) = _both(path)
    assert samples.dtype == np.float32 and rate == graph_rate == 48000
    np.testing.assert_allclose(samples, expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(graph_samples, samples)


@pytest.mark.parametrize("fmt,subtype,ext", [("OGG", "VORBIS", "ogg"), ("OGG", "VORBIS", "oga"),
                                             ("MP3", "MPEG_LAYER_III", "mp3")])
def test_lossy_keeps_rate_channels_length_and_pitch(tmp_path, fmt, subtype, ext):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}")
    sr, freqs = 22050, (440.0, 1250.0)
    x = _signal(sr, 1.0, freqs)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, x, sr, format=fmt, subtype=subtype)

    (samples, rate), (graph_samples, graph_rate) = _both(path)
    np.testing.assert_array_equal(graph_samples, samples)
    assert rate == graph_rate == sr and samples.dtype == np.float32 and samples.shape[1] == 2
    # MP3 frames are 1152 samples and encoders add delay/padding (LAME tags let decoders trim it).
    assert abs(samples.shape[0] - len(x)) <= 2 * 1152
    for ch, f in enumerate(freqs):
        assert abs(_dominant_hz(samples[:, ch], sr) - f) < 3.0
        n = min(len(x), len(samples)) - 4000
        ref = x[2000:2000 + n, ch]
        lags = np.arange(-1200, 1201)
        corr = [np.dot(ref, samples[2000 + lag:2000 + lag + n, ch]) for lag in lags]
        best = int(lags[int(np.argmax(corr))])
        assert abs(best) <= 1200
        aligned = samples[2000 + best:2000 + best + n, ch]
        assert np.corrcoef(ref, aligned)[0, 1] > 0.99

    info = {k: int(v) for k, v in tfio_audio.info_compressed(tf.constant(str(path))).items()}
    assert info == {"frames": samples.shape[0], "channels": 2, "sample_rate_hz": sr}


@pytest.mark.parametrize("name,contents,message", [
    ("garbage.mp3", bytes(range(256)) * 4, "not an MP3, FLAC or Ogg Vorbis"),
    ("empty.ogg", b"", "not an MP3, FLAC or Ogg Vorbis"),
    ("text.flac", b"hello, this is text", "not an MP3, FLAC or Ogg Vorbis"),
])
def test_bad_compressed_raises_naming_the_file(tmp_path, name, contents, message):
    """Checked before tfio sees the bytes: its vorbis decoder segfaults on empty input."""
    path = tmp_path / name
    path.write_bytes(contents)
    for read in (decode.read_audio, _read_graph):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message) as err:
            read(tf.constant(str(path)))
        assert str(path) in err.value.message


def test_truncated_flac_raises(tmp_path):
    """tfio refuses a FLAC cut short (its message, "unable to read at: N", has no file name)."""
    path = tmp_path / "cut.flac"
    sf.write(path, _noise(20000, 1, seed=5), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:10000])
    with pytest.raises(tf.errors.InvalidArgumentError, match="unable to read"):
        decode.read_audio(tf.constant(str(path)))


def test_ogg_opus_is_rejected_naming_the_file(tmp_path):
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("libsndfile cannot write Ogg Opus")
    path = tmp_path / "speech.ogg"
    sf.write(path, _signal(48000, 0.2, (440.0,)), 48000, format="OGG", subtype="OPUS")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Opus") as err:
        decode.read_audio(tf.constant(str(path)))
    assert str(path) in err.value.message


def test_container_is_sniffed_not_taken_from_the_extension(tmp_path):
    """A FLAC stream saved as .ogg still decodes: tfio and the check look at the bytes."""
    path = tmp_path / "really_flac.ogg"
    x = _noise(500, 1, seed=4)
    sf.write(path, x, 16000, format="FLAC", subtype="PCM_16")
    samples, rate = decode.read_audio(tf.constant(str(path)))
    np.testing.assert_allclose(samples.numpy()[:, 0], sf.read(path)[0], atol=1e-7)
    assert int(rate) == 16000


def test_to_mono():
    x = tf.constant([[1.0, 3.0, 5.0], [2.0, 4.0, 9.0]])  # [frames, channels]
    np.testing.assert_array_equal(decode.to_mono(x, "mean").numpy(), [3.0, 5.0])
    np.testing.assert_array_equal(decode.to_mono(x, 0).numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(decode.to_mono(x, 2).numpy(), [5.0, 9.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="mono rule 3 selects channel 3"):
        decode.to_mono(x, 3)
    with pytest.raises(ValueError, match="'left'"):
        decode.to_mono(x, "left")
    ds = tf.data.Dataset.from_tensors(x).map(lambda s: decode.to_mono(s, 5))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mono rule 5 selects channel 5"):
        list(ds)
    ds = tf.data.Dataset.from_tensors(x).map(lambda s: decode.to_mono(s, 1))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), [3.0, 4.0])


def test_mixed_formats_in_one_dataset(tmp_path):
    """WAV (also hand-made, with chunks and truncated), FLAC, Ogg and MP3 through one parallel map."""
    cases = [("a.wav", "WAV", "PCM_16", 8000, 1), ("b.Flac", "FLAC", "PCM_24", 44100, 2),
             ("c.ogg", "OGG", "VORBIS", 16000, 1)]
    if "MP3" in sf.available_formats():
        cases.append(("d.mp3", "MP3", "MPEG_LAYER_III", 24000, 2))
    paths = []
    for name, fmt, subtype, sr, channels in cases:
        paths.append(tmp_path / name)
        sf.write(paths[-1], _signal(sr, 0.5, (300.0, 600.0)[:channels]), sr, format=fmt, subtype=subtype)
    x = (_noise(300, 2, seed=6) * 2**15).astype("<i2").tobytes()
    chunks = [(b"fmt ", _fmt(1, 2, 12000, 16)), (b"LIST", b"odd"), (b"data", x + x[:6], 400 * 4)]
    paths.append(tmp_path / "chunks_truncated.wav")
    paths[-1].write_bytes(_riff(chunks))
    cases.append(("chunks_truncated.wav", "WAV", "PCM_16", 12000, 2))
    for path, (name, _, _, sr, channels), (samples, rate) in zip(paths, cases, _in_dataset(paths)):
        expected = sf.read(path, dtype="float32", always_2d=True)[0]
        assert rate == sr and samples.dtype == np.float32, name
        assert samples.shape == expected.shape, name
        np.testing.assert_allclose(samples, expected, rtol=0, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("name,contents,message", [
    ("bad.wav", b"RIFX not a wave", "not a RIFF/WAVE file"),
    ("bad.mp3", b"", "not an MP3, FLAC or Ogg Vorbis"),
    ("bad.aiff", b"FORM", "unsupported audio file extension"),
])
def test_errors_inside_a_dataset_name_the_file(tmp_path, name, contents, message):
    path = tmp_path / name
    path.write_bytes(contents)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as err:
        _in_dataset([path])
    assert str(path) in err.value.message


def test_real_recordings(shared_data):
    """One watkins10 WAV and one piha MP3 against soundfile, in one tf.data map."""
    wav_path = sorted((shared_data / "watkins10").glob("*.wav"))[0]
    mp3_path = shared_data / "piha" / "ScreamingPiha3.mp3"
    if not mp3_path.exists():
        pytest.skip(f"{mp3_path} is absent")
    (wav_samples, wav_rate), (mp3_samples, mp3_rate) = _in_dataset([wav_path, mp3_path])

    expected, sr = sf.read(wav_path, dtype="float64", always_2d=True)
    assert wav_rate == sr and wav_samples.shape == expected.shape
    np.testing.assert_allclose(wav_samples, expected, rtol=0, atol=2**-15)
    # libsndfile (mpg123) and tfio (minimp3) agree on the length and samples of these files.
    expected, sr = sf.read(mp3_path, dtype="float32", always_2d=True)
    assert mp3_rate == sr and mp3_samples.shape == expected.shape
    np.testing.assert_allclose(mp3_samples, expected, rtol=0, atol=1e-4)
