"""The shared classifier head: global pooling, dropout, float32 logits."""
from __future__ import annotations

from keras import layers

from pipeline.config import ModelConfig

GLOBAL_POOLING = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}


def pooled_logits(x, num_outputs: int, params: ModelConfig):
    """[batch, h, w, channels] -> [batch, num_outputs] logits; reads global_pooling and dropout.

    The logits layer computes in float32 so mixed precision keeps float32 outputs.
    """
    x = GLOBAL_POOLING[params.global_pooling](name="global_pool")(x)  # [batch, channels]
    x = layers.Dropout(params.dropout, name="dropout")(x)
    return layers.Dense(num_outputs, name="logits", dtype="float32")(x)  # [batch, num_outputs]
