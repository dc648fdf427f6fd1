"""Why a file cannot be used, in plain words: one reason per bad file, the same in every command.

A reason is a kind and a detail, written "kind: detail". The kinds:

    missing       no such file
    not a file    a directory, a broken symbolic link, a device
    empty         0 bytes, or a header with no samples
    not audio     text or unrecognised bytes where audio was expected
    unsupported   a real audio format or encoding the readers do not decode (A-law, ADPCM, Opus, AIFF)
    damaged       a header that contradicts itself (0 channels, 0 Hz, no data chunk)
    truncated     fewer bytes than the header declares
    unreadable    a known container whose audio data could not be decoded
    too short     shorter than the run's minimum duration
    silent        every sample zero
    corrupt       NaN or infinite samples
    out of range  sample rate or channel count outside the run's limits

Decoders fail with TensorFlow errors whose text names ops and quotes byte strings; none of that
reaches a report. When a decoder fails, `read_failure` looks at the file itself (path, first
bytes, header fields) and says what is wrong with it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from pipeline.audio.formats import AUDIO_EXTENSIONS, WAV_EXTENSIONS

# Bytes read from the start of a file to recognise its format and parse a WAV header.
HEAD_BYTES = 1 << 16

# WAVE format tags (mmreg.h) users meet in field archives.
WAV_ENCODINGS = {
    0x0001: "PCM", 0x0002: "Microsoft ADPCM", 0x0003: "IEEE float", 0x0006: "A-law", 0x0007: "mu-law",
    0x0011: "IMA ADPCM", 0x0022: "TrueSpeech", 0x0031: "GSM 6.10", 0x0040: "G.721 ADPCM", 0x0050: "MPEG",
    0x0055: "MPEG Layer 3", 0x0161: "Windows Media Audio", 0xFFFE: "extensible",
}
CONVERT = "convert it to 16-bit PCM WAV or FLAC"
# The columns of every bad-file report (bad_files.csv).
REPORT_COLUMNS = ["file", "reason"]


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def path_problem(path: str | os.PathLike) -> Optional[Problem]:
    """Why a path holds no file to read (missing, not a regular file, 0 bytes), or None."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        return Problem("not a file", f"broken symbolic link to {os.readlink(p)}")
    if not p.exists():
        return Problem("missing", "no such file")
    if p.is_dir():
        return Problem("not a file", "a directory")
    if not p.is_file():
        return Problem("not a file", "a device or special file")
    if p.stat().st_size == 0:
        return Problem("empty", "0 bytes")
    if not os.access(p, os.R_OK):
        return Problem("unreadable", "permission denied")
    return None


