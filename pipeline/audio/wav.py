"""WAV (RIFF/WAVE) decoding with TensorFlow graph ops only.

Works eagerly and inside ``tf.data.Dataset.map``. ``tf.audio.decode_wav`` is not used because it
reads 16-bit PCM only and rejects files with chunks it does not expect; here the RIFF chunk list
is walked with a small ``tf.while_loop`` and the samples are decoded with one vectorised
``tf.io.decode_raw`` over the data region.

Supported: PCM 8 (unsigned), 16, 24 and 32 bit; IEEE float 32 and 64 bit; WAVE_FORMAT_EXTENSIBLE
carrying either. Not supported (clear error): compressed formats (ADPCM, A-law, mu-law, ...), RF64.

Speed. In a tf.data map (TF 2.17, 2 cores) the decoding arithmetic is cheap (~30 us for a 100 KB
file); what costs is the graph: every node that runs, or is merely passed a dead tensor in an
untaken branch of a lowered cond, costs ~0.3-1 us per file, a while-loop iteration ~40 us, and
every node (constants included) and function costs another ~0.1 ms each time tf.data creates an
iterator, i.e. every epoch, because Grappler and function instantiation run again. Hence:

- ``decode_wav`` first checks for the canonical 44-byte header of valid 16-bit PCM ('fmt ' at
  byte 12, 'data' at 36): one ``decode_raw`` of the first 44 bytes, one ``einsum`` mapping them
  to the header fields and one range check. Such files are decoded right there (substr,
  decode_raw, cast, scale). Everything else goes to ``_decode_wav_general`` through one
  non-inlined call node, so the general parser's nodes never run for canonical files.
- The general parser has no ``tf.cond``/``tf.switch_case``: the chunk walk is one
  ``tf.while_loop``, the checks are plain ``Assert`` ops (``tf.debugging.Assert`` wraps each in a
  cond when its values are int64), the six sample decoders all run, each on its own ``substr``
  that is empty unless its layout is the file's, and scalar constants come from one unstacked
  vector per dtype.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

FORMAT_PCM = 1
FORMAT_FLOAT = 3
FORMAT_EXTENSIBLE = 0xFFFE

# A chunk list longer than this is not a WAV anyone records; the bound keeps garbage input finite.
_MAX_CHUNKS = 1024

_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))

# (format tag, bits per sample) in the order of the decoders in _decode_layouts.
_LAYOUTS = ((FORMAT_PCM, 8), (FORMAT_PCM, 16), (FORMAT_PCM, 24), (FORMAT_PCM, 32),
            (FORMAT_FLOAT, 32), (FORMAT_FLOAT, 64))
_LAYOUT_CODES = np.array([tag * 256 + bits for tag, bits in _LAYOUTS], np.int64)

# Error messages of the format checks. They avoid quote characters: graph-mode errors escape them.
_MESSAGES = (
    "not a RIFF/WAVE file (it does not start with RIFF....WAVE)",
    "WAV file has no fmt chunk",
    "WAV file has no data chunk",
    "WAV fmt chunk is shorter than 16 bytes",
    "unsupported WAV encoding; supported are PCM 8/16/24/32-bit and float 32/64-bit. format tag, bits per sample:",
    "inconsistent WAV fmt chunk; channels, block_align, bits, sample rate:",
)


def _fourcc(tag: bytes) -> int:
    return int.from_bytes(tag, "little")


_RIFF, _WAVE, _FMT, _DATA = (_fourcc(t) for t in (b"RIFF", b"WAVE", b"fmt ", b"data"))

# The canonical 44-byte header of 16-bit PCM, as 22 little-endian 16-bit words w[i] (bytes 2i and
# 2i + 1) mapped by one matrix product to the fields below, each of which must lie in [low, high]:
# the constant parts ('RIFF', 'WAVE', 'fmt ', fmt size 16, tag 1 = PCM, 16 bits, 'data') and what the
# general parser would check (channels >= 1, block_align == 2 * channels, sample rate > 0; the rate
# must also fit the int32 it is returned as). The fields with no range are only read.
_CANONICAL = (  # name, {word index: weight}, (low, high) or None
    ("riff", {0: 1, 1: 65536}, (_RIFF, _RIFF)),
    ("wave", {4: 1, 5: 65536}, (_WAVE, _WAVE)),
    ("fmt_id", {6: 1, 7: 65536}, (_FMT, _FMT)),
    ("fmt_size", {8: 1, 9: 65536}, (16, 16)),
    ("tag", {10: 1}, (FORMAT_PCM, FORMAT_PCM)),
    ("bits", {17: 1}, (16, 16)),
    ("data_id", {18: 1, 19: 65536}, (_DATA, _DATA)),
    ("align_error", {16: 1, 11: -2}, (0, 0)),
    ("channels", {11: 1}, (1, 65535)),
    ("rate", {12: 1, 13: 65536}, (1, 2**31 - 1)),
    ("data_size", {20: 1, 21: 65536}, None),
    ("block_align", {16: 1}, None),
)
_CANONICAL_WEIGHTS = np.zeros((22, len(_CANONICAL)), np.float64)  # [words, fields]
for _j, (_, _weights, _) in enumerate(_CANONICAL):
    for _i, _w in _weights.items():
        _CANONICAL_WEIGHTS[_i, _j] = _w
# low <= field <= high as |field - center| <= radius: one comparison instead of two.
_CANONICAL_CENTER = np.array([0.0 if r is None else (r[0] + r[1]) / 2 for _, _, r in _CANONICAL])
_CANONICAL_RADIUS = np.array([np.inf if r is None else (r[1] - r[0]) / 2 for _, _, r in _CANONICAL])


def _walk_chunks(contents: tf.Tensor, total: tf.Tensor, eight: tf.Tensor,
                 twelve: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(is_riff, int64 [4]: fmt payload offset, fmt size, data payload offset, data size; -1 if absent).

    Walks the RIFF chunk list from byte 12 (not at all unless the file starts RIFF....WAVE) until
    both chunks are found or the list ends. ``eight`` and ``twelve`` are int64 constants.
    """
    head = tf.io.decode_raw(contents, tf.int32, fixed_length=tf.cast(twelve, tf.int32))  # [3], zero padded
    is_riff = tf.reduce_all(tf.equal(head * [1, 0, 1], [_RIFF, 0, _WAVE]))
    start = tf.where(is_riff, twelve, total)
    last = total - eight  # the last offset at which a chunk header fits
    targets = tf.constant([_FMT, _FMT, _DATA, _DATA], tf.int32)

    def more(pos, found):
        return tf.logical_and(pos <= last, tf.reduce_min(found) < 0)

    def step(pos, found):
        payload = pos + eight
        # pos <= last: exactly 8 bytes.
        chunk_id, size = tf.unstack(tf.io.decode_raw(tf.strings.substr(contents, pos, eight), tf.int32), num=2)
        size = tf.cast(tf.bitcast(size, tf.uint32), tf.int64)
        found = tf.where(tf.equal(chunk_id, targets), tf.stack([payload, size, payload, size]), found)
        # Chunks are word aligned: an odd-sized chunk is followed by one pad byte.
        return payload + size + size % 2, found

    found = tf.constant([-1, -1, -1, -1], tf.int64)
    return is_riff, tf.while_loop(more, step, (start, found), maximum_iterations=_MAX_CHUNKS)[1]


