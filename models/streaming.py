"""Scoring every window of a stretch of recording at once, as detection does.

A chunk's waveform (its windows, a hop apart, and the model's context on each side) goes through
the frontend once: spectrogram frames are shared by every window that covers them. Then

- models whose trunk is shared (models.backbones.registry.shares_trunk: a convolutional trunk
  under the pooled head, on features not normalised per window) run the trunk once over the
  chunk's frames, and each window's logits pool the window's columns of that one feature map;
- the others cut each window's frames out of the chunk's, normalise them per window, and run
  the backbone per window;
- a family with its own frontend (a pretrained model's, models.backbones.birdnet) gets each
  window's waveform.

Both compute exactly what the model computes on one window with its context (the trained path,
pipeline.features.framing), up to float rounding and PCEN's settled start (PCEN_SETTLED); the
tests compare the two.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from models.backbones.heads import WindowColumns
from models.classifier import AudioClassifier
from pipeline.config import FrontendConfig
from pipeline.features.frontend import framed_window, spectral_features


class ChunkScorer:
    """scores(chunk, windows) for an AudioClassifier and a hop between windows (samples); traced
    once (chunks of any length)."""

    def __init__(self, model: AudioClassifier, hop: int, batch_size: int = 64):
        self.model = model
        self.framing = model.framing
        self.hop = hop
        # The project's frontend (frames shared by the windows), or None: a family's own frontend.
        self.frontend = None if model.frontend_config is None else FrontendConfig(**model.frontend_config)
        if self.frontend is not None and hop % self.framing.hop:
            raise ValueError(f"a hop of {hop} samples is not a whole number of frontend hops ({self.framing.hop})")
        self.hop_frames = hop // self.framing.hop
        self.batch_size = batch_size
        backbone = model.backbone
        columns = [layer for layer in backbone.layers if isinstance(layer, WindowColumns)]
        self.shared = bool(columns)
        if self.shared:
            self.columns = columns[0]
            self.trunk = keras.Model(backbone.input, self.columns.input)
            self.pooling = backbone.get_layer("global_pool")
            self.logits = backbone.get_layer("logits")
            stride = self.framing.trunk_context_frames // self.columns.start
            if self.hop_frames % stride:
                raise ValueError(f"a hop of {self.hop_frames} frames is not a whole number of trunk strides ({stride})")
            self.hop_columns = self.hop_frames // stride
        signature = [tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)]
        self._windows = tf.function(self._window_inputs if self.frontend is not None else self._waveforms,
                                    input_signature=signature)
        self._trunk_once = tf.function(self._shared_trunk, input_signature=signature)
        own = self.frontend is None  # the whole model on waveforms, else the backbone on features
        self._backbone = tf.function(lambda x: tf.cast((model if own else model.scores)(x, training=False),
                                                       tf.float32))

    def chunk_samples(self, windows: int, hop: int) -> int:
        """Samples of a chunk of `windows` windows: theirs and the context on each side."""
        return (windows - 1) * hop + self.framing.input_samples

    def scores(self, chunk, windows: int):
        """chunk: float32 [(windows - 1) * hop + input_samples] -> scores [windows, outputs] (frame
        models: [windows, frames, outputs]), a NumPy array."""
        chunk = tf.convert_to_tensor(chunk, tf.float32)
        if self.shared:
            return self._trunk_once(chunk, windows).numpy()
        inputs = self._windows(chunk, windows)  # [windows, trunk_frames, bins, 1] or [windows, input_samples]
        return tf.concat([self._backbone(inputs[i:i + self.batch_size])
                          for i in range(0, windows, self.batch_size)], 0).numpy()

    def _waveforms(self, chunk: tf.Tensor, windows: tf.Tensor) -> tf.Tensor:
        """Each window's samples with its context, for a model's own frontend: [windows, input_samples]."""
        return tf.signal.frame(chunk, self.framing.input_samples, self.hop)[:windows]

    def _window_inputs(self, chunk: tf.Tensor, windows: tf.Tensor) -> tf.Tensor:
        """Each window's frames cut from the chunk's, normalised per window: [windows, trunk_frames,
        bins, 1]."""
        feats = spectral_features(chunk[tf.newaxis], self.frontend, self.model.sample_rate_hz)[0]  # [frames, bins]
        span = self.framing.frames + 2 * self.framing.context_frames
        stacked = tf.signal.frame(feats, span, self.hop_frames, axis=0)[:windows]  # [windows, span, bins]
        return framed_window(stacked, self.frontend, self.framing)  # [windows, trunk_frames, bins, 1]

    def _shared_trunk(self, chunk: tf.Tensor, windows: tf.Tensor) -> tf.Tensor:
        """The trunk once over the chunk's frames, then each window's columns pooled: [windows,
        outputs]."""
        feats = spectral_features(chunk[tf.newaxis], self.frontend, self.model.sample_rate_hz)[0]  # [frames, bins]
        first = self.framing.warmup_frames
        count = self.framing.trunk_frames + (windows - 1) * self.hop_frames
        trunk_in = feats[first:first + count][tf.newaxis, :, :, tf.newaxis]  # [1, frames, bins, 1]
        fmap = self.trunk(trunk_in, training=False)  # [1, columns, fbins, channels]
        fmap = tf.cast(fmap[:, self.columns.start:], tf.float32)  # [1, columns', fbins, channels]
        kind = "MAX" if isinstance(self.pooling, keras.layers.GlobalMaxPooling2D) else "AVG"
        reduce = tf.reduce_max if kind == "MAX" else tf.reduce_mean
        per_column = reduce(fmap, axis=2)  # [1, columns', channels]
        pooled = tf.nn.pool(per_column, [self.columns.count], kind, strides=[self.hop_columns],
                            padding="VALID")[0, :windows]  # [windows, channels]
        logits = self.logits(pooled)  # [windows, outputs]
        return tf.cast(self.model.activation(logits), tf.float32)  # [windows, outputs]
