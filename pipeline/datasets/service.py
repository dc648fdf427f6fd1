"""Input processing on other machines: tf.data service (`train.py --data-service ADDRESS`).

One dispatcher and any number of workers, each started on its machine and left running:

    python -m pipeline.datasets.service dispatcher --port 5050 [--work-dir DIR]
    python -m pipeline.datasets.service worker --dispatcher HOST:5050 --port 5051 [--host NAME]

Workers read the audio files themselves, at the same paths as the trainer (shared storage).
`distribute` sends a dataset's graph to them: they run the per-example stages (read, decode,
crop, resample) and batching, and the trainer receives the batches. Processing mode
"distributed_epoch": the dispatcher hands the records out to workers as they ask, so every
record is read once per pass, in an order that depends on worker timing (batches are no longer
reproducible; in evaluation a worker's last batch may be partial, so there can be more, smaller
batches than locally).

WAV only: the MP3 / FLAC / Ogg readers (pipeline.audio.compressed) lock tf.CriticalSections whose
handles are created eagerly and captured by the dataset graph, and such a graph cannot be
serialized for the workers. `check_wav_inputs` says so before anything is built, and
`distribute` turns the serialization failure into the same message. So the pipeline has to be
built without those readers when the records are all WAV (pipeline.audio.read builds both
branches of its WAV / compressed dispatch into every graph unless told the inputs are WAV).

The dispatcher and the workers load tensorflow-io's ops at start: the pipelines use them (WAV
reads too), and in "distributed_epoch" mode the dispatcher builds the pipeline as well.
"""
from __future__ import annotations

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import argparse
import socket
import sys
from typing import Iterable, Optional

import tensorflow as tf

from pipeline.audio import compressed as tfio_audio
from pipeline.audio.formats import is_wav_path

PROTOCOL = "grpc"


def check_wav_inputs(paths: Iterable[str]) -> None:
    """ValueError naming the first non-WAV files among `paths` (records and noise files)."""
    paths = list(paths)
    other = [p for p in paths if not is_wav_path(p)]
    if other:
        raise ValueError(
            f"--data-service needs WAV inputs: {len(other)} of {len(paths)} files are not WAV (e.g. "
            f"{', '.join(map(str, other[:3]))}). MP3/FLAC/Ogg decoding (pipeline.audio.compressed) holds "
            "resources that tf.data service cannot send to its workers; convert the files to WAV or "
            "train without --data-service")


def service_address(address: str) -> str:
    """'host:port' or 'grpc://host:port' -> 'grpc://host:port' (ValueError otherwise)."""
    address = address.strip()
    bare = address.split("://", 1)[1] if "://" in address else address
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--data-service: expected HOST:PORT of a tf.data service dispatcher, got {address!r}")
    return f"{PROTOCOL}://{bare}"


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """ConnectionError unless something accepts connections at the dispatcher's address
    (tf.data would otherwise retry registering the dataset for a long time)."""
    host, _, port = service_address(address).split("://", 1)[1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(
            f"--data-service {address}: no dispatcher answers ({err.strerror or err}); start one with "
            f"python -m pipeline.datasets.service dispatcher --port {port}") from None


def check_serializable(dataset: tf.data.Dataset) -> None:
    """ValueError unless the dataset's graph can be sent to tf.data service workers.

    The compressed readers' locks fail serialization only while their resources do not exist
    yet; once a read in this process has made them, the graph serializes but the workers could
    not run it, so the serialized graph is searched for them too."""
    readers = ("--data-service needs WAV inputs: the input pipeline holds the MP3/FLAC/Ogg readers of "
               "pipeline.audio.compressed, whose locks (tf.CriticalSection resources) cannot be sent to "
               "tf.data service workers")
    try:
        graph = dataset._as_serialized_graph()  # what registering the dataset with the dispatcher does
    except tf.errors.OpError as err:
        cause = err.message.strip().splitlines()[0]
        if tfio_audio.READER_NAME in cause:
            raise ValueError(f"{readers} ({cause})") from None
        raise ValueError(f"--data-service: the input pipeline cannot be sent to tf.data service workers "
                         f"({cause})") from None
    if tfio_audio.READER_NAME.encode() in graph.numpy():
        raise ValueError(readers)


def distribute(dataset: tf.data.Dataset, address: str, job_name: Optional[str] = None) -> tf.data.Dataset:
    """`dataset`, processed by the tf.data service workers of the dispatcher at `address`.

    `job_name`: consumers that give the same name share one stream (each element goes to one of
    them): give the training dataset a run-specific name when several trainers (multi-worker
    training) read it; None gives every iteration its own full pass (evaluation datasets).
    Since the service already splits the data, tf.distribute's auto-sharding is turned off.
    """
    target = service_address(address)
    check_serializable(dataset)
    check_reachable(target)
    distributed = dataset.apply(tf.data.experimental.service.distribute(
        processing_mode="distributed_epoch", service=target, job_name=job_name))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return distributed.with_options(options)


# ---------------------------------------------------------------------------------------------
# Servers


def _load_tfio_ops() -> None:
    """Register tensorflow-io's ops in this process. The pipelines sent to the service use them
    (WAV reads too: ranged file reads); the workers run them and the dispatcher builds the
    pipeline to split its records. The library loads when one of its ops first runs."""
    tfio_audio.file_size(__file__)


def start_dispatcher(port: int, work_dir: str = "") -> tf.data.experimental.service.DispatchServer:
    """A dispatcher on `port` (0: any free port). With `work_dir` it keeps its state there
    (fault-tolerant mode) and recovers it after a restart."""
    _load_tfio_ops()
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, protocol=PROTOCOL, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int, host: str = "localhost") -> tf.data.experimental.service.WorkerServer:
    """A worker on `port` (0: any free port) registered with the dispatcher at `dispatcher`.
    `host`: the name trainers reach this machine by (the worker announces host:port)."""
    _load_tfio_ops()
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=service_address(dispatcher).split("://", 1)[1], worker_address=f"{host}:%port%",
        port=port, protocol=PROTOCOL)
    return tf.data.experimental.service.WorkerServer(config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a tf.data service dispatcher or worker (blocks).")
    roles = parser.add_subparsers(dest="role", required=True)
    dispatcher = roles.add_parser("dispatcher", help="the one dispatcher trainers and workers connect to")
    dispatcher.add_argument("--port", type=int, default=5050)
    dispatcher.add_argument("--work-dir", default="", help="keep the dispatcher state here (survives restarts)")
    worker = roles.add_parser("worker", help="a worker that runs input pipelines")
    worker.add_argument("--dispatcher", required=True, metavar="HOST:PORT")
    worker.add_argument("--port", type=int, default=5051)
    worker.add_argument("--host", default=socket.gethostname(),
                        help="name or address trainers reach this machine by (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.role == "dispatcher":
        server = start_dispatcher(args.port, args.work_dir)
        print(f"tf.data service dispatcher at {server.target}", flush=True)
    else:
        server = start_worker(args.dispatcher, args.port, args.host)
        print(f"tf.data service worker at {args.host}:{args.port}, dispatcher {args.dispatcher}", flush=True)
    server.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
