"""Model registry: name -> builder(input_shape, num_outputs, params) -> uncompiled Keras model.

Builders return the backbone only (features [frames, bins, 1] -> float32 logits); the
frontend and the output activation are added around it by models.classifier.AudioClassifier
so every model shares them. Each builder's docstring says which ModelConfig fields it reads.

    python -m models.backbones.registry --config configs/demo.yaml   # parameters of every model
"""
from __future__ import annotations

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import argparse
import dataclasses
import math
import sys
from typing import Callable, Optional

import keras

from models.backbones import birdnet as birdnet_family
from models.backbones.baselines import capuchin_baseline, watkins_cnn
from models.backbones.crnn import crnn
from models.backbones.efficientnet import efficientnet_b0
from models.backbones.mobilenet import mobilenet, mobilenet_geometry, mobilenet_trunk
from models.backbones.resnet import resnet, resnet_geometry, resnet_trunk
from models.backbones.small_cnn import small_cnn, small_cnn_geometry, small_cnn_trunk
from pipeline.config import Config, ConfigError, ModelConfig, add_config_arguments, config_from_arguments
from pipeline.records.labels import LabelSpec
from pipeline.features.filters import frontend_output_shape
from pipeline.features.framing import Framing, framing
from pipeline.features.frontend import Frontend
from pipeline.records.sources import load_records

Builder = Callable[[tuple, int, ModelConfig], keras.Model]


REGISTRY: dict[str, Builder] = {
    "small_cnn": small_cnn,
    "capuchin_baseline": capuchin_baseline,
    "watkins_cnn": watkins_cnn,
    "resnet": resnet,
    "mobilenet": mobilenet,
    "efficientnet_b0": efficientnet_b0,
    "crnn": crnn,
    "birdnet": birdnet_family.birdnet,
    "birdnet_frames": birdnet_family.birdnet_frames,
}
# Models whose logits are per frame [frames, outputs] (train.task "frames"); the others give one
# row per clip.
FRAME_MODELS = frozenset({"crnn", "birdnet_frames"})


@dataclasses.dataclass(frozen=True)
class Poolable:
    """A family whose backbone is a convolutional trunk (its trunk function) under the shared
    pooled head: its logits of a window pool the window's columns of the trunk's feature map,
    so detection can run the trunk once over a whole chunk and pool each window's columns.
    `geometry(params)`: (receptive field, stride) of the trunk along time, in frames."""

    trunk: Callable
    geometry: Callable[[ModelConfig], tuple[int, int]]


POOLABLE: dict[str, Poolable] = {
    "small_cnn": Poolable(small_cnn_trunk, small_cnn_geometry),
    "resnet": Poolable(resnet_trunk, resnet_geometry),
    "mobilenet": Poolable(mobilenet_trunk, mobilenet_geometry),
}


@dataclasses.dataclass(frozen=True)
class OwnFrontend:
    """A family that brings its own frontend (a pretrained model's): the layer it takes
    waveforms with, its framing, and the features shape its backbone takes."""

    layer: Callable[[], keras.layers.Layer]
    framing: Framing
    features_shape: tuple


# The models built on BirdNET's frontend and trunk (a clip head and a frame head).
BIRDNET_MODELS = ("birdnet", "birdnet_frames")

OWN_FRONTEND: dict[str, OwnFrontend] = {
    name: OwnFrontend(birdnet_family.birdnet_spectrogram, birdnet_family.FRAMING, birdnet_family.FEATURES_SHAPE)
    for name in BIRDNET_MODELS
}

# Families whose weights come with terms of their own: the notice a run directory carries.
LICENCE_NOTICES: dict[str, Callable[[], str]] = {name: birdnet_family.licence_notice for name in BIRDNET_MODELS}


def check_model(cfg: Config) -> None:
    """A ConfigError when the model cannot take the config's clips: a family with its own
    frontend needs its own window length (BirdNET: 144,000 samples, 3 s at 48 kHz; a model rate
    of 48 kHz / f with clips of 3 s * f plays the audio f times faster to BirdNET, the
    speed-change trick for taxa outside its 0-15 kHz)."""
    own = OWN_FRONTEND.get(cfg.model.name)
    if own is not None and cfg.audio.clip_samples != own.framing.window:
        raise ConfigError(f"audio.clip_s: model.name {cfg.model.name!r} takes windows of {own.framing.window} "
                          f"samples; audio.sample_rate_hz * audio.clip_s is {cfg.audio.clip_samples} "
                          f"(e.g. 48000 Hz and 3.0 s, or 12000 Hz and 12.0 s to play the audio 4x faster)")


def shares_trunk(cfg: Config) -> bool:
    """Whether this config's trunk runs once over a chunk in detection: a poolable family on
    features that are not normalised per window (frontend.normalize "none")."""
    return cfg.model.name in POOLABLE and cfg.frontend.normalize == "none"


