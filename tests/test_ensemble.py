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