def _fields(contents: tf.Tensor) -> dict:
    """Every header field and check, without asserting any (see _parse and wav_header_fields)."""
    # Scalar constants come from one unstacked vector per dtype: each tf.constant (and each Python
    # number in an op) is a graph node, and every node costs ~0.1 ms each time tf.data creates an
    # iterator, whether or not it runs.
    zero, one, eight, n12, n16, n26, n256, n65536, extensible = tf.unstack(
        tf.constant([0, 1, 8, 12, 16, 26, 256, 65536, FORMAT_EXTENSIBLE], tf.int64))
    total = tf.cast(tf.strings.length(contents), tf.int64)
    is_riff, found = _walk_chunks(contents, total, eight, n12)
    fmt_pos, fmt_size, data_pos, data_size = tf.unstack(found)
    has_fmt = fmt_pos >= zero

    fmt_bytes = tf.strings.substr(contents, tf.maximum(fmt_pos, zero), n26)
    fields = tf.cast(tf.io.decode_raw(fmt_bytes, tf.uint16, fixed_length=tf.cast(n26, tf.int32)),
                     tf.int64)  # [13], zero padded
    tag, channels, rate_lo, rate_hi, _, _, block_align, bits, _, _, _, _, sub_format = tf.unstack(fields)
    sample_rate = rate_lo + rate_hi * n65536
    # The SubFormat GUID of WAVE_FORMAT_EXTENSIBLE starts with the plain format tag.
    fmt = tf.where(tf.logical_and(tf.equal(tag, extensible), fmt_size >= n26), sub_format, tag)
    # Samples narrower than their container (12-bit in 16, 20-bit in 24) are stored left-aligned,
    # so they decode as the container's width.
    container = block_align // tf.maximum(channels, one) * eight
    padded = tf.logical_and(tf.logical_and(bits % eight > zero, bits < container),
                            tf.equal(container, (bits + 7) // eight * eight))
    width = tf.where(padded, container, bits)
    layout = tf.equal(fmt * n256 + width, _LAYOUT_CODES)  # [6], one-hot or all False
    consistent = tf.logical_and(tf.minimum(channels, sample_rate) >= one,  # channels >= 1, rate > 0
                                tf.equal(block_align, channels * (width // eight)))
    num_frames = tf.maximum(tf.minimum(data_size, total - data_pos), zero) // tf.maximum(block_align, one)
    return {
        "format": fmt, "format_tag": tag, "channels": channels, "sample_rate_hz": sample_rate,
        "bits_per_sample": width, "declared_bits": bits, "block_align": block_align,
        "data_offset": data_pos, "data_bytes": num_frames * block_align, "num_frames": num_frames,
        "declared_data_bytes": data_size, "fmt_offset": fmt_pos, "fmt_bytes": fmt_size, "is_riff": is_riff,
        "has_fmt": has_fmt,
        "has_data": data_pos >= zero, "layout": layout, "consistent": consistent,
    }


# The fields parse_wav_header returns.
HEADER_FIELDS = ("format", "channels", "sample_rate_hz", "bits_per_sample", "block_align", "data_offset",
                 "data_bytes", "num_frames", "declared_data_bytes")


def _parse(contents: tf.Tensor, source: tf.Tensor) -> tuple[dict, tf.Tensor]:
    """(header as documented in parse_wav_header, layout: bool [6] one-hot over _LAYOUTS).

    All returned tensors depend on the format checks.
    """
    f = _fields(contents)
    n16 = tf.constant(16, tf.int64)
    file, *messages = tf.unstack(tf.constant(["file:"] + list(_MESSAGES)))
    no_fmt = tf.logical_not(f["has_fmt"])
    checks = [  # (condition, message, values...), in the order of _MESSAGES
        (f["is_riff"],),
        (f["has_fmt"],),
        (f["has_data"],),
        (tf.logical_or(no_fmt, f["fmt_bytes"] >= n16), f["fmt_bytes"]),
        (tf.logical_or(no_fmt, tf.reduce_any(f["layout"])), f["format"], f["declared_bits"]),
        (tf.logical_or(no_fmt, f["consistent"]), f["channels"], f["block_align"], f["declared_bits"],
         f["sample_rate_hz"]),
    ]
    if tf.executing_eagerly():
        asserts = [tf.debugging.Assert(c, [m, file, source, *v], summarize=16) for (c, *v), m in zip(checks, messages)]
    else:  # tf.debugging.Assert would wrap each in a cond (int64 values): 2 functions and ~10 nodes more.
        asserts = [tf.raw_ops.Assert(condition=c, data=[m, file, source, *v], summarize=16)
                   for (c, *v), m in zip(checks, messages)]
    with tf.control_dependencies(asserts):
        values = tf.identity_n([f[name] for name in HEADER_FIELDS] + [f["layout"]])
    return dict(zip(HEADER_FIELDS, values)), values[-1]


def wav_header_fields(contents: bytes) -> dict:
    """Every field of a WAV header, read eagerly and checked by nothing: for describing what is
    wrong with a file (pipeline.audio.problems) rather than failing on it. Python ints and
    bools; `format` resolved through WAVE_FORMAT_EXTENSIBLE, `format_tag` as written,
    `bits_per_sample` the decoded width (a container's for 12-bit in 16), `declared_bits` as
    written, `layout` whether a decoder takes the encoding."""
    fields = _fields(tf.constant(contents))
    out = {name: (bool(v.numpy()) if v.dtype == tf.bool else int(v.numpy())) for name, v in fields.items()
           if name != "layout"}
    out["layout"] = bool(tf.reduce_any(fields["layout"]).numpy())
    return out


def parse_wav_header(contents: tf.Tensor, source: Optional[tf.Tensor] = None) -> dict:
    """Parse the RIFF/WAVE header of ``contents`` (scalar tf.string, the file or at least its header).

    Returns int64 scalar tensors: ``format`` (1 PCM or 3 float, EXTENSIBLE resolved through its
    SubFormat GUID), ``channels``, ``sample_rate_hz``, ``bits_per_sample``, ``block_align``,
    ``data_offset`` (byte offset of the first sample), ``data_bytes`` and ``num_frames``, plus
    ``declared_data_bytes`` (the data chunk's size field as written).

    ``data_bytes`` is the data chunk clipped to the bytes present in ``contents`` and rounded down
    to whole frames (``num_frames * block_align``), so a truncated file (or a header-only prefix)
    yields the frames that are actually there and ``substr(contents, data_offset, data_bytes)``
    can go straight to :func:`decode_wav_samples`.

    ``source`` (e.g. the path) is only used in error messages. Invalid input raises
    ``tf.errors.InvalidArgumentError`` when the returned tensors are evaluated.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    source = tf.constant("<bytes>") if source is None else tf.convert_to_tensor(source, tf.string)
    return _parse(contents, source)[0]


def _decode_layouts(source: tf.Tensor, offset: tf.Tensor, nbytes: tf.Tensor, layout: tf.Tensor,
                    channels: tf.Tensor) -> tf.Tensor:
    """``nbytes`` sample bytes of ``source`` from ``offset`` -> float32 [frames, channels].

    Every decoder runs, on a substr that is empty unless ``layout`` (bool [6]) selects it, and the
    results are concatenated: no control flow, and only the selected decoder touches the samples.
    """
    pieces = [tf.strings.substr(source, offset, n)
              for n in tf.unstack(tf.cast(layout, tf.int64) * nbytes)]
    pcm24 = tf.pad(tf.reshape(tf.io.decode_raw(pieces[2], tf.uint8), [-1, 3]), [[0, 0], [1, 0]])
    n128, scale7, scale15, scale31, below_one = tf.unstack(tf.constant([128.0, 2**-7, 2**-15, 2**-31, _BELOW_ONE]))
    flat = tf.concat([
        (tf.cast(tf.io.decode_raw(pieces[0], tf.uint8), tf.float32) - n128) * scale7,
        tf.cast(tf.io.decode_raw(pieces[1], tf.int16), tf.float32) * scale15,
        # 24-bit PCM has no native dtype: each 3-byte sample goes to the top of an int32.
        tf.cast(tf.bitcast(pcm24, tf.int32), tf.float32) * scale31,
        # float32 rounds (2**31 - 1) / 2**31 up to 1.0; keep the [-1, 1) contract.
        tf.minimum(tf.cast(tf.io.decode_raw(pieces[3], tf.int32), tf.float32) * scale31, below_one),
        tf.io.decode_raw(pieces[4], tf.float32),
        tf.cast(tf.io.decode_raw(pieces[5], tf.float64), tf.float32),
    ], 0)  # [frames * channels], interleaved
    return tf.reshape(flat, tf.stack([-1, tf.cast(channels, tf.int32)]))  # [frames, channels]


def decode_wav_samples(data: tf.Tensor, header: dict) -> tf.Tensor:
    """Raw sample bytes (scalar tf.string, whole frames) -> float32 [frames, channels].

    Integer PCM lands in [-1, 1); float WAVs are returned as stored (they may exceed 1).
    """
    data = tf.convert_to_tensor(data, tf.string)
    layout = tf.equal(header["format"] * 256 + header["bits_per_sample"], _LAYOUT_CODES)
    nbytes = tf.cast(tf.strings.length(data), tf.int64)
    return _decode_layouts(data, tf.constant(0, tf.int64), nbytes, layout, header["channels"])


def _decode_wav_general(contents: tf.Tensor, source: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    header, layout = _parse(contents, source)
    samples = _decode_layouts(contents, header["data_offset"], header["data_bytes"], layout, header["channels"])
    return samples, tf.cast(header["sample_rate_hz"], tf.int32)


# In graphs the general path is one call node that is not inlined: when the fast path is taken none
# of its nodes is visited (inlined into the untaken branch, each would still be passed a dead tensor).
_decode_wav_general_call = tf.function(
    _decode_wav_general, input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string)],
    autograph=False, experimental_attributes={"_noinline": True})


def decode_wav(contents: tf.Tensor, source: Optional[tf.Tensor] = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Whole WAV file bytes -> (float32 [frames, channels], sample_rate_hz int32 scalar).

    ``source`` (e.g. the path) is only used in error messages. Canonical 16-bit PCM files take a
    short path; the result is the same as the general parser's (see the module docstring).
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    source = tf.constant("<bytes>") if source is None else tf.convert_to_tensor(source, tf.string)
    total = tf.cast(tf.strings.length(contents), tf.float64)
    words = tf.cast(tf.io.decode_raw(contents, tf.uint16, fixed_length=44), tf.float64)  # [22], zero padded
    fields = tf.einsum("i,ij->j", words, _CANONICAL_WEIGHTS)  # exact: integers below 2**53
    fast = tf.logical_and(total >= 44, tf.reduce_all(tf.abs(fields - _CANONICAL_CENTER) <= _CANONICAL_RADIUS))

    def pcm16():
        *_, channels, rate, data_size, block_align = tf.unstack(fields)
        frames = tf.minimum(data_size, total - 44) // block_align  # whole frames present (exact in float64)
        data = tf.strings.substr(contents, tf.constant(44, tf.int64), tf.cast(frames * block_align, tf.int64))
        samples = tf.cast(tf.io.decode_raw(data, tf.int16), tf.float32) * (1.0 / 2**15)
        return (tf.reshape(samples, tf.cast(tf.stack([frames, channels]), tf.int32)),
                tf.cast(rate, tf.int32))

    general = _decode_wav_general if tf.executing_eagerly() else _decode_wav_general_call
    return tf.cond(fast, pcm16, lambda: general(contents, source))
