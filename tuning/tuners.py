"""KerasTuner pieces: oracles that stop at a wall-clock deadline, and the tuner that runs trials
of tuning.hypermodel (Hyperband rounds continue from the earlier round's checkpoint).

The oracle holds the search state (OUT/search/oracle.json and trial_*/trial.json): rerunning
with the same OUT reloads it and runs the trial that was running again, under its own id.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from pipeline.atomic import write_json
from tuning import trial as trial_process
from pipeline.config import Config

PROJECT = "search"


class StopsAtDeadline:
    """Oracle mixin: once `deadline` (time.time()) has passed, hands out no new trial, so every
    tuner (every worker, in distributed mode) stops after the trial it is running."""

    deadline: Optional[float] = None

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        if self.deadline is not None and time.time() >= self.deadline and tuner_id not in self.ongoing_trials:
            self.tuner_ids.discard(tuner_id)  # lets a distributed chief exit once all have stopped
            return Trial(self.get_space(), status=TrialStatus.STOPPED)
        return super().create_trial(tuner_id)


class RandomOracle(StopsAtDeadline, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOracle(StopsAtDeadline, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(StopsAtDeadline, keras_tuner.oracles.HyperbandOracle):
    pass


# A search stops after this many failed trials in a row (KerasTuner's default is 3): invalid
# combinations and diverging learning rates are ordinary outcomes of a wide search.
MAX_CONSECUTIVE_FAILED = 10


def make_oracle(cfg: Config, direction: str, deadline: Optional[float]) -> keras_tuner.Oracle:
    """tune.tuner's oracle, capped at tune.max_trials trials. Hyperband runs as many brackets as
    the cap allows (max_epochs for the longest trial, factor 3)."""
    tune = cfg.tune
    common = dict(objective=keras_tuner.Objective(tune.objective, direction), seed=cfg.pipeline.seed,
                  max_consecutive_failed_trials=MAX_CONSECUTIVE_FAILED)
    if tune.tuner == "hyperband":
        oracle = HyperbandOracle(max_epochs=tune.max_epochs, factor=3, hyperband_iterations=math.inf, **common)
        oracle.max_trials = tune.max_trials
    elif tune.tuner == "bayesian":
        oracle = BayesianOracle(max_trials=tune.max_trials, **common)
    else:
        oracle = RandomOracle(max_trials=tune.max_trials, **common)
    oracle.deadline = deadline
    return oracle


# How a trial's process is started (tuning.trial's command line follows).
TRIAL_COMMAND = [sys.executable, "-m", "tuning.trial"]


def exit_reason(code: int) -> str:
    """Why a trial's process ended without an outcome, from its exit code."""
    if code < 0:
        name = signal.Signals(-code).name
        what = {"SIGKILL": "killed (out of memory, or by hand)", "SIGSEGV": "a native crash",
                "SIGABRT": "aborted (a native crash)", "SIGBUS": "a native crash",
                "SIGILL": "a native crash"}.get(name, "a signal")
        return f"the trial's process died of {name}: {what}"
    return f"the trial's process exited with code {code} before writing its outcome"


class SearchTuner(keras_tuner.Tuner):
    """Runs each trial in a process of its own (tuning.trial), with the search's prepared data
    in `data_dir` and TensorBoard logs under `logs_dir`; keeps a record of every attempt at a
    trial in trial_*/attempts.json and calls `after_trial` (if set) once the oracle has the
    trial's result."""

    after_trial: Optional[Callable[[], None]] = None
    data_dir: Path
    logs_dir: Path

    def _populate_initial_space(self) -> None:
        # KerasTuner builds a model here to discover conditional hyperparameters; this space has
        # none and is declared whole by declare_hyperparameters, so no model is built (and a
        # default combination that cannot run fails its trial instead of the start-up).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self) -> None:
        # Saved now, not after the first trial: a search killed during its first trial resumes too.
        self.save()
        super().on_search_begin()

    def run_trial(self, trial, *args, **kwargs) -> dict:
        """Runs the trial in a process of its own (tuning.trial) and returns its best epoch's
        metrics; a trial that fails, or takes its process down, fails with the reason."""
        hp = trial.hyperparameters
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        trial_dir.mkdir(parents=True, exist_ok=True)
        start_from = self.checkpoint_path(hp.values["tuner/trial_id"]) if "tuner/trial_id" in hp.values else None
        write_json({"trial_id": trial.trial_id, "values": hp.values,
                    "initial_epoch": hp.values.get("tuner/initial_epoch", 0), "start_from": start_from,
                    "verbose": kwargs.get("verbose", 2)}, trial_dir / trial_process.REQUEST)
        outcome_path = trial_dir / trial_process.OUTCOME
        outcome_path.unlink(missing_ok=True)
        code = subprocess.call([*TRIAL_COMMAND, str(self.data_dir), str(trial_dir), str(self.logs_dir)])
        outcome = json.loads(outcome_path.read_text()) if outcome_path.exists() else None
        if outcome is not None and outcome["status"] == "completed":
            return outcome["metrics"]
        raise keras_tuner.errors.FailedTrialError(outcome["reason"] if outcome else exit_reason(code))

    def checkpoint_path(self, trial_id: str) -> str:
        """Best-epoch weights of a trial (tuning.trial keeps them there)."""
        return str(Path(self.get_trial_dir(trial_id)) / trial_process.CHECKPOINT)

    def on_trial_begin(self, trial) -> None:
        attempts = read_attempts(self.get_trial_dir(trial.trial_id))
        attempts.append({"tuner_id": self.tuner_id, "start": time.time()})
        _write_attempts(self.get_trial_dir(trial.trial_id), attempts)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial) -> None:
        attempts = read_attempts(self.get_trial_dir(trial.trial_id))
        if attempts:
            attempts[-1].update(seconds=round(time.time() - attempts[-1]["start"], 1), status=trial.status)
            _write_attempts(self.get_trial_dir(trial.trial_id), attempts)
        super().on_trial_end(trial)
        if self.after_trial is not None:
            self.after_trial()


def read_attempts(trial_dir: str | Path) -> list[dict]:
    """[{tuner_id, start, seconds?, status?}] per run of a trial (a trial killed and rerun has two)."""
    path = Path(trial_dir) / "attempts.json"
    return json.loads(path.read_text()) if path.exists() else []


def _write_attempts(trial_dir: str | Path, attempts: list[dict]) -> None:
    write_json(attempts, Path(trial_dir) / "attempts.json")


def role() -> str:
    """'single', or 'chief' / 'worker' in KerasTuner's distributed mode (KERASTUNER_ORACLE_IP set;
    the chief's KERASTUNER_TUNER_ID contains 'chief')."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def tuner_id() -> str:
    return os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
