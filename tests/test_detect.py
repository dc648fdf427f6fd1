"""detect.py end to end with a tiny model trained once on synthesized data (known call times)."""
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import detect
from pipeline.detection import run as detection_run
from pipeline.detection.detector import DetectError, parse_thresholds
from pipeline.detection.outputs import Outputs
from pipeline.records.annotations import read_truth_table
from models.classifier import build_classifier
from models.backbones.registry import build_backbone, model_framing
from pipeline.tools import synth
from pipeline.records.annotations import read_annotations
from pipeline.config import dump_config, load_config
from pipeline.features.filters import frontend_output_shape

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RATE = 8000
LABELS = ("noise", "pulses", "upsweep", "whistle")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(run dir, data dict): the demo config shrunk to 8 kHz and a small CNN, fitted in memory on
    synthesized clips (~20 s; train.py's own path is covered by test_train_detect_smoke.py), and
    the synthesized long recordings with their known call times."""
    root = tmp_path_factory.mktemp("detect")
    cfg = load_config(CONFIGS / "demo.yaml", [
        f"audio.sample_rate_hz={RATE}", "frontend.n_fft=256", "frontend.hop_samples=128", "frontend.n_mels=32",
        "frontend.fmin_hz=100", "frontend.fmax_hz=3900", "model.width=8", "model.depth=2"])
    n = cfg.audio.clip_samples
    clips, targets = [], []
    for k, label in enumerate(LABELS):
        for i in range(64):
            clips.append(synth._clip(label, np.random.default_rng([9, k, i]), n, RATE))
            targets.append(k)
    keras.utils.set_random_seed(1)
    frames = model_framing(cfg)
    clips = [np.pad(clip, frames.context_samples) for clip in clips]  # silence around each clip
    bins = frontend_output_shape(cfg.frontend, RATE, n)[1]
    backbone = build_backbone(cfg.model, (frames.trunk_frames, bins, 1), len(LABELS), frames)
    model = build_classifier(backbone, cfg.frontend, RATE, frames, "multiclass", LABELS)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(np.array(clips, np.float32), keras.utils.to_categorical(targets, len(LABELS)), batch_size=32,
              epochs=35, verbose=0)
    run = root / "run"
    run.mkdir()
    dump_config(cfg, run / "config.yaml")
    (run / "labels.json").write_text(json.dumps({"names": list(LABELS), "task": "multiclass"}))
    model.save(run / "model.keras")
    data = synth.synthesize(root / "demo", seed=3, clips_per_class=1, clip_s=1.5, long_s=30.0, sample_rate_hz=RATE)
    return run, data


@pytest.fixture
def long_dir(trained, tmp_path):
    """A folder with the two synthesized long recordings (a copy the test may add files to)."""
    folder = tmp_path / "long"
    folder.mkdir()
    for path in trained[1]["long"]:
        shutil.copy(path, folder / Path(path).name)
    return folder


def run_detect(run, inputs, out, *extra):
    assert detect.main(["--model", str(run), "--input", str(inputs), "--out", str(out), *map(str, extra)]) == 0
    return pd.read_csv(out / "counts.csv"), pd.read_csv(out / "events.csv")


def test_counts_on_the_long_recordings_match_the_known_calls(trained, long_dir, tmp_path):
    run, data = trained
    out = tmp_path / "out"
    counts, events = run_detect(run, long_dir, out, "--truth", data["truth_csv"], "--chunk-s", 4)
    assert len(counts) == 2 * 3  # every file x every call label, zeros included
    report = json.loads((out / "eval.json").read_text())
    assert report["totals"]["true_count"] == len(data["truth"])
    assert report["totals"]["f1"] >= 0.8, report["totals"]
    assert abs(report["totals"]["detected_count"] - report["totals"]["true_count"]) <= 2, report["totals"]
    assert counts["count"].sum() == len(events) == report["totals"]["detected_count"]

    # Chunks of 4 s put calls across chunk boundaries; one chunk for the whole file gives the same events.
    _, whole = run_detect(run, long_dir, tmp_path / "whole", "--chunk-s", 100)
    pd.testing.assert_frame_equal(events[whole.columns], whole, atol=1e-4)

    # Each Raven table reads back as that file's events.
    for name in ("demo_long", "demo_long_2"):
        table = read_annotations(out / f"{name}.selections.txt", label_column="Label")
        mine = events[events["file"] == f"{name}.wav"]
        assert list(table["label"]) == list(mine["label"])
        np.testing.assert_allclose(table[["start_s", "end_s"]].to_numpy(), mine[["start_s", "end_s"]].to_numpy())
        assert set(table["file"]) <= {f"{name}.wav"}


def test_bad_files_are_listed_and_the_good_ones_processed(trained, long_dir, tmp_path):
    (long_dir / "corrupt.wav").write_bytes(b"RIFF junk that is not a wave file" * 20)
    (long_dir / "empty.mp3").write_bytes(b"")
    sf.write(str(long_dir / "silent.wav"), np.zeros(RATE * 3, np.float32), RATE)
    counts, _ = run_detect(trained[0], long_dir, tmp_path / "out", "--plot")
    assert set(counts["file"]) == {"demo_long.wav", "demo_long_2.wav"}
    assert (tmp_path / "out" / "demo_long_2.png").stat().st_size > 0
    assert not (tmp_path / "out" / "silent.png").exists()
    bad = pd.read_csv(tmp_path / "out" / "bad_files.csv")
    reasons = {Path(f).name: r for f, r in zip(bad["file"], bad["reason"])}
    assert set(reasons) == {"corrupt.wav", "empty.mp3", "silent.wav"}
    assert reasons["empty.mp3"].startswith("empty") and reasons["silent.wav"].startswith("silent")
    assert reasons["corrupt.wav"].startswith("not audio")


def test_an_interrupted_run_resumes_with_the_files_not_finished(trained, long_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    finish = detection_run.finish_file

    def killed_after_the_first_file(job, *args, **kwargs):
        if Path(job.path).name == "demo_long_2.wav":
            raise KeyboardInterrupt  # the run dies while the second file is being written
        return finish(job, *args, **kwargs)

    monkeypatch.setattr(detection_run, "finish_file", killed_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        run_detect(trained[0], long_dir, out, "--save-scores")
    assert not (out / "counts.csv").exists()  # no table was half written
    first = out / "parts" / "demo_long.wav.json"
    assert first.is_file() and not (out / "parts" / "demo_long_2.wav.json").exists()
    stamp = first.stat().st_mtime_ns

    monkeypatch.setattr(detection_run, "finish_file", finish)
    capsys.readouterr()
    counts, _ = run_detect(trained[0], long_dir, out, "--save-scores")
    assert "1 file(s) already finished" in capsys.readouterr().out
    assert first.stat().st_mtime_ns == stamp  # skipped, not redone
    assert set(counts["file"]) == {"demo_long.wav", "demo_long_2.wav"}
    for name in ("demo_long", "demo_long_2"):
        scores = pd.read_csv(out / f"{name}.scores.csv")
        assert list(scores.columns) == ["start_s", "end_s", "pulses", "upsweep", "whistle"]
    assert not list(out.rglob("*.tmp"))

    run_detect(trained[0], long_dir, out, "--overwrite")
    assert first.stat().st_mtime_ns != stamp


def test_top_k_ranks_the_labels_of_clip_files(trained, tmp_path):
    clips = Path(trained[1]["clips_dir"])
    folder = tmp_path / "clips"
    for label in ("upsweep", "whistle"):
        (folder / label).mkdir(parents=True)
        shutil.copy(clips / label / f"{label}_000.wav", folder / label / "a.wav")
    run_detect(trained[0], folder, tmp_path / "out", "--recursive", "--top-k", 2)
    ranking = pd.read_csv(tmp_path / "out" / "ranking.csv")
    assert list(ranking.columns) == ["file", "rank", "label", "score"]
    assert sorted(ranking["file"].unique()) == ["upsweep/a.wav", "whistle/a.wav"]
    assert ranking.groupby("file")["rank"].apply(list).tolist() == [[1, 2], [1, 2]]
    assert (ranking["score"].diff().fillna(0)[ranking["rank"] == 2] <= 0).all()  # best first
    assert (tmp_path / "out" / "upsweep" / "a.selections.txt").is_file()


@pytest.mark.parametrize("values, expected", [
    ([], {"a": 0.5, "b": 0.5}),
    (["0.7"], {"a": 0.7, "b": 0.7}),
    (["b=0.9"], {"a": 0.5, "b": 0.9}),
    (["0.6", "a=0.2"], {"a": 0.2, "b": 0.6}),
])
def test_parse_thresholds(values, expected):
    assert parse_thresholds(values, 0.5, ["a", "b"]) == expected


@pytest.mark.parametrize("values", [["c=0.5"], ["a=high"], ["1.5"]])
def test_parse_thresholds_refuses(values):
    with pytest.raises(DetectError):
        parse_thresholds(values, 0.5, ["a", "b"])


def test_output_names_keep_folders_and_tell_twins_apart(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [str(inputs / n) for n in ("a.wav", "a.mp3", "site/b.flac")]
    outputs = Outputs(tmp_path / "out", detection_run.output_names(paths, str(inputs)), plot=False, save_scores=False)
    assert [outputs.names[p] for p in paths] == ["a.wav", "a.mp3", "site/b.flac"]
    assert [outputs.file(p, ".selections.txt").relative_to(tmp_path / "out").as_posix() for p in paths] == [
        "a.wav.selections.txt", "a.mp3.selections.txt", "site/b.selections.txt"]
    assert outputs.part(paths[2]) == tmp_path / "out" / "parts" / "site" / "b.flac.json"


def test_a_selection_table_written_by_detect_reads_back_as_truth(tmp_path):
    from pipeline.records.annotations import write_raven
    from pipeline.detection.outputs import events_frame
    from pipeline.detection.events import Event
    path = tmp_path / "rec.selections.txt"
    write_raven(events_frame("rec.wav", [Event("call", 1.0, 2.5, 0.9, 0.7)], 500.0, 8000.0), path)
    truth = read_truth_table(str(path))
    assert list(truth[["file", "start_s", "end_s", "low_hz", "high_hz", "label"]].itertuples(index=False, name=None)) \
        == [("rec.wav", 1.0, 2.5, 500.0, 8000.0, "call")]


LEGACY_RUN = Path(__file__).resolve().parent / "fixtures" / "legacy_run"


def test_a_run_directory_written_before_the_restructure_still_detects(tmp_path):
    """tests/fixtures/legacy_run: config.yaml, labels.json and model.keras as train.py wrote them
    before the restructure (commit e71b217: model.pooling, detect.window_s, augmentation settings
    inside model.keras, no framing). detect.py loads it, and its window scores are the model's
    own on the same audio."""
    from models.classifier import load_classifier

    run = tmp_path / "legacy_run"
    shutil.copytree(LEGACY_RUN, run)
    rng = np.random.default_rng(2)
    t = np.arange(6 * 16000) / 16000
    wave = (0.05 * rng.normal(size=t.size) + 0.3 * np.sin(2 * np.pi * (900 + 400 * t) * t)).astype(np.float32)
    sf.write(tmp_path / "long.wav", wave, 16000)
    out = tmp_path / "detect"
    assert detect.main(["--model", str(run), "--input", str(tmp_path / "long.wav"), "--out", str(out),
                        "--hop-s", "1.5", "--save-scores"]) == 0
    counts = pd.read_csv(out / "counts.csv")
    assert set(counts["label"]) == {"pulses", "upsweep", "whistle"}
    scores = pd.read_csv(out / "long.scores.csv")
    model = load_classifier(run / "model.keras")
    context = model.framing.context_samples
    window = model.framing.window
    assert window == 24000 and context == 256  # the clip and the frontend's half window
    second = wave[24000 - context:48000 + context][None]  # the window starting at 1.5 s
    expected = model(second, training=False).numpy()[0]
    np.testing.assert_allclose(scores.loc[1, ["pulses", "upsweep", "whistle"]].to_numpy(float), expected[1:],
                               atol=1e-4)
