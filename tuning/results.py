"""What a search leaves for the morning: trials.csv, best_config.yaml and best/ (the best trial's
model as train.py leaves a run: model.keras, export/, metrics.json, config.yaml, ...)."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import keras
import pandas as pd

from models.training import artifacts, setup
from pipeline.atomic import write_csv, write_json
from pipeline.config import Config, ConfigError, dump_config
from tuning import space
from tuning.tuners import read_attempts

# The first columns of trials.csv; the final validation metrics and hyperparameters follow.
COLUMNS = ("trial_id", "status", "objective", "duration_s", "attempts", "epochs")

# Files of the search's prepared data that a train.py run directory also holds.
RUN_FILES = ("split_manifest.csv", "split_manifest.sha256", "bad_files.csv")


def failure_reason(message: str) -> str:
    """The reason of a failed trial: the last line of KerasTuner's traceback without the
    exception's name ("keras_tuner.src.errors.FailedTrialError: invalid ..." -> "invalid ...")."""
    if not message:
        return ""
    last = message.strip().splitlines()[-1]
    name, sep, rest = last.partition(": ")
    return rest if sep and name.rsplit(".", 1)[-1].endswith("Error") else last


def trials_table(trials: list, project_dir: Path, direction: str) -> pd.DataFrame:
    """One row per trial: id, status, objective (best epoch), duration, epochs run, the final
    validation metrics, the hyperparameters and, for failed trials, the reason; best first."""
    rows = []
    for trial in trials:
        trial_dir = project_dir / f"trial_{trial.trial_id}"
        attempts = read_attempts(trial_dir)
        history = artifacts.read_history(trial_dir)
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        row = dict(zip(COLUMNS, (trial.trial_id, trial.status,
                                 trial.score if trial.score is not None else math.nan,
                                 sum(a.get("seconds", 0.0) for a in attempts) or math.nan,
                                 len(attempts), len(history))))
        row.update({name: value for name, value in sorted(metrics.items()) if name.startswith("val_")})
        row.update(trial.hyperparameters.values)
        row["message"] = failure_reason(trial.message)
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    table = pd.DataFrame(rows)
    table["_done"] = table["status"] != "COMPLETED"
    table = table.sort_values(["_done", "objective", "trial_id"], ascending=[True, direction == "min", True],
                              na_position="last", kind="stable")
    return table.drop(columns="_done").reset_index(drop=True)


def best_trial(trials: list, direction: str):
    """The completed trial with the best score, or None."""
    done = [t for t in trials if t.status == "COMPLETED" and t.score is not None and not math.isnan(t.score)]
    if not done:
        return None
    return (min if direction == "min" else max)(done, key=lambda t: t.score)


def write_tables(trials: list, base: Config, out: Path, project_dir: Path, direction: str):
    """trials.csv and best_config.yaml (cheap: after every trial). Returns the best trial."""
    write_csv(trials_table(trials, project_dir, direction), out / "trials.csv")
    best = best_trial(trials, direction)
    if best is not None:
        cfg = space.trial_config(base, best.hyperparameters.values)
        dump_config(cfg, out / "best_config.yaml")
    return best


def export_best(tuner, trial, base: Config, data: setup.RunData, out: Path) -> Optional[dict]:
    """best/ for the best trial: its best-epoch weights, scored and exported by
    models.training.artifacts.finish_run exactly as train.py does. Skipped when best/ already holds this trial."""
    best_dir = out / "best"
    stamp = best_dir / "tuning.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("trial_id") == trial.trial_id:
        return None
    shutil.rmtree(best_dir, ignore_errors=True)
    best_dir.mkdir(parents=True)
    try:
        cfg = space.trial_config(base, trial.hyperparameters.values)
    except ConfigError as err:
        raise SystemExit(f"best trial {trial.trial_id}: {err}") from None
    dump_config(cfg, best_dir / "config.yaml")
    data.labels.save(best_dir)
    for name in RUN_FILES:
        if (out / name).exists():
            shutil.copy2(out / name, best_dir / name)
    trial_dir = Path(tuner.get_trial_dir(trial.trial_id))
    if (trial_dir / "history.csv").exists():
        shutil.copy2(trial_dir / "history.csv", best_dir / "history.csv")
    keras.backend.clear_session()
    model = tuner.hypermodel.build(trial.hyperparameters)
    model.optimizer.build(model.trainable_variables)  # the checkpoint holds the optimizer's state too
    model.load_weights(tuner.checkpoint_path(trial.trial_id))  # the trial's best-epoch weights
    model.classifier.save(best_dir / "model.keras")
    sets = setup.make_datasets(cfg, data)
    train_s = sum(a.get("seconds", 0.0) for a in read_attempts(trial_dir))
    metrics = artifacts.finish_run(model.classifier, cfg, data, sets, best_dir, train_s)
    write_json({"trial_id": trial.trial_id, "objective": base.tune.objective, "score": trial.score,
                "exported": time.strftime("%Y-%m-%dT%H:%M:%S")}, stamp)
    return metrics
