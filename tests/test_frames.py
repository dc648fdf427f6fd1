"""Frame targets (train.task "frames"): records, targets, the crnn model and frame events."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf

from models.backbones.registry import build_backbone, check_task, model_framing
from pipeline.config import AudioConfig, ConfigError, FrontendConfig, ModelConfig, load_config
from pipeline.datasets.clips import frame_targets, frame_times_s, load_clip
from pipeline.features.framing import framing
from pipeline.records.labels import LabelSpec
from pipeline.detection.events import frame_events, onset_peaks, stitch_frames
from pipeline.features.frontend import frontend_output_shape
from pipeline.records.splits import split_records
from pipeline.records.windows import frame_records
from tests.helpers import set_args

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_frame_records_tile_each_recording_and_carry_its_calls():
    calls = pd.DataFrame({"file": ["a.wav"] * 2 + ["b.wav"], "start_s": [1.0, 6.5, 0.2],
                          "end_s": [2.0, 7.5, 0.4], "label": ["x", "y", "x"]})
    out = frame_records(calls, {"a.wav": 10.0, "b.wav": 1.5}, clip_s=4.0, negative_label="noise")
    a = out[out["file"] == "a.wav"]
    # regions of 8 s every 2 s until a clip fits no more; the last ones cut at the file end
    assert list(zip(a["start_s"], a["end_s"])) == [(0.0, 8.0), (2.0, 10.0), (4.0, 10.0), (6.0, 10.0)]
    assert json.loads(a.iloc[0]["events"]) == [[1.0, 2.0, "x"], [6.5, 7.5, "y"]]
    assert list(a["label"]) == ["x;y", "y", "y", "y"]
    b = out[out["file"] == "b.wav"]  # shorter than a clip: one region, padded when loaded
    assert list(zip(b["start_s"], b["end_s"], b["label"])) == [(0.0, 1.5, "x")]
    assert set(out["group"]) == {"a.wav", "b.wav"}


def test_frame_records_of_a_recording_without_calls_in_a_region_are_negative():
    calls = pd.DataFrame({"file": ["a.wav"], "start_s": [0.5], "end_s": [1.0], "label": ["x"]})
    out = frame_records(calls, {"a.wav": 20.0}, clip_s=2.0, negative_label="noise")
    assert out.iloc[0]["label"] == "x" and out.iloc[-1]["label"] == "noise"
    assert json.loads(out.iloc[-1]["events"]) == []


def test_frame_targets_mark_presence_and_onsets():
    events = tf.constant([[0.10, 0.30, 0], [0.50, 0.60, 1], [0.0, 0.0, -1]], tf.float64)  # last row: padding
    times = tf.constant(np.arange(8) * 0.1, tf.float64)  # frame centres 0.0 .. 0.7
    y = frame_targets(events, times, num_labels=2, onset_tolerance_s=0.025).numpy()
    assert y.shape == (8, 4)
    np.testing.assert_array_equal(y[:, 0], [0, 1, 1, 0, 0, 0, 0, 0])  # [0.1, 0.3): frames 1, 2
    np.testing.assert_array_equal(y[:, 1], [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(y[:, 2], [0, 1, 0, 0, 0, 0, 0, 0])  # onset of label 0 at 0.1
    np.testing.assert_array_equal(y[:, 3], [0, 0, 0, 0, 0, 1, 0, 0])


def test_frame_times_follow_the_frontend():
    fe = framing(FrontendConfig(n_fft=256, hop_samples=100), 1000, 200)  # 3 centred frames
    np.testing.assert_allclose(frame_times_s(tf.constant(2.0, tf.float64), fe, 1000).numpy(), [2.0, 2.1, 2.2])
    off = framing(FrontendConfig(n_fft=256, hop_samples=100, center=False), 1000, 356)  # 2 frames from 0
    np.testing.assert_allclose(frame_times_s(tf.constant(0.0, tf.float64), off, 1000).numpy(), [0.128, 0.228])
    # A family's own frontend (BirdNET's: 2,048-sample frames every 278, not centred).
    from models.backbones.birdnet import FRAMING
    np.testing.assert_allclose(frame_times_s(tf.constant(1.0, tf.float64), FRAMING, 144000).numpy()[[0, 1, -1]],
                               [1 + 1024 / 144000, 1 + 1302 / 144000, 1 + (1024 + 510 * 278) / 144000])


def test_load_clip_reports_where_its_crop_starts(tmp_path):
    """A ramp whose value is its own sample index: the clip's first value gives its start time."""
    rate = 1000
    ramp = (np.arange(5000) / 5000.0).astype(np.float32)
    sf.write(tmp_path / "ramp.wav", ramp, rate, subtype="FLOAT")
    audio = AudioConfig(sample_rate_hz=rate, clip_s=1.0, pad_position="random")
    for seed in range(4):
        clip, start = load_clip(tf.constant(str(tmp_path / "ramp.wav")), tf.constant(1.5, tf.float64),
                                tf.constant(4.0, tf.float64), audio, training=True,
                                seed=tf.constant([seed, 1], tf.int64), shift_max_s=0.3, with_start=True)
        first = int(round(float(start) * rate))
        assert 1200 <= first <= 3300
        np.testing.assert_allclose(clip.numpy()[:10], ramp[first:first + 10], atol=1e-6)


