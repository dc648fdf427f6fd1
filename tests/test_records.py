"""Config -> checked records: annotation tables over long recordings, bad rows reported."""
import pandas as pd

from pipeline.config import from_dict
from pipeline.records.prepare import prepare_records
from pipeline.tools.synth import synthesize


def test_annotation_source_end_to_end(tmp_path):
    data = synthesize(tmp_path / "demo", seed=2, clips_per_class=2, clip_s=1.5, long_s=30.0)
    long_dir = tmp_path / "demo" / "long"
    truth = pd.read_csv(data["truth_csv"])
    bad_rows = pd.DataFrame([("demo_long.wav", 5.0, 4.0, "upsweep"),      # end before start
                             ("demo_long.wav", 999.0, 1000.0, "upsweep"),  # after the file's end
                             ("nowhere.wav", 1.0, 2.0, "upsweep")],        # no such recording
                            columns=truth.columns)
    pd.concat([truth, bad_rows]).to_csv(long_dir / "table.csv", index=False)
    cfg = from_dict({
        "audio": {"clip_s": 1.5},
        "data": {"root": str(long_dir), "source": "annotations", "annotations": "table.csv",
                 "negatives_per_positive": 1.0, "negative_margin_s": 0.25, "val_fraction": 0.0,
                 "test_fraction": 0.3},
    })
    run = tmp_path / "run"
    run.mkdir()
    records, bad = prepare_records(cfg, run)
    report = pd.read_csv(run / "bad_files.csv")
    assert len(report) == 3 and report["file"].str.endswith("nowhere.wav").sum() == 1
    assert report["reason"].str.contains("end").sum() >= 1
    calls = records[records["label"] != "noise"]
    assert len(calls) == len(truth)  # every call (all <= 1.5 s) gives one window
    assert (records["label"] == "noise").sum() == len(truth)
    assert (records.groupby("group")["split"].nunique() == 1).all()  # recordings never straddle splits
    assert set(records["sample_rate_hz"]) == {16000}
