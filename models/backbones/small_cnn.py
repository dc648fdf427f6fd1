"""The project's compact default: Conv-BN-ReLU blocks with 2x2 pooling, widths doubling."""
from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from models.backbones.heads import pooled_logits
from pipeline.config import ModelConfig


def small_cnn(input_shape: tuple, num_outputs: int, params: ModelConfig,
              columns: Optional[tuple[int, int]] = None) -> keras.Model:
    """Conv-BN-ReLU blocks with 2x2 pooling, widths doubling per block, then the shared head
    (over `columns` of the feature map, see heads.pooled_logits).

    Reads width, depth, kernel_size, block_pooling (the blocks' 2x2 pooling), global_pooling and
    dropout (the head's).
    """
    inputs = keras.Input(shape=input_shape, name="features")
    outputs = pooled_logits(small_cnn_trunk(inputs, params), num_outputs, params, columns)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="small_cnn")


def small_cnn_geometry(params: ModelConfig) -> tuple[int, int]:
    """(receptive field, stride) of the trunk along time, in frames: each block's convolution
    reaches (kernel_size - 1) inputs and its pooling one more, at the block's stride 2^block."""
    return 1 + params.kernel_size * (2 ** params.depth - 1), 2 ** params.depth


def small_cnn_trunk(x, params: ModelConfig):
    """[batch, frames, bins, 1] -> [batch, frames / 2^depth, bins / 2^depth, width * 2^(depth-1)]."""
    pool = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}[params.block_pooling]
    for block in range(params.depth):
        width = params.width * (2 ** block)
        x = layers.Conv2D(width, params.kernel_size, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = pool(2, padding="same", name=f"pool{block}")(x)
    return x
