"""Read any supported audio file in graph: dispatch on the path's extension, and mix down to mono.

``read_audio`` decodes a whole file; ``read_audio_range`` only a window of it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from pipeline.audio import compressed as tfio_audio
from pipeline.audio import wav
from pipeline.audio.formats import COMPRESSED_EXTENSIONS, WAV_EXTENSIONS, WAV_PATH_REGEX



def _extension(path: tf.Tensor) -> tf.Tensor:
    """Lower-case extension of the path's last component without the dot; '' when there is none."""
    name = tf.strings.regex_replace(path, r"^.*[/\\]", "")
    return tf.strings.lower(tf.strings.regex_replace(name, r"^[^.]*$|^.*\.([^.]*)$", r"\1"))


def _one_of(ext: tf.Tensor, choices: tuple[str, ...]) -> tf.Tensor:
    return tf.reduce_any(tf.equal(ext, tf.constant(choices)))


def _checked_compressed(path: tf.Tensor) -> tf.Tensor:
    """`path`, made to depend on a check that its extension is a compressed format.

    Every op of a decoder that uses the returned path depends on the check, so none runs (the
    file is not even read) when it fails; no cond needed.
    """
    ext = _extension(path)
    compressed = _one_of(ext, COMPRESSED_EXTENSIONS)
    check = tf.debugging.Assert(
        bool(compressed) if tf.executing_eagerly() else compressed,
        ["unsupported audio file extension", ext, "(expected one of",
         ", ".join(WAV_EXTENSIONS + COMPRESSED_EXTENSIONS), ") file:", path])
    with tf.control_dependencies([check]):
        return tf.identity(path)


