"""The README's main job, checked as a user would read it: configs/demo.yaml as it is, end to end
(synthesize, train, detect), exact counts on both long recordings; and the same training reliable
whatever the seed: high test accuracy, validation that follows training without collapsing.

The data are shrunk (fewer clips per class than `make demo` synthesizes), never the checks."""
import json
from pathlib import Path

import pandas as pd
import pytest

import detect
import train
from pipeline.tools.synth import synthesize
from tests.helpers import set_args

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
# Validation accuracy may not fall by more than this from one epoch to the next after epoch 5.
MAX_DROP = 0.2


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    return synthesize(root, seed=0, clips_per_class=40, clip_s=1.5)


def train_demo(data: dict, out: Path, *overrides: str) -> dict:
    sets = [f"data.root={data['root']}", *overrides]
    assert train.main(["--config", str(DEMO), "--out", str(out), *set_args(sets)]) == 0
    return json.loads((out / "metrics.json").read_text())


def assert_validation_follows_training(run: Path) -> None:
    accuracy = pd.read_csv(run / "history.csv")["val_accuracy"].to_numpy()
    drops = accuracy[5:-1] - accuracy[6:]
    assert (drops <= MAX_DROP).all(), f"validation accuracy by epoch: {accuracy.round(2).tolist()}"


def test_the_demo_finds_and_counts_every_call(demo_data, tmp_path):
    run = tmp_path / "run"
    metrics = train_demo(demo_data, run)
    assert metrics["accuracy"] == 1.0, metrics
    assert_validation_follows_training(run)
    out = tmp_path / "detect"
    long_dir = Path(demo_data["long"][0]).parent
    assert detect.main(["--model", str(run), "--input", str(long_dir), "--out", str(out),
                        "--truth", str(demo_data["truth_csv"])]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["totals"]["f1"] >= 0.95, report["totals"]
    counts = pd.read_csv(out / "counts.csv")
    truth = demo_data["truth"].assign(file=lambda t: t["file"].map(lambda f: Path(f).name))
    expected = truth.groupby(["file", "label"]).size()
    got = counts.set_index(["file", "label"])["count"]
    assert got.sort_index().to_dict() == expected.reindex(got.index, fill_value=0).sort_index().to_dict()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_demo_training_is_reliable_for_any_seed(demo_data, tmp_path, seed):
    metrics = train_demo(demo_data, tmp_path, f"pipeline.seed={seed}", "train.image_examples=0")
    assert metrics["accuracy"] >= 0.95, metrics
    assert_validation_follows_training(tmp_path)
