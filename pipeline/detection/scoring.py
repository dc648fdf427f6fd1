"""Every file's chunks through the run's model, in one stream: a file's scores (and its overview
spectrogram) once it is read, or the reason it could not be.

Reading, mixing down and resampling run in a background thread (pipeline.detection.stream) while
the model scores the chunk before (models.streaming.ChunkScorer: the frontend once per chunk,
and the trunk too where the model allows).
"""
from __future__ import annotations

import concurrent.futures
import time
from typing import Iterator, Optional

import numpy as np

from models.classifier import load_classifier
from models.streaming import ChunkScorer
from pipeline.audio import problems
from pipeline.detection.detector import ClipDetector
from pipeline.detection.display import SPECTROGRAM_BANDS, SPECTROGRAM_FRAME, Progress, Spectrogram, overview_spectrogram
from pipeline.detection.plan import Job
from pipeline.detection.stream import chunk_stream


class FileState:
    """Scores and checks of one file while its chunks arrive."""

    def __init__(self, job: Job, plot: bool, sample_rate_hz: int):
        self.scores: list[np.ndarray] = []  # per chunk: [windows, outputs]
        self.peak = 0.0
        self.non_finite = 0
        frame_s = SPECTROGRAM_FRAME / sample_rate_hz
        self.spectrogram = Spectrogram(job.info.duration_s, frame_s, SPECTROGRAM_BANDS) if plot else None

    def problem(self) -> Optional[problems.Problem]:
        """Why the file, read to the end, is still bad (NaN/Inf samples, silence), or None."""
        return problems.sample_problem(self.non_finite, self.peak)


def load_scorer(detector: ClipDetector, batch_size: int) -> ChunkScorer:
    """The run's model as a ChunkScorer, traced and run once (off the critical path)."""
    model = load_classifier(detector.run / "model.keras")
    if (model.framing.context_samples, model.framing.frames) != (detector.framing.context_samples,
                                                                 detector.framing.frames):
        raise RuntimeError(f"{detector.run / 'model.keras'}: its framing {model.framing} is not the run's "
                           f"{detector.framing}")
    scorer = ChunkScorer(model, detector.hop, batch_size)
    scorer.scores(np.zeros(scorer.chunk_samples(1, detector.hop), np.float32), 1)
    return scorer


def score_files(detector: ClipDetector, jobs: list[Job], plot: bool, progress: Progress,
                batch_size: int, timing: Optional[dict] = None) -> Iterator[tuple[Job, FileState | problems.Problem]]:
    """Streams every job's chunks through the model: yields (job, its FileState) once the file is
    read and scored, or (job, problem) when a chunk of it fails to read or its samples are bad.

    The model is loaded, traced and run once in a thread while the stream starts reading, so
    its start-up does not come before the first chunk is read. `timing` (a dict) gets
    "first_chunk_at": the time.perf_counter() when the first chunk was scored.
    """
    pool = concurrent.futures.ThreadPoolExecutor(1)
    loading = pool.submit(load_scorer, detector, batch_size)
    pool.shutdown(wait=False)
    sr = detector.sample_rate_hz
    stream = chunk_stream(jobs, sr, detector.cfg.audio.mono, context=detector.framing.context_samples)
    for job in jobs:
        state, failure = FileState(job, plot, sr), None
        for chunk in job.chunks:
            item = next(stream)
            if failure is not None:
                continue
            if item.problem is not None:
                failure = item.problem
                continue
            state.scores.append(loading.result().scores(item.samples, chunk.num_windows))
            if timing is not None and "first_chunk_at" not in timing:
                timing["first_chunk_at"] = time.perf_counter()
            state.peak = max(state.peak, item.peak)
            state.non_finite += item.non_finite
            # Audio done: up to the next chunk's start, or to the end of the file for the last one.
            remaining = max(job.info.duration_s * sr - chunk.start, 0)
            own = remaining if chunk is job.chunks[-1] else min(chunk.num_windows * detector.hop, remaining)
            if state.spectrogram is not None:
                context = detector.framing.context_samples
                overview = overview_spectrogram(item.samples[context:context + int(own)], int(own), sr)
                state.spectrogram.add(np.asarray(overview), chunk.start / sr, SPECTROGRAM_FRAME / sr)
            progress.advance(own / sr)
        yield job, (failure or state.problem() or state)
    loading.result()  # a model that failed to load raises here, even with no chunk read
