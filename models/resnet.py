"""A small ResNet for spectrograms: a stem, one standard residual block per stage, global pooling."""
from __future__ import annotations

import keras
from keras import layers

from models.heads import pooled_logits
from pipeline.config import ModelConfig


def residual_block(x, filters: int, kernel_size: int, strides: int, name: str):
    """Conv-BN-ReLU, Conv-BN, plus a shortcut (1x1 conv + BN where the shape changes), ReLU."""
    y = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """Reads width (stem and first stage channels), depth (stages, one residual block each;
    channels double and the map halves from the second stage on), kernel_size (every
    convolution but the 1x1 shortcuts), pooling (global "avg" or "max" head) and dropout.
    """
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    x = layers.Conv2D(params.width, params.kernel_size, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)  # [batch, frames, bins, width]
    for stage in range(params.depth):
        x = residual_block(x, params.width * 2 ** stage, params.kernel_size,
                           strides=1 if stage == 0 else 2, name=f"stage{stage}")
    # [batch, frames / 2^(depth-1), bins / 2^(depth-1), width * 2^(depth-1)]
    outputs = pooled_logits(x, num_outputs, params)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="resnet")
