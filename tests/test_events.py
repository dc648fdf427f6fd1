"""Window arithmetic, chunk plans and window -> event merging: table-driven, no model needed."""
import numpy as np
import pytest

from pipeline.detection.events import (Event, count_events, events_from_scores, merge_windows, positive_runs,
                                       split_points)
from pipeline.detection.plan import Chunk, chunk_plan, num_windows, windows_per_chunk


@pytest.mark.parametrize("num_samples, window, hop, expected", [
    (100, 100, 50, 1),   # exactly one window
    (50, 100, 50, 1),    # shorter than a window: one padded window
    (1, 100, 50, 1),
    (101, 100, 50, 2),   # one sample past: a partial last window, padded
    (150, 100, 50, 2),
    (200, 100, 50, 3),
    (201, 100, 50, 4),
    (1000, 100, 100, 10),
    (1001, 100, 100, 11),
    (130, 100, 30, 2),   # hop not dividing the window
    (131, 100, 30, 3),
])
def test_num_windows_covers_every_sample(num_samples, window, hop, expected):
    n = num_windows(num_samples, window, hop)
    assert n == expected
    assert (n - 1) * hop + window >= num_samples           # every sample is in a window
    assert n == 1 or (n - 2) * hop + window < num_samples  # and no window is wholly padding


@pytest.mark.parametrize("num_samples, window, hop, per_chunk, expected", [
    # one chunk holds everything
    (100, 100, 50, 4, [Chunk(0, 1, 0, 100)]),
    # 5 windows [0,100) [50,150) ... [200,300): chunks of 2 windows share window - hop samples
    (300, 100, 50, 2, [Chunk(0, 2, 0, 150), Chunk(2, 2, 100, 150), Chunk(4, 1, 200, 100)]),
    # the last partial window (samples 250..299 of [250, 350)) is kept, in the last chunk
    (301, 100, 50, 3, [Chunk(0, 3, 0, 200), Chunk(3, 3, 150, 200)]),
    # hop longer than the window: gaps between windows, chunks do not overlap
    (500, 100, 150, 2, [Chunk(0, 2, 0, 250), Chunk(2, 2, 300, 250)]),
    # a chunk of one window each
    (250, 100, 100, 1, [Chunk(0, 1, 0, 100), Chunk(1, 1, 100, 100), Chunk(2, 1, 200, 100)]),
])
def test_chunk_plan(num_samples, window, hop, per_chunk, expected):
    assert chunk_plan(num_samples, window, hop, per_chunk) == expected


@pytest.mark.parametrize("num_samples, window, hop, per_chunk", [
    (1000, 100, 25, 7), (1000, 100, 100, 3), (999, 64, 48, 5), (10, 64, 16, 2), (5000, 300, 110, 13),
])
def test_chunks_framed_one_by_one_equal_the_whole_signal_framed(num_samples, window, hop, per_chunk):
    signal = np.arange(1, num_samples + 1, dtype=np.float64)
    count = num_windows(num_samples, window, hop)
    padded = np.zeros((count - 1) * hop + window)
    padded[:num_samples] = signal
    whole = np.stack([padded[i * hop:i * hop + window] for i in range(count)])
    chunks = chunk_plan(num_samples, window, hop, per_chunk)
    pieces = []
    for c in chunks:
        part = padded[c.start:c.start + c.length]  # what the stream reads for the chunk
        assert len(part) == c.length == (c.num_windows - 1) * hop + window
        pieces += [part[k * hop:k * hop + window] for k in range(c.num_windows)]
    np.testing.assert_array_equal(np.stack(pieces), whole)
    assert [c.first_window for c in chunks] == list(range(0, count, per_chunk))


@pytest.mark.parametrize("chunk_s, rate, window, hop, expected", [
    (60.0, 16000, 16000, 4000, 237),  # (960000 - 16000) // 4000 + 1
    (1.0, 16000, 16000, 4000, 1),
    (0.5, 16000, 16000, 4000, 1),     # shorter than a window: still one window
    (10.0, 100, 100, 100, 10),
])
def test_windows_per_chunk(chunk_s, rate, window, hop, expected):
    assert windows_per_chunk(chunk_s, rate, window, hop) == expected


@pytest.mark.parametrize("flags, expected", [
    ([], []), ([0, 0], []), ([1], [(0, 1)]), ([1, 1, 0, 1], [(0, 2), (3, 4)]), ([0, 1, 1, 1], [(1, 4)]),
])
def test_positive_runs(flags, expected):
    assert positive_runs(flags) == expected


