"""MP3, FLAC and Ogg Vorbis decoding in graph through tensorflow-io (the only importer of it).

tensorflow-io 0.37.1 is its last release; everything that touches it stays in this file.

What it offers and how it is used here (checked against 0.37.1 on TF 2.17):
- ``tfio.audio.decode_mp3 / decode_flac / decode_vorbis`` decode file *bytes* in graph mode but
  do not return the sample rate; ``decode_flac`` also needs the output dtype up front
  (uint8 offset-binary for 8-bit, int16 for 16-bit, int32 left-aligned for 24/32-bit).
- The readable ops behind ``AudioIOTensor`` (``io_audio_readable_init`` on a path, then
  ``io_audio_readable_spec``) give shape [frames, channels], dtype and rate as tensors, and are
  cheap: they read headers (for MP3 they scan frame headers, ~1 ms for a 30 s file) without
  decoding. They sniff the container from the bytes, not the extension.
- Reading samples through ``io_audio_readable_read`` is ~1.5x slower for MP3 than
  ``decode_mp3`` on the bytes (same samples), so samples come from the bytes decoders.
So ``decode_compressed`` reads the file once for the samples and opens it again for the spec.

The readable ops keep their state in ONE resource per graph node (``io_audio_readable_init`` is a
``ResourceOpKernel``: it creates the resource on its first run and re-``Init``s it on every run),
so two concurrent runs of the same node (a parallel ``tf.data`` map) can interleave
init(A), init(B), spec(A): measured here, 7% of ``info_compressed`` results in a 4-way parallel
map over the piha MP3s were another file's spec. Every use of the readable ops therefore runs
init -> spec [-> read] under a ``tf.CriticalSection`` (``_readable``). As tfio's resource also
locks itself for each call, one node decodes one file at a time anyway; so each call site is
built for 4 readers (own nodes, own lock) and a call takes the reader its key hashes to.

Ranged reads (``read_compressed_range``, used by ``pipeline.audio.read.read_audio_range``) go
through ``io_audio_readable_read(resource, start, stop)``, which seeks instead of decoding from
the start: MP3 via minimp3_ex ``MP3D_SEEK_TO_SAMPLE`` (it decodes from a few frames before the
target for the bit reservoir), FLAC via libFLAC ``seek_absolute``, Ogg Vorbis via
``ov_pcm_seek``. Checked against a full decode of the same file: identical samples (max |diff|
0.0) for MP3 (piha, capuchin_forest; the full decode is this same reader from frame 0, so the
encoder-delay trimming is the same), FLAC and Ogg Vorbis. A 1-s window costs 2-9 ms against
11-760 ms for the full decode of the piha and capuchin_forest MP3s (decode-bound: ~2 s of audio
decoded per 1-s window).

WAV files are not read through the readable ops: tfio's WAV reader takes 32-bit PCM for float,
rejects 64-bit float and a LIST chunk before fmt, and fails on truncated files. Byte ranges
(``file_size`` / ``read_bytes``, used by ``pipeline.audio.read`` for WAV) come from tfio's
``io_file_info`` (``Env::GetFileSize``) and ``io_file_read`` (a ``RandomAccessInputStream``
whose ``SkipNBytes`` probes one byte and moves: 0.1 ms for 96 KB anywhere in a 173 MB file,
where ``tf.data.FixedLengthRecordDataset`` with ``header_bytes`` read through the skipped bytes,
19 ms at its end; core TF has no ranged read).

tfio's own errors (truncated FLAC: "unable to read at: N", Ogg Opus: "could not open input as an
OggVorbis file: -132") do not name the file, so the container is checked here first, with an
error that does. Truncated Ogg Vorbis files and MP3s without a Xing/LAME header decode to the
frames present; an MP3 whose Xing header promises more frames fails ("read N from 0 failed").
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable

import tensorflow as tf
import tensorflow_io as tfio
from tensorflow_io.python.ops import core_ops

# Container kinds, in the order of the decoder branches below.
_MP3, _FLAC, _VORBIS = 0, 1, 2


def _container(contents: tf.Tensor) -> tf.Tensor:
    """0 MP3, 1 FLAC, 2 Ogg Vorbis, -1 anything else (judged from the first bytes)."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(contents, 0, 35), b"\0" * 35]), 0, 35)
    first = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 0, 2), tf.uint8), tf.int32)  # [2]
    # An MP3 starts with an ID3v2 tag or directly with an MPEG audio frame sync (11 set bits).
    mp3 = tf.logical_or(tf.equal(tf.strings.substr(head, 0, 3), "ID3"),
                        tf.logical_and(tf.equal(first[0], 0xFF), tf.equal(first[1] // 32, 7)))
    flac = tf.equal(tf.strings.substr(head, 0, 4), "fLaC")
    # The first Ogg page holds one packet, the Vorbis identification header, at byte 28.
    vorbis = tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), "OggS"),
                            tf.equal(tf.strings.substr(head, 28, 7), "\x01vorbis"))
    return tf.where(mp3, _MP3, tf.where(flac, _FLAC, tf.where(vorbis, _VORBIS, -1)))


