"""Which files are audio: the extensions every command reads, and how a path picks its decoder."""
from __future__ import annotations

import re
from pathlib import Path

WAV_EXTENSIONS = ("wav", "wave")
# Decoded through tensorflow-io (pipeline.audio.compressed).
COMPRESSED_EXTENSIONS = ("mp3", "flac", "ogg", "oga")
AUDIO_EXTENSIONS = frozenset("." + e for e in WAV_EXTENSIONS + COMPRESSED_EXTENSIONS)

# A path whose last component has a WAV extension (any case): in graphs one static regex match
# picks the WAV decoder (pipeline.audio.read).
WAV_PATH_REGEX = r"(?i).*\.(?:" + "|".join(map(re.escape, WAV_EXTENSIONS)) + ")"


def is_wav_path(path: str) -> bool:
    """Whether the readers take `path` for a WAV file (its extension, any case)."""
    return re.fullmatch(WAV_PATH_REGEX, str(path)) is not None


def is_audio_path(path: str) -> bool:
    """Whether `path` has one of AUDIO_EXTENSIONS (any case)."""
    name = str(path).rsplit("/", 1)[-1]
    return "." in name and "." + name.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS


# Audio formats the readers do not take: listed (and reported) where a folder is searched for
# audio, never skipped silently.
OTHER_AUDIO_EXTENSIONS = frozenset({
    ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".m4a", ".mp4", ".aac", ".wma",
    ".opus", ".amr", ".3gp", ".webm", ".mka", ".spx", ".wv", ".ape", ".mp2",
})


def find_audio(folder: Path, pattern: str, every_file: bool = False) -> list[str]:
    """Entries of `folder` matching the glob `pattern`, sorted, that are or should be audio: every
    name with an audio extension, whatever it is (a directory or a broken link named x.wav is
    listed, for its check to say what it is), names of audio formats the readers do not take,
    and with `every_file` every other file too. Folders without an audio name are not listed."""
    found = []
    for path in Path(folder).glob(pattern):
        suffix = path.suffix.lower()
        if suffix in AUDIO_EXTENSIONS:
            found.append(path)
        elif (path.is_file() or path.is_symlink()) and (every_file or suffix in OTHER_AUDIO_EXTENSIONS):
            found.append(path)
    return sorted(str(p) for p in found)
