"""A folder of broken, damaged-but-readable and good audio files, written by the tests (every kind
of bad input field archives hold, in several formats and containers), with the reason kind each
bad file must be reported under (pipeline.audio.problems)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.wavfiles import _fmt, _riff

RATE = 16000


def _tone(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return np.tile(x[:, None], (1, channels)).astype(np.float32) if channels > 1 else x.astype(np.float32)


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def write_corpus(folder: Path, seconds: float = 1.0) -> dict[str, str | None]:
    """Writes the corpus into `folder`; returns file name -> expected reason kind (None: good,
    must be used). Every name has an audio extension except where the extension is the point."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}
    tone = _tone(seconds)
    data16 = _pcm16(tone)

    def put(name: str, content: bytes, kind: str | None) -> None:
        (folder / name).write_bytes(content)
        expected[name] = kind

    # Good files of many kinds, including damaged-but-readable ones.
    for subtype in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "PCM_U8"):
        sf.write(folder / f"good_{subtype.lower()}.wav", tone, RATE, subtype=subtype)
        expected[f"good_{subtype.lower()}.wav"] = None
    sf.write(folder / "good_stereo.flac", _tone(seconds, channels=2), RATE, format="FLAC")
    expected["good_stereo.flac"] = None
    sf.write(folder / "good.ogg", tone, RATE, format="OGG", subtype="VORBIS")
    expected["good.ogg"] = None
    sf.write(folder / "good.mp3", _tone(seconds, 22050), 22050, format="MP3")
    expected["good.mp3"] = None
    put("good_upper.WAV", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", data16)]), None)
    put("good_list_before_fmt.wav", _riff([(b"LIST", b"INFOISFT\x06\x00\x00\x00test\x00\x00"),
                                           (b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", data16)]), None)
    put("good_riff_size_wrong.wav", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", data16)], riff_size=12), None)
    put("good_streaming_size.wav", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", data16, 0xFFFFFFFF)]), None)
    padded12 = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 12)  # 12-bit samples in 16-bit containers
    put("good_12_in_16.wav", _riff([(b"fmt ", padded12), (b"data", data16)]), None)
    put("good_odd_chunk.wav", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"junk", b"abc"), (b"data", data16)]), None)

    # Unsupported encodings and formats.
    for tag, name in ((6, "alaw"), (7, "mulaw"), (2, "msadpcm"), (0x11, "imaadpcm")):
        put(f"{name}.wav", _riff([(b"fmt ", _fmt(tag, 1, RATE, 8 if tag in (6, 7) else 4)), (b"data", bytes(4000))]),
            "unsupported")
    put("float16.wav", _riff([(b"fmt ", _fmt(3, 1, RATE, 16)), (b"data", bytes(4000))]), "unsupported")
    put("rf64.wav", b"RF64\xff\xff\xff\xffWAVE" + bytes(200), "unsupported")
    put("aiff_named.wav", b"FORM\x00\x00\x10\x00AIFFCOMM" + bytes(200), "unsupported")
    put("opus.ogg", b"OggS" + bytes(24) + b"OpusHead" + bytes(100), "unsupported")
    put("wav_named.mp3", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", data16)]), "unsupported")
    put("recording.m4a", b"\x00\x00\x00\x20ftypM4A " + bytes(200), "unsupported")

    # Damaged headers.
    put("zero_channels.wav", _riff([(b"fmt ", struct.pack("<HHIIHH", 1, 0, RATE, 0, 0, 16)), (b"data", data16)]),
        "damaged")
    put("zero_rate.wav", _riff([(b"fmt ", struct.pack("<HHIIHH", 1, 1, 0, 0, 2, 16)), (b"data", data16)]), "damaged")
    put("zero_bits.wav", _riff([(b"fmt ", struct.pack("<HHIIHH", 1, 1, RATE, 0, 2, 0)), (b"data", data16)]), "damaged")
    put("no_data_chunk.wav", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"LIST", bytes(100))]), "damaged")
    put("no_fmt_chunk.wav", _riff([(b"data", data16)]), "damaged")
    put("short_fmt.wav", _riff([(b"fmt ", bytes(10)), (b"data", data16)]), "damaged")
    put("bad_block_align.wav", _riff([(b"fmt ", struct.pack("<HHIIHH", 1, 2, RATE, RATE * 4, 3, 16)),
                                      (b"data", data16)]), "damaged")

    # Truncated.
    whole = (folder / "good_pcm_16.wav").read_bytes()
    put("truncated_data.wav", whole[: len(whole) // 2], "truncated")
    put("truncated_header.wav", whole[:30], "truncated")

    # Not audio at all.
    put("text.wav", b"This is not a recording, just some notes.\n" * 20, "not audio")
    rng = np.random.default_rng(5)
    for ext in ("wav", "mp3", "flac", "ogg"):
        put(f"random.{ext}", b"\x00\x01" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "not audio")
    put("notes.txt", b"field notes", "unsupported")

    # Damaged compressed streams.
    put("flac_bad_metadata.flac", b"fLaC" + bytes(60), "unreadable")
    good_flac = (folder / "good_stereo.flac").read_bytes()
    put("flac_garbage_frames.flac", good_flac[:200] + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "unreadable")
    put("mp3_garbage.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "unreadable")
    put("ogg_unknown_codec.ogg", b"OggS" + bytes(24) + b"\x7fFLAC" + bytes(100), "unreadable")

    # Empty, silent, corrupt, too short.
    put("empty.wav", b"", "empty")
    put("empty.mp3", b"", "empty")
    put("header_only.wav", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", b"")]), "empty")
    sf.write(folder / "silent.wav", np.zeros(RATE, np.float32), RATE)
    expected["silent.wav"] = "silent"
    nan = tone.copy()
    nan[100:110] = np.nan
    sf.write(folder / "nan.wav", nan, RATE, subtype="FLOAT")
    expected["nan.wav"] = "corrupt"
    put("one_sample.wav", _riff([(b"fmt ", _fmt(1, 1, RATE, 16)), (b"data", b"\x10\x00")]), "too short")
    sf.write(folder / "slow_rate.wav", _tone(seconds, 200), 200)
    expected["slow_rate.wav"] = "out of range"

    # Not files.
    (folder / "directory.wav").mkdir()
    expected["directory.wav"] = "not a file"
    os.symlink(folder / "does_not_exist.wav", folder / "dangling.wav")
    expected["dangling.wav"] = "not a file"
    return expected


# No reason may carry TensorFlow's own error text.
FORBIDDEN = ("Graph execution", "b'", "{{function_node", "Expected '", "Op:", "tf.Tensor")