# Readers: each _readable call site is built _READERS times, each copy with its own lock, and a
# call uses the copy its key hashes to (two calls on one copy only wait for each other). With one
# copy a process decodes one window at a time (tfio's resource also locks itself for every call).
# Random 1-s windows of a 134-s MP3 in a map with 2 parallel calls on 2 cores: 5.3 ms per window
# with 1 reader, 3.7 with 2, 3.1 with 4 (5.5 sequentially); each reader adds 25-50 ms to the
# creation of every iterator over the map (graph instantiation).
_READERS = 4
# The readers' lock names (a pipeline holding them cannot be serialized for tf.data service).
READER_NAME = "pipeline.audio.compressed.reader"
_EAGER_LOCKS: list = []  # one tf.CriticalSection per reader, for eager code and tf.functions
_GRAPH_LOCKS = weakref.WeakKeyDictionary()  # the same for each legacy tf.Graph built in
_LOCKS_GUARD = threading.Lock()


def _reader_locks() -> list:
    """The readers' locks, created on first use (not at import: TF is not started then).

    They live in the outermost context: eagerly (tf.functions and tf.data maps traced from eager
    code capture them), or in the tf.Graph being built when there is one (a graph cannot capture
    eager tensors, nor eager code use a graph's).
    """
    with tf.init_scope():
        graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
        with _LOCKS_GUARD:
            locks = _EAGER_LOCKS if graph is None else _GRAPH_LOCKS.setdefault(graph, [])
            if not locks:
                # A shared_name each: eager CriticalSections otherwise all get the one mutex named "".
                locks.extend(tf.CriticalSection(name=f"tfio_audio_reader_{k}", shared_name=f"{READER_NAME}_{k}")
                             for k in range(_READERS))
    return locks


def _readable(fn: Callable[[], tuple], key: tf.Tensor) -> tuple:
    """fn() (which builds init -> spec [-> read] readable ops) run by one reader, under its lock.

    See the module docstring: a readable resource is shared by concurrent runs of its node. In a
    graph, fn is built once per reader and a call runs the reader that the string ``key`` hashes
    to (a stateless choice: it does not affect results). Eager ops share one kernel, and so one
    resource, whatever the branch: eager calls all use reader 0.
    """
    locks = _reader_locks()
    if tf.executing_eagerly():
        return locks[0].execute(fn)
    reader = tf.cast(tf.strings.to_hash_bucket_fast(key, len(locks)), tf.int32)
    return tf.switch_case(reader, [lambda lock=lock: lock.execute(fn) for lock in locks])


