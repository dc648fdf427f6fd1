"""Annotation readers against real tables made by others, plus synthetic edge cases."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.records.annotations import (ANNOTATION_COLUMNS, AnnotationError, detect_format, read_annotations,
                                  read_audacity, read_csv_annotations, read_raven, validate_annotations,
                                  write_raven)

RAVEN_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "raven_tables"
# Collected at import so that each table is its own test; the shared_data fixture skips them all
# (with its reason) when the folder is absent.
RAVEN_TABLES = sorted(p.name for p in RAVEN_DIR.glob("*.txt")) if RAVEN_DIR.is_dir() else ["(absent)"]


def raw_selection_count(path: Path) -> int:
    """Distinct values of the Selection column, straight from the text."""
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    at = lines[0].split("\t").index("Selection")
    return len({line.split("\t")[at] for line in lines[1:]})


def test_raven_folder_holds_the_31_tables(shared_data):
    assert len(list((shared_data / "raven_tables").glob("*.txt"))) == 31


@pytest.mark.parametrize("name", RAVEN_TABLES)
def test_every_real_raven_table_parses(shared_data, name):
    path = shared_data / "raven_tables" / name
    table = read_raven(path, audio_dir="/audio")
    assert list(table.columns) == ANNOTATION_COLUMNS
    assert len(table) == raw_selection_count(path) > 0
    for column in ("start_s", "end_s", "low_hz", "high_hz"):
        assert table[column].dtype == np.float64
    assert table[["start_s", "end_s"]].notna().all().all()
    assert (table["end_s"] >= table["start_s"]).all()
    assert (table["start_s"] >= 0).all()
    # Five of the tables name the label column `Call.type` (written from R): still found.
    assert (table["label"].str.len() > 0).all()
    stem = name.split(".Table.")[0]
    assert set(table["file"]) == {f"/audio/{stem}.wav"}
    good, problems = validate_annotations(table)
    assert problems.empty and len(good) == len(table)


def test_raven_selection_singular_name_infers_audio(shared_data):
    path = shared_data / "raven_tables" / "S10_20180702_060002.Table.1.selection.txt"
    table = read_raven(path, audio_ext="flac")
    assert set(table["file"]) == {"S10_20180702_060002.flac"}
    assert detect_format(path) == "raven"


def test_spinetail_audacity_labels(shared_data):
    path = shared_data / "spinetail" / "spinetail.txt"
    audio = str(shared_data / "spinetail" / "spinetail.wav")
    table = read_audacity(path, audio_file=audio)
    assert len(table) == 18
    assert set(table["label"]) == {"SP", "CRER"}
    assert set(table["file"]) == {audio}
    assert table[["low_hz", "high_hz"]].notna().all().all()
    assert (table["low_hz"] < table["high_hz"]).all()
    first, band = path.read_text().splitlines()[:2]
    start, end, label = first.split("\t")
    _, low, high = band.split("\t")
    row = table.iloc[0]
    assert (row["start_s"], row["end_s"], row["label"]) == (float(start), float(end), label)
    assert (row["low_hz"], row["high_hz"]) == (float(low), float(high))
    assert read_annotations(path, audio_file=audio).equals(table)


def test_piha_csv(shared_data):
    folder = shared_data / "piha"
    table = read_annotations(folder / "annotations.csv", audio_dir=folder)
    assert len(table) == 170
    assert set(table["label"]) == {"piha"}
    assert table[["low_hz", "high_hz"]].isna().all().all()
    assert all(Path(f).is_file() for f in set(table["file"]))
    assert validate_annotations(table)[1].empty


def test_write_raven_round_trip(tmp_path):
    events = pd.DataFrame({
        "file": ["/recordings/site 1/a.wav"] * 4,
        "start_s": [0.1234567, 12.0, 3599.999999, 7.25],
        "end_s": [1.7654321, 12.5, 3600.5, 7.25],
        "low_hz": [150.5, np.nan, 2000.0, 0.0],
        "high_hz": [8000.25, np.nan, 4000.0, 11025.0],
        "label": ["female gibbon", "Noise", "rhino", "ñandú"],
    })
    path = tmp_path / "a.Table.1.selections.txt"
    path.write_text("stale\n")
    write_raven(events, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t")[:7] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                                        "Low Freq (Hz)", "High Freq (Hz)"]
    assert lines[1].split("\t")[:3] == ["1", "Spectrogram 1", "1"]
    back = read_raven(path, label_column="Label")
    np.testing.assert_allclose(back["start_s"], events["start_s"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(back["end_s"], events["end_s"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(back["low_hz"], events["low_hz"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(back["high_hz"], events["high_hz"], atol=1e-6, rtol=0)
    assert list(back["label"]) == list(events["label"])
    assert set(back["file"]) == {"a.wav"}
    assert set(read_raven(path, label_column="Label", audio_dir="/x")["file"]) == {"/x/a.wav"}
    # candidate label columns: the first the table has
    assert list(read_raven(path, label_column=["Call type", "Label"])["label"]) == list(events["label"])
    with pytest.raises(AnnotationError, match="no label column"):
        read_raven(path, label_column=["Call type", "Species"])


def test_write_raven_refuses_what_raven_cannot_hold(tmp_path):
    two_files = pd.DataFrame({"file": ["a.wav", "b.wav"], "start_s": [0.0, 1.0], "end_s": [1.0, 2.0],
                              "low_hz": np.nan, "high_hz": np.nan, "label": ["x", "y"]})
    with pytest.raises(AnnotationError, match="2 audio files"):
        write_raven(two_files, tmp_path / "t.txt")
    tab = two_files.assign(file="a.wav", label=["x\ty", "z"])
    with pytest.raises(AnnotationError, match="tab or line break"):
        write_raven(tab, tmp_path / "t.txt")
    with pytest.raises(AnnotationError, match="clashes"):
        write_raven(two_files.assign(file=""), tmp_path / "t.txt", label_column="Begin Time (s)")
    assert not list(tmp_path.iterdir())


def test_synthetic_raven_bom_crlf_duplicate_views(tmp_path):
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
              "High Freq (Hz)", "Delta Time (s)", "Call type"]
    rows = [
        ["1", "Waveform 1", "1", "1.5", "2.5", "0", "0", "1.0", "song"],
        ["1", "Spectrogram 1", "1", "1.5", "2.5", "300", "900", "1.0", "song"],
        ["2", "Spectrogram 1", "1", "4.0", "4.75", "100.5", "700", "0.75", "call"],
        ["2", "Waveform 1", "1", "4.0", "4.75", "0", "0", "0.75", "call"],
        ["3", "Waveform 1", "1", "6.0", "7.0", "", "", "1.0", ""],
    ]
    text = "\r\n".join("\t".join(r) + "\t" for r in [header] + rows) + "\r\n\r\n"
    path = tmp_path / "REC_01.Table.2.selection.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    table = read_raven(path, audio_dir=tmp_path, audio_ext=".flac", default_label="unknown")
    assert list(table["start_s"]) == [1.5, 4.0, 6.0]
    assert list(table["end_s"]) == [2.5, 4.75, 7.0]
    assert list(table["low_hz"][:2]) == [300.0, 100.5]  # the spectrogram rows, wherever they come
    assert list(table["high_hz"][:2]) == [900.0, 700.0]
    assert table["low_hz"].isna().iloc[2]
    assert list(table["label"]) == ["song", "call", "unknown"]
    assert set(table["file"]) == {str(tmp_path / "REC_01.flac")}
    assert read_annotations(path, default_label="unknown").shape == (3, 6)


def test_raven_begin_file_and_file_offset(tmp_path):
    """In a file sequence, Begin Time counts from the first file; File Offset is within the file."""
    path = tmp_path / "night.txt"
    path.write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin Path\tFile Offset (s)\tSpecies\n"
        "1\tSpectrogram 1\t1\t10.0\t12.0\tC:\\data\\f1.wav\t10.0\tA\n"
        "2\tSpectrogram 1\t1\t3610.0\t3611.5\tC:\\data\\f2.wav\t10.0\tB\n")
    table = read_annotations(path, label_column="Species", audio_dir="/audio")
    assert list(table["file"]) == ["/audio/f1.wav", "/audio/f2.wav"]
    assert list(table["start_s"]) == [10.0, 10.0]
    assert list(table["end_s"]) == [12.0, 11.5]
    assert read_raven(path, label_column="Species")["file"].iloc[0] == "C:\\data\\f1.wav"


def test_raven_errors_name_table_line_and_problem(tmp_path):
    header = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tCall type\n"
    bad_time = tmp_path / "bad.Table.1.selections.txt"
    bad_time.write_text(header + "1\tSpectrogram 1\t1\t0.5\t1.0\ta\n2\tSpectrogram 1\t1\tabc\t2.0\tb\n")
    with pytest.raises(AnnotationError, match=r"bad\.Table\.1\.selections\.txt:3: Begin Time \(s\) 'abc'"):
        read_raven(bad_time)
    with pytest.raises(AnnotationError, match=r":1: no label column 'Species'.*default_label"):
        read_raven(bad_time, label_column="Species")
    repeated = tmp_path / "rep.txt"
    repeated.write_text(header + "1\tSpectrogram 1\t1\t0\t1\ta\n1\tSpectrogram 1\t1\t5\t6\tb\n")
    with pytest.raises(AnnotationError,
                       match=r"rep\.txt:3: selection 1 repeats view 'Spectrogram 1' of line 2"):
        read_raven(repeated)
    no_end = tmp_path / "noend.txt"
    no_end.write_text("Selection\tBegin Time (s)\tCall type\n1\t0\ta\n")
    with pytest.raises(AnnotationError, match=r"noend\.txt:1: no 'End Time \(s\)' column"):
        read_raven(no_end)
    empty = tmp_path / "empty.selections.txt"
    empty.write_text(header)
    assert read_raven(empty).empty and list(read_raven(empty).columns) == ANNOTATION_COLUMNS


def test_audacity_edge_cases(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"1.0\t2.0\tbird call\r\n\\\t-1.000000\t5000.0\r\n3,5\t4,0\r\n5\t5\tpoint\r\n")
    table = read_annotations(path, audio_file="x.wav", default_label="bird")
    assert list(table["start_s"]) == [1.0, 3.5, 5.0]
    assert list(table["label"]) == ["bird call", "bird", "point"]
    assert math.isnan(table["low_hz"].iloc[0]) and table["high_hz"].iloc[0] == 5000.0
    assert set(read_annotations(path)["file"]) == {""}
    orphan = tmp_path / "orphan.txt"
    orphan.write_text("\\\t100\t200\n")
    with pytest.raises(AnnotationError, match=r"orphan\.txt:1: frequency line before any label"):
        read_audacity(orphan, "x.wav")
    bad = tmp_path / "bad.txt"
    bad.write_text("1.0\t2.0\tok\n1.5\tlate\tx\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:2: end time 'late' is not a number"):
        read_audacity(bad, "x.wav")


def test_csv_column_mapping_and_locale(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text("Recording;Begin;End;fmin;fmax;Species\n"
                    "a.wav;0,5;1,25;100;2000;wren\n\n"
                    "/abs/b.wav;2;3;;;robin\n")
    mapping = {"file": "Recording", "start_s": "Begin", "end_s": "End", "low_hz": "fmin",
               "high_hz": "fmax", "label": "Species"}
    table = read_csv_annotations(path, columns=mapping, audio_dir="/data")
    assert list(table["file"]) == ["/data/a.wav", "/abs/b.wav"]
    assert list(table["start_s"]) == [0.5, 2.0] and list(table["end_s"]) == [1.25, 3.0]
    assert table["low_hz"].iloc[0] == 100.0 and math.isnan(table["low_hz"].iloc[1])
    with pytest.raises(AnnotationError, match=r"ann\.csv:1: no column 'start_s'"):
        read_csv_annotations(path)
    with pytest.raises(AnnotationError, match="unknown key"):
        read_csv_annotations(path, columns={"begin": "Begin"})
    bad = tmp_path / "bad.csv"
    bad.write_text("file,start_s,end_s,label\na.wav,0,1,x\na.wav,one,2,y\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:3: start_s 'one' is not a number"):
        read_csv_annotations(bad)
    no_file = tmp_path / "nofile.csv"
    no_file.write_text("start_s,end_s,label\n0,1,x\n")
    assert list(read_annotations(no_file)["file"]) == [""]


def test_detect_format(tmp_path):
    raven = tmp_path / "anything.txt"
    raven.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\n")
    audacity = tmp_path / "track.txt"
    audacity.write_text("0.5\t1.0\tx\n")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello world\n")
    assert detect_format(raven) == "raven"
    assert detect_format(audacity) == "audacity"
    with pytest.raises(AnnotationError, match="cannot tell"):
        read_annotations(unknown)
    with pytest.raises(AnnotationError, match="fmt"):
        read_annotations(audacity, fmt="praat")


def test_validate_reports_bad_rows_with_reasons():
    table = pd.DataFrame([
        ("a.wav", 1.0, 2.0, np.nan, np.nan, "ok"),
        ("a.wav", 3.0, 2.0, np.nan, np.nan, "x"),        # end before start
        ("a.wav", -1.0, 2.0, np.nan, np.nan, "x"),       # negative
        ("a.wav", np.nan, 2.0, np.nan, np.nan, "x"),     # NaN start
        ("a.wav", 11.0, 12.0, np.nan, np.nan, "x"),      # beyond the 10 s file
        ("b.wav", 1.0, 2.0, np.nan, np.nan, "x"),        # file without a duration
        ("a.wav", 1.0, 2.0, 5000.0, 100.0, ""),          # inverted band and empty label
        ("a.wav", 9.5, 10.5, 100.0, 5000.0, "tail"),     # runs past the end: kept
        ("a.wav", -np.inf, 1.0, np.nan, np.nan, "x"),    # infinite: one reason, not three
    ], columns=ANNOTATION_COLUMNS)
    good, problems = validate_annotations(table, durations={"a.wav": 10.0})
    assert list(good.index) == [0, 7]
    assert list(problems.columns) == ["file", "reason"]
    reasons = problems["reason"].to_dict()
    assert "end (2.0 s) before start (3.0 s)" in reasons[1]
    assert "negative start time" in reasons[2]
    assert "missing start time" in reasons[3]
    assert "after the end of the file (10.0 s)" in reasons[4]
    assert reasons[5] == "file not in durations" and problems.loc[5, "file"] == "b.wav"
    assert "low frequency" in reasons[6] and "empty label" in reasons[6]
    assert reasons[8] == "start time is -inf"
    good, problems = validate_annotations(table)
    assert set(problems.index) == {1, 2, 3, 6, 8}
