"""The tf.data pipeline end to end on small synthetic files with known answers."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf

from pipeline.config import from_dict
from models.backbones.registry import model_framing, model_frontend
from pipeline.datasets.build import make_dataset
from pipeline.datasets.clips import crop_offset, load_clip
from pipeline.features.stage import BatchStage
from pipeline.records.labels import LabelSpec

SR = 16000


def tone(freq_hz, seconds, rate, amp=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six files at three rates and two formats; labels by tone frequency."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, (rate, seconds, subtype) in enumerate([(22050, 2.0, "PCM_16"), (48000, 0.6, "PCM_24"),
                                                  (8000, 3.5, "FLOAT"), (44100, 1.2, "PCM_16"),
                                                  (16000, 1.0, "PCM_32"), (96000, 2.5, "PCM_16")]):
        label = "low" if i % 2 == 0 else "high"
        path = root / f"{label}_{i}.wav"
        sf.write(path, tone(500 if label == "low" else 2500, seconds, rate), rate, subtype=subtype)
        rows.append((str(path), np.nan, np.nan, label, path.stem))
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label", "group"])


def config(**sections):
    base = {
        "audio": {"sample_rate_hz": SR, "clip_s": 1.0},
        "frontend": {"kind": "logmel", "n_fft": 256, "hop_samples": 128, "n_mels": 32},
        "augment": {"enabled": True, "time_masks": 1, "time_mask_max_frames": 5, "freq_masks": 1,
                    "freq_mask_max_bins": 4, "gain_db_range": 3.0},
        "pipeline": {"batch_size": 3, "shuffle_buffer": 16, "seed": 5},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return from_dict(base)


def batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


@pytest.mark.parametrize("region, clip, position, training, expected", [
    (100, 60, "center", False, 20),   # longer: centred crop
    (60, 60, "center", False, 0),
    (40, 60, "center", False, -10),   # shorter: padding split both sides
    (40, 60, "start", False, 0),      # shorter: audio at the start
    (40, 60, "random", False, -10),   # random placement only in training
])
def test_crop_offset_known_answers(region, clip, position, training, expected):
    audio = config(audio={"pad_position": position}).audio
    assert int(crop_offset(tf.constant(region), clip, audio, training, None)) == expected


def test_random_crop_offsets_stay_in_range():
    audio = config(audio={"pad_position": "random"}).audio
    for region in (100, 30):
        offsets = {int(crop_offset(tf.constant(region), 60, audio, True, tf.constant([s, 1])))
                   for s in range(40)}
        lo, hi = (0, 40) if region > 60 else (-30, 0)
        assert min(offsets) >= lo and max(offsets) <= hi and len(offsets) > 5


@pytest.mark.parametrize("pad_mode", ["zero", "repeat"])
def test_clip_lengths_and_padding(corpus, pad_mode):
    audio = config(audio={"pad_mode": pad_mode, "pad_position": "start"}).audio
    nan = tf.constant(np.nan, tf.float64)
    for path in corpus["file"]:
        clip = load_clip(tf.constant(path), nan, nan, audio, training=False).numpy()
        assert clip.shape == (SR,)
        duration = sf.info(path).duration
        if duration < 1.0:
            tail = clip[int(duration * SR) + 50:]
            if pad_mode == "zero":
                assert np.all(tail == 0)
            else:
                assert np.abs(tail).max() > 0.3


def test_region_is_cut_before_resampling(tmp_path):
    """A region [start_s, end_s) yields the clip from that stretch, resampled to the target rate."""
    rate = 96000
    path = tmp_path / "two_tones.wav"
    sf.write(path, np.concatenate([tone(500, 1.0, rate), tone(2500, 1.5, rate)]), rate)
    audio = config().audio
    for (start, end), expected_hz in [((0.0, 1.0), 500), ((1.2, 2.2), 2500)]:
        clip = load_clip(tf.constant(str(path)), tf.constant(start, tf.float64),
                         tf.constant(end, tf.float64), audio, training=False).numpy()
        spectrum = np.abs(np.fft.rfft(clip))
        assert abs(np.argmax(spectrum) * SR / len(clip) - expected_hz) <= 2


def test_placements_give_identical_features(corpus):
    labels = LabelSpec.from_records(corpus, "multiclass")
    cpu_cfg = config(pipeline={"placement": "pipeline"})
    on_cpu = batches(make_dataset(corpus, labels, cpu_cfg, model_framing(cpu_cfg), training=True))
    device_cfg = config(pipeline={"placement": "device"})
    on_device = batches(make_dataset(corpus, labels, device_cfg, model_framing(device_cfg), training=True))
    # Waveforms (windows with their context) reach the model's device.
    assert on_device[0][0]["audio"].shape == (3, model_framing(device_cfg).input_samples)
    assert on_cpu[0][0]["features"].ndim == 4  # features computed in tf.data
    stage = BatchStage(model_frontend(device_cfg, model_framing(device_cfg)), device_cfg.augment, SR)
    for (inputs, y), (batch, y_dev) in zip(on_cpu, on_device, strict=True):
        got, got_y = stage({k: tf.constant(v) for k, v in batch.items()}, tf.constant(y_dev), training=True)
        np.testing.assert_allclose(got.numpy(), inputs["features"], atol=1e-4)
        np.testing.assert_array_equal(got_y.numpy(), y)


def test_same_seed_same_batches_other_seed_differs(corpus):
    labels = LabelSpec.from_records(corpus, "multiclass")
    cfg = config(pipeline={"placement": "pipeline"})
    first = batches(make_dataset(corpus, labels, cfg, model_framing(cfg), training=True))
    again = batches(make_dataset(corpus, labels, cfg, model_framing(cfg), training=True))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0]["features"], b[0]["features"])
    other_cfg = config(pipeline={"placement": "pipeline", "seed": 6})
    other = batches(make_dataset(corpus, labels, other_cfg, model_framing(other_cfg), training=True))
    assert not np.array_equal(first[0][0]["features"], other[0][0]["features"])


def test_evaluation_is_deterministic_and_unaugmented(corpus):
    labels = LabelSpec.from_records(corpus, "multiclass")
    cfg = config(pipeline={"placement": "pipeline"})
    a = batches(make_dataset(corpus, labels, cfg, model_framing(cfg), training=False))
    b = batches(make_dataset(corpus, labels, cfg, model_framing(cfg), training=False))
    assert sum(len(x[1]) for x in a) == len(corpus)  # nothing dropped in evaluation
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0]["features"], y[0]["features"])
    np.testing.assert_array_equal(np.concatenate([x[1] for x in a]), labels.encode(list(corpus["label"])))


def test_graph_holds_no_python_callbacks(corpus):
    """Every op of every function the training dataset runs is a graph op (no PyFunc)."""
    labels = LabelSpec.from_records(corpus, "multiclass")
    graph = tf.Graph()
    with graph.as_default():
        cpu_cfg = config(pipeline={"placement": "pipeline"})
        make_dataset(corpus, labels, cpu_cfg, model_framing(cpu_cfg), training=True)
    graph_def = graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for fn in graph_def.library.function for node in fn.node_def}
    assert {"ParallelMapDatasetV2", "RFFT", "DecodeRaw", "MatMul"} <= ops
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def test_label_spec_targets():
    spec = LabelSpec(("a", "b", "c"), "multilabel")
    np.testing.assert_array_equal(spec.encode(["a;c", "b"]), [[1, 0, 1], [0, 1, 0]])
    binary = LabelSpec.from_records(pd.DataFrame({"label": ["call", "noise"]}), "binary", "noise")
    assert binary.names == ("noise", "call")
    np.testing.assert_array_equal(binary.encode(["call", "noise"]), [[1], [0]])


def test_time_shift_moves_the_crop_within_bounds(tmp_path):
    """A burst at a known time lands within ±shift of its unshifted position, zeros elsewhere."""
    path = tmp_path / "burst.wav"
    wave = np.zeros(SR, np.float32)
    wave[8000:8400] = tone(1000, 0.025, SR)
    sf.write(path, wave, SR)
    audio = config(audio={"pad_position": "start"}).audio
    nan = tf.constant(np.nan, tf.float64)
    onsets = set()
    for s in range(30):
        clip = load_clip(tf.constant(str(path)), nan, nan, audio, True, tf.constant([s, 3], tf.int64),
                         shift_max_s=0.1).numpy()
        loud = np.flatnonzero(np.abs(clip) > 0.05)
        onsets.add(int(loud[0]))
    assert all(abs(o - 8000) <= 1600 + 2 for o in onsets) and len(onsets) > 10


def test_balanced_sampling_draws_labels_equally(tmp_path):
    from pipeline.datasets.build import _records_dataset, balanced_records
    records = pd.DataFrame({"file": [f"f{i}" for i in range(50)], "start_s": np.nan, "end_s": np.nan,
                            "label": ["rare"] * 5 + ["common"] * 45, "group": [f"g{i}" for i in range(50)]})
    labels = LabelSpec.from_records(records, "multiclass")
    drawn = [r["target"].numpy().argmax() for r in balanced_records(records, 0, lambda part: _records_dataset(part, labels)).take(2000)]
    share = np.mean(drawn)
    assert abs(share - 0.5) < 0.05  # 5 rare vs 45 common files, drawn about equally


@pytest.mark.parametrize("pad_mode", ["zero", "repeat"])
def test_clips_cut_from_a_cached_region_equal_clips_read_directly(tmp_path, pad_mode):
    """Training keeps each record's region in memory (read_region) and crops later epochs from
    it: the same clip, sample for sample, as load_clip reading the file, for regions inside a
    long file, at its ends, shorter than the clip, and whole files; with context and shifts."""
    from pipeline.datasets.clips import clip_from_region, read_region

    rng = np.random.default_rng(0)
    path = tmp_path / "long.wav"
    sf.write(path, (0.3 * rng.normal(size=int(6.3 * 22050))).astype(np.float32), 22050)
    short = tmp_path / "short.wav"
    sf.write(short, tone(700, 0.4, 44100), 44100)
    audio = config(audio={"pad_mode": pad_mode, "pad_position": "random"}).audio
    cases = [(path, 2.0, 2.6), (path, 0.05, 1.5), (path, 5.8, 6.3), (path, 1.0, 4.0),
             (path, np.nan, np.nan), (short, np.nan, np.nan), (short, 0.1, 0.3)]
    for file, start, end in cases:
        args = (tf.constant(str(file)), tf.constant(start, tf.float64), tf.constant(end, tf.float64))
        for training, seed in ((False, None), (True, tf.constant([3, 5], tf.int64)), (True, tf.constant([9, 1], tf.int64))):
            direct, first = load_clip(*args, audio, training, seed, shift_max_s=0.2, context=700, with_start=True)
            region = read_region(*args, audio, shift_max_s=0.2, context=700)
            cut, cut_first = clip_from_region(region, audio, training, seed, shift_max_s=0.2, with_start=True,
                                              context=700)
            np.testing.assert_allclose(cut.numpy(), direct.numpy(), atol=1e-5, err_msg=f"{file.name} {start} {end}")
            assert abs(float(cut_first) - float(first)) < 1e-9


def test_training_caches_regions_within_the_budget_and_reads_files_beyond_it(corpus):
    """pipeline.cache_mb: the same first epoch with the cache and without it (the cache is a
    copy, never a change); region_megabytes sizes regions at the model rate."""
    from pipeline.datasets.build import region_megabytes

    records = corpus.assign(duration_s=[2.0, 0.6, 3.5, 1.2, 1.0, 2.5])
    assert region_megabytes(records, SR, 0.5) == pytest.approx(10.8 * SR * 4 / 1e6)
    assert region_megabytes(records.drop(columns="duration_s"), SR, 0.5) is None
    labels = LabelSpec.from_records(records, "multiclass")
    batches = []
    for budget in (0, 100):
        cfg = config(pipeline={"batch_size": 3, "cache_mb": budget, "seed": 4},
                     augment={"enabled": True, "time_shift_max_s": 0.1})
        framing = model_framing(cfg)
        ds = make_dataset(records, labels, cfg, framing, training=True)
        batches.append([inputs["audio"].numpy() for inputs, _ in ds])
    for cached, read in zip(*batches, strict=True):
        np.testing.assert_allclose(cached, read, atol=1e-5)