def test_frame_targets_hold_no_calls_outside_the_record_region(tmp_path):
    """A region shorter than the clip is padded: frames on the padding are negative even where a
    call (reaching outside the region) would cover them. Onsets follow train.onset_tolerance_s."""
    from pipeline.datasets.build import make_dataset

    rate = 8000
    sf.write(tmp_path / "a.wav", np.zeros(3 * rate, np.float32) + 0.01, rate)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"audio: {{sample_rate_hz: {rate}, clip_s: 2.0}}\n"
                        "frontend: {n_fft: 256, hop_samples: 80, n_mels: 32, fmax_hz: 3900}\n"
                        "data: {source: annotations, annotations: x.csv}\n"
                        "train: {task: frames, onset_tolerance_s: 0.105}\n"
                        "pipeline: {placement: device}\nmodel: {name: crnn}\n")
    cfg = load_config(cfg_path)
    records = pd.DataFrame({"file": [str(tmp_path / "a.wav")], "start_s": [0.0], "end_s": [1.0], "label": ["x"],
                            "group": ["a"], "events": [json.dumps([[0.5, 2.5, "x"]])]})
    labels = LabelSpec(("x",), "frames")
    _, targets = next(iter(make_dataset(records, labels, cfg, model_framing(cfg), training=False)))
    presence, onset = targets.numpy()[0].T  # centred crop: 0.5 s of padding, the region, 0.5 s of padding
    times = np.arange(len(presence)) * 80 / rate - 0.5
    np.testing.assert_array_equal(presence, ((times >= 0.5) & (times < 1.0)).astype(np.float32))
    np.testing.assert_array_equal(onset, (np.abs(times - 0.5) <= 0.105).astype(np.float32))
    assert onset.sum() == 21  # frames 0.40 ... 0.60 s


def test_label_spec_for_frames():
    records = pd.DataFrame({"label": ["noise", "b;a", "a"]})
    spec = LabelSpec.from_records(records, "frames", negative_label="noise")
    assert spec.names == ("a", "b") and spec.num_outputs == 4
    assert spec.output_names == ("a", "b", "a_onset", "b_onset")
    scores, targets, flat = spec.per_output(np.zeros((3, 5, 4)), np.ones((3, 5, 4)))
    assert scores.shape == targets.shape == (15, 4) and flat.task == "multilabel"
    with pytest.raises(ValueError):
        spec.encode(["a"])


def test_held_back_recordings_by_name():
    records = pd.DataFrame({"group": [f"/d/r{i}.wav" for i in range(6) for _ in range(3)], "label": "x"})
    out = split_records(records, 0.2, 0.2, seed=0, val_groups=["r1.wav"], test_groups=["r4.wav", "r5*"])
    by_group = out.groupby("group")["split"].first()
    assert by_group["/d/r1.wav"] == "val"
    assert by_group["/d/r4.wav"] == by_group["/d/r5.wav"] == "test"
    assert set(by_group.drop(["/d/r1.wav", "/d/r4.wav", "/d/r5.wav"])) == {"train"}
    with pytest.raises(ValueError, match="test_groups"):
        split_records(records, 0.2, 0.2, seed=0, test_groups=["nothing.wav"])


def test_config_lists_and_frame_checks(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: annotations, annotations: a.csv, test_groups: r7.mp3}\n"
                    "train: {task: frames}\nmodel: {name: crnn}\n")
    cfg = load_config(path)
    assert cfg.data.test_groups == ["r7.mp3"]
    path.write_text("data: {source: folders}\ntrain: {task: frames}\n")
    with pytest.raises(ConfigError, match="train.task"):
        load_config(path)
    path.write_text("train: {onset_tolerance_s: 0}\n")
    with pytest.raises(ConfigError, match="train.onset_tolerance_s"):
        load_config(path)
    path.write_text("data: {val_groups: [1, {a: b}]}\n")
    with pytest.raises(ConfigError, match=r"data.val_groups\[1\]"):
        load_config(path)


def test_frame_models_and_tasks_must_match():
    check_task("crnn", "frames")
    check_task("small_cnn", "binary")
    with pytest.raises(ValueError, match="crnn"):
        check_task("small_cnn", "frames")
    with pytest.raises(ValueError, match="clip model"):
        check_task("crnn", "multiclass")


