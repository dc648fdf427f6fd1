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
import sys
from typing import Callable, Optional

import keras

from models.backbones.baselines import capuchin_baseline, watkins_cnn
from models.backbones.crnn import crnn
from models.backbones.efficientnet import efficientnet_b0
from models.backbones.mobilenet import mobilenet
from models.backbones.resnet import resnet
from models.backbones.small_cnn import small_cnn
from pipeline.config import Config, ConfigError, ModelConfig, add_config_arguments, config_from_arguments
from pipeline.records.labels import LabelSpec
from pipeline.features.frontend import frontend_output_shape
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
}
# Models whose logits are per frame [frames, outputs] (train.task "frames"); the others give one
# row per clip.
FRAME_MODELS = frozenset({"crnn"})


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


def build_backbone(params: ModelConfig, input_shape: tuple, num_outputs: int) -> keras.Model:
    check_known(params.name)
    return REGISTRY[params.name](tuple(input_shape), num_outputs, params)


def parameter_count(name: str, input_shape: tuple, num_outputs: int,
                    params: ModelConfig = ModelConfig()) -> int:
    """Parameters (trainable and not) of registry model `name` built with `params`' knobs."""
    return build_backbone(dataclasses.replace(params, name=name), input_shape, num_outputs).count_params()


def parameter_table(input_shape: tuple, num_outputs: int, params: ModelConfig) -> str:
    """A text table: every registered model and its parameter count; '*' marks params.name.

    A model that cannot take this input shape shows why instead of a count.
    """
    rows = []
    for name in REGISTRY:
        try:
            count = f"{parameter_count(name, input_shape, num_outputs, params):,}"
        except ValueError as err:
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
    frames, bins = frontend_output_shape(cfg.frontend, cfg.audio.sample_rate_hz, cfg.audio.clip_samples)
    m = cfg.model
    print(f"{args.config}: features {frames}x{bins}x1, {num_outputs} outputs; width {m.width}, "
          f"depth {m.depth}, kernel_size {m.kernel_size}, pooling {m.block_pooling} / {m.global_pooling}, "
          f"dropout {m.dropout:g}")
    print(parameter_table((frames, bins, 1), num_outputs, cfg.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
