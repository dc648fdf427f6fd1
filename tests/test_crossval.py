"""Cross-validation by recording (python -m pipeline.tools.crossval) on three synthetic
recordings with known calls: every recording held out once, settings chosen on another one,
pooled counts equal to the truth, and a rerun that resumes instead of training again."""
import json
import time

import numpy as np
import pandas as pd
import soundfile as sf

from pipeline.tools import crossval
from pipeline.tools.synth import long_recording

SR = 16000


def archive(root):
    """Three 20-s recordings of the demo's call types in noise, and their annotation table."""
    root.mkdir()
    rows = []
    for i in range(3):
        audio, calls = long_recording(np.random.default_rng(20 + i), 20.0, SR)
        sf.write(root / f"rec{i}.wav", audio, SR)
        rows += [(f"rec{i}.wav", start, end, label) for start, end, label in calls]
    truth = pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label"])
    truth.to_csv(root / "calls.csv", index=False)
    config = root / "cv.yaml"
    config.write_text(f"""
audio: {{sample_rate_hz: {SR}, clip_s: 1.5}}
frontend: {{kind: logmel, n_fft: 512, hop_samples: 256, n_mels: 32, fmin_hz: 300, fmax_hz: 7000}}
augment: {{enabled: false}}
pipeline: {{batch_size: 8}}
data: {{root: {root}, source: annotations, annotations: calls.csv, negative_label: noise}}
model: {{name: small_cnn, width: 4, depth: 1}}
train: {{epochs: 1, image_examples: 0}}
detect: {{hop_s: 0.5}}
""")
    return config, truth


def test_every_recording_is_held_out_once_and_settings_come_from_another(tmp_path):
    config, truth = archive(tmp_path / "archive")
    out = tmp_path / "cv"
    start = time.time()
    assert crossval.main(["--config", str(config), "--out", str(out)]) == 0
    wall_s = time.time() - start
    report = json.loads((out / "crossval.json").read_text())
    folds = report["folds"]
    assert sum(f["seconds"] for f in folds) <= wall_s  # each fold's training counted once
    assert [f["recording"] for f in folds] == ["rec0.wav", "rec1.wav", "rec2.wav"]
    assert [f["validation"] for f in folds] == ["rec1.wav", "rec2.wav", "rec0.wav"]
    for fold in folds:
        assert set(fold["thresholds"]) == {"pulses", "upsweep", "whistle"}
        assert all(t in crossval.THRESHOLDS for t in fold["thresholds"].values())
        assert fold["max_event_s"] in crossval.MAX_EVENT_S
        assert fold["true"] == (truth["file"] == fold["recording"]).sum()
        traces = np.load(out / f"fold_{fold['fold']}" / "traces.npz")
        assert sorted(traces.files) == sorted([fold["recording"], fold["validation"]])
        assert (out / fold["recording"].replace(".wav", ".png")).exists()
    pooled = report["pooled"]
    assert pooled["true"] == len(truth) and pooled["recordings"] == 3
    assert pooled["detected"] == sum(f["detected"] for f in folds)
    assert 0.0 <= pooled["f1"] <= 1.0
    assert report["settings"]["max_event_s"] in crossval.MAX_EVENT_S

    stamps = [(out / f"fold_{k}" / "model.keras").stat().st_mtime_ns for k in range(3)]
    assert crossval.main(["--config", str(config), "--out", str(out), "--folds", "1"]) == 0  # resumes
    assert (out / "fold_1" / "model.keras").stat().st_mtime_ns == stamps[1]
    resumed, = json.loads((out / "crossval.json").read_text())["folds"]
    trained_s = json.loads((out / "fold_1" / "metrics.json").read_text())["train_seconds"]
    assert trained_s <= resumed["seconds"] < folds[1]["seconds"] + trained_s  # the earlier training


