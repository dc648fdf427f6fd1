"""Config files: YAML with strict typing, `--set section.key=value` overrides, and the resolved
copy written next to every run. Every error names the file, the dotted key and what was expected.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pipeline.config.checks import check
from pipeline.config.schema import Config, ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-4, 5E3) as floats; plain
    YAML 1.1 reads them as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)



# ---------------------------------------------------------------------------------------------
# Loading and checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against the annotated type `tp`; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list):
            return [_coerce(item, typing.get_args(tp)[0], f"{where}[{i}]") for i, item in enumerate(items)]
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is dict and typing.get_args(tp)[1] is Any:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping from names to values, got {value!r}")
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items()):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping of names to names, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key (known keys: {', '.join(sorted(fields))})".lstrip(".")
        )
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)



def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return path, value


def apply_overrides(raw: dict, overrides: typing.Iterable[str]) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return raw


# Clip models whose model.pooling meant the pooling between blocks; in the others it meant the
# global pooling of the head (configs written before model.block_pooling / model.global_pooling).
_BLOCK_POOLING_MODELS = ("small_cnn", "crnn")


def upgrade_legacy(raw: dict) -> dict:
    """A config written before some keys changed, in today's keys (a copy; others unchanged):
    model.pooling became model.block_pooling (small_cnn, crnn) or model.global_pooling (the
    rest); detect.window_s, which could only be the clip length, is gone; audio.mono's channel
    index is a number ("0" -> 0); pipeline.cache (evaluation clips in memory) became the
    budget pipeline.cache_mb. Run directories of earlier versions load through this."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    model = raw.get("model")
    if isinstance(model, dict) and "pooling" in model:
        key = "block_pooling" if model.get("name", "small_cnn") in _BLOCK_POOLING_MODELS else "global_pooling"
        model.setdefault(key, model.pop("pooling"))
    detect = raw.get("detect")
    if isinstance(detect, dict) and "window_s" in detect:
        window_s = detect.pop("window_s")
        clip_s = (raw.get("audio") or {}).get("clip_s")
        if window_s is not None and window_s != clip_s:
            raise ConfigError(f"detect.window_s: removed (windows are the trained clip length, audio.clip_s); "
                              f"got {window_s!r}")
    pipeline = raw.get("pipeline")
    if isinstance(pipeline, dict):
        pipeline.pop("cache", None)
    audio = raw.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("mono"), str) and audio["mono"].isdigit():
        audio["mono"] = int(audio["mono"])
    return raw


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    try:
        cfg = _build(Config, upgrade_legacy(raw), "")
        check(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """Reads a YAML config, applies `--set` overrides and checks the result.

    A relative `data.root` is resolved against the folder of the config file, so a config
    works from any working directory.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        raw = _yaml_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    overrides = list(overrides)
    try:
        raw = apply_overrides(raw, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    cfg = from_dict(raw, str(path))
    root = Path(cfg.data.root)
    if not root.is_absolute():
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str((path.parent / root).resolve())))
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Writes the resolved config; load_config reads it back to an equal Config."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def add_config_arguments(parser) -> None:
    """The --config and --set options every command that builds from a config takes."""
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable)")


@contextlib.contextmanager
def exit_on_config_error():
    """A ConfigError inside ends the command: `config error: ...` on stderr, exit code 2."""
    try:
        yield
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def config_from_arguments(args) -> Config:
    """load_config for parsed --config/--set; a bad config ends the command with exit code 2."""
    with exit_on_config_error():
        return load_config(args.config, args.set)
