"""Every file's chunks through the run's model, in one stream: a file's scores (and its overview
spectrogram) once it is read, or the reason it could not be."""
from __future__ import annotations

import concurrent.futures
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from models.classifier import load_classifier
from pipeline.audio import problems
from pipeline.detection.detector import ClipDetector
from pipeline.detection.display import Progress, Spectrogram
from pipeline.detection.plan import Job
from pipeline.detection.stream import SPECTROGRAM_BANDS, SPECTROGRAM_FRAME, window_dataset


class FileState:
    """Scores and checks of one file while its chunks arrive."""

    def __init__(self, job: Job, plot: bool, sample_rate_hz: int):
        self.scores: list[np.ndarray] = []  # per batch: [windows, outputs]
        self.peak = 0.0
        self.non_finite = 0
        frame_s = SPECTROGRAM_FRAME / sample_rate_hz
        self.spectrogram = Spectrogram(job.info.duration_s, frame_s, SPECTROGRAM_BANDS) if plot else None

    def problem(self) -> Optional[problems.Problem]:
        """Why the file, read to the end, is still bad (NaN/Inf samples, silence), or None."""
        return problems.sample_problem(self.non_finite, self.peak)


def load_model(detector: ClipDetector):
    """The run's model as a traced function of windows [batch, window] -> scores."""
    model = load_classifier(detector.run / "model.keras")
    predict = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, detector.window], tf.float32)])
    predict(tf.zeros([1, detector.window]))  # traced and instantiated here, off the critical path
    return predict


def score_files(detector: ClipDetector, jobs: list[Job], plot: bool, progress: Progress,
                batch_size: int) -> Iterator[tuple[Job, FileState | problems.Problem]]:
    """Streams every job's chunks through the model: yields (job, its FileState) once the file is
    read and scored, or (job, problem) when a chunk of it fails to read or its samples are bad.

    The model is loaded, traced and run once in a thread while the stream starts: building the
    iterator and decoding the first chunks run in TensorFlow without holding the GIL, so the
    1-2 s of model start-up no longer come before the first chunk is read.
    """
    def scores(windows: tf.Tensor, count: int) -> list[np.ndarray]:
        """The model's scores of windows [count, window], in batches of batch_size."""
        predict = loading.result()
        return [predict(windows[i:i + batch_size]).numpy() for i in range(0, count, batch_size)]

    pool = concurrent.futures.ThreadPoolExecutor(1)
    loading = pool.submit(load_model, detector)
    pool.shutdown(wait=False)
    sr = detector.sample_rate_hz
    stream = iter(window_dataset(jobs, sr, detector.cfg.audio.mono, detector.window, detector.hop,
                                 spectrogram=plot))
    for job in jobs:
        state, failure = FileState(job, plot, sr), None
        for chunk in job.chunks:
            try:
                element = next(stream)
            except tf.errors.OpError:  # the stream goes on with the next chunk
                if failure is None:
                    failure = problems.read_failure(job.path, at_s=chunk.start / sr)
                continue
            if failure is not None:
                continue
            state.scores += scores(element["windows"], chunk.num_windows)  # windows: [num_windows, window]
            state.peak = max(state.peak, float(element["peak"]))
            state.non_finite += int(element["non_finite"])
            if state.spectrogram is not None:
                state.spectrogram.add(element["spectrogram"].numpy(), chunk.start / sr, SPECTROGRAM_FRAME / sr)
            # Audio done: up to the next chunk's start, or to the end of the file for the last one.
            remaining = max(job.info.duration_s * sr - chunk.start, 0)
            own = remaining if chunk is job.chunks[-1] else min(chunk.num_windows * detector.hop, remaining)
            progress.advance(own / sr)
        yield job, (failure or state.problem() or state)
    # Released here rather than with the generator's frame, whose cleanup was seen to stall for
    # seconds after the last file.
    del stream, loading
