"""A small ResNet for spectrograms: a stem, one standard residual block per stage, global pooling."""
from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from models.backbones.heads import pooled_logits
from pipeline.config import ModelConfig


@keras.saving.register_keras_serializable(package="bioacoustics")
class Subsample2D(layers.Layer):
    """Keeps every `strides`-th row and column: [batch, h, w, c] -> [batch, ceil(h/s), ceil(w/s), c].

    A plain strided slice (its gradient scatters back into zeros). Used instead of a 1x1
    convolution's stride, see projection_shortcut.
    """

    def __init__(self, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)

    def call(self, x):
        return x[:, ::self.strides, ::self.strides, :]

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else -(-n // self.strides)
        return input_shape[0], size(input_shape[1]), size(input_shape[2]), input_shape[3]

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


def projection_shortcut(x, filters: int, strides: int, name: str):
    """The shortcut's 1x1 projection with stride `strides`, as a subsample then a stride-1 1x1
    conv + BN. Same values, gradients and weights as Conv2D(filters, 1, strides=strides): a 1x1
    kernel never pads, so output (i, j) reads only input (s*i, s*j).

    Not the strided Conv2D itself: on x86 CPUs TensorFlow (2.17, oneDNN 3.4) runs its weight
    gradient with oneDNN's jit_1x1 backward_weights kernel, which for a strided 1x1 conv copies
    the strided input into a per-thread workspace at an offset computed with the channel block
    (16 on AVX-512, 8 on AVX2) instead of the actual channel count; with fewer input channels
    than that (NHWC) it writes past the workspace: heap corruption, SIGSEGV or a hang in
    training (uxlfoundation/oneDNN#6035). A stride-1 1x1 conv does not take that path.
    """
    if strides != 1:
        x = Subsample2D(strides, name=f"{name}_proj_subsample")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
    return layers.BatchNormalization(name=f"{name}_proj_bn")(x)


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
        shortcut = projection_shortcut(x, filters, strides, name)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet(input_shape: tuple, num_outputs: int, params: ModelConfig,
           columns: Optional[tuple[int, int]] = None) -> keras.Model:
    """Reads width (stem and first stage channels), depth (stages, one residual block each;
    channels double and the map halves from the second stage on), kernel_size (every
    convolution but the 1x1 shortcuts), global_pooling (the head's "avg" or "max") and dropout.
    The head pools `columns` of the feature map (heads.pooled_logits).
    """
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    outputs = pooled_logits(resnet_trunk(inputs, params), num_outputs, params, columns)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="resnet")


def resnet_geometry(params: ModelConfig) -> tuple[int, int]:
    """(receptive field, stride) along time, in frames: the stem and stage 0's two convolutions
    at stride 1, then two per stage, the first halving the map."""
    return 1 + 3 * (params.kernel_size - 1) * 2 ** (params.depth - 1), 2 ** (params.depth - 1)


def resnet_trunk(x, params: ModelConfig):
    """[batch, frames, bins, 1] -> [batch, frames / 2^(depth-1), bins / 2^(depth-1), width * 2^(depth-1)]."""
    x = layers.Conv2D(params.width, params.kernel_size, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)  # [batch, frames, bins, width]
    for stage in range(params.depth):
        x = residual_block(x, params.width * 2 ** stage, params.kernel_size,
                           strides=1 if stage == 0 else 2, name=f"stage{stage}")
    return x  # [batch, frames / 2^(depth-1), bins / 2^(depth-1), width * 2^(depth-1)]
