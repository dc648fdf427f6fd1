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
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from models import training
from pipeline.config import add_config_arguments, config_from_arguments


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory")
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    run_dir = Path(args.out)
    keras.utils.set_random_seed(cfg.pipeline.seed)
    if cfg.pipeline.deterministic:
        tf.config.experimental.enable_op_determinism()

    data = training.prepare_run(cfg, run_dir)
    sets = training.make_datasets(cfg, data)
    training.set_precision(cfg)
    model = training.build_model(cfg, data.labels, total_steps=cfg.train.epochs * sets.steps_per_epoch)
    frames, bins = model.backbone.input_shape[1:3]
    print(f"model {cfg.model.name}: {model.backbone.count_params():,} parameters; features {frames}x{bins}")
    class_weight = training.class_weights(cfg, data)
    if class_weight:
        print("class weights: " + ", ".join(f"{k}: {w:.2f}" for k, w in class_weight.items()))

    start = time.time()
    model.fit(sets.train, validation_data=sets.val, epochs=cfg.train.epochs, steps_per_epoch=sets.steps_per_epoch,
              callbacks=training.standard_callbacks(cfg, sets, data.labels, run_dir), class_weight=class_weight,
              verbose=1 if sys.stdout.isatty() else 2)
    train_s = time.time() - start
    best = run_dir / "model.keras"
    if best.exists():
        model = keras.saving.load_model(best)  # the best epoch by validation loss
    else:  # no finite validation loss in any epoch
        model.save(best)
    metrics = training.finish_run(model, cfg, data, sets, run_dir, train_s)
    print(training.summary_table(metrics))
    print(f"-> {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
