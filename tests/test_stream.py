"""Streaming reads: chunked windows equal whole-file windows; bad files are named, not fatal."""
import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from pipeline.audio import resample as resample_lib
from pipeline.audio.read import read_audio, to_mono
from pipeline.audio.info import AudioInfo, BadAudio, checked_info
from pipeline.detection.plan import Chunk, alignment, make_job, num_windows, plan_read, windows_per_chunk
from pipeline.detection.stream import window_dataset


def whole_file_windows(path: str, rate_out: int, mono: str, window: int, hop: int) -> np.ndarray:
    """Windows [num_windows, window] of a file decoded, resampled and framed at once: the
    reference the streamed windows must equal."""
    samples, rate = read_audio(tf.constant(str(path)))
    y = resample_lib.resample(to_mono(samples, mono), rate, rate_out).numpy()
    count = num_windows(len(y), window, hop)
    padded = np.zeros((count - 1) * hop + window, np.float32)
    padded[: len(y)] = y
    return tf.signal.frame(padded, window, hop).numpy()


def write(path, seconds, rate, channels=1, seed=0, subtype="FLOAT"):
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    sf.write(str(path), x, rate, subtype=subtype)
    return str(path)


def streamed(paths, rate_out, window, hop, chunk_s, mono="mean"):
    jobs = [make_job(p, checked_info(p, mono), rate_out, window, hop, windows_per_chunk(chunk_s, rate_out, window, hop))
            for p in paths]
    out = {j: [] for j in range(len(jobs))}
    for element in window_dataset(jobs, rate_out, mono, window, hop):
        out[int(element["job"])].append(element["windows"].numpy())
    return jobs, [np.concatenate(out[j]) for j in range(len(jobs))]


@pytest.mark.parametrize("rate_out, inputs", [
    # (rate_in, channels): down by a non-integer ratio (stereo), up, equal, an approximated
    # ratio (81,920 -> 22,050 Hz), and decimation first (96,000 -> 16,000 Hz)
    (22050, [(48000, 2), (16000, 1), (22050, 1), (81920, 1)]),
    (16000, [(96000, 1), (44100, 2)]),
])
def test_streamed_windows_equal_whole_file_windows(tmp_path, rate_out, inputs):
    window, hop = int(0.3 * rate_out), int(0.1 * rate_out) + 7  # hop not dividing anything
    paths = [write(tmp_path / f"in_{rate}.wav", 2.37, rate, channels, seed=rate) for rate, channels in inputs]
    jobs, got = streamed(paths, rate_out, window, hop, chunk_s=0.5)
    for path, job, windows in zip(paths, jobs, got):
        assert len(job.chunks) > 3  # windows cross several chunk boundaries
        reference = whole_file_windows(path, rate_out, "mean", window, hop)
        assert windows.shape == reference.shape
        np.testing.assert_allclose(windows, reference, atol=2e-6, err_msg=path)
        # the last window is kept, zero-padded past the end of the file
        last = job.chunks[-1]
        assert np.all(windows[-1, job.reads[-1].valid - (last.num_windows - 1) * hop:] == 0)


def test_streamed_mp3_equals_whole_file(shared_data):
    path = str(shared_data / "piha" / "ScreamingPiha3.mp3")  # 22,050 Hz mono MP3, 7 s
    _, (windows,) = streamed([path], 16000, 16000, 4000, chunk_s=2.0)
    np.testing.assert_allclose(windows, whole_file_windows(path, 16000, "mean", 16000, 4000), atol=2e-6)


@pytest.mark.parametrize("rate_in, rate_out", [(48000, 22050), (16000, 22050), (81920, 22050), (96000, 16000),
                                               (22050, 22050)])
def test_plan_read_starts_on_the_resampler_period_and_covers_the_chunk(rate_in, rate_out):
    period_in, period_out = alignment(rate_in, rate_out)
    info = AudioInfo(frames=rate_in * 30, sample_rate_hz=rate_in, channels=1)
    for start in (0, 1, 12345, rate_out * 10 + 17, rate_out * 29):
        chunk = Chunk(first_window=0, num_windows=1, start=start, length=rate_out)
        read = plan_read(chunk, info, rate_out)
        assert read.first_frame % period_in == 0
        assert 0 <= read.first_frame <= read.last_frame <= info.frames
        # the read's output origin is the whole file's output (first_frame / period_in) * period_out
        assert start - read.offset == read.first_frame // period_in * period_out
        assert read.valid == min(rate_out, rate_out * 30 - start)


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


def test_a_failing_chunk_raises_at_its_element_and_the_stream_goes_on(tmp_path):
    paths = [write(tmp_path / f"{k}.wav", 1.0, 8000, seed=k, subtype="PCM_16") for k in range(3)]
    jobs = [make_job(p, checked_info(p), 8000, 4000, 2000, 2) for p in paths]
    (tmp_path / "1.wav").unlink()  # vanishes after planning: its chunks fail to read
    got, errors = [], 0
    stream = iter(window_dataset(jobs, 8000, "mean", 4000, 2000))
    for _ in range(sum(len(j.chunks) for j in jobs)):
        try:
            got.append(int(next(stream)["job"]))
        except tf.errors.OpError:
            errors += 1
    assert errors == len(jobs[1].chunks) and set(got) == {0, 2}


def test_chunk_checks_report_silence_and_peak(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(8000, np.float32), 8000)
    loud = write(tmp_path / "loud.wav", 1.0, 8000)
    jobs = [make_job(str(p), checked_info(str(p)), 8000, 4000, 2000, 8) for p in (silent, loud)]
    peaks = [float(e["peak"]) for e in window_dataset(jobs, 8000, "mean", 4000, 2000)]
    assert peaks[0] == 0.0 and peaks[1] > 0.1