def _spec(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(shape int64 [2] = [frames, channels], tfio dtype enum int64, rate int32) of a file."""
    def spec():
        resource = core_ops.io_audio_readable_init(path)
        shape, dtype_enum, rate = core_ops.io_audio_readable_spec(resource)
        return shape, dtype_enum, tf.cast(rate, tf.int32)
    return _readable(spec, path)


# tfio returns FLAC samples as integers whose dtype follows the bit depth: uint8 offset binary for
# 8-bit, int16, and int32 left-aligned for 24-bit. (offset, scale) to floats in [-1, 1):
_FLAC_DTYPES = ((tf.uint8, 128.0, 1.0 / 128), (tf.int16, 0.0, 1.0 / 2**15), (tf.int32, 0.0, 1.0 / 2**31))


def _flac_as_float(dtype_enum: tf.Tensor, decode: Callable[[tf.DType], tf.Tensor]) -> tf.Tensor:
    """float32 [frames, channels] from ``decode(dtype)``, run only with the dtype tfio reports for the file."""
    def as_float(dtype, offset, scale):
        return lambda: (tf.cast(decode(dtype), tf.float32) - offset) * scale

    (u8, *u8_scale), (i16, *i16_scale), (i32, *i32_scale) = _FLAC_DTYPES
    return tf.case([(tf.equal(dtype_enum, u8.as_datatype_enum), as_float(u8, *u8_scale)),
                    (tf.equal(dtype_enum, i16.as_datatype_enum), as_float(i16, *i16_scale))],
                   default=as_float(i32, *i32_scale))


def _decode_flac(contents: tf.Tensor, dtype_enum: tf.Tensor) -> tf.Tensor:
    """FLAC bytes -> float32 [frames, channels]."""
    return _flac_as_float(dtype_enum, lambda dtype: tfio.audio.decode_flac(contents, dtype=dtype))


def _rejection(path: tf.Tensor, head: tf.Tensor) -> tf.Operation:
    """The failing check for a file that is not MP3 / FLAC / Ogg Vorbis, naming it and its first bytes."""
    return tf.debugging.Assert(
        False, ["not an MP3, FLAC or Ogg Vorbis file (Ogg Opus is not supported); file:", path,
                "first bytes:", tf.io.decode_raw(tf.strings.substr(head, 0, 8), tf.uint8)])


def decode_compressed(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """MP3 / FLAC / Ogg Vorbis file -> (float32 [frames, channels], sample_rate_hz int32 scalar).

    The container is recognised from the file's bytes, whatever its extension. Anything else
    (including Ogg Opus and empty files) raises InvalidArgumentError naming the path.
    """
    path = tf.convert_to_tensor(path, tf.string)
    contents = tf.io.read_file(path)
    kind = _container(contents)

    def known():
        _, dtype_enum, rate = _spec(path)
        samples = tf.switch_case(kind, [
            lambda: tfio.audio.decode_mp3(contents),
            lambda: _decode_flac(contents, dtype_enum),
            lambda: tfio.audio.decode_vorbis(contents),
        ])
        return samples, rate

    def rejected():
        with tf.control_dependencies([_rejection(path, contents)]):
            return tf.zeros([0, 1], tf.float32), tf.constant(0, tf.int32)

    # The check lives in its own branch rather than as a control dependency: tfio's decoders
    # must never see bytes of the wrong kind (decode_vorbis on empty input segfaults), and a
    # control dependency on a switch_case was seen not to hold back the ops inside its branches.
    samples, rate = tf.cond(kind >= 0, known, rejected)  # [frames, channels], []
    return tf.ensure_shape(samples, [None, None]), rate


def info_compressed(path: tf.Tensor) -> dict:
    """Frames, channels and rate of an MP3 / FLAC / Ogg Vorbis file without decoding it.

    Returns int64 scalars ``frames`` and ``channels`` and int32 ``sample_rate_hz``. The frame
    count is what ``decode_compressed`` returns (for MP3 exact, unlike libsndfile's estimate).
    """
    shape, _, rate = _spec(tf.convert_to_tensor(path, tf.string))
    return {"frames": shape[0], "channels": shape[1], "sample_rate_hz": rate}


def file_size(path: tf.Tensor) -> tf.Tensor:
    """Size in bytes (int64 scalar) of the file at ``path``, without reading it. NotFoundError if absent."""
    size, _ = core_ops.io_file_info(tf.convert_to_tensor(path, tf.string))
    return size


def read_bytes(path: tf.Tensor, offset: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """``length`` bytes of the file from byte ``offset`` (scalar tf.string), reading only those.

    The range must lie within the file (``offset + length <= file_size(path)``): reading past
    the end raises OutOfRangeError, so callers clip first.
    """
    return core_ops.io_file_read(tf.convert_to_tensor(path, tf.string), tf.cast(offset, tf.int64),
                                 tf.cast(length, tf.int64), compression="")


def read_compressed_range(
        path: tf.Tensor,
        frame_range: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
        key: tf.Tensor = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode only frames [first, last) of an MP3 / FLAC / Ogg Vorbis file.

    ``frame_range(rate int32, frames int64)`` turns the file's rate and length (known only once
    it is open) into ``(first, last)`` int64 with ``0 <= first <= last <= frames``.
    Returns (float32 [last - first, channels], rate int32, first int64): the same samples as
    ``decode_compressed(path)[0][first:last]`` (see the module docstring) without decoding the
    rest. The container is checked from the first bytes as in ``decode_compressed``, with the
    same error. ``key`` (a string, default the path) picks the reader in a graph: give calls
    that may run at the same time different keys (e.g. path and window start).
    """
    path = tf.convert_to_tensor(path, tf.string)
    head = read_bytes(path, 0, tf.minimum(file_size(path), 35))
    kind = _container(head)

    def known():
        def locked():
            resource = core_ops.io_audio_readable_init(path)
            shape, dtype_enum, rate = core_ops.io_audio_readable_spec(resource)
            rate = tf.cast(rate, tf.int32)
            first, last = frame_range(rate, shape[0])

            # The read's dtype must be the reader's (float32 for MP3 and Vorbis, integers for FLAC),
            # and there is no read for an empty window (libFLAC cannot seek to the end of the
            # stream): one switch over [float32, the FLAC dtypes, empty].
            def read_as(dtype, offset=0.0, scale=1.0):
                def branch():
                    samples = core_ops.io_audio_readable_read(resource, first, last, dtype=dtype)
                    return samples if dtype == tf.float32 else (tf.cast(samples, tf.float32) - offset) * scale
                return branch

            dtypes = [tf.float32] + [dtype for dtype, _, _ in _FLAC_DTYPES]
            matches = tf.equal(dtype_enum, [d.as_datatype_enum for d in dtypes[:-1]] + [dtype_enum])  # last: default
            branch = tf.where(last > first, tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32), len(dtypes))
            samples = tf.switch_case(branch, [read_as(tf.float32)] + [read_as(*d) for d in _FLAC_DTYPES] + [
                lambda: tf.zeros(tf.stack([0, shape[1]]), tf.float32)])
            return samples, rate, first
        return _readable(locked, path if key is None else key)

    def rejected():
        with tf.control_dependencies([_rejection(path, head)]):
            return tf.zeros([0, 1], tf.float32), tf.constant(0, tf.int32), tf.constant(0, tf.int64)

    samples, rate, first = tf.cond(kind >= 0, known, rejected)
    return tf.ensure_shape(samples, [None, None]), rate, first
