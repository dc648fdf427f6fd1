"""The run configuration: typed sections (schema), YAML loading with overrides (load) and the
cross-field checks (checks). Everything a command needs is importable from here."""
from pipeline.config.load import (add_config_arguments, apply_overrides, config_from_arguments, dump_config,
                                  exit_on_config_error, from_dict, load_config, parse_override, to_dict)
from pipeline.config.schema import (AudioConfig, AugmentConfig, Config, ConfigError, DataConfig, DetectConfig,
                                    FrontendConfig, ModelConfig, PipelineConfig, TrainConfig, TuneConfig)

__all__ = [
    "AudioConfig", "AugmentConfig", "Config", "ConfigError", "DataConfig", "DetectConfig", "FrontendConfig",
    "ModelConfig", "PipelineConfig", "TrainConfig", "TuneConfig", "add_config_arguments", "apply_overrides",
    "config_from_arguments", "dump_config", "exit_on_config_error", "from_dict", "load_config", "parse_override", "to_dict",
]
