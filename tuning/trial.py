"""One trial of a search, in a process of its own:

    python -m tuning.trial DATA_DIR TRIAL_DIR LOGS_DIR

The search (tuning.tuners.SearchTuner.run_trial) writes TRIAL_DIR/request.json (the trial's
hyperparameter values, its first epoch and the weights it starts from), starts this command and
waits. The trial reads the search's prepared data from DATA_DIR (config.yaml, split_manifest.csv,
labels.json: no rescan), trains, keeps its best epoch's weights in TRIAL_DIR/checkpoint.weights.h5
and writes TRIAL_DIR/outcome.json: {"status": "completed", "metrics": {...}} or {"status":
"failed", "reason": "..."}. A trial that takes its process down (a native crash, an abort, the
out-of-memory killer) writes nothing; the search then records it as failed with the signal and
goes on with the next trial. An overnight search outlives any one trial.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.training import setup  # noqa: E402
from pipeline.atomic import write_json  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from tuning import hypermodel, space  # noqa: E402

REQUEST = "request.json"
OUTCOME = "outcome.json"
CHECKPOINT = "checkpoint.weights.h5"


def run(data_dir: Path, trial_dir: Path, logs_dir: Path) -> dict:
    """Trains the trial of trial_dir/request.json; returns its outcome."""
    request = json.loads((trial_dir / REQUEST).read_text())
    cfg = load_config(data_dir / "config.yaml")
    keras.utils.set_random_seed(cfg.pipeline.seed)
    if cfg.pipeline.deterministic:
        tf.config.experimental.enable_op_determinism()
    params, _ = space.resolve(cfg)
    model_builder = hypermodel.SearchHyperModel(cfg, params, setup.load_run_data(cfg, data_dir), logs_dir)
    hp = keras_tuner.HyperParameters()
    model_builder.declare_hyperparameters(hp)
    hp.values.update(request["values"])
    try:
        model = model_builder.build(hp)
        checkpoint = keras.callbacks.ModelCheckpoint(
            str(trial_dir / CHECKPOINT), monitor=model_builder.objective, mode=model_builder.direction,
            save_best_only=True, save_weights_only=True)
        metrics = model_builder.fit(hp, model, request["trial_id"], str(trial_dir), callbacks=[checkpoint],
                                    initial_epoch=request["initial_epoch"], start_from=request["start_from"],
                                    verbose=request.get("verbose", 2))
    except keras_tuner.errors.FailedTrialError as err:
        return {"status": "failed", "reason": str(err)}
    return {"status": "completed", "metrics": metrics}


def die_with_parent() -> None:
    """Ends this process when the search that started it ends (Linux): a killed search must not
    leave its trial training on, to collide with the same trial run again on resume."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the search ended before prctl took effect
        sys.exit(1)


_PR_SET_PDEATHSIG = 1  # from linux/prctl.h


def main(argv=None) -> int:
    die_with_parent()
    data_dir, trial_dir, logs_dir = (Path(a) for a in (argv or sys.argv[1:]))
    try:
        outcome = run(data_dir, trial_dir, logs_dir)
    except Exception as err:  # any other error fails this trial only, with its reason
        traceback.print_exc()
        outcome = {"status": "failed", "reason": f"{type(err).__name__}: {err}".strip().splitlines()[0]}
    write_json(outcome, trial_dir / OUTCOME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
