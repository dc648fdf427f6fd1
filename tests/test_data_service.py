"""tf.data service on localhost: an in-process dispatcher and two workers run make_dataset's
pipeline; the `python -m pipeline.datasets.service` commands start working servers."""
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from models.backbones.registry import model_framing
from pipeline.datasets import service as data_service
from pipeline.config import from_dict
from pipeline.datasets.build import make_dataset
from pipeline.records.labels import LabelSpec
from tests.helpers import free_ports

REPO = Path(__file__).resolve().parent.parent
SR = 8000
CLIP = 2000  # samples: 0.25 s


def write_records(root, n=10, extension="wav"):
    """n tone files (alternating labels) as a record table; odd ones at another rate."""
    rows = []
    for i in range(n):
        rate = SR if i % 2 == 0 else 11025
        label = ("low", "high")[i % 3 == 0]
        t = np.arange(int(0.2 * rate + 37 * i)) / rate  # some shorter than the clip, all different
        wave = 0.5 * np.sin(2 * np.pi * (300 + 100 * i) * t).astype(np.float32)
        path = Path(root) / f"{label}_{i}.{extension}"
        sf.write(path, wave, rate)
        rows.append((str(path), np.nan, np.nan, label, path.stem, rate))
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label", "group", "sample_rate_hz"])


def config(placement="device"):
    """The test's config (its windows: CLIP samples, taken with INPUT - CLIP samples of context)."""
    return from_dict({
        "audio": {"sample_rate_hz": SR, "clip_s": CLIP / SR},
        "frontend": {"kind": "logmel", "n_fft": 128, "hop_samples": 64, "n_mels": 16, "n_mfcc": 8},
        "augment": {"enabled": True, "gain_db_range": 3.0, "time_masks": 1, "time_mask_max_frames": 3},
        "pipeline": {"batch_size": 4, "shuffle_buffer": 8, "seed": 3, "placement": placement},
    })


INPUT = model_framing(config()).input_samples


@pytest.fixture(scope="module")
def service():
    """The dispatcher's address; two workers registered with it (all in this process)."""
    dispatcher = data_service.start_dispatcher(0)
    workers = [data_service.start_worker(dispatcher.target, 0) for _ in range(2)]
    yield dispatcher.target
    for server in workers + [dispatcher]:
        server.stop()


@pytest.fixture(scope="module")
def wav_records(tmp_path_factory):
    records = write_records(tmp_path_factory.mktemp("wav"))
    return records, LabelSpec.from_records(records, "multiclass")


def rows(batches):
    """Every example of (audio [b, N], targets [b, K]) batches as bytes, sorted: order-free."""
    examples = np.concatenate([np.concatenate([a["audio"].numpy(), y.numpy()], axis=1) for a, y in batches])
    return sorted(row.tobytes() for row in examples)  # [b, N + K] rows


def test_evaluation_through_two_workers_gives_the_local_examples(service, wav_records):
    records, labels = wav_records
    dataset = make_dataset(records, labels, config(), model_framing(config()), training=False)
    local = list(dataset)
    remote = list(data_service.distribute(dataset, service))
    for inputs, targets in remote:
        audio = inputs["audio"]
        assert audio.shape[1:] == (INPUT,) and targets.shape[1:] == (2,) and 1 <= audio.shape[0] <= 4
    assert sum(len(y) for _, y in remote) == len(records)
    assert rows(remote) == rows(local)  # each record once, decoded as locally


@pytest.mark.parametrize("placement", ["device", "pipeline"])
def test_training_stream_through_two_workers(service, wav_records, placement):
    records, labels = wav_records
    cfg = config(placement)
    dataset = make_dataset(records, labels, cfg, model_framing(cfg), training=True, repeat=True)
    # Each worker stops after 6 batches (more than a pass over the 10 records): the job ends, so
    # no worker is still busy with it when the servers stop.
    remote = data_service.distribute(dataset.take(6), service, job_name=f"test-train-{placement}")
    batches = list(remote.take(6))
    assert len(batches) == 6
    for x, targets in batches:
        assert targets.shape == (4, 2)
        if placement == "device":
            assert x["audio"].shape == (4, INPUT) and x["seed"].shape[-1] == 2  # one [2] seed, or one per example
            assert np.isfinite(x["audio"].numpy()).all()
        else:
            x = x["features"]
            assert x.shape[0] == 4 and x.shape[-1] == 1 and np.isfinite(x.numpy()).all()


def test_compressed_inputs_get_a_clear_error(tmp_path, service):
    records = write_records(tmp_path, n=4, extension="flac")
    with pytest.raises(ValueError, match=r"needs WAV inputs: 4 of 5 files are not WAV \(e.g. \S*high_0.flac"):
        data_service.check_wav_inputs(list(records["file"]) + ["noise/a.WAV"])
    cfg = config()
    dataset = make_dataset(records, LabelSpec.from_records(records, "multiclass"), cfg, model_framing(cfg), training=False)
    with pytest.raises(ValueError, match="needs WAV inputs: the input pipeline holds the MP3/FLAC/Ogg readers"):
        data_service.distribute(dataset, service)
    # Once a read has made the readers' lock resources, the graph serializes: still refused.
    assert len(list(dataset)) == 1
    with pytest.raises(ValueError, match="needs WAV inputs: the input pipeline holds the MP3/FLAC/Ogg readers"):
        data_service.distribute(dataset, service)


def test_addresses_and_unreachable_dispatcher():
    assert data_service.service_address("host:5050") == "grpc://host:5050"
    assert data_service.service_address(" grpc://10.0.0.2:5050 ") == "grpc://10.0.0.2:5050"
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        data_service.service_address("host")
    port, = free_ports(1)  # nothing listens there
    with pytest.raises(ConnectionError, match=f"no dispatcher answers.*--port {port}"):
        data_service.check_reachable(f"localhost:{port}", timeout_s=2)


def test_command_line_servers(tmp_path, wav_records):
    """The documented commands start a dispatcher and a worker that serve make_dataset's pipeline
    (the worker process has to load tensorflow-io's kernels itself)."""
    ports = free_ports(2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    commands = [["dispatcher", "--port", ports[0], "--work-dir", tmp_path / "dispatcher"],
                ["worker", "--dispatcher", f"localhost:{ports[0]}", "--port", ports[1], "--host", "localhost"]]
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.datasets.service", *map(str, c)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in commands]
    try:
        deadline = time.monotonic() + 60
        while True:  # the dispatcher is up once it accepts connections
            try:
                data_service.check_reachable(f"localhost:{ports[0]}", timeout_s=1)
                break
            except ConnectionError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.5)
        records, labels = wav_records
        dataset = make_dataset(records, labels, config(), model_framing(config()), training=False)
        served = data_service.distribute(dataset, f"localhost:{ports[0]}")
        received = []  # read in a thread: with no worker serving, reading would wait forever
        reader = threading.Thread(target=lambda: received.extend(served), daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert received, "nothing served:\n" + procs[1].stdout.read1().decode()
        assert rows(received) == rows(dataset)
        del served, reader
        gc.collect()  # the finished iterator says goodbye to the dispatcher while it is still up
    finally:
        for p in procs:
            p.kill()
            p.wait()
