"""Matching detected events to true calls and the scores built on it: table-driven, pure."""
import json

import pandas as pd
import pytest

from pipeline.detection.evaluate import align_truth_files, can_match, count_error, evaluate, format_report, match_events


@pytest.mark.parametrize("a, b, min_overlap, expected", [
    ((0, 1), (0, 1), 0.3, True),
    ((0, 1), (0.7, 2), 0.3, True),     # overlap 0.3 = 0.3 x the shorter (1 s)
    ((0, 1), (0.75, 2), 0.3, False),   # overlap 0.25 < 0.3
    ((0, 10), (4, 5), 0.5, True),      # a short call inside a long event: the shorter counts
    ((0, 1), (1, 2), 0.01, False),     # touching is no overlap
    ((0, 1), (2, 3), 0.3, False),
])
def test_can_match(a, b, min_overlap, expected):
    assert can_match(a, b, min_overlap) is expected
    assert can_match(b, a, min_overlap) is expected


@pytest.mark.parametrize("detected, truth, expected", [
    ([], [], []),
    ([(0, 1)], [], []),
    ([], [(0, 1)], []),
    ([(0, 1), (2, 3)], [(0.1, 0.9), (2.2, 3.1)], [(0, 0), (1, 1)]),
    # one long event over two calls matches only one of them (one-to-one)
    ([(0, 4)], [(0, 1), (2, 3)], [(0, 0)]),
    # two events inside one call: only one matches
    ([(0, 1), (1.2, 2)], [(0, 2)], [(0, 0)]),
    # greedy by overlap would pair event 0 with call 1 (overlap 0.9) and leave call 0 alone;
    # the best assignment matches both
    ([(0.5, 2.0), (1.9, 3.0)], [(0.0, 1.0), (1.1, 2.6)], [(0, 0), (1, 1)]),
    # far apart clusters are matched independently
    ([(100, 101), (0, 1)], [(0, 1), (100.5, 101.5)], [(0, 1), (1, 0)]),
])
def test_match_events(detected, truth, expected):
    assert match_events(detected, truth, min_overlap=0.3) == expected


def test_matching_is_one_to_one_in_a_dense_cluster():
    detected = [(i * 0.5, i * 0.5 + 1.0) for i in range(10)]
    truth = [(i * 0.5 + 0.2, i * 0.5 + 0.9) for i in range(7)]
    pairs = match_events(detected, truth, 0.3)
    assert len(pairs) == 7
    assert len({d for d, _ in pairs}) == len({t for _, t in pairs}) == 7


@pytest.mark.parametrize("detected, true, expected", [(5, 5, 0.0), (4, 5, -0.2), (6, 4, 0.5), (3, 0, None)])
def test_count_error(detected, true, expected):
    assert count_error(detected, true) == expected


def frame(rows):
    return pd.DataFrame(rows, columns=["file", "label", "start_s", "end_s"])


def test_evaluate_per_class_per_file_and_totals():
    truth = frame([("a.wav", "x", 0, 1), ("a.wav", "x", 2, 3), ("a.wav", "y", 5, 6),
                   ("b.wav", "x", 0, 1), ("c.wav", "x", 0, 1)])  # c.wav was not processed
    detected = frame([("a.wav", "x", 0.1, 1.1), ("a.wav", "x", 7, 8), ("a.wav", "y", 5.2, 6),
                      ("b.wav", "x", 0, 0.5), ("b.wav", "x", 0.6, 1)])
    report = evaluate(detected, truth, ["a.wav", "b.wav"], ["x", "y"], min_overlap=0.3)
    assert report["classes"]["x"] == pytest.approx(
        {"tp": 2, "fp": 2, "fn": 1, "precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})
    assert report["classes"]["y"]["f1"] == 1.0
    rows = {(r["file"], r["label"]): r for r in report["files"]}
    assert (rows["a.wav", "x"]["true_count"], rows["a.wav", "x"]["detected_count"]) == (2, 2)
    assert rows["b.wav", "x"]["count_error"] == 1.0    # 2 detected, 1 true
    assert rows["b.wav", "y"]["count_error"] is None   # no true call: no relative error
    t = report["totals"]
    assert (t["tp"], t["fp"], t["fn"], t["true_count"], t["detected_count"]) == (3, 2, 1, 4, 5)
    assert t["mean_abs_count_error"] == pytest.approx((0 + 0 + 1.0) / 3)
    json.dumps(report)  # eval.json
    text = format_report(report)
    assert "event F1" in text and "b.wav" in text and "c.wav" not in text


def test_labels_only_in_the_truth_are_scored_as_missed():
    report = evaluate(frame([]), frame([("a.wav", "z", 0, 1)]), ["a.wav"], ["x"], 0.3)
    assert report["classes"]["z"]["fn"] == 1 and report["classes"]["x"]["tp"] == 0


@pytest.mark.parametrize("truth_name, expected", [
    ("rec1.mp3", "site/rec1.mp3"),            # the table names the recording without its folder
    ("site/rec1.mp3", "site/rec1.mp3"),
    ("/data/site/rec1.mp3", "site/rec1.mp3"),  # the processed file's path
    ("C:\\field\\rec1.mp3", "site/rec1.mp3"),
    ("rec2.mp3", None),                       # two processed files share the name: ambiguous
    ("other.mp3", None),
])
def test_align_truth_files(truth_name, expected):
    files = {"site/rec1.mp3": "/data/site/rec1.mp3", "a/rec2.mp3": "/x/a/rec2.mp3", "b/rec2.mp3": "/x/b/rec2.mp3"}
    aligned, ignored = align_truth_files(frame([(truth_name, "x", 0, 1)]), files)
    assert list(aligned["file"]) == ([expected] if expected else [])
    assert ignored == (0 if expected else 1)
