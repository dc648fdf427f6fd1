"""The search space, declared once: every hyperparameter with its choices or range and its default,
how the config's `tune.fixed` / `tune.space` narrow it, and how a trial's values become a Config.

A hyperparameter is named by the dotted config key it sets (`model.width`), except four frontend
values searched relative to something else, whose config keys `trial_config` derives:

    frontend.n_fft          -> frontend.n_fft (and window_s: null)
    frontend.hop_fraction   -> frontend.hop_samples = hop_fraction * window length (hop_s: null)
    frontend.fmin_fraction  -> frontend.fmin_hz = fmin_fraction * Nyquist
    frontend.fmax_fraction  -> frontend.fmax_hz = fmax_fraction * Nyquist

so one space fits every sample rate. Fractions of Nyquist keep fmin < fmax <= Nyquist for any
rate; window lengths longer than the clip are dropped from the space before the search starts.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Optional

from pipeline.config import Config, ConfigError, from_dict, to_dict

Kind = Literal["choice", "int", "float", "fixed"]


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter: `values` for a choice or fixed value, `min_value..max_value` for a range."""

    name: str
    kind: Kind
    default: Any
    values: tuple = ()
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    # float ranges: sample uniformly in log space (learning rates).
    log: bool = False


# The compact model families searched by default, in order of preference; those in
# models.backbones.registry.REGISTRY at run time are used.
COMPACT_MODELS = ("small_cnn", "resnet", "mobilenet")

