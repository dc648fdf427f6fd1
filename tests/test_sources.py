"""Archive layouts -> records, and leak-free grouped splits."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.config import load_config
from pipeline.records.sources import from_folders, from_glob, from_manifest
from pipeline.records.splits import manifest_hash, split_records

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_watkins_pattern_gives_ten_labels_and_no_group_in_two_splits(shared_data):
    cfg = load_config(CONFIGS / "watkins10.yaml", [f"data.root={shared_data / 'watkins10'}"])
    records = from_glob(cfg.data.root, cfg.data.pattern, cfg.data.label_regex)
    assert len(records) == 1088
    assert sorted(records["label"].unique()) == sorted(
        ["WW", "FKW", "ASD", "BW", "CD", "LFPW", "MHW", "NRW", "RS", "SW"])
    assert records.loc[records["file"].str.endswith("3_BW_17_2.wav"), "group"].item() == "BW_17"
    split = split_records(records, 0.15, 0.2, seed=42)
    assert (split.groupby("group")["split"].nunique() == 1).all()
    for name, share in (("test", 0.2), ("val", 0.15)):
        per_label = split[split["split"] == name].groupby("label").size()
        assert len(per_label) == 10  # stratified: every class in every split
        assert abs(per_label.sum() / len(split) - share) < 0.05


def test_split_is_seeded_and_hashable():
    records = pd.DataFrame({"file": [f"f{i}" for i in range(40)], "start_s": np.nan, "end_s": np.nan,
                            "label": ["a", "b"] * 20, "group": [f"g{i // 2}" for i in range(40)]})
    a, b = split_records(records, 0.2, 0.2, 1), split_records(records, 0.2, 0.2, 1)
    assert manifest_hash(a) == manifest_hash(b)
    assert manifest_hash(a) != manifest_hash(split_records(records, 0.2, 0.2, 2))
    assert (a.groupby("group")["split"].nunique() == 1).all()


def test_folder_and_manifest_layouts(tmp_path):
    for label in ("Parsed_Capuchinbird_Clips", "Parsed_Not_Capuchinbird_Clips"):
        (tmp_path / label).mkdir()
        for i in range(3):
            sf.write(tmp_path / label / f"x{i}.wav", np.zeros(100, np.float32), 8000)
    (tmp_path / "Parsed_Capuchinbird_Clips" / "notes.txt").write_text("not audio")
    records = from_folders(tmp_path)
    audio = records[records["file"].str.endswith(".wav")]
    assert audio.groupby("label").size().to_dict() == {
        "Parsed_Capuchinbird_Clips": 3, "Parsed_Not_Capuchinbird_Clips": 3}
    # Listed for the file scan to report, not skipped silently.
    assert list(records.loc[~records["file"].str.endswith(".wav"), "file"]) == [
        str(tmp_path / "Parsed_Capuchinbird_Clips" / "notes.txt")]
    (tmp_path / "m.csv").write_text("file,label,start_s,end_s\nParsed_Capuchinbird_Clips/x0.wav,call,0.1,0.2\n")
    manifest = from_manifest(tmp_path, "m.csv")
    assert manifest.loc[0, "file"] == str(tmp_path / "Parsed_Capuchinbird_Clips" / "x0.wav")
    assert manifest.loc[0, "start_s"] == 0.1 and manifest.loc[0, "group"] == "x0"


def test_manifest_column_names_and_label_map_from_config(tmp_path):
    from pipeline.config import ConfigError, from_dict
    from pipeline.records.sources import load_records

    sf.write(tmp_path / "a.wav", np.zeros(100, np.float32), 8000)
    (tmp_path / "m.csv").write_text("path,species\na.wav,helemeted\n")
    cfg = from_dict({"data": {"root": str(tmp_path), "source": "manifest", "manifest": "m.csv",
                              "columns": {"file": "path", "label": "species"},
                              "label_map": {"helemeted": "helmeted"}}})
    records = load_records(cfg.data)
    assert records.loc[0, "label"] == "helmeted" and records.loc[0, "file"] == str(tmp_path / "a.wav")
    with pytest.raises(ConfigError, match="data.columns"):
        from_dict({"data": {"columns": ["file"]}})