def test_crnn_scores_every_frame():
    fe = FrontendConfig(kind="pcen", n_fft=256, hop_samples=128, n_mels=32)
    frames, bins = frontend_output_shape(fe, 8000, 16000)
    model = build_backbone(ModelConfig(name="crnn", width=4, depth=2), (frames, bins, 1), 6)
    assert model(np.zeros((2, frames, bins, 1), np.float32)).shape == (2, frames, 6)


def test_stitch_frames_takes_each_frame_from_the_window_it_is_most_central_in():
    count, frames, hop = 4, 8, 3
    # window w's frame f holds the file frame w * hop + f, and its distance from the window centre
    index = np.arange(count)[:, None] * hop + np.arange(frames)[None, :]
    centrality = -np.abs(np.arange(frames) - (frames - 1) / 2)[None, :].repeat(count, 0)
    stitched = stitch_frames(np.stack([index, centrality], -1).astype(float), hop)
    np.testing.assert_array_equal(stitched[:, 0], np.arange((count - 1) * hop + frames))
    lead = (frames - hop) // 2
    inner = stitched[lead: (count - 1) * hop + lead, 1]  # frames owned by central slices
    assert inner.min() >= -hop / 2 - 0.5
    with pytest.raises(ValueError):
        stitch_frames(np.zeros((2, 4, 1)), 5)


def test_stitch_of_one_window_is_that_window():
    scores = np.random.default_rng(0).random((1, 6, 2))
    np.testing.assert_array_equal(stitch_frames(scores, 3), scores[0])


@pytest.mark.parametrize("onset, threshold, radius, expected", [
    ([0, 0.6, 0.9, 0.6, 0, 0.7, 0], 0.5, 1, [2, 5]),
    ([0, 0.6, 0.9, 0.6, 0, 0.7, 0], 0.5, 3, [2]),          # 5 is within 3 frames of a higher peak
    ([0.8, 0.8, 0, 0], 0.5, 1, [0]),                        # a plateau: its first frame
    ([0.4, 0.3], 0.5, 1, []),
])
def test_onset_peaks(onset, threshold, radius, expected):
    assert onset_peaks(np.array(onset), threshold, radius) == expected


def _spans(events):
    return [(e.start_s, e.end_s) for e in events]


@pytest.mark.parametrize("presence, onset, kwargs, expected", [
    # two calls apart
    ([0, 1, 1, 0, 0, 1, 1, 1, 0], None, {}, [(0.1, 0.3), (0.5, 0.8)]),
    # a one-frame gap joined by the gap tolerance
    ([0, 1, 1, 0, 1, 1, 0], None, {"min_gap_s": 0.15}, [(0.1, 0.6)]),
    # touching calls: one run, split at the second call's onset peak
    ([1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0.9, 0, 0, 0], {"onset_threshold": 0.5}, [(0.0, 0.3), (0.3, 0.6)]),
    # an onset peak too close to the run's end would leave a piece below min_duration_s
    ([1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0.9, 0], {"onset_threshold": 0.5, "min_duration_s": 0.2},
     [(0.0, 0.6)]),
    # a lower onset peak within peak_radius_s of a higher one is the same call start
    ([1, 1, 1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0.9, 0, 0, 0, 0, 0], {"onset_threshold": 0.5, "peak_radius_s": 0.3},
     [(0.0, 0.8)]),
    # onset peaks below their threshold never split
    ([1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0.4, 0, 0, 0], {"onset_threshold": 0.5}, [(0.0, 0.6)]),
    # short events dropped, times clipped to the file
    ([1, 0, 0, 1, 1, 1, 1], None, {"min_duration_s": 0.2, "duration_s": 0.65}, [(0.3, 0.65)]),
    # a long run cut by max_duration_s at its lowest dip
    ([1, 1, 0.6, 1, 1, 1], None, {"max_duration_s": 0.35}, [(0.0, 0.2), (0.2, 0.6)]),
    # centred frames: each spans half a frame either side of its centre, never before 0
    ([1, 1, 0, 0, 1, 1, 0], None, {"offset_s": -0.05}, [(0.0, 0.15), (0.35, 0.55)]),
])
def test_frame_events(presence, onset, kwargs, expected):
    events = frame_events(np.array(presence, float), None if onset is None else np.array(onset, float), 0.1,
                          0.5, label="x", **kwargs)
    np.testing.assert_allclose(np.reshape(_spans(events), (-1, 2)), np.reshape(expected, (-1, 2)), atol=1e-9)
    assert all(e.label == "x" and 0.5 <= e.mean_score <= e.max_score <= 1 for e in events)


