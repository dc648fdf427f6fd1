"""A convolutional-recurrent network that scores every spectrogram frame (sound event detection).

Clip classifiers answer "is there a call in this window?"; counting calls that follow each
other within a fraction of a second needs an answer per frame instead (the approach of
TweetyNet and of the DCASE sound-event-detection baselines). Convolutions pool frequency only,
so the time axis keeps the frontend's frame rate; a bidirectional GRU then reads each frame in
the context of the whole clip, and a Dense layer gives per-frame logits.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import ModelConfig


def crnn(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """features [frames, bins, 1] -> float32 logits [frames, num_outputs].

    Reads width (channels of the first block, doubling per block, and the GRU's units per
    direction), depth (Conv-BN-ReLU blocks, each halving frequency with `block_pooling`),
    kernel_size and dropout (spatial dropout after each block, dropout before the output).
    """
    pool = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}[params.block_pooling]
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    x = inputs
    for block in range(params.depth):
        x = layers.Conv2D(params.width * 2 ** block, params.kernel_size, padding="same", use_bias=False,
                          name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = pool((1, 2), padding="same", name=f"pool{block}")(x)  # [batch, frames, bins / 2^(block+1), C]
        x = layers.SpatialDropout2D(params.dropout / 2, name=f"drop{block}")(x)
    channels = params.width * 2 ** (params.depth - 1)
    x = layers.AveragePooling2D((1, x.shape[2]), name="band_mean")(x)  # [batch, frames, 1, C]
    x = layers.Reshape((-1, channels), name="frames")(x)  # [batch, frames, C]
    x = layers.Bidirectional(layers.GRU(params.width, return_sequences=True), name="gru")(x)  # [batch, frames, 2w]
    x = layers.Dropout(params.dropout, name="dropout")(x)
    outputs = layers.Dense(num_outputs, name="logits", dtype="float32")(x)  # [batch, frames, outputs]
    return keras.Model(inputs, outputs, name="crnn")
