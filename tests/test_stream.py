"""Streaming reads: chunked samples equal the whole file's; bad files are named, not fatal; each file
is opened once and read front to back; libsndfile's samples equal our readers'."""
import struct
import threading

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from pipeline.audio import resample as resample_lib
from pipeline.audio.info import AudioInfo, BadAudio, checked_info
from pipeline.audio.read import read_audio, to_mono
from pipeline.detection.plan import Chunk, alignment, make_job, plan_read, windows_per_chunk
from pipeline.detection.display import SPECTROGRAM_BANDS, SPECTROGRAM_FRAME, overview_spectrogram
from pipeline.detection.stream import chunk_stream


def whole_file(path: str, rate_out: int, mono="mean") -> np.ndarray:
    """The file decoded by our readers (NaN/Inf zeroed), mixed down and resampled at once: the
    reference the streamed chunks must equal."""
    samples, rate = read_audio(tf.constant(str(path)))  # [frames, channels]
    samples = tf.where(tf.math.is_finite(samples), samples, 0.0)  # [frames, channels]
    return resample_lib.resample(to_mono(samples, mono), rate, rate_out).numpy()  # [samples]


def expected_chunk(reference: np.ndarray, chunk: Chunk, context: int) -> np.ndarray:
    """Samples [chunk.start - context, chunk.start + chunk.length + context) of the reference,
    zeros outside it."""
    padded = np.zeros(len(reference) + 2 * context + chunk.start + chunk.length, np.float32)
    padded[context:context + len(reference)] = reference
    return padded[chunk.start:chunk.start + chunk.length + 2 * context]


def write(path, seconds, rate, channels=1, seed=0, subtype="FLOAT"):
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    sf.write(str(path), x, rate, subtype=subtype)
    return str(path)


def jobs_for(paths, rate_out, window, hop, chunk_s, mono="mean", context=0):
    return [make_job(p, checked_info(p, mono), rate_out, window, hop, windows_per_chunk(chunk_s, rate_out, window, hop),
                     context) for p in paths]


def streamed(jobs, rate_out, mono="mean", context=0):
    """Every ChunkAudio of the stream, checking they come in job and chunk order."""
    with chunk_stream(jobs, rate_out, mono, context) as stream:
        chunks = list(stream)
    assert [(a.job, a.chunk) for a in chunks] == [(j, c) for j, job in enumerate(jobs) for c in range(len(job.chunks))]
    return chunks


@pytest.mark.parametrize("rate_out, inputs, context, chunk_s", [
    # (rate_in, channels): down by a non-integer ratio (stereo), up, equal, an approximated
    # ratio (81,920 -> 22,050 Hz), and decimation first (96,000 -> 16,000 Hz)
    (22050, [(48000, 2), (16000, 1), (22050, 1), (81920, 1)], 0, 0.5),
    (22050, [(48000, 2), (16000, 1), (22050, 1), (81920, 1)], 3000, 0.8),
    (16000, [(96000, 1), (44100, 2), (8000, 3)], 2500, 0.5),
])
def test_streamed_chunks_equal_the_whole_file_resampled_at_once(tmp_path, rate_out, inputs, context, chunk_s):
    window, hop = int(0.3 * rate_out), int(0.1 * rate_out) + 7  # hop not dividing anything
    paths = [write(tmp_path / f"in_{rate}.wav", 2.37, rate, channels, seed=rate) for rate, channels in inputs]
    jobs = jobs_for(paths, rate_out, window, hop, chunk_s, context=context)
    chunks = streamed(jobs, rate_out, context=context)
    for j, (path, job) in enumerate(zip(paths, jobs)):
        assert len(job.chunks) > 3  # windows cross several chunk boundaries
        reference = whole_file(path, rate_out)
        for audio in (a for a in chunks if a.job == j):
            chunk = job.chunks[audio.chunk]
            assert audio.problem is None and audio.samples.dtype == np.float32
            assert audio.samples.shape == (chunk.length + 2 * context,)
            np.testing.assert_allclose(audio.samples, expected_chunk(reference, chunk, context), atol=2e-6,
                                       err_msg=f"{path} chunk {audio.chunk}")
        # zeros before the file start and past its end
        first, last = (a.samples for a in chunks if a.job == j and a.chunk in (0, len(job.chunks) - 1))
        assert np.all(first[:context] == 0)
        read = job.reads[-1]
        assert np.all(last[read.lead + read.valid:] == 0) and read.lead + read.valid < len(last)