def trunk_context_frames(cfg: Config) -> int:
    """Frames of context the trunk sees on each side of a window (0 unless shares_trunk): half its
    receptive field and a stride more, in whole strides, so that the window's columns do not
    depend on what lies beyond the context (pipeline.features.framing)."""
    if not shares_trunk(cfg):
        return 0
    receptive, stride = POOLABLE[cfg.model.name].geometry(cfg.model)
    return stride * math.ceil((receptive // 2 + stride) / stride)


def model_framing(cfg: Config) -> Framing:
    """The Framing of a config's model: windows of audio.clip_s with the context it needs."""
    if cfg.model.name in OWN_FRONTEND:
        return OWN_FRONTEND[cfg.model.name].framing
    return framing(cfg.frontend, cfg.audio.sample_rate_hz, cfg.audio.clip_samples, trunk_context_frames(cfg))


def model_frontend(cfg: Config, model_frames: Framing) -> keras.layers.Layer:
    """The frontend layer of a config's model: the project's Frontend with cfg.frontend, or the
    family's own."""
    if cfg.model.name in OWN_FRONTEND:
        return OWN_FRONTEND[cfg.model.name].layer()
    return Frontend(cfg.frontend, cfg.audio.sample_rate_hz, model_frames, name="frontend")


def features_shape(cfg: Config, model_frames: Framing) -> tuple:
    """[frames, bins, channels] the config's backbone takes."""
    if cfg.model.name in OWN_FRONTEND:
        return OWN_FRONTEND[cfg.model.name].features_shape
    bins = frontend_output_shape(cfg.frontend, cfg.audio.sample_rate_hz, cfg.audio.clip_samples)[1]
    return model_frames.trunk_frames, bins, 1


def trunk_stride(name: str, params: ModelConfig) -> int:
    """A poolable family's stride along time, in frames (1 for the others)."""
    return POOLABLE[name].geometry(params)[1] if name in POOLABLE else 1


def fits_task(name: str, task: str) -> bool:
    """Frame targets need a frame model and clip targets a clip model."""
    return (task == "frames") == (name in FRAME_MODELS)


def check_known(name: str) -> None:
    if name not in REGISTRY:
        raise ConfigError(f"model.name: unknown model {name!r} (known: {', '.join(sorted(REGISTRY))})")


def check_task(name: str, task: str) -> None:
    """A known model that fits_task, or a ConfigError naming the models that fit."""
    check_known(name)
    if not fits_task(name, task):
        wanted = "a frame model" if task == "frames" else "a clip model"
        choices = sorted(FRAME_MODELS) if task == "frames" else sorted(set(REGISTRY) - FRAME_MODELS)
        raise ConfigError(f"model.name: {name!r} does not fit train.task {task!r}; it needs {wanted} "
                         f"({', '.join(choices)})")


def build_backbone(params: ModelConfig, input_shape: tuple, num_outputs: int,
                   model_frames: Optional[Framing] = None) -> keras.Model:
    """The backbone for features [frames, bins, 1]; with a Framing whose trunk sees context, its
    head pools only the window's columns."""
    check_known(params.name)
    build = REGISTRY[params.name]
    if model_frames is None or model_frames.trunk_context_frames == 0:
        return build(tuple(input_shape), num_outputs, params)
    stride = trunk_stride(params.name, params)
    columns = (model_frames.trunk_context_frames // stride, math.ceil(model_frames.frames / stride))
    return build(tuple(input_shape), num_outputs, params, columns=columns)


def parameter_count(name: str, input_shape: tuple, num_outputs: int,
                    params: ModelConfig = ModelConfig()) -> int:
    """Parameters (trainable and not) of registry model `name` built with `params`' knobs."""
    return build_backbone(dataclasses.replace(params, name=name), input_shape, num_outputs).count_params()


def parameter_table(cfg: Config, num_outputs: int) -> str:
    """A text table: every registered model built with cfg.model's knobs for cfg's features, and
    its parameter count; '*' marks cfg.model.name.

    A model that cannot take this input shape shows why instead of a count.
    """
    params = cfg.model
    rows = []
    for name in REGISTRY:
        named = dataclasses.replace(cfg, model=dataclasses.replace(params, name=name))
        try:
            shape = features_shape(named, model_framing(named))
            count = f"{parameter_count(name, shape, num_outputs, params):,}"
        except (ValueError, ModuleNotFoundError) as err:
            count = f"not buildable: {err}"
        rows.append((f"{name}{' *' if name == params.name else ''}", count))
    width = max(len("model"), *(len(model) for model, _ in rows))
    count_width = max(len("parameters"), *(len(count) for _, count in rows))
    lines = [f"{'model':<{width}}  {'parameters':>{count_width}}"]
    lines += [f"{model:<{width}}  {count:>{count_width}}" for model, count in rows]
    return "\n".join(lines)


def config_num_outputs(cfg: Config) -> int:
    """Outputs the config's labels give for train.task (folder, glob and manifest sources;
    annotation configs need --num-outputs)."""
    records = load_records(cfg.data)
    return LabelSpec.from_records(records, cfg.train.task, cfg.data.negative_label).num_outputs


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Parameter count of every registered model "
                                                 "for a config's input shape and model knobs.")
    add_config_arguments(parser)
    parser.add_argument("--num-outputs", type=int, default=None,
                        help="outputs (classes); default: counted from the config's data")
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    num_outputs = args.num_outputs
    if num_outputs is None:
        try:
            num_outputs = config_num_outputs(cfg)
        except (ConfigError, ValueError) as err:
            print(f"{args.config}: cannot count the outputs from the data ({err}); "
                  "pass --num-outputs", file=sys.stderr)
            return 2
    model_frames = model_framing(cfg)
    frames = model_frames.trunk_frames
    bins = frontend_output_shape(cfg.frontend, cfg.audio.sample_rate_hz, cfg.audio.clip_samples)[1]
    m = cfg.model
    context = (f" ({model_frames.frames} of the clip, {model_frames.trunk_context_frames} of context on each side)"
               if model_frames.trunk_context_frames else "")
    print(f"{args.config}: features {frames}x{bins}x1{context}, {num_outputs} outputs; width {m.width}, "
          f"depth {m.depth}, kernel_size {m.kernel_size}, pooling {m.block_pooling} / {m.global_pooling}, "
          f"dropout {m.dropout:g}")
    print(parameter_table(cfg, num_outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
