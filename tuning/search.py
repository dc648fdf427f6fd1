"""KerasTuner search over architecture, frontend, augmentation, learning rate and batch size.

    python -m tuning --config configs/X.yaml --out runs/NAME [--tuner hyperband|bayesian|random]
                     [--max-trials N] [--max-hours H] [--set section.key=value ...] [--results-only]

Writes into OUT: config.yaml (the base config), split_manifest.csv, labels.json, bad_files.csv
(as train.py), search/ (KerasTuner's state: oracle.json, trial_*/ with trial.json, best-epoch
weights, history.csv, attempts.json), logs/ (TensorBoard: one run per trial, HParams dashboard),
trials.csv (best first), best_config.yaml (train.py takes it as is) and best/ (the best trial's
model, exported as train.py exports a run).

Killed at any moment, the same command continues the search: finished trials are kept and the
trial that was running starts again. `--max-hours` stops after the trials running at the
deadline. In KerasTuner's distributed mode (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT) the chief holds the search state and writes the results when every
worker has finished; workers run trials.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import keras
import tensorflow as tf
import yaml

from models.training import setup
from models.training.evaluation import summary_table
from pipeline.config import (Config, ConfigError, add_config_arguments, config_from_arguments, exit_on_config_error,
                             load_config, to_dict)
from tuning import hypermodel, results, space, tuners

# Settings that may change between runs of one search; anything else must match to resume.
RESUMABLE_CHANGES = ("tune.max_trials", "tune.max_hours")


def check_resumable(cfg: Config, out: Path) -> None:
    """A search in OUT continues only as the same kind of process and with the same config."""
    project = out / tuners.PROJECT
    if not (project / "oracle.json").exists():
        return
    me = tuners.tuner_id()
    if not (project / f"{me}.json").exists():
        raise ConfigError(f"{project}: holds a search run under other tuner ids than {me!r} (a single "
                          f"process is 'tuner0'; a distributed chief has KERASTUNER_TUNER_ID=chief); "
                          f"resume it the way it was started, or use a new --out")
    if not (out / "config.yaml").exists():
        return
    old, new = to_dict(load_config(out / "config.yaml")), to_dict(cfg)
    for section, fields in old.items():
        for key, value in fields.items():
            if f"{section}.{key}" not in RESUMABLE_CHANGES and new[section][key] != value:
                raise ConfigError(f"{out}: the search there was started with {section}.{key}={value!r}, this "
                                  f"run has {new[section][key]!r}; resume with the same config (only "
                                  f"{' and '.join(RESUMABLE_CHANGES)} may change) or use a new --out")


def write_results(tuner, cfg: Config, data: setup.RunData, out: Path, direction: str, export: bool) -> None:
    trials = list(tuner.oracle.trials.values())
    best = results.write_tables(trials, cfg, out, Path(tuner.project_dir), direction)
    if best is None or not export:
        return
    metrics = results.export_best(tuner, best, cfg, data, out)
    if metrics is not None:
        print(f"best trial {best.trial_id} ({cfg.tune.objective} {best.score:.4g}), exported to {out / 'best'}:")
        print(summary_table(metrics))


def summary(out: Path, rows: int = 10) -> str:
    import pandas as pd

    path = out / "trials.csv"
    table = pd.read_csv(path, dtype={"trial_id": str}) if path.exists() else pd.DataFrame()
    if not len(table):
        return "no trials yet"
    return table[["trial_id", "status", "objective", "duration_s", "epochs"]].head(rows).to_string(index=False)


def parse_arguments(argv) -> tuple[Config, argparse.Namespace]:
    """--tuner, --max-trials and --max-hours are --set overrides of the tune section."""
    parser = argparse.ArgumentParser(prog="python -m tuning", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="search directory (rerun with the same one to resume)")
    parser.add_argument("--tuner", choices=("hyperband", "bayesian", "random"), help="sets tune.tuner")
    parser.add_argument("--max-trials", type=int, help="sets tune.max_trials")
    parser.add_argument("--max-hours", type=float, help="sets tune.max_hours (0: no limit)")
    parser.add_argument("--results-only", action="store_true",
                        help="run no trial: write trials.csv, best_config.yaml and best/ from OUT as it is")
    args = parser.parse_args(argv)
    for value, key in ((args.tuner, "tune.tuner"), (args.max_trials, "tune.max_trials"),
                       (args.max_hours, "tune.max_hours")):
        if value is not None:
            args.set.append(f"{key}={yaml.safe_dump(value).splitlines()[0]}")  # 1e-05 as YAML reads it
    return config_from_arguments(args), args


def main(argv=None) -> int:
    cfg, args = parse_arguments(argv)
    out = Path(args.out).resolve()
    role = tuners.role()
    with exit_on_config_error():
        if role == "worker" and args.results_only:
            raise ConfigError("--results-only: run it as the chief or without KERASTUNER_* variables")
        params, notes = space.resolve(cfg)
        direction = hypermodel.direction(cfg.tune.objective)
        if role != "worker":
            check_resumable(cfg, out)
    deadline = time.time() + cfg.tune.max_hours * 3600 if cfg.tune.max_hours > 0 else None
    keras.utils.set_random_seed(cfg.pipeline.seed)
    if cfg.pipeline.deterministic:
        tf.config.experimental.enable_op_determinism()

    data_dir = out if role != "worker" else out / "workers" / tuners.tuner_id()
    data = setup.prepare_run(cfg, data_dir)
    print(f"{role if role == 'single' else role + ' ' + tuners.tuner_id()}: {cfg.tune.tuner} search of "
          f"{cfg.tune.objective} ({direction}), at most {cfg.tune.max_trials} trials"
          + (f" or {cfg.tune.max_hours:g} h" if deadline else "") + ", space:")
    print(space.describe(params))
    for note in notes:
        print(f"note: {note}")

    model = hypermodel.SearchHyperModel(cfg, params, data, out / "logs")
    oracle = tuners.make_oracle(cfg, direction, deadline)
    tuner = tuners.SearchTuner(oracle=oracle, hypermodel=model, directory=str(out), project_name=tuners.PROJECT,
                               overwrite=False)
    tuner.data_dir, tuner.logs_dir = data_dir, out / "logs"
    if role != "worker":
        hypermodel.write_experiment(out / "logs", params)
        tuner.after_trial = lambda: write_results(tuner, cfg, data, out, direction, export=False)
    status = 0
    if not args.results_only:
        try:
            tuner.search(verbose=1 if sys.stdout.isatty() else 2)
        except RuntimeError as err:  # KerasTuner gives up after too many failed trials in a row
            print(f"search stopped: {err}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            if role != "worker":
                write_results(tuner, cfg, data, out, direction, export=False)
            print("interrupted; run the same command to continue", file=sys.stderr)
            return 130
    if role == "worker":
        return status
    if deadline is not None and time.time() >= deadline:
        print(f"--max-hours {cfg.tune.max_hours:g} reached; run the same command to continue")
    write_results(tuner, cfg, data, out, direction, export=True)
    print(summary(out))
    print(f"-> {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
