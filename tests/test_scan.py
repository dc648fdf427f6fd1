"""A corpus of broken files is reported file by file while the good ones flow through."""
import numpy as np
import pytest
import soundfile as sf

from pipeline.records.scan import BadFileError, Limits, check_file, scan_files, summarize

SR = 8000


@pytest.fixture
def corpus(tmp_path):
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    files = {}

    def add(name, reason):
        files[str(tmp_path / name)] = reason

    sf.write(tmp_path / "good.wav", tone, SR, subtype="PCM_16")
    add("good.wav", None)
    sf.write(tmp_path / "good24.flac", tone, SR, subtype="PCM_24")
    add("good24.flac", None)
    (tmp_path / "empty.wav").write_bytes(b"")
    add("empty.wav", "empty")
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    add("garbage.wav", "not audio")
    whole = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    add("truncated.wav", "truncated")
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    add("silent.wav", "silent")
    bad = tone.copy()
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, SR, subtype="FLOAT")
    add("nan.wav", "corrupt")
    sf.write(tmp_path / "short.wav", tone[:80], SR)
    add("short.wav", "too short")
    sf.write(tmp_path / "slow.wav", tone, 500)
    add("slow.wav", "sample rate")
    sf.write(tmp_path / "wide.wav", np.tile(tone[:, None], (1, 20)), SR)
    add("wide.wav", "20 channels")
    (tmp_path / "notes.ogg").write_bytes(b"OggS" + b"\0" * 100)
    add("notes.ogg", "unreadable")
    add("missing.wav", "missing")
    return files


def test_each_bad_file_named_with_its_reason(corpus):
    limits = Limits(min_duration_s=0.05, min_sample_rate_hz=1000, max_channels=8)
    info, bad = scan_files(corpus, limits)
    assert sorted(info["file"]) == sorted(f for f, r in corpus.items() if r is None)
    reasons = dict(zip(bad["file"], bad["reason"]))
    for path, expected in corpus.items():
        if expected is not None:
            assert expected in reasons[path], (path, reasons.get(path))
    good = info.set_index("file").loc[[f for f in corpus if f.endswith("good.wav")][0]]
    assert good["sample_rate_hz"] == SR and good["frames"] == SR and good["duration_s"] == 1.0
    line = summarize(bad, len(corpus))
    assert f"{len(bad)} bad" in line and "truncated" in line


def test_fail_fast_stops_at_the_first_bad_file(corpus):
    with pytest.raises(BadFileError, match="empty.wav|garbage.wav|truncated.wav"):
        scan_files(corpus, Limits(), fail_fast=True)


def test_a_good_file_passes(tmp_path):
    sf.write(tmp_path / "a.wav", np.full(400, 0.1, np.float32), SR)
    info, reason = check_file(str(tmp_path / "a.wav"), Limits())
    assert reason is None and info["frames"] == 400