def test_settings_are_the_best_on_the_validation_recording():
    """A made-up trace with a known best: two touching 1-s calls under one run of high scores
    (split only with a longest event of 1-1.5 s) and a false alarm scoring 0.6 (kept out only by
    thresholds above 0.6)."""
    from pathlib import Path

    from pipeline.config import from_dict
    from pipeline.detection.detector import ClipDetector
    from pipeline.features.framing import Framing

    cfg = from_dict({})
    detector = ClipDetector(run=Path("."), cfg=cfg, names=("noise", "call"), task="binary", calls=("call",),
                            columns={"call": 0}, thresholds={"call": 0.5}, window=1600, hop=1600,
                            framing=Framing(1600, 160, 512, True), min_gap_s=0.0, min_duration_s=0.0,
                            max_event_s=None)
    hop_s = detector.hop_s  # 0.1 s windows, one row each
    trace = np.full((200, 1), 0.2)
    trace[50:70] = 0.9  # 5.0-7.0 s: two calls, 5-6 and 6-7 s
    trace[120:125] = 0.6  # 12.0-12.5 s: nothing there
    truth = pd.DataFrame({"file": ["v.wav", "v.wav"], "label": ["call", "call"], "start_s": [5.0, 6.0],
                          "end_s": [6.0, 7.0]})
    scored = {"v.wav": crossval.Scored("v.wav", "v.wav", 200 * hop_s, trace, None)}
    chosen = crossval.choose_settings(detector, scored, truth)
    assert chosen.max_event_s in (1.0, 1.5)
    assert 0.6 < chosen.thresholds["call"] <= 0.9
    events = crossval.events_table(chosen, scored)
    assert len(events) == 2