@pytest.mark.parametrize("tolerance_s, radius_s, calls", [(0.025, 0.05, 2), (0.1, 0.1, 1)])
def test_detect_keeps_onset_peaks_apart_by_the_trained_tolerance(tmp_path, tolerance_s, radius_s, calls):
    """One run of frames with onset peaks 80 ms apart: two calls for a model trained with 25 ms
    onsets (peaks 50 ms apart count), one for a model trained with 100 ms onsets."""
    from pipeline.detection.detector import FrameDetector

    path = tmp_path / "config.yaml"
    path.write_text("data: {source: annotations, annotations: a.csv}\nmodel: {name: crnn}\n"
                    f"train: {{task: frames, onset_tolerance_s: {tolerance_s}}}\n")
    cfg = load_config(path)
    (tmp_path / "model.keras").write_bytes(b"")
    window = cfg.audio.clip_samples
    detector = FrameDetector(tmp_path, cfg, ("x",), "frames", ("x",), {"x": 0}, {"x": 0.5}, window, window // 2,
                             model_framing(cfg), 0.0, 0.0, None, 0.5)
    second = round(0.08 / detector.frame_s)
    trace = np.zeros((100, 2))
    trace[:, 0] = 1.0
    trace[0, 1], trace[second, 1] = 1.0, 0.9
    assert len(detector.events(trace, 100 * detector.frame_s)) == calls
    assert detector.settings()["onset_radius_s"] == radius_s


def test_a_frame_model_trained_on_annotated_recordings_counts_their_calls(tmp_path):
    """train.py (task frames, crnn) on two synthesized recordings with known call times, then
    detect.py on a third: the calls are found and counted (calls in a row kept apart)."""
    import detect
    import train
    from pipeline.tools import synth

    rate = 8000
    data = synth.synthesize(tmp_path / "demo", seed=5, clips_per_class=1, clip_s=1.5, long_s=60.0,
                            sample_rate_hz=rate)
    long_dir = Path(data["long"][0]).parent
    audio, calls = synth.long_recording(np.random.default_rng(11), 40.0, rate)
    sf.write(long_dir / "held_back.wav", audio, rate)
    truth = pd.concat([data["truth"], pd.DataFrame([("held_back.wav", s, e, l) for s, e, l in calls],
                                                   columns=data["truth"].columns)])
    truth.assign(label="call").to_csv(long_dir / "truth.csv", index=False)  # one label: a small, quick model
    overrides = [f"data.root={long_dir}", "data.source=annotations", "data.annotations=truth.csv",
                 "data.val_groups=demo_long_2.wav", "data.test_groups=held_back.wav", "train.task=frames",
                 "model.name=crnn", "model.width=8", "model.depth=2", f"audio.sample_rate_hz={rate}",
                 "audio.clip_s=3.0", "frontend.n_fft=256", "frontend.hop_samples=128", "frontend.n_mels=32",
                 "frontend.fmin_hz=100", "frontend.fmax_hz=3900", "augment.noise_prob=0", "train.epochs=20",
                 "train.learning_rate=0.01", "train.image_examples=0", "pipeline.batch_size=8"]
    run = tmp_path / "run"
    assert train.main(["--config", str(CONFIGS / "demo.yaml"), "--out", str(run),
                       *set_args(overrides)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and set(metrics["per_class"]) == {"call", "call_onset"}

    out = tmp_path / "detect"
    assert detect.main(["--model", str(run), "--input", str(long_dir), "--split", "test", "--out", str(out),
                        "--truth", str(long_dir / "truth.csv"), "--save-scores"]) == 0
    report = json.loads((out / "eval.json").read_text())["totals"]
    assert report["true_count"] == len(calls)
    assert report["f1"] >= 0.8, report
    assert report["mean_abs_count_error"] <= 0.2, report
    scores = pd.read_csv(out / "held_back.scores.csv")
    assert len(scores) >= 40.0 / (128 / rate)  # one row per frame


def test_the_tuner_searches_frame_models_for_frame_targets(tmp_path):
    from tuning.space import resolve

    path = tmp_path / "c.yaml"
    path.write_text("data: {source: annotations, annotations: a.csv}\ntrain: {task: frames}\nmodel: {name: crnn}\n")
    params, _ = resolve(load_config(path))
    assert {p.name: p for p in params}["model.name"].values == ("crnn",)
    path.write_text("data: {source: annotations, annotations: a.csv}\ntrain: {task: frames}\nmodel: {name: crnn}\n"
                    "tune: {space: {model.name: [crnn, small_cnn]}}\n")
    params, notes = resolve(load_config(path))
    assert {p.name: p for p in params}["model.name"].values == ("crnn",)
    assert any("small_cnn" in note for note in notes)
