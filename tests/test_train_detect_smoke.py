"""The demo's path end to end, shrunk: synthesize -> train.py -> detect.py (what `make demo` runs)."""
import json
from pathlib import Path

import pandas as pd

import detect
import train
from pipeline.tools.synth import synthesize
from tests.helpers import set_args

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_train_then_detect_writes_run_and_counts(tmp_path):
    data = synthesize(tmp_path / "demo", seed=1, clips_per_class=8, clip_s=1.5, long_s=12.0)
    run = tmp_path / "run"
    overrides = [f"data.root={tmp_path / 'demo'}", "train.epochs=1", "model.width=4", "model.depth=1",
                 "pipeline.batch_size=8"]
    assert train.main(["--config", str(CONFIGS / "demo.yaml"), "--out", str(run),
                       *set_args(overrides)]) == 0
    for name in ("config.yaml", "split_manifest.csv", "bad_files.csv", "labels.json", "model.keras",
                 "metrics.json", "classification_report.txt"):
        assert (run / name).exists(), name
    assert json.loads((run / "labels.json").read_text())["names"] == ["noise", "pulses", "upsweep", "whistle"]

    out = tmp_path / "detect"
    long_dir = Path(data["long"][0]).parent
    assert detect.main(["--model", str(run), "--input", str(long_dir), "--out", str(out),
                        "--truth", str(data["truth_csv"])]) == 0
    counts = pd.read_csv(out / "counts.csv")
    assert len(counts) == 2 * 3  # every file x every call label, zeros included
    assert set(counts["label"]) == {"pulses", "upsweep", "whistle"}
    events = pd.read_csv(out / "events.csv")
    per_file = events.groupby(["file", "label"]).size()
    assert counts.set_index(["file", "label"])["count"].to_dict() == per_file.reindex(
        counts.set_index(["file", "label"]).index, fill_value=0).to_dict()  # counts are the events
    totals = json.loads((out / "eval.json").read_text())["totals"]
    assert totals["true_count"] == len(data["truth"]) and totals["detected_count"] == len(events)