def test_a_channel_rule_streams_that_channel(tmp_path):
    path = write(tmp_path / "stereo.wav", 1.3, 44100, channels=2, seed=4)
    jobs = jobs_for([path], 16000, 4000, 1500, 0.4, mono=1, context=700)
    reference = whole_file(path, 16000, mono=1)
    for audio in streamed(jobs, 16000, mono=1, context=700):
        np.testing.assert_allclose(audio.samples, expected_chunk(reference, jobs[0].chunks[audio.chunk], 700),
                                   atol=2e-6)


def test_streamed_mp3_equals_whole_file(shared_data):
    path = str(shared_data / "piha" / "ScreamingPiha3.mp3")  # 22,050 Hz mono MP3, 7 s
    jobs = jobs_for([path], 16000, 16000, 4000, 2.0, context=2000)
    reference = whole_file(path, 16000)
    chunks = streamed(jobs, 16000, context=2000)
    assert len(chunks) > 2
    for audio in chunks:
        # tensorflow-io's decoder (minimp3) and libsndfile's (mpg123) agree to a few 1e-7 here
        np.testing.assert_allclose(audio.samples, expected_chunk(reference, jobs[0].chunks[audio.chunk], 2000),
                                   atol=2e-6)


@pytest.mark.parametrize("rate_in, rate_out", [(48000, 22050), (16000, 22050), (81920, 22050), (96000, 16000),
                                               (22050, 22050)])
@pytest.mark.parametrize("context", [0, 2500])
def test_plan_read_starts_on_the_resampler_period_and_covers_the_chunk(rate_in, rate_out, context):
    period_in, period_out = alignment(rate_in, rate_out)
    info = AudioInfo(frames=rate_in * 30, sample_rate_hz=rate_in, channels=1)
    total = rate_out * 30
    for start in (0, 1, 1000, 12345, rate_out * 10 + 17, rate_out * 29, rate_out * 30 - 10):
        chunk = Chunk(first_window=0, num_windows=1, start=start, length=rate_out)
        read = plan_read(chunk, info, rate_out, context)
        assert read.first_frame % period_in == 0
        assert 0 <= read.first_frame <= read.last_frame <= info.frames
        assert read.length == rate_out + 2 * context
        # zeros before the file start, then the samples in the file
        assert read.lead == max(0, context - start)
        wanted = start - context + read.lead
        assert read.valid == min(total, start + rate_out + context) - wanted
        # the read's output origin is the whole file's output (first_frame / period_in) * period_out
        assert wanted - read.offset == read.first_frame // period_in * period_out


def wav_bytes(declared_frames, actual_frames, rate=8000):
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    data = b"\x01\x00" * actual_frames
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", declared_frames * 2) + data)


