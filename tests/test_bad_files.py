"""Bad files in an archive: every one is reported with a reason a person can act on, the same in
the file check, train.py and detect.py; every good one is used; no reason carries TensorFlow's
own error text."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import detect
import train
from pipeline.audio.info import Limits
from pipeline.records.scan import check_file
from tests.brokenfiles import FORBIDDEN, RATE, write_corpus
from tests.helpers import set_args


def kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def assert_plain(reasons) -> None:
    for reason in reasons:
        assert not any(text in reason for text in FORBIDDEN), reason
        assert "\n" not in reason and len(reason) < 300, reason


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "calls"
    return folder, write_corpus(folder)


def test_the_file_check_names_each_problem(corpus):
    folder, expected = corpus
    limits = Limits(min_duration_s=0.032)  # one frontend window of the demo config
    for name, want in expected.items():
        info, reason = check_file(str(folder / name), limits)
        if want is None:
            assert reason is None and info["frames"] > 0, (name, reason)
        else:
            assert reason is not None and kind(reason) == want, (name, reason)
            assert_plain([reason])


@pytest.mark.parametrize("name, reason", [
    ("alaw.wav", "unsupported: WAV encoding A-law (format tag 6); convert it to 16-bit PCM WAV or FLAC"),
    ("text.wav", 'not audio: a text file (starts with "This is ")'),
    ("truncated_data.wav", "truncated: the header declares 16000 frames, the file holds "),
    ("directory.wav", "not a file: a directory"),
    ("dangling.wav", "not a file: broken symbolic link"),
    ("one_sample.wav", "too short: 1 sample (minimum 0.032 s)"),
    ("flac_bad_metadata.flac", "unreadable: FLAC stream (bad metadata"),
    ("zero_channels.wav", "damaged: the WAV header gives 0 channels"),
    ("wav_named.mp3", "unsupported: WAV data in a .mp3 file; rename it to .wav"),
])
def test_reasons_in_plain_words(corpus, name, reason):
    folder, _ = corpus
    assert check_file(str(folder / name), Limits(min_duration_s=0.032))[1].startswith(reason)


def archive(root: Path, corpus_folder: Path) -> Path:
    """A folder-per-class archive: the corpus as one class beside a clean class of tones."""
    import shutil

    shutil.copytree(corpus_folder, root / "calls", symlinks=True)
    (root / "quiet").mkdir()
    for i in range(12):
        t = np.arange(RATE) / RATE
        sf.write(root / "quiet" / f"q{i}.wav", (0.2 * np.sin(2 * np.pi * (300 + 20 * i) * t)).astype(np.float32), RATE)
    return root


def test_train_and_detect_report_every_bad_file_and_use_every_good_one(corpus, tmp_path):
    folder, expected = corpus
    root = archive(tmp_path / "archive", folder)
    config = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
    run = tmp_path / "run"
    overrides = [f"data.root={root}", "data.source=folders", "data.pattern='**/*'", "audio.clip_s=1.0",
                 "augment.enabled=false", "train.epochs=1", "model.width=4", "model.depth=1",
                 "pipeline.batch_size=4", "train.image_examples=0", "data.val_fraction=0.2",
                 "data.test_fraction=0.2"]
    assert train.main(["--config", str(config), "--out", str(run), *set_args(overrides)]) == 0
    bad = pd.read_csv(run / "bad_files.csv")
    reasons = {Path(f).name: r for f, r in zip(bad["file"], bad["reason"]) if Path(f).parent.name == "calls"}
    assert_plain(bad["reason"])
    for name, want in expected.items():
        if want is None:
            assert name not in reasons, (name, reasons.get(name))
        else:
            assert name in reasons and kind(reasons[name]) == want, (name, reasons.get(name))
    used = {Path(f).name for f in pd.read_csv(run / "split_manifest.csv")["file"]}
    assert {n for n, w in expected.items() if w is None} <= used

    out = tmp_path / "detect"
    assert detect.main(["--model", str(run), "--input", str(folder), "--out", str(out)]) == 0
    bad = pd.read_csv(out / "bad_files.csv")
    assert_plain(bad["reason"])
    reasons = {Path(f).name: r for f, r in zip(bad["file"], bad["reason"])}
    # Detection's minimum duration is one frontend window; it lists only names with audio (or
    # other audio) extensions.
    wanted = {n: w for n, w in expected.items() if n != "notes.txt"}
    for name, want in wanted.items():
        if want is None:
            assert name not in reasons, (name, reasons.get(name))
        else:
            assert name in reasons and kind(reasons[name]) == want, (name, reasons.get(name))
    processed = set(pd.read_csv(out / "counts.csv")["file"])
    assert processed == {n for n, w in wanted.items() if w is None}
    assert json.loads((out / "detect.json").read_text())["labels"]


def test_entry_points_start_without_tensorflow_noise():
    """The cuFFT/cuDNN/cuBLAS registration lines TensorFlow prints at import never reach the console."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    for command in (["train.py", "--help"], ["detect.py", "--help"], ["-m", "tuning", "--help"],
                    ["-m", "pipeline.tools.export", "--help"], ["-m", "pipeline.tools.bench_detect", "--help"],
                    ["-m", "models.backbones.registry", "--help"]):
        done = subprocess.run([sys.executable, *command], cwd=repo, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)})
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Unable to register" not in done.stderr and "TF-TRT" not in done.stderr, (command, done.stderr)
