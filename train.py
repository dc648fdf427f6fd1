"""Train a call classifier from a config: python train.py --config configs/X.yaml --out runs/NAME

Writes into the run directory: config.yaml (resolved), bad_files.csv, split_manifest.csv
(+ sha256), labels.json, model.keras (best by validation loss), export/ (SavedModel on raw
waveforms), metrics.json, classification_report.txt, confusion_matrix.png,
training_curves.png, history.csv and TensorBoard logs (logs/). A run killed at any moment and
started again with the same --out resumes from its last finished epoch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from models import training
from models.distribute import barrier, check_batch_size, choose_strategy, describe, fit, is_chief, num_workers
from models.registry import check_task
from pipeline.config import add_config_arguments, config_from_arguments


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--data-service", default="", metavar="HOST:PORT",
                        help="tf.data service dispatcher whose workers run the input pipelines (WAV "
                             "inputs only; see pipeline/data_service.py)")
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    try:
        check_task(cfg.model.name, cfg.train.task)  # before the data scan, which can take minutes
    except ValueError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    strategy = choose_strategy()  # before any other TensorFlow call (MultiWorkerMirroredStrategy)
    print(describe(strategy))
    check_batch_size(cfg.pipeline.batch_size, strategy)
    chief = is_chief(strategy)
    run_dir = Path(args.out)
    keras.utils.set_random_seed(cfg.pipeline.seed)
    if cfg.pipeline.deterministic:
        tf.config.experimental.enable_op_determinism()

    # The other workers of a multi-worker run write their copies of the run files aside.
    data = training.prepare_run(cfg, run_dir if chief else Path(tempfile.mkdtemp(prefix="worker_run_")),
                                quiet=not chief)
    # A multi-worker run's trainers share one service job: each training batch goes to one of them.
    job = f"{run_dir.resolve().name}-{data.digest[:12]}" if num_workers(strategy) > 1 else None
    sets = training.make_datasets(cfg, data, data_service=args.data_service, data_service_job=job)
    training.set_precision(cfg)
    with strategy.scope():
        model = training.build_model(cfg, data.labels, total_steps=cfg.train.epochs * sets.steps_per_epoch)
    frames, bins = model.backbone.input_shape[1:3]
    print(f"model {cfg.model.name}: {model.backbone.count_params():,} parameters; features {frames}x{bins}")
    class_weight = training.class_weights(cfg, data)
    if class_weight:
        print("class weights: " + ", ".join(f"{k}: {w:.2f}" for k, w in class_weight.items()))

    start = time.time()
    fit(model, sets.train, strategy, epochs=cfg.train.epochs, steps_per_epoch=sets.steps_per_epoch,
        validation_data=sets.val, callbacks=training.standard_callbacks(cfg, sets, data.labels, run_dir, chief=chief),
        class_weight=class_weight, verbose=1 if sys.stdout.isatty() else 2)
    train_s = time.time() - start
    if not chief:
        barrier(strategy)  # wait while the chief evaluates and exports (see models.distribute.barrier)
        return 0
    best = run_dir / "model.keras"
    if best.exists():
        model = keras.saving.load_model(best)  # the best epoch by validation loss
    else:  # no finite validation loss in any epoch
        model.save(best)
    metrics = training.finish_run(model, cfg, data, sets, run_dir, train_s)
    print(training.summary_table(metrics))
    print(f"-> {run_dir}")
    barrier(strategy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