@pytest.mark.parametrize("name, content, mono, reason", [
    ("missing.wav", None, "mean", "missing"),
    ("empty.wav", b"", "mean", "empty: 0 bytes"),
    ("notes.txt", b"hello", "mean", "unsupported: file extension .txt"),
    ("garbage.wav", b"this is not a wav file at all" * 10, "mean", "not audio: a text file"),
    ("garbage.mp3", b"\x00\x01not an mp3" * 50, "mean", "not audio: not WAV, MP3, FLAC or Ogg Vorbis"),
    ("truncated.wav", wav_bytes(8000, 4000), "mean", "truncated: the header declares 8000 frames, the file holds 4000"),
    ("no_samples.wav", wav_bytes(0, 0), "mean", "empty: the header holds no samples"),
    ("mono.wav", wav_bytes(100, 100), 1, "selects channel 1 but the file has 1 channel"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, name, content, mono, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadAudio, match=reason.replace("(", r"\(").replace(")", r"\)")):
        checked_info(str(path), mono)


def test_a_failing_file_yields_its_problem_for_each_chunk_and_the_stream_goes_on(tmp_path):
    paths = [write(tmp_path / f"{k}.wav", 1.0, 8000, seed=k, subtype="PCM_16") for k in range(4)]
    jobs = jobs_for(paths, 8000, 4000, 2000, 0.5)  # chunks of one window: 3 per file
    (tmp_path / "1.wav").unlink()  # vanishes after planning: its chunks fail to read
    whole = (tmp_path / "2.wav").read_bytes()
    (tmp_path / "2.wav").write_bytes(whole[:len(whole) * 2 // 3])  # cut short after planning
    chunks = streamed(jobs, 8000)
    by_job = [[a for a in chunks if a.job == j] for j in range(4)]
    assert all(a.problem is None and a.peak > 0 for a in by_job[0] + by_job[3])
    assert {str(a.problem) for a in by_job[1]} == {"missing: no such file"}
    assert all(len(a.samples) == 0 for a in by_job[1])
    # the cut file: chunks before the cut are read, then its problem for every remaining chunk
    assert by_job[2][0].problem is None
    failed = [a for a in by_job[2] if a.problem is not None]
    assert failed and failed[0].chunk > 0 and len({id(a.problem) for a in failed}) == 1
    assert failed[0].chunk + len(failed) == len(jobs[2].chunks)
    assert str(failed[0].problem).startswith("truncated: the header declares 8000 frames")


def test_each_file_is_opened_once_and_decoded_front_to_back_once(tmp_path, monkeypatch):
    """No rescans (tensorflow-io's MP3 reader scanned the file's frame headers for every chunk)."""
    opened, reads = [], []

    class Counting(sf.SoundFile):
        def __init__(self, file, *args, **kwargs):
            opened.append(str(file))
            super().__init__(file, *args, **kwargs)

        def read(self, *args, **kwargs):
            start = self.tell()
            out = super().read(*args, **kwargs)
            reads.append((opened[-1], start, len(out)))
            return out

    paths = [write(tmp_path / f"{k}.flac", 3.0, 44100, seed=k, subtype="PCM_16") for k in range(2)]
    jobs = jobs_for(paths, 16000, 8000, 4000, 0.5, context=1000)
    monkeypatch.setattr(sf, "SoundFile", Counting)
    streamed(jobs, 16000, context=1000)
    assert opened == paths and all(len(job.chunks) > 4 for job in jobs)
    for job in jobs:
        # each read goes on where the previous one ended: every frame decoded once, no seeking
        starts, counts = zip(*[(start, count) for path, start, count in reads if path == job.path])
        assert list(starts) == [0, *np.cumsum(counts)[:-1]] and sum(counts) == job.info.frames


def test_chunk_checks_report_silence_and_peak(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(8000, np.float32), 8000)
    loud = write(tmp_path / "loud.wav", 1.0, 8000)
    jobs = [make_job(str(p), checked_info(str(p)), 8000, 4000, 2000, 8) for p in (silent, loud)]
    peaks = [a.peak for a in streamed(jobs, 8000)]
    expected = float(np.abs(sf.read(loud, dtype="float32")[0]).max())
    assert peaks == [0.0, expected]


def test_nan_and_inf_are_zeroed_and_counted_once(tmp_path):
    x = (0.1 * np.random.default_rng(3).standard_normal((3 * 8000, 2))).astype(np.float32)
    bad = [(10, 0), (4000, 1), (8003, 0), (8003, 1), (12000, 1), (23999, 0)]  # some where chunks' reads overlap
    for k, (frame, channel) in enumerate(bad):
        x[frame, channel] = [np.nan, np.inf, -np.inf][k % 3]
    path = str(tmp_path / "nan.wav")
    sf.write(path, x, 8000, subtype="FLOAT")
    jobs = jobs_for([path], 16000, 8000, 4000, 1.0, context=500)
    chunks = streamed(jobs, 16000, context=500)
    assert len(chunks) > 2 and sum(a.non_finite for a in chunks) == len(bad)
    reference = whole_file(path, 16000)
    for audio in chunks:
        assert np.all(np.isfinite(audio.samples))
        np.testing.assert_allclose(audio.samples, expected_chunk(reference, jobs[0].chunks[audio.chunk], 500),
                                   atol=2e-6)
    clean = np.where(np.isfinite(x), x, 0.0)
    assert max(a.peak for a in chunks) == float(np.abs(clean).max())


@pytest.mark.parametrize("subtype, fmt, ext", [
    ("PCM_U8", "WAV", "wav"), ("PCM_16", "WAV", "wav"), ("PCM_24", "WAV", "wav"), ("PCM_32", "WAV", "wav"),
    ("FLOAT", "WAV", "wav"), ("DOUBLE", "WAV", "wav"), ("PCM_24", "WAVEX", "wav"), ("PCM_16", "FLAC", "flac"),
    ("PCM_24", "FLAC", "flac"), ("VORBIS", "OGG", "ogg"), ("MPEG_LAYER_III", "MP3", "mp3"),
])
def test_libsndfile_samples_equal_our_readers(tmp_path, subtype, fmt, ext):
    """chunk_stream reads with libsndfile what the header checks and training read with our own
    readers: the same frames and samples (WAV and FLAC to float rounding, 1e-7; Ogg Vorbis and
    MP3 through other decoders, a few 1e-7 and up to 2e-6 on MP3)."""
    x = np.clip(0.3 * np.random.default_rng(1).standard_normal((12345, 2)), -1, 1).astype(np.float32)
    path = str(tmp_path / f"{subtype}.{ext}")
    sf.write(path, x, 44100, format=fmt, subtype=subtype)
    ours = read_audio(tf.constant(path))[0].numpy()  # [frames, channels]
    theirs = sf.read(path, dtype="float32", always_2d=True)[0]  # [frames, channels]
    assert ours.shape == theirs.shape and checked_info(path).frames == len(theirs)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol={"MP3": 2e-6, "OGG": 5e-7}.get(fmt, 1e-7))


def test_libsndfile_samples_equal_our_readers_on_real_mp3s(shared_data):
    for name in ("ScreamingPiha3.mp3", "ScreamingPiha4.mp3"):  # mono 22,050 Hz, stereo 44,100 Hz
        path = str(shared_data / "piha" / name)
        ours = read_audio(tf.constant(path))[0].numpy()  # [frames, channels]
        theirs = sf.read(path, dtype="float32", always_2d=True)[0]  # [frames, channels]
        assert ours.shape == theirs.shape and checked_info(path).frames == len(theirs)
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-6, err_msg=name)


def test_closing_the_stream_early_ends_its_thread(tmp_path):
    paths = [write(tmp_path / f"{k}.wav", 2.0, 8000, seed=k) for k in range(3)]
    jobs = jobs_for(paths, 8000, 2000, 1000, 0.3)
    before = set(threading.enumerate())
    stream = chunk_stream(jobs, 8000, "mean")
    assert next(stream).chunk == 0
    (thread,) = set(threading.enumerate()) - before
    stream.close()
    assert not thread.is_alive()
    with pytest.raises(StopIteration):
        next(stream)


def test_jobs_planned_with_another_context_are_refused(tmp_path):
    path = write(tmp_path / "a.wav", 1.0, 8000)
    with pytest.raises(ValueError, match="a.wav: its reads were planned with 0 context samples"):
        chunk_stream(jobs_for([path], 8000, 2000, 1000, 0.5), 8000, "mean", context=100)


def test_overview_spectrogram_covers_a_chunks_own_samples():
    y = np.sin(np.arange(20000) * 0.3).astype(np.float32)
    spectrogram = overview_spectrogram(y, 10 * SPECTROGRAM_FRAME + 7, 16000)
    assert spectrogram.shape == (10, SPECTROGRAM_BANDS) and np.all(np.isfinite(spectrogram))
    assert overview_spectrogram(y, 3, 16000).shape == (1, SPECTROGRAM_BANDS)
