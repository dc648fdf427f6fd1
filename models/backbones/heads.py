"""The shared classifier head: the window's columns of the trunk's feature map, global pooling,
dropout, float32 logits."""
from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from pipeline.config import ModelConfig

GLOBAL_POOLING = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}


@keras.saving.register_keras_serializable(package="bioacoustics")
class WindowColumns(layers.Layer):
    """Columns [start, start + count) of a feature map [batch, columns, bins, channels]: the
    window's own, when the trunk also saw context on each side (pipeline.features.framing)."""

    def __init__(self, start: int, count: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.count = int(start), int(count)

    def call(self, x):
        return x[:, self.start:self.start + self.count]  # [batch, count, bins, channels]

    def compute_output_shape(self, input_shape):
        return input_shape[0], self.count, *input_shape[2:]

    def get_config(self):
        return {**super().get_config(), "start": self.start, "count": self.count}


def pooled_logits(x, num_outputs: int, params: ModelConfig, columns: Optional[tuple[int, int]] = None):
    """Feature map [batch, columns, bins, channels] -> [batch, num_outputs] logits; reads
    global_pooling and dropout. `columns` (start, count): pool only those (WindowColumns).

    The logits layer computes in float32 so mixed precision keeps float32 outputs.
    """
    if columns is not None:
        x = WindowColumns(*columns, name="window_columns")(x)  # [batch, count, bins, channels]
    x = GLOBAL_POOLING[params.global_pooling](name="global_pool")(x)  # [batch, channels]
    x = layers.Dropout(params.dropout, name="dropout")(x)
    return layers.Dense(num_outputs, name="logits", dtype="float32")(x)  # [batch, num_outputs]
