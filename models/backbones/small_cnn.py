"""The project's compact default: Conv-BN-ReLU blocks with 2x2 pooling, widths doubling."""
from __future__ import annotations

import keras
from keras import layers

from models.backbones.heads import pooled_logits
from pipeline.config import ModelConfig


def small_cnn(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """Conv-BN-ReLU blocks with 2x2 pooling, widths doubling per block, then the shared head.

    Reads width, depth, kernel_size, block_pooling (the blocks' 2x2 pooling), global_pooling and
    dropout (the head's).
    """
    pool = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}[params.block_pooling]
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for block in range(params.depth):
        width = params.width * (2 ** block)
        x = layers.Conv2D(width, params.kernel_size, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = pool(2, padding="same", name=f"pool{block}")(x)
    # [batch, frames / 2^depth, bins / 2^depth, width * 2^(depth-1)]
    outputs = pooled_logits(x, num_outputs, params)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="small_cnn")
