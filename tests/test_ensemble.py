"""Ensembles of trained runs (python -m pipeline.tools.ensemble): probabilities averaged over
members that may differ in model, sample rate and frontend, scored on the split they share."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import train
from pipeline.config.load import load_config
from pipeline.records.labels import LabelSpec
from pipeline.records.prepare import prepare_records
from pipeline.records.splits import manifest_hash
from pipeline.tools import ensemble
from pipeline.tools.synth import synthesize
from tests.helpers import set_args

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class Fake:
    """A member with given scores (the averaging and its checks, without a model)."""

    def __init__(self, run, scores, targets):
        self.run = run
        self.scores = {"test": (np.asarray(scores, np.float32), np.asarray(targets, np.float32))}


def test_members_wrong_on_different_examples_average_to_right_answers():
    targets = np.eye(3)[[0, 1, 2]]
    a = Fake("a", [[0.4, 0.6, 0.0], [0.0, 0.9, 0.1], [0.0, 0.1, 0.9]], targets)  # wrong on example 0
    b = Fake("b", [[0.9, 0.1, 0.0], [0.1, 0.3, 0.6], [0.0, 0.1, 0.9]], targets)  # wrong on example 1
    scores, got = ensemble.average([a, b], "test")
    np.testing.assert_allclose(scores[0], [0.65, 0.35, 0.0])
    assert list(scores.argmax(1)) == [0, 1, 2]
    metrics, _ = ensemble.classification_metrics(scores, got, LabelSpec(("x", "y", "z")))
    assert metrics["accuracy"] == 1.0


def test_members_must_list_the_examples_in_one_order():
    a = Fake("a", [[1.0, 0.0], [0.0, 1.0]], [[1, 0], [0, 1]])
    b = Fake("b", [[1.0, 0.0], [0.0, 1.0]], [[0, 1], [1, 0]])
    with pytest.raises(RuntimeError, match="another order"):
        ensemble.average([a, b], "test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny demo runs with different sample rates and widths over one split, and a copy of the
    first whose split manifest differs (as another seed or another archive would make it)."""
    tmp = tmp_path_factory.mktemp("ensemble")
    synthesize(tmp / "demo", seed=3, clips_per_class=10, clip_s=1.5, long_s=10.0)
    base = [f"data.root={tmp / 'demo'}", "train.epochs=2", "model.depth=1", "pipeline.batch_size=8",
            "train.image_examples=0"]
    # b: another training seed (pipeline.seed) over the same records and split (data.seed)
    variants = {"a": ["model.width=4"], "b": ["model.width=6", "audio.sample_rate_hz=12000", "frontend.fmax_hz=5500",
                                              "pipeline.seed=99", "data.seed=7"]}
    for name, extra in variants.items():
        assert train.main(["--config", str(CONFIGS / "demo.yaml"), "--out", str(tmp / name),
                           *set_args(base + extra)]) == 0
    shutil.copytree(tmp / "a", tmp / "other_split")
    (tmp / "other_split" / "split_manifest.sha256").write_text("0123456789abcdef\n")
    return tmp