def test_a_frame_models_onset_threshold_is_chosen_on_the_validation_recording():
    """Frame traces with a known best onset threshold: two touching 0.3-s calls under one run of
    call frames, the second's start marked by an onset peak of 0.65 and a spurious peak of 0.35
    inside the first. Only thresholds in (0.35, 0.65] split the run into the two calls; of those
    the one nearest the config's 0.9 is 0.6."""
    from pathlib import Path

    from pipeline.config import from_dict
    from pipeline.detection.detector import FrameDetector
    from pipeline.features.framing import Framing

    cfg = from_dict({"detect": {"onset_threshold": 0.9}})
    detector = FrameDetector(run=Path("."), cfg=cfg, names=("call",), task="frames", calls=("call",),
                             columns={"call": 0}, thresholds={"call": 0.5}, window=16000, hop=16000,
                             framing=Framing(16000, 160, 512, True), min_gap_s=0.0, min_duration_s=0.0,
                             max_event_s=None, onset_threshold=0.9)
    frame_s, offset_s = detector.frame_s, detector.frame_offset_s
    call = round(0.3 / frame_s)
    first = 200
    trace = np.zeros((first + 6 * call, 2))  # columns: presence, onset
    trace[:, 0] = 0.1
    trace[first:first + 2 * call, 0] = 0.9
    trace[first, 1] = 0.8
    trace[first + call // 2, 1] = 0.35
    trace[first + call, 1] = 0.65
    starts = [offset_s + first * frame_s, offset_s + (first + call) * frame_s]
    truth = pd.DataFrame({"file": ["v.wav"] * 2, "label": ["call"] * 2, "start_s": starts,
                          "end_s": [s + call * frame_s for s in starts]})
    scored = {"v.wav": crossval.Scored("v.wav", "v.wav", len(trace) * frame_s, trace, None)}
    assert len(crossval.events_table(detector, scored)) == 1  # the config's onset threshold joins them

    chosen = crossval.choose_settings(detector, scored, truth)
    assert chosen.onset_threshold == 0.6
    events = crossval.events_table(chosen, scored)
    assert len(events) == 2
    assert crossval.event_settings(chosen)["onset_threshold"] == 0.6


def test_with_another_config_each_fold_averages_the_two_models(tmp_path):
    """--with CONFIG: the fold trains that config too (fold_<k>/with_1) and its traces are the two
    models' own traces (another sample rate, so other windows) averaged on the first's windows."""
    from pipeline.detection.detector import load_detector

    config, truth = archive(tmp_path / "archive")
    member = tmp_path / "archive" / "cv12k.yaml"
    member.write_text(config.read_text().replace(f"sample_rate_hz: {SR}", "sample_rate_hz: 12000")
                      .replace("fmax_hz: 7000", "fmax_hz: 5500"))
    out = tmp_path / "cv"
    assert crossval.main(["--config", str(config), "--with", str(member), "--out", str(out), "--folds", "0"]) == 0
    report = json.loads((out / "crossval.json").read_text())
    assert report["with"] == [str(member)]
    fold = out / "fold_0"
    first, second = load_detector(fold), load_detector(fold / "with_1")
    assert (first.sample_rate_hz, second.sample_rate_hz) == (SR, 12000)
    traces = np.load(fold / "traces.npz")
    for name in ("rec0.wav", "rec1.wav"):
        path = str(tmp_path / "archive" / name)
        own = [next(iter(crossval.score(d, [path]).values())).trace for d in (first, second)]
        centres = [np.arange(len(t)) * d.hop_s + d.window_s / 2 for d, t in zip((first, second), own)]
        for label in first.calls:
            expected = (own[0][:, first.columns[label]]
                        + np.interp(centres[0], centres[1], own[1][:, second.columns[label]])) / 2
            np.testing.assert_allclose(traces[name][:, first.columns[label]], expected, atol=1e-6)


def test_unreadable_recordings_are_left_out_with_their_reason(tmp_path, capsys):
    """A corrupt recording in the annotation table is named with its reason and left out of the
    rotation (the others still cross-validate); a silent one, refused only once read, stops
    scoring with its reason; too few readable recordings is a config error before training."""
    import pytest

    from pipeline.detection.detector import load_detector

    config, truth = archive(tmp_path / "archive")
    root = tmp_path / "archive"
    (root / "rec3.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    rows = pd.concat([truth, pd.DataFrame([("rec3.wav", 1.0, 2.0, "whistle")], columns=truth.columns)])
    rows.to_csv(root / "calls.csv", index=False)
    out = tmp_path / "cv"
    assert crossval.main(["--config", str(config), "--out", str(out), "--folds", "0"]) == 0
    assert "rec3.wav" in capsys.readouterr().err
    report = json.loads((out / "crossval.json").read_text())
    (bad,) = report["bad_files"]
    assert bad["file"].endswith("rec3.wav") and bad["reason"]
    (fold,) = report["folds"]
    assert (fold["recording"], fold["validation"]) == ("rec0.wav", "rec1.wav")

    sf.write(root / "silent.wav", np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(crossval.Unreadable, match="silent"):
        crossval.score(load_detector(out / "fold_0"), [str(root / "silent.wav")])

    (root / "rec2.wav").write_bytes(b"")
    with pytest.raises(SystemExit):
        crossval.main(["--config", str(config), "--out", str(tmp_path / "cv2")])
    assert "2 (of 4 annotated)" in capsys.readouterr().err
    assert not (tmp_path / "cv2").exists()


def test_refit_scores_the_held_out_recording_with_a_model_of_every_other_recording(tmp_path):
    """--refit: fold_0/refit is trained on rec1 and rec2 (rec1 was the fold model's validation
    recording) with no validation split, for the epochs up to the one the fold's model kept; the
    held-out trace is the refitted model's own and the validation trace the fold model's."""
    from pipeline.detection.detector import load_detector

    config, truth = archive(tmp_path / "archive")
    config.write_text(config.read_text().replace("train: {epochs: 1,", "train: {epochs: 3, monitor: val_loss,"))
    out = tmp_path / "cv"
    assert crossval.main(["--config", str(config), "--out", str(out), "--folds", "0", "--refit"]) == 0
    fold, refit = out / "fold_0", out / "fold_0" / "refit"
    history = pd.read_csv(fold / "history.csv")
    assert len(pd.read_csv(refit / "history.csv")) == int(history["val_loss"].idxmin()) + 1
    manifest = pd.read_csv(refit / "split_manifest.csv")
    assert set(manifest["split"]) == {"train", "test"}
    assert {f.rsplit("/", 1)[-1] for f in manifest.loc[manifest["split"] == "train", "file"]} == {"rec1.wav",
                                                                                                   "rec2.wav"}
    traces = np.load(fold / "traces.npz")
    for run, name in ((refit, "rec0.wav"), (fold, "rec1.wav")):
        own = next(iter(crossval.score(load_detector(run), [str(tmp_path / "archive" / name)]).values())).trace
        np.testing.assert_allclose(traces[name], own, atol=1e-6)
    assert json.loads((out / "crossval.json").read_text())["refit"] is True


def test_a_refit_trains_to_the_epoch_the_fold_model_kept(tmp_path):
    from pipeline.config import from_dict

    pd.DataFrame({"epoch": range(4), "val_loss": [0.5, 0.3, 0.4, 0.45], "val_pr_auc": [0.8, 0.7, 0.9, 0.9]}
                 ).to_csv(tmp_path / "history.csv", index=False)
    kept = {(monitor, keep): crossval.kept_epochs(from_dict({"train": {"monitor": monitor, "keep": keep}}), tmp_path)
            for monitor in ("val_loss", "val_pr_auc") for keep in ("best", "last")}
    # val_pr_auc ties at epochs 2 and 3: the lower validation loss (epoch 2) ranks first.
    assert kept == {("val_loss", "best"): 2, ("val_loss", "last"): 4, ("val_pr_auc", "best"): 3,
                    ("val_pr_auc", "last"): 4}