def read_head(path: str | os.PathLike, size: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def container(head: bytes) -> str:
    """The format the first bytes announce: wav, rf64, mp3, flac, vorbis, opus, ogg, aiff, text or
    unknown."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "rf64"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] >> 5 == 7):
        return "mp3"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        if head[28:35] == b"\x01vorbis":
            return "vorbis"
        return "opus" if head[28:36] == b"OpusHead" else "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    sample = head[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "text"
    return "unknown"


_NAMES = {"wav": "WAV", "rf64": "RF64", "mp3": "MP3", "flac": "FLAC", "vorbis": "Ogg Vorbis",
          "opus": "Ogg Opus", "ogg": "Ogg", "aiff": "AIFF"}
# The container each extension's reader expects.
_EXPECTED = {**{e: "wav" for e in WAV_EXTENSIONS}, "mp3": "mp3", "flac": "flac", "ogg": "vorbis", "oga": "vorbis"}


def _opening(head: bytes) -> str:
    text = head[:8].decode("ascii", errors="replace")
    if all(32 <= b < 127 for b in head[:8]):
        return f'starts with "{text}"'
    return "starts with bytes " + " ".join(f"{b:02x}" for b in head[:8])


def content_problem(path: str | os.PathLike, head: bytes) -> Optional[Problem]:
    """Why a file's first bytes are not what its extension's reader takes, or None when they are."""
    ext = Path(path).suffix.lower().lstrip(".")
    found = container(head)
    if "." + ext not in AUDIO_EXTENSIONS:
        return Problem("unsupported", f"file extension .{ext or '(none)'} (expected one of "
                                      f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
    if found == "text":
        return Problem("not audio", f"a text file ({_opening(head)})")
    if found == "unknown":
        return Problem("not audio", f"not WAV, MP3, FLAC or Ogg Vorbis ({_opening(head)})")
    if found in ("rf64", "aiff", "opus"):
        return Problem("unsupported", f"{_NAMES[found]} audio; {CONVERT}")
    if found == "ogg":
        return Problem("unreadable", f"Ogg stream without a Vorbis header (damaged, or a codec the readers do "
                                     f"not take; {CONVERT})")
    if found != _EXPECTED[ext]:
        right = {"wav": ".wav", "mp3": ".mp3", "flac": ".flac", "vorbis": ".ogg"}[found]
        return Problem("unsupported", f"{_NAMES[found]} data in a .{ext} file; rename it to {right}")
    return None


def wav_problem(fields: dict, size: int) -> Optional[Problem]:
    """Why a WAV header (pipeline.audio.wav.wav_header_fields of the file's first bytes; `size`:
    the whole file's bytes) cannot be decoded, or None."""
    if not fields["is_riff"]:
        return Problem("not audio", "not a RIFF/WAVE file")
    if not fields["has_fmt"]:
        if size < 44:
            return Problem("truncated", f"only {size} bytes, the WAV header is cut short")
        return Problem("damaged", "the WAV file has no fmt chunk")
    if fields["fmt_offset"] + min(fields["fmt_bytes"], 16) > size:
        return Problem("truncated", f"only {size} bytes, the WAV header is cut short")
    if fields["fmt_bytes"] < 16:
        return Problem("damaged", f"the WAV fmt chunk is {fields['fmt_bytes']} bytes, shorter than 16")
    for name, label in (("channels", "channels"), ("sample_rate_hz", "Hz sample rate"), ("declared_bits", "bits per sample")):
        if fields[name] == 0:
            return Problem("damaged", f"the WAV header gives 0 {label}")
    if not fields["layout"]:
        tag, bits = fields["format"], fields["declared_bits"]
        name = WAV_ENCODINGS.get(tag, "unknown encoding")
        width = f" {bits}-bit" if tag in (1, 3) else ""
        return Problem("unsupported", f"WAV encoding {name}{width} (format tag {tag}); {CONVERT}")
    if not fields["consistent"]:
        return Problem("damaged", f"the WAV header's block size ({fields['block_align']} bytes) does not fit "
                                  f"{fields['channels']} channel(s) of {fields['declared_bits']} bits")
    if not fields["has_data"]:
        if size <= len(b"RIFF") + 8 + fields["fmt_bytes"] + 16:
            return Problem("truncated", f"only {size} bytes, the WAV file ends before its data chunk")
        return Problem("damaged", "the WAV file has no data chunk")
    return wav_truncation(fields["declared_data_bytes"], size - fields["data_offset"], fields["block_align"])


def wav_truncation(declared_bytes: int, available_bytes: int, block_align: int) -> Optional[Problem]:
    """Why a WAV data chunk is cut short (it declares more bytes than the file holds), or None."""
    block = max(block_align, 1)
    # 0xFFFFFFFF: streaming writers that never patched the size; not a truncation.
    if declared_bytes > available_bytes + 1 and declared_bytes != 0xFFFFFFFF:
        return Problem("truncated", f"the header declares {declared_bytes // block} frames, "
                                    f"the file holds {max(available_bytes, 0) // block}")
    return None


def flac_problem(head: bytes) -> Optional[Problem]:
    """Why a FLAC stream's STREAMINFO block is unusable, or None."""
    if len(head) < 8 + 34 or head[4] & 0x7F != 0:
        return Problem("unreadable", "FLAC stream (bad metadata: no STREAMINFO block)")
    info = head[8:8 + 34]
    rate = int.from_bytes(info[10:13], "big") >> 4
    channels = ((info[12] >> 1) & 0x7) + 1
    if rate == 0:
        return Problem("unreadable", f"FLAC stream (bad metadata: sample rate 0 Hz, {channels} channel(s))")
    return None


def read_failure(path: str | os.PathLike, at_s: Optional[float] = None) -> Problem:
    """The reason for a decoder failure on `path`, found by looking at the file itself.

    `at_s`: where in the file the failing read started (detection chunks), said in the detail
    when the file's start looks fine.
    """
    problem = path_problem(path)
    if problem is not None:
        return problem
    try:
        head = read_head(path)
    except OSError as err:
        return Problem("unreadable", err.strerror or "cannot be opened")
    problem = content_problem(path, head)
    if problem is not None:
        return problem
    found = container(head)
    if found == "wav":
        from pipeline.audio.wav import wav_header_fields  # TensorFlow: only once a decoder has failed
        problem = wav_problem(wav_header_fields(head), Path(path).stat().st_size)
    elif found == "flac":
        problem = flac_problem(head)
    if problem is not None:
        return problem
    where = f" at {at_s:.1f} s" if at_s else ""
    what = {"wav": "WAV sample data", "mp3": "MP3 stream (no decodable MPEG audio frames)",
            "flac": "FLAC stream (damaged or truncated audio frames)",
            "vorbis": "Ogg Vorbis stream (damaged or truncated)"}[found]
    return Problem("unreadable", f"{what}{where}")


def no_samples() -> Problem:
    return Problem("empty", "the header holds no samples")


def sample_problem(non_finite: int, peak: float) -> Optional[Problem]:
    """Why a file's decoded samples are unusable (NaN/Inf, all zero), or None."""
    if non_finite > 0:
        return Problem("corrupt", f"{non_finite} NaN/Inf samples")
    if peak == 0.0:
        return Problem("silent", "every sample is zero")
    return None


def duration_problem(frames: int, rate: int, min_duration_s: float) -> Optional[Problem]:
    """Why a file is too short for the run, or None."""
    if frames / rate >= min_duration_s:
        return None
    length = f"{frames} sample{'s' if frames != 1 else ''}" if frames < 100 else f"{frames / rate:.3f} s"
    return Problem("too short", f"{length} (minimum {min_duration_s:g} s)")


def limit_problem(rate: int, channels: int, min_rate_hz: int, max_rate_hz: int,
                  max_channels: int) -> Optional[Problem]:
    """Why a file's sample rate or channel count is outside the limits, or None."""
    if not min_rate_hz <= rate <= max_rate_hz:
        return Problem("out of range", f"sample rate {rate} Hz outside {min_rate_hz}..{max_rate_hz} Hz")
    if channels > max_channels:
        return Problem("out of range", f"{channels} channels, more than {max_channels}")
    return None


def mono_problem(mono: str | int, channels: int) -> Optional[Problem]:
    """Why the audio.mono rule cannot apply to a file with `channels` channels, or None."""
    if mono != "mean" and mono >= channels:
        return Problem("out of range", f"audio.mono {mono!r} selects channel {mono} but the file has "
                                       f"{channels} channel(s)")
    return None


def summarize(reasons: list[str], total: int, report: Optional[str] = None) -> str:
    """One console line for a bad-file report: counts by kind."""
    if not reasons:
        return f"checked {total} files: all usable"
    kinds: dict[str, int] = {}
    for reason in reasons:
        kind = reason.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    where = f" (listed in {report})" if report else ""
    return f"checked {total} files: {len(reasons)} bad and left out: {parts}{where}"