def _read_other(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """read_audio for a path whose extension is not a WAV one: compressed, or an error."""
    path = _checked_compressed(path)
    samples, rate = tfio_audio.decode_compressed(path)
    return tf.ensure_shape(samples, [None, None]), rate


# In graphs the non-WAV path is one call node that is not inlined: for WAV files its nodes (the
# tfio decoders and their dispatch) are never visited, where inlined into the untaken branch they
# would each be passed a dead tensor for every file.
_read_other_call = tf.function(_read_other, input_signature=[tf.TensorSpec([], tf.string)], autograph=False,
                               experimental_attributes={"_noinline": True})

def _not_wav_range(path: tf.Tensor, *_) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The non-WAV branch of a reader built with compressed=False (no tensorflow-io ops, whose
    locks keep a graph from being serialized): a check that fails naming the file."""
    check = tf.debugging.Assert(False, ["not a WAV file, for a reader built for WAV only:", path])
    with tf.control_dependencies([check]):
        return tf.zeros([0, 1]), tf.constant(0, tf.int32), tf.constant(0, tf.int64)


def _not_wav(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return _not_wav_range(path)[:2]


def read_audio(path: tf.Tensor, compressed: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """Scalar tf.string path -> (float32 [frames, channels] in [-1, 1), sample rate int32 scalar).

    ``.wav``/``.wave`` (any case) go through :mod:`pipeline.audio.wav`; ``.mp3``, ``.flac``, ``.ogg`` and
    ``.oga`` through :mod:`pipeline.audio.compressed`. Any other extension raises InvalidArgumentError
    naming the path and the extension. Works eagerly and inside ``tf.data.Dataset.map``.
    ``compressed=False`` builds a WAV-only reader: no tensorflow-io ops, so a smaller graph that
    tf.data service can serialize; a non-WAV path then raises InvalidArgumentError naming it.
    """
    path = tf.convert_to_tensor(path, tf.string)
    other = _read_other if tf.executing_eagerly() else _read_other_call
    if not compressed:
        other = _not_wav
    samples, rate = tf.cond(tf.strings.regex_full_match(path, WAV_PATH_REGEX),
                            lambda: wav.decode_wav(tf.io.read_file(path), path), lambda: other(path))
    return tf.ensure_shape(samples, [None, None]), rate


def to_mono(samples: tf.Tensor, rule: str | int) -> tf.Tensor:
    """[frames, channels] -> [frames].

    ``rule`` is "mean" (average of the channels) or a channel index (audio.mono); an index the
    file does not have raises InvalidArgumentError naming the rule.
    """
    samples = tf.convert_to_tensor(samples)
    if rule == "mean":
        return tf.reduce_mean(samples, axis=1)  # [frames]
    if isinstance(rule, bool) or not isinstance(rule, int) or rule < 0:
        raise ValueError(f"mono rule must be 'mean' or a channel index >= 0, got {rule!r}")
    channel = rule
    channels = tf.shape(samples)[1]
    check = tf.debugging.Assert(
        channel < channels,
        [f"mono rule {rule} selects channel {channel} but the audio has", channels, "channel(s)"])
    with tf.control_dependencies([check]):
        index = tf.identity(channel)
    return tf.gather(samples, index, axis=1)  # [frames]


# ---------------------------------------------------------------------------------------------
# Ranged reads: decode only the frames of a window


def _frame_range(start_s: tf.Tensor, end_s: tf.Tensor) -> Callable[[tf.Tensor, tf.Tensor], tuple]:
    """(rate, frames) -> (first, last) int64: [round(start_s * rate), round(end_s * rate)) clipped to [0, frames].

    Rounding is tf.round's (half to even, as Python's round). NaN start means 0, NaN end the end
    of the file; last is never below first.
    """
    def frame_range(rate, frames):
        rate = tf.cast(rate, tf.float64)
        n = tf.cast(frames, tf.float64)
        first = tf.where(tf.math.is_nan(start_s), tf.zeros([], tf.float64), start_s * rate)
        last = tf.where(tf.math.is_nan(end_s), n, end_s * rate)
        # Clipped as floats (inf and huge values stay in range), then rounded: n is an integer.
        first = tf.round(tf.clip_by_value(first, 0.0, n))
        last = tf.round(tf.clip_by_value(last, first, n))
        return tf.cast(first, tf.int64), tf.cast(last, tf.int64)
    return frame_range


# WAV headers are read from the first _WAV_HEAD bytes; the fmt and data chunk headers must lie in
# them within the first _WAV_HEAD_CHUNKS chunks, or the whole file is read instead.
_WAV_HEAD = 8192
_WAV_HEAD_CHUNKS = 8  # 1 + 1 + 2 + 4: three pointer doublings
_FOURCC = {tag: int.from_bytes(tag, "little") for tag in (b"RIFF", b"WAVE", b"fmt ", b"data")}


def _head_has_chunks(head: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Whether the RIFF chunk list of ``head`` (the file's first n <= _WAV_HEAD bytes) reaches both
    the fmt and the data chunk headers, and the fmt chunk's first 26 bytes, within its first
    _WAV_HEAD_CHUNKS chunks and n bytes. Then parse_wav_header(head) finds what it would find in
    the whole file. Never fails (no asserts): False sends the file to the full read, which also
    reports malformed files.

    No loop: a "next chunk header" pointer for every even offset of the head, followed by pointer
    doubling (a few vector ops over 4096 entries; an unrolled walk costs ~4x the graph nodes).
    """
    words = _WAV_HEAD // 2  # chunk headers start at even offsets: word k is byte 2k
    # u32[k]: the little-endian uint32 at byte 2k (zero padded past n).
    at0 = tf.io.decode_raw(head, tf.int32, fixed_length=_WAV_HEAD)  # bytes 0, 4, 8, ...
    at2 = tf.io.decode_raw(tf.strings.substr(head, tf.minimum(n, 2), _WAV_HEAD), tf.int32, fixed_length=_WAV_HEAD)
    u32 = tf.bitwise.bitwise_and(tf.cast(tf.reshape(tf.stack([at0, at2], 1), [-1]), tf.int64), 0xFFFFFFFF)
    sizes = tf.gather(u32, np.minimum(np.arange(words) + 2, words - 1))  # size field of a header at word k
    # The next header's word (chunks are word aligned), or `words` (a sentinel) past the head.
    following = tf.concat([tf.minimum((sizes + 1) // 2 + np.arange(4, words + 4), words), [words]], 0)
    chain = tf.constant([6], tf.int64)  # the first chunk header is at byte 12
    for step in (1, 2, 4):  # chain = the first 2, 4, 8 chunk headers
        chain = tf.concat([chain, tf.gather(following, chain)], 0)
        if step < 4:
            following = tf.gather(following, following)
    at = tf.minimum(chain, words - 1)
    ids, chunk_sizes = tf.gather(u32, at), tf.gather(sizes, at)
    # The whole 8-byte header is in the head. Positions only grow, so after the first absent header
    # all are absent: the present ones are the chunks a walk through the head reaches.
    present = 2 * chain + 8 <= n
    is_fmt = tf.logical_and(present, tf.equal(ids, _FOURCC[b"fmt "]))
    is_data = tf.logical_and(present, tf.equal(ids, _FOURCC[b"data"]))
    fmt_fits = tf.logical_or(tf.logical_not(is_fmt), 2 * chain + 8 + tf.minimum(chunk_sizes, 26) <= n)
    riff = tf.reduce_all(tf.equal(tf.gather(u32, [0, 4]), [_FOURCC[b"RIFF"], _FOURCC[b"WAVE"]]))
    found = tf.reduce_all(tf.reduce_any(tf.stack([is_fmt, is_data]), axis=1))
    return tf.logical_and(tf.logical_and(riff, found), tf.reduce_all(fmt_fits))


def _read_wav_range_full(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor) -> tuple:
    """_read_wav_range by decoding the whole file (headers the ranged path cannot follow)."""
    samples, rate = wav.decode_wav(tf.io.read_file(path), path)
    first, last = _frame_range(start_s, end_s)(rate, tf.shape(samples, out_type=tf.int64)[0])
    return samples[first:last], rate, first


_read_wav_range_full_call = tf.function(
    _read_wav_range_full, autograph=False, experimental_attributes={"_noinline": True},
    input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float64)])


def _read_wav_range(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor) -> tuple:
    """read_audio_range for a WAV: the header from the first bytes, then only the window's bytes."""
    size = tfio_audio.file_size(path)
    n = tf.minimum(size, _WAV_HEAD)
    head = tfio_audio.read_bytes(path, 0, n)

    def ranged():
        header = wav.parse_wav_header(head, path)
        offset, block = header["data_offset"], header["block_align"]
        # The frames in the whole file, as parse_wav_header counts them in the whole contents.
        frames = tf.maximum(tf.minimum(header["declared_data_bytes"], size - offset), 0) // tf.maximum(block, 1)
        first, last = _frame_range(start_s, end_s)(header["sample_rate_hz"], frames)
        data = tfio_audio.read_bytes(path, offset + first * block, (last - first) * block)
        return wav.decode_wav_samples(data, header), tf.cast(header["sample_rate_hz"], tf.int32), first

    full = _read_wav_range_full if tf.executing_eagerly() else _read_wav_range_full_call
    # A file shorter than the head is all in it; parse_wav_header then sees the whole file.
    complete = tf.logical_or(n >= size, _head_has_chunks(head, n))
    return tf.cond(complete, ranged, lambda: full(path, start_s, end_s))


def _read_other_range(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor) -> tuple:
    """read_audio_range for a path whose extension is not a WAV one: compressed, or an error."""
    path = _checked_compressed(path)
    # Windows of one file read at the same time should go to different readers (tfio_audio).
    key = tf.strings.join([path, tf.strings.as_string(tf.bitcast(start_s, tf.int64))], "@")
    samples, rate, first = tfio_audio.read_compressed_range(path, _frame_range(start_s, end_s), key)
    return tf.ensure_shape(samples, [None, None]), rate, first


_read_other_range_call = tf.function(
    _read_other_range, autograph=False, experimental_attributes={"_noinline": True},
    input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float64)])


