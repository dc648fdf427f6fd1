"""Fixed baselines reproduced from reference projects, kept for comparison, not for tuning.

Neither reads ModelConfig: their layers are the references' own. Both end in float32 logits
named "logits"; the output activation is added by models.classifier.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import ModelConfig


def capuchin_baseline(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """The capuchin-call tutorial's network ("Build a Deep Audio Classifier with Python and
    Tensorflow", the base of the Z by HP capuchin projects): two unpadded 3x3 convolutions,
    Flatten, Dense 128. Reads no ModelConfig field.

    Without pooling the Flatten keeps every time-frequency cell, so the Dense 128 holds
    (frames - 4) * (bins - 4) * 16 * 128 weights: ~13M on a 1.5 s clip, ~46M on 3 s. That
    is the point of the comparison. (Some derived projects add MaxPool2D and Dropout; this is
    the tutorial's version.)
    """
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    x = layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)  # [batch, frames-2, bins-2, 16]
    x = layers.Conv2D(16, 3, activation="relu", name="conv2")(x)  # [batch, frames-4, bins-4, 16]
    x = layers.Flatten(name="flatten")(x)  # [batch, (frames-4) * (bins-4) * 16]
    x = layers.Dense(128, activation="relu", name="dense")(x)  # [batch, 128]
    outputs = layers.Dense(num_outputs, name="logits", dtype="float32")(x)  # [batch, outputs]
    return keras.Model(inputs, outputs, name="capuchin_baseline")


def watkins_cnn(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """The compact CNN of the Watkins marine-mammal project (46,392 parameters on its 560x60
    MFCC inputs with 32 species). Reads no ModelConfig field.

    The reference's summary lists Conv 4 (280x30), MaxPool (140x15), Conv 16 (70x8), Conv 32
    (18x2) and Dense 64 with 20,544 weights, totalling 46,392. Its shapes fix the strides
    (2, 2, 4 with "same" padding); its total fixes the two rows the summary leaves out: a
    Conv 64 (18,496 = 3*3*32*64 + 64, stride 4 to 5x1, so Flatten gives the Dense 64 its 320
    inputs) and the 32-way output Dense (2,080).
    """
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, frames, bins, 1]
    x = inputs
    for index, (filters, strides) in enumerate([(4, 2), (16, 2), (32, 4), (64, 4)], start=1):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", activation="relu",
                          name=f"conv{index}")(x)
        if index == 1:
            x = layers.MaxPooling2D(2, padding="same", name="pool1")(x)
    # [batch, frames / 64, bins / 64, 64] (rounded up)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)  # [batch, 64]
    outputs = layers.Dense(num_outputs, name="logits", dtype="float32")(x)  # [batch, outputs]
    return keras.Model(inputs, outputs, name="watkins_cnn")