def test_ensemble_of_two_runs_reports_members_and_average(runs, capsys):
    out = runs / "ens"
    assert ensemble.main(["--runs", str(runs / "a"), str(runs / "b"), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == "ensemble" and report["split"] == "test"
    for member, name in zip(report["members"], "ab"):
        own = json.loads((runs / name / "metrics.json").read_text())
        # Each member scored here as train.py scored it: the same examples in the same order.
        assert member["test_macro_f1"] == pytest.approx(own["macro_f1"], abs=1e-6)
        assert member["test_accuracy"] == pytest.approx(own["accuracy"], abs=1e-6)
    assert report["members"][1]["sample_rate_hz"] == 12000
    assert report["parameters"] == sum(m["parameters"] for m in report["members"])
    assert report["examples"] == json.loads((runs / "a" / "metrics.json").read_text())["examples"]
    assert 0.0 <= report["validation"]["macro_f1"] <= 1.0
    assert (out / "classification_report.txt").exists() and (out / "confusion_matrix.png").exists()
    assert "ensemble (mean probability)" in capsys.readouterr().out


def test_data_seed_fixes_records_and_split_whatever_the_training_seed(runs):
    def manifest(*overrides):
        cfg = load_config(CONFIGS / "demo.yaml", [f"data.root={runs / 'demo'}", *overrides])
        return manifest_hash(prepare_records(cfg)[0])

    assert manifest("pipeline.seed=7") != manifest("pipeline.seed=99")  # the seed moves the split
    assert manifest("pipeline.seed=99", "data.seed=7") == manifest("pipeline.seed=7")


def test_runs_over_another_split_are_refused(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        ensemble.main(["--runs", str(runs / "a"), str(runs / "other_split"), "--out", str(runs / "bad")])
    assert stop.value.code == 2
    assert "split manifest" in capsys.readouterr().err


def test_one_run_is_not_an_ensemble(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        ensemble.main(["--runs", str(runs / "a"), "--out", str(runs / "bad")])
    assert stop.value.code == 2
    assert "two or more" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Detection ensembles (detect.py --model A --model B, crossval --with): traces averaged on the
# first member's windows


def clip_detector(sample_rate_hz, window, hop, names, columns):
    from pipeline.config import from_dict
    from pipeline.detection.detector import ClipDetector
    from pipeline.features.framing import Framing

    cfg = from_dict({"audio": {"sample_rate_hz": sample_rate_hz}})
    return ClipDetector(run=Path(f"run{sample_rate_hz}"), cfg=cfg, names=names, task="multiclass",
                        calls=tuple(columns), columns=columns, thresholds={c: 0.5 for c in columns},
                        window=window, hop=hop, framing=Framing(window, hop, 512, True), min_gap_s=0.0,
                        min_duration_s=0.0, max_event_s=None)


def test_detection_members_are_averaged_on_the_first_members_windows():
    """Member b's score rises linearly with time (its window centre / 10): resampled at a's window
    centres it is a's centre / 10 exactly, and the mean is half of that plus a's constant."""
    from pipeline.detection.ensemble import mean_trace, window_centres_s

    a = clip_detector(16000, 16000, 1600, ("noise", "call"), {"call": 1})  # 1-s windows every 0.1 s
    b = clip_detector(8000, 4000, 2000, ("call", "noise"), {"call": 0})  # 0.5-s windows every 0.25 s
    trace_a = np.tile([0.8, 0.2], (100, 1))
    centres_b = window_centres_s(b, 40)
    trace_b = np.stack([centres_b / 10, 1 - centres_b / 10], axis=1)
    mean = mean_trace([a, b], [trace_a, trace_b])
    centres_a = window_centres_s(a, 100)
    np.testing.assert_allclose(centres_a[:3], [0.5, 0.6, 0.7])
    inside = centres_a <= centres_b[-1]
    np.testing.assert_allclose(mean[inside, 1], (0.2 + centres_a[inside] / 10) / 2, rtol=1e-6)
    np.testing.assert_allclose(mean[~inside, 1], (0.2 + centres_b[-1] / 10) / 2, rtol=1e-6)  # held at its end
    np.testing.assert_allclose(mean[:, 0], 0.8)  # not a call label: a's own


def test_frame_models_and_other_labels_are_not_averaged():
    from pipeline.config import from_dict
    from pipeline.detection.detector import DetectError, FrameDetector
    from pipeline.detection.ensemble import check_members
    from pipeline.features.framing import Framing

    a = clip_detector(16000, 16000, 1600, ("noise", "call"), {"call": 1})
    other = clip_detector(8000, 8000, 800, ("noise", "song"), {"song": 1})
    with pytest.raises(DetectError, match="call labels"):
        check_members([a, other])
    frames = FrameDetector(run=Path("f"), cfg=from_dict({}), names=("call",), task="frames", calls=("call",),
                           columns={"call": 0}, thresholds={"call": 0.5}, window=16000, hop=8000,
                           framing=Framing(16000, 160, 512, True), min_gap_s=0.0, min_duration_s=0.0,
                           max_event_s=None)
    with pytest.raises(DetectError, match="frame model"):
        check_members([a, frames])


def test_detect_averages_the_scores_of_two_runs(runs):
    """detect.py --model a --model b: its saved scores are a's and b's own (each run alone, 16 and
    12 kHz, other hops) averaged on a's windows, and its events come from those scores."""
    import detect
    import pandas as pd

    long_dir = runs / "demo" / "long"
    for name, models in {"a": ["a"], "b": ["b"], "ab": ["a", "b"]}.items():
        assert detect.main([*(x for m in models for x in ("--model", str(runs / m))), "--input", str(long_dir),
                            "--out", str(runs / f"det_{name}"), "--save-scores"]) == 0
    labels = json.loads((runs / "a" / "labels.json").read_text())["names"]
    calls = [label for label in labels if label != "noise"]
    for stem in ("demo_long", "demo_long_2"):
        a, b, ab = (pd.read_csv(runs / f"det_{n}" / f"{stem}.scores.csv") for n in ("a", "b", "ab"))
        assert np.array_equal(ab.start_s, a.start_s) and not np.allclose(b.start_s, a.start_s)  # b's own grid
        centre_a, centre_b = (a.start_s + a.end_s) / 2, (b.start_s + b.end_s) / 2
        for call in calls:
            expected = (a[call] + np.interp(centre_a, centre_b, b[call])) / 2
            np.testing.assert_allclose(ab[call], expected, atol=2e-4)  # the csv's 5 digits
    settings = json.loads((runs / "det_ab" / "detect.json").read_text())
    assert [m["sample_rate_hz"] for m in settings["with"]] == [12000]
    assert settings["digest"] != json.loads((runs / "det_a" / "detect.json").read_text())["digest"]
