"""A compact MobileNetV2-style net: depthwise-separable inverted-residual blocks."""
from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from models.backbones.heads import pooled_logits
from pipeline.config import ModelConfig

# Channels of a block's expanded (depthwise) layer, as a multiple of its input channels.
# MobileNetV2 uses 6; 4 keeps this net below the resnet of the same width and depth.
EXPANSION = 4


def inverted_residual(x, filters: int, kernel_size: int, strides: int, name: str):
    """1x1 expand (ReLU6), depthwise kxk (ReLU6), 1x1 linear projection; a residual Add when
    the block keeps the shape (stride 1, same channels)."""
    channels = x.shape[-1]
    y = layers.Conv2D(channels * EXPANSION, 1, use_bias=False, name=f"{name}_expand")(x)
    y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                               name=f"{name}_depthwise")(y)
    y = layers.BatchNormalization(name=f"{name}_depthwise_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if strides == 1 and channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet(input_shape: tuple, num_outputs: int, params: ModelConfig,
              columns: Optional[tuple[int, int]] = None) -> keras.Model:
    """Reads width (stem and first stage channels), depth (stages of two inverted-residual
    blocks; channels double and the map halves from the second stage on), kernel_size (the
    stem and depthwise kernels), global_pooling (the head's "avg" or "max") and dropout.
    The stem is strided (2), as in MobileNet. The head pools `columns` of the feature map
    (heads.pooled_logits).
    """
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    outputs = pooled_logits(mobilenet_trunk(inputs, params), num_outputs, params, columns)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="mobilenet")


def mobilenet_geometry(params: ModelConfig) -> tuple[int, int]:
    """(receptive field, stride) along time, in frames: the strided stem, two depthwise
    convolutions in stage 0 and two per later stage, the first of them halving the map."""
    return 1 + (params.kernel_size - 1) * (3 * 2 ** params.depth - 1), 2 ** params.depth


def mobilenet_trunk(x, params: ModelConfig):
    """[batch, frames, bins, 1] -> [batch, frames / 2^depth, bins / 2^depth, width * 2^(depth-1)]."""
    x = layers.Conv2D(params.width, params.kernel_size, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)  # [batch, frames / 2, bins / 2, width]
    for stage in range(params.depth):
        filters = params.width * 2 ** stage
        x = inverted_residual(x, filters, params.kernel_size, strides=1 if stage == 0 else 2,
                              name=f"stage{stage}_block0")
        x = inverted_residual(x, filters, params.kernel_size, strides=1, name=f"stage{stage}_block1")
    return x  # [batch, frames / 2^depth, bins / 2^depth, width * 2^(depth-1)]