SPACE: tuple[Param, ...] = (
    # Architecture
    Param("model.name", "choice", "small_cnn", COMPACT_MODELS),
    Param("model.width", "choice", 32, (8, 16, 32, 64)),
    Param("model.depth", "int", 3, min_value=2, max_value=5),
    Param("model.kernel_size", "choice", 3, (3, 5, 7)),
    Param("model.block_pooling", "choice", "max", ("max", "avg")),
    Param("model.global_pooling", "choice", "avg", ("avg", "max")),
    Param("model.dropout", "choice", 0.2, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
    # Frontend
    Param("frontend.kind", "choice", "logmel", ("logmel", "pcen", "linear")),
    Param("frontend.n_fft", "choice", 512, (256, 512, 1024, 2048)),
    Param("frontend.hop_fraction", "choice", 0.25, (0.125, 0.25, 0.5)),
    Param("frontend.n_mels", "choice", 64, (32, 48, 64, 96, 128)),
    Param("frontend.fmin_fraction", "choice", 0.0, (0.0, 0.02, 0.05, 0.1)),
    Param("frontend.fmax_fraction", "choice", 1.0, (0.5, 0.75, 1.0)),
    # Augmentation (takes effect only with augment.enabled: true)
    Param("augment.time_masks", "int", 2, min_value=0, max_value=3),
    Param("augment.time_mask_max_frames", "choice", 20, (5, 10, 20, 40)),
    Param("augment.freq_masks", "int", 2, min_value=0, max_value=3),
    Param("augment.freq_mask_max_bins", "choice", 8, (4, 8, 16)),
    Param("augment.gain_db_range", "choice", 0.0, (0.0, 3.0, 6.0, 12.0)),
    Param("augment.noise_prob", "choice", 0.0, (0.0, 0.25, 0.5, 0.75)),
    # Optimisation
    Param("train.learning_rate", "float", 1e-3, min_value=1e-4, max_value=1e-2, log=True),
    Param("pipeline.batch_size", "choice", 32, (16, 32, 64)),
)

NAMES = tuple(p.name for p in SPACE)
_BY_NAME = {p.name: p for p in SPACE}


def _nyquist(base: Config) -> float:
    return base.audio.sample_rate_hz / 2.0


def _n_fft(value, values, base) -> dict:
    return {"frontend.n_fft": value, "frontend.window_s": None}


def _hop(value, values, base) -> dict:
    frame = values.get("frontend.n_fft") or base.frontend.frame_length_samples(base.audio.sample_rate_hz)
    return {"frontend.hop_samples": max(1, int(round(frame * value))), "frontend.hop_s": None}


def _fmin(value, values, base) -> dict:
    return {"frontend.fmin_hz": round(value * _nyquist(base), 3)}


def _fmax(value, values, base) -> dict:
    return {"frontend.fmax_hz": round(value * _nyquist(base), 3)}


# Hyperparameter -> (its value, all values, base config) -> {config key: value}.
DERIVED: dict[str, Callable[[Any, dict, Config], dict]] = {
    "frontend.n_fft": _n_fft,
    "frontend.hop_fraction": _hop,
    "frontend.fmin_fraction": _fmin,
    "frontend.fmax_fraction": _fmax,
}


# ---------------------------------------------------------------------------------------------
# The space of one search: SPACE narrowed by the config


def _check_value(param: Param, value: Any, where: str) -> Any:
    """A value of the param's type: an integer, a number (made float) or a name."""
    like = param.default
    if isinstance(like, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(like, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    else:
        ok, expected = isinstance(value, str), "a name"
    if not ok:
        raise ConfigError(f"{where}: expected {expected} (like {like!r}), got {value!r}")
    return value


def _narrow(param: Param, spec: Any, where: str) -> Param:
    """tune.space entry -> the narrowed param: a list of choices (any values of the right type),
    or {min, max}: the declared choices within, or a new range for an int or float param."""
    if isinstance(spec, list) and spec:
        return _one_or_more(dataclasses.replace(param, kind="choice"),
                            tuple(_check_value(param, v, where) for v in spec))
    if not (isinstance(spec, dict) and spec and set(spec) <= {"min", "max"} and not isinstance(param.default, str)):
        raise ConfigError(f"{where}: expected a list of choices, or a mapping with min and/or max for a "
                          f"number, got {spec!r} (tune.fixed holds single values)")
    lo = _check_value(param, spec["min"], where) if "min" in spec else None
    hi = _check_value(param, spec["max"], where) if "max" in spec else None
    if param.kind == "choice":
        values = tuple(v for v in param.values if (lo is None or v >= lo) and (hi is None or v <= hi))
        if not values:
            raise ConfigError(f"{where}: none of the choices {list(param.values)} lies in {spec!r}")
        return _one_or_more(param, values)
    lo = param.min_value if lo is None else lo
    hi = param.max_value if hi is None else hi
    if lo > hi or (param.log and lo <= 0):
        raise ConfigError(f"{where}: expected 0 < min <= max, got {spec!r}" if param.log
                          else f"{where}: expected min <= max, got {spec!r}")
    return dataclasses.replace(param, min_value=lo, max_value=hi, default=min(max(param.default, lo), hi))


def _one_or_more(param: Param, values: tuple) -> Param:
    """The param with these choices: fixed when one is left."""
    if len(values) == 1:
        return dataclasses.replace(param, kind="fixed", values=values, default=values[0])
    return dataclasses.replace(param, values=values, default=param.default if param.default in values else values[0])


def _families(param: Param, registry: dict, where: Optional[str], task: str) -> Param:
    """model.name: by default (where is None) the compact families the registry has (its frame
    models for train.task "frames"); families named in the config (at `where`) must exist."""
    if where is None:
        from models.backbones.registry import FRAME_MODELS, OWN_FRONTEND
        # Pretrained families (their own frontend, clip length and weights) only when named.
        defaults = tuple(sorted(FRAME_MODELS - set(OWN_FRONTEND))) if task == "frames" else param.values
        present = tuple(v for v in defaults if v in registry)
        if not present:
            raise ConfigError(f"tune.space.model.name: none of the default families {list(param.values)} is in "
                              f"the model registry (known: {', '.join(sorted(registry))}); list some")
        return _one_or_more(param, present)
    unknown = [v for v in param.values if v not in registry]
    if unknown:
        raise ConfigError(f"{where}.model.name: unknown model {unknown[0]!r} (known: {', '.join(sorted(registry))})")
    return param


def _prune(param: Param, base: Config, notes: list[str]) -> Param:
    """Drops choices that cannot describe a run with this base config. Sample rate, clip length
    and noise files are not searched, so these are known before the search starts."""
    if param.name == "frontend.n_fft":
        clip = base.audio.clip_samples
        ok, why = (lambda v: v <= clip), f"longer than the clip ({clip} samples)"
    elif param.name == "model.name":
        from models.backbones.registry import fits_task
        task = base.train.task
        ok, why = ((lambda v: fits_task(v, task)),
                   f"not a {'frame' if task == 'frames' else 'clip'} model (train.task {task!r})")
    elif param.name == "augment.noise_prob" and not base.augment.noise_glob:
        ok, why = (lambda v: v == 0), "needs augment.noise_glob, which the config leaves empty"
    else:
        return param
    if param.kind == "fixed":
        if not ok(param.default):
            raise ConfigError(f"tune.fixed.{param.name}: {param.default!r} is {why}")
        return param
    values = tuple(v for v in param.values if ok(v))
    if not values:
        raise ConfigError(f"tune.space.{param.name}: every choice is {why}")
    if values != param.values:
        notes.append(f"{param.name}: dropped {[v for v in param.values if not ok(v)]} ({why})")
    return _one_or_more(param, values)


def resolve(base: Config, registry: Optional[dict] = None) -> tuple[tuple[Param, ...], list[str]]:
    """SPACE as this search uses it: tune.fixed values as fixed params (null: keep the base
    config's value, i.e. not searched; `section.*: null` keeps every param of the section not
    named in tune.fixed or tune.space), tune.space narrowing, model families from the registry,
    and impossible choices dropped.

    Returns the params and notes on what was dropped. Raises ConfigError naming the key."""
    if registry is None:
        from models.backbones.registry import REGISTRY as registry
    fixed, narrowed = dict(base.tune.fixed), dict(base.tune.space)
    for key in fixed:
        section = key[:-2] if key.endswith(".*") else None
        if section is not None:
            if fixed[key] is not None:
                raise ConfigError(f"tune.fixed.{key}: a section wildcard takes null (keep the base "
                                  f"config's values), got {fixed[key]!r}")
            if not any(n.startswith(section + ".") for n in NAMES):
                raise ConfigError(f"tune.fixed.{key}: no hyperparameter in section {section!r}")
        elif key not in _BY_NAME:
            raise ConfigError(f"tune.fixed.{key}: unknown hyperparameter (known: {', '.join(NAMES)})")
    for key in narrowed:
        if key not in _BY_NAME:
            raise ConfigError(f"tune.space.{key}: unknown hyperparameter (known: {', '.join(NAMES)})")
        if key in fixed:
            raise ConfigError(f"tune.space.{key}: also in tune.fixed; a hyperparameter is either fixed or searched")

    params, notes = [], []
    for param in SPACE:
        section = param.name.split(".")[0]
        if f"{section}.*" in fixed and param.name not in fixed and param.name not in narrowed:
            continue  # the section is kept as the base config has it, but for the params named
        if param.name in fixed:
            value = fixed[param.name]
            if value is None:
                continue
            value = _check_value(param, value, f"tune.fixed.{param.name}")
            param = dataclasses.replace(param, kind="fixed", values=(value,), default=value)
        elif param.name in narrowed:
            param = _narrow(param, narrowed[param.name], f"tune.space.{param.name}")
        if param.name == "model.name":
            where = "tune.fixed" if param.name in fixed else "tune.space" if param.name in narrowed else None
            param = _families(param, registry, where, base.train.task)
        params.append(_prune(param, base, notes))
    if not base.augment.enabled and any(p.name.startswith("augment.") and p.kind != "fixed" for p in params):
        notes.append("augment.enabled is false in the config: the augment.* hyperparameters have no "
                     "effect (enable augmentation, or add `augment.*: null` to tune.fixed)")
    return tuple(params), notes


def define(hp, params: tuple[Param, ...]) -> dict[str, Any]:
    """Registers each param with a keras_tuner.HyperParameters; returns the values it holds."""
    values = {}
    for p in params:
        if p.kind == "fixed":
            values[p.name] = hp.Fixed(p.name, p.default)
        elif p.kind == "choice":
            values[p.name] = hp.Choice(p.name, list(p.values), default=p.default)
        elif p.kind == "int":
            values[p.name] = hp.Int(p.name, int(p.min_value), int(p.max_value), default=p.default)
        else:
            values[p.name] = hp.Float(p.name, p.min_value, p.max_value, sampling="log" if p.log else "linear",
                                      default=p.default)
    return values


# ---------------------------------------------------------------------------------------------
# From a trial's values to its Config


def config_values(values: dict[str, Any], base: Config) -> dict[str, Any]:
    """Hyperparameter values -> the dotted config keys they set ("tuner/..." keys are skipped)."""
    out = {}
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if name not in _BY_NAME:
            raise ConfigError(f"{name}: unknown hyperparameter (known: {', '.join(NAMES)})")
        out.update(DERIVED[name](value, values, base) if name in DERIVED else {name: value})
    return out


def trial_config(base: Config, values: dict[str, Any]) -> Config:
    """The base config with a trial's values, and train.epochs = the trial's epochs (Hyperband's
    tuner/epochs, else tune.max_epochs), checked as load_config checks a file. Raises ConfigError
    naming the key for an impossible combination."""
    raw = to_dict(base)
    for key, value in config_values(values, base).items():
        section, field = key.split(".")
        raw[section][field] = value
    raw["train"]["epochs"] = int(values.get("tuner/epochs", base.tune.max_epochs))
    return from_dict(raw, source="trial")


def describe(params: tuple[Param, ...]) -> str:
    """One line per param, for the log at the start of a search."""
    lines = []
    for p in params:
        if p.kind in ("choice", "fixed"):
            shown = p.values if p.kind == "choice" else f"fixed {p.default!r}"
        else:
            shown = f"{p.min_value:g}..{p.max_value:g}{' (log)' if p.log else ''}"
        lines.append(f"  {p.name:<28} {shown}  default {p.default!r}")
    return "\n".join(lines)
