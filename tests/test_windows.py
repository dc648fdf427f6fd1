"""Annotation -> window records: call windows hold their call, negatives avoid every call."""
import numpy as np
import pandas as pd
import pytest

from pipeline.records.windows import annotation_records, call_regions, gaps


@pytest.mark.parametrize("start, end, clip, expected", [
    (10.0, 11.0, 3.0, [(8.0, 13.0)]),                   # every 3 s window inside holds the call
    (10.0, 13.0, 3.0, [(10.0, 13.0)]),                  # exactly one clip long
    (10.0, 16.0, 3.0, [(10.0, 13.0), (13.0, 16.0)]),    # long call: tiles
    (10.0, 17.0, 3.0, [(10.0, 13.0), (12.0, 15.0), (14.0, 17.0)]),
])
def test_call_regions(start, end, clip, expected):
    np.testing.assert_allclose(call_regions(start, end, clip), expected)


def test_gaps_keep_margin():
    assert gaps([(2.0, 3.0), (3.5, 4.0)], 10.0, 0.5) == [(0.0, 1.5), (4.5, 10.0)]
    assert gaps([], 5.0, 1.0) == [(0.0, 5.0)]
    assert gaps([(0.0, 5.0)], 5.0, 0.0) == []


def test_negatives_never_overlap_calls():
    rng = np.random.default_rng(0)
    rows = []
    for f in range(3):
        t = 0.0
        for _ in range(15):
            t += rng.uniform(1.0, 8.0)
            rows.append((f"rec{f}.wav", t, t + rng.uniform(0.2, 1.5), "call"))
            t = rows[-1][2]
    table = pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label"])
    durations = {f"rec{f}.wav": 200.0 for f in range(3)}
    records = annotation_records(table, durations, clip_s=1.0, negative_label="noise",
                                 negatives_per_positive=2.0, margin_s=0.25, seed=1)
    negatives = records[records["label"] == "noise"]
    assert len(negatives) == 2 * len(table)
    for _, neg in negatives.iterrows():
        calls = table[table["file"] == neg["file"]]
        assert neg["end_s"] - neg["start_s"] == pytest.approx(1.0)
        assert 0.0 <= neg["start_s"] and neg["end_s"] <= 200.0
        clear = (calls["end_s"] + 0.25 <= neg["start_s"]) | (calls["start_s"] - 0.25 >= neg["end_s"])
        assert clear.all()
    positives = records[records["label"] == "call"]
    expected = sum(len(call_regions(s, e, 1.0)) for s, e in zip(table["start_s"], table["end_s"]))
    assert len(positives) == expected > len(table)  # calls over 1 s give several windows
    assert (positives["group"] == positives["file"]).all()


def test_multilabel_windows_carry_overlapping_calls():
    table = pd.DataFrame([("a.wav", 5.0, 6.0, "x"), ("a.wav", 5.5, 6.2, "y"), ("a.wav", 20.0, 20.5, "x")],
                         columns=["file", "start_s", "end_s", "label"])
    records = annotation_records(table, {"a.wav": 30.0}, 2.0, "noise", 0.0, 0.5, 0, multilabel=True)
    assert list(records["label"]) == ["x;y", "x;y", "x"]


def test_centre_windows_are_centred_in_their_call_and_non_call_windows_between_calls():
    """call_windows "centre": every crop of a call window is centred inside the call (long calls in
    parts), and non-call windows are centred in the gaps, the short gaps between calls in quick
    succession included, at least the margin from every call."""
    from pipeline.records.windows import centre_regions

    assert centre_regions(2.0, 2.4, 1.0) == [(1.5, 2.9)]  # crops of 1 s centred in [2.0, 2.4]
    assert centre_regions(0.0, 3.0, 1.0) == [(-0.5, 1.5), (0.5, 2.5), (1.5, 3.5)]
    # Notes 0.5 s long, 0.4 s apart, then a long pause.
    calls = [(1.0 + 0.9 * i, 1.5 + 0.9 * i) for i in range(5)]
    table = pd.DataFrame({"file": "a.wav", "start_s": [s for s, _ in calls], "end_s": [e for _, e in calls],
                          "label": "call"})
    records = annotation_records(table, {"a.wav": 30.0}, 1.0, "noise", negatives_per_positive=40,
                                 margin_s=0.1, seed=0, call_windows="centre")
    positives = records[records["label"] == "call"]
    for (s, e), (_, row) in zip(calls, positives.iterrows()):
        assert (row["start_s"] + 0.5, row["end_s"] - 0.5) == pytest.approx((s, e))  # centre range = the call
    negatives = records[records["label"] == "noise"]
    centres = (negatives["start_s"] + negatives["end_s"]) / 2
    assert np.allclose(negatives["end_s"] - negatives["start_s"], 1.0)
    assert all(min(abs(c - s), abs(c - e)) >= 0.1 - 1e-9 and not s <= c <= e for c in centres for s, e in calls)
    between = centres[(centres > 1.5) & (centres < 4.6)]
    assert len(between) > 0  # the 0.4-s gaps give non-call windows
    whole = annotation_records(table, {"a.wav": 30.0}, 1.0, "noise", negatives_per_positive=40,
                               margin_s=0.1, seed=0)
    whole_centres = (whole["start_s"] + whole["end_s"]) / 2
    assert not ((whole["label"] == "noise") & (whole_centres > 1.5) & (whole_centres < 4.6)).any()