# window 1.0 s, hop 0.5 s: window i owns [i*0.5 + 0.25, i*0.5 + 0.75)
@pytest.mark.parametrize("scores, kwargs, expected", [
    ([0, 0, 0], {}, []),
    ([0, 1, 1, 0], {}, [(0.75, 1.75)]),
    ([1, 0, 0], {}, [(0.0, 0.75)]),                       # first window: from the file start
    ([0, 0, 1], {}, [(1.25, 2.0)]),                       # last window: to its end
    ([1, 1, 1], {}, [(0.0, 2.0)]),                        # the whole file
    ([0, 1, 0, 1, 0], {}, [(0.75, 1.25), (1.75, 2.25)]),  # a negative window keeps two calls apart
    ([0, 1, 0, 1, 0], {"min_gap_s": 0.6}, [(0.75, 2.25)]),  # gap 0.5 s < 0.6 s: joined
    ([0, 1, 0, 1, 0], {"min_gap_s": 0.5}, [(0.75, 1.25), (1.75, 2.25)]),  # not shorter: kept apart
    ([0, 1, 0, 0, 1, 0, 1, 0], {"min_gap_s": 0.6}, [(0.75, 1.25), (2.25, 3.75)]),
    ([0, 1, 0, 1, 1, 0], {"min_duration_s": 0.75}, [(1.75, 2.75)]),
    ([0, 1, 0, 1, 0], {"min_gap_s": 0.6, "min_duration_s": 1.0}, [(0.75, 2.25)]),  # joined, then kept
    ([0, 0, 1], {"duration_s": 1.6}, [(1.25, 1.6)]),      # the padded last window: clipped to the file
    ([0.49, 0.5, 0.51], {}, [(0.75, 2.0)]),               # the threshold itself counts as positive
])
def test_merge_windows(scores, kwargs, expected):
    events = merge_windows(scores, hop_s=0.5, window_s=1.0, threshold=0.5, label="call", **kwargs)
    assert [(e.start_s, e.end_s) for e in events] == expected
    assert all(e.label == "call" for e in events)


@pytest.mark.parametrize("scores, first, last, pieces, expected", [
    ([9, 9, 9, 9, 9, 9], 0, 6, 2, [3]),            # flat: the equal division
    ([9, 9, 9, 9, 1, 9, 9, 9], 0, 8, 2, [4]),      # the dip near the middle
    ([9, 1, 9, 9, 9, 9, 9, 9], 0, 8, 2, [4]),      # a dip too far from the middle is not taken
    ([9, 9, 1, 9, 9, 1, 9, 9, 9], 0, 9, 3, [2, 5]),
    ([0, 9, 9, 9, 2, 9, 9, 0], 1, 7, 2, [4]),      # within the run only
    ([9, 9], 0, 2, 3, [1]),                        # more pieces than windows: as many as fit
])
def test_split_points(scores, first, last, pieces, expected):
    assert split_points(np.array(scores, float), first, last, pieces) == expected


# window 1.0 s, hop 0.5 s as above
@pytest.mark.parametrize("scores, max_s, expected", [
    ([0, 1, 1, 1, 1, 1, 1, 0], None, [(0.75, 3.75)]),
    ([0, 1, 1, 1, 1, 1, 1, 0], 3.0, [(0.75, 3.75)]),                  # not longer than the maximum
    ([0, 1, 1, 1, 1, 1, 1, 0], 2.0, [(0.75, 2.25), (2.25, 3.75)]),   # 3 s: two calls in a row
    ([0, .9, .9, .6, .9, .9, .9, 0], 2.0, [(0.75, 1.75), (1.75, 3.75)]),  # cut at the dip
    ([0, 1, 1, 1, 1, 1, 1, 0], 1.0, [(0.75, 1.75), (1.75, 2.75), (2.75, 3.75)]),
])
def test_long_events_are_split_into_calls(scores, max_s, expected):
    events = merge_windows(scores, hop_s=0.5, window_s=1.0, threshold=0.5, max_duration_s=max_s)
    assert [(e.start_s, e.end_s) for e in events] == expected


def test_split_happens_before_the_minimum_duration_filter():
    events = merge_windows([0, 1, 1, 1, 0], hop_s=0.5, window_s=1.0, threshold=0.5, max_duration_s=1.0,
                           min_duration_s=0.75)
    assert [(e.start_s, e.end_s) for e in events] == [(1.25, 2.25)]


def test_hop_longer_than_window_gives_each_window_its_own_span():
    events = merge_windows([1, 0, 1], hop_s=2.0, window_s=1.0, threshold=0.5)
    assert [(e.start_s, e.end_s) for e in events] == [(0.0, 1.0), (4.0, 5.0)]


def test_event_scores():
    events = merge_windows([0.1, 0.6, 0.9, 0.2], hop_s=1.0, window_s=1.0, threshold=0.5, label="x")
    assert len(events) == 1
    assert events[0].max_score == 0.9 and events[0].mean_score == pytest.approx(0.75)
    assert (events[0].start_s, events[0].end_s) == (1.0, 3.0)


def test_call_across_a_chunk_boundary_is_one_event():
    # Scores arrive chunk by chunk; a call whose windows straddle the boundary of chunks 0 and 1
    # is one run of positive windows once the chunks' scores are concatenated.
    chunks = chunk_plan(20 * 100, window=100, hop=50, chunk_windows=4)
    scores = np.zeros(sum(c.num_windows for c in chunks))
    scores[2:7] = 0.9  # windows 2..6: chunk 0 holds 0-3, chunk 1 holds 4-7
    parts = [scores[c.first_window:c.first_window + c.num_windows] for c in chunks]
    events = merge_windows(np.concatenate(parts), hop_s=0.5, window_s=1.0, threshold=0.5)
    assert [(e.start_s, e.end_s) for e in events] == [(1.25, 3.75)]


def test_events_from_scores_reads_each_label_from_its_column():
    scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.8], [0.1, 0.1, 0.9], [0.1, 0.1, 0.1]])
    events = events_from_scores(scores, {"a": 2, "b": 1}, {"a": 0.5, "b": 0.15}, hop_s=1.0, window_s=1.0)
    assert [(e.label, e.start_s, e.end_s) for e in events] == [("a", 1.0, 3.0), ("b", 1.0, 2.0)]


def test_count_events_includes_zeros():
    events = [Event("a", 0, 1, 1, 1), Event("a", 2, 3, 1, 1)]
    assert count_events(events, ["a", "b"]) == {"a": 2, "b": 0}