def read_audio_range(path: tf.Tensor, start_s: tf.Tensor, end_s: tf.Tensor,
                     compressed: bool = True) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode only the window [start_s, end_s) (seconds from the file start) of an audio file.

    ``start_s``/``end_s``: float64 scalars (Python floats are taken as float64; other float
    tensors are cast). Returns (float32 [frames, channels], sample rate int32, first int64): the
    frames [round(start_s * rate), round(end_s * rate)) clipped to the file, and the index of
    the first one. They are exactly ``read_audio(path)[0][first:first + frames]``: a window past
    the end gives 0 frames, an end past the end is clipped, an end before the start gives 0
    frames; a NaN start means 0 and a NaN end the end of the file. Rounding is half to even
    (tf.round), as in ``pipeline.datasets.clips.load_clip``.

    What is read:
    - WAV: the first 8 KiB for the header, then only the window's bytes (tfio's ranged file
      read, whose offset costs nothing). A WAV whose fmt and data chunk headers are not among
      the first 8 chunks within those 8 KiB is read and decoded whole, with the same result.
    - MP3 / FLAC / Ogg Vorbis: tfio's audio reader opens the file (for MP3 without a Xing
      header it scans the frame headers), seeks to the window and decodes it and a little
      before it (MP3: the frames the bit reservoir needs): the same samples as the full decode
      (see pipeline.audio.compressed, which also explains why at most 4 such decodes run at once).
      A truncated FLAC, or an MP3 whose Xing header promises more frames than present, fails
      in read_audio; here a window within the part present is returned (the same samples as
      the intact file), one reaching past it fails the same way.

    Errors otherwise as ``read_audio`` (unsupported extension, malformed or unsupported files,
    missing file; ``compressed=False`` as there). Works eagerly and inside ``tf.data.Dataset.map``.
    """
    path = tf.convert_to_tensor(path, tf.string)
    # Python floats become float64 directly (tf.cast would go through float32).
    start_s = tf.cast(tf.convert_to_tensor(start_s, dtype_hint=tf.float64), tf.float64)
    end_s = tf.cast(tf.convert_to_tensor(end_s, dtype_hint=tf.float64), tf.float64)
    other = _read_other_range if tf.executing_eagerly() else _read_other_range_call
    if not compressed:
        other = _not_wav_range
    samples, rate, first = tf.cond(tf.strings.regex_full_match(path, WAV_PATH_REGEX),
                                   lambda: _read_wav_range(path, start_s, end_s),
                                   lambda: other(path, start_s, end_s))
    return tf.ensure_shape(samples, [None, None]), rate, first
