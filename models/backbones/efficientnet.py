"""EfficientNetB0 from keras.applications, untrained, on 1-channel spectrograms."""
from __future__ import annotations

import keras

from models.backbones.heads import pooled_logits
from pipeline.config import ModelConfig

# keras.applications.EfficientNet checks this size on both input axes.
MIN_INPUT_SIZE = 32


def efficientnet_b0(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """EfficientNetB0 trunk (weights=None) + the shared head. Reads global_pooling and dropout;
    width, depth and kernel_size are B0's own (its internal stochastic depth is fixed at 0.2).

    The Keras B0 starts with image preprocessing: Rescaling(1/255), then a Normalization that
    is the identity unless adapted (`include_preprocessing` exists only on EfficientNetV2).
    Our features are already standardized, and dividing them by 255 would shrink the stem
    activations below the stem BatchNormalization's epsilon, so a Rescaling(255) in front
    cancels it: the B0 graph stays the stock one. Frames and bins must both be at least 32.
    """
    if min(input_shape[:2]) < MIN_INPUT_SIZE:
        raise ValueError(f"efficientnet_b0: frames and bins must be at least {MIN_INPUT_SIZE}, "
                         f"got input shape {tuple(input_shape)}")
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    x = keras.layers.Rescaling(255.0, name="undo_b0_rescaling")(inputs)
    trunk = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=input_shape)
    x = trunk(x)  # [batch, frames / 32, bins / 32, 1280]
    outputs = pooled_logits(x, num_outputs, params)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="efficientnet_b0")
