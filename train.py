"""Train a call classifier from a config: python train.py --config configs/X.yaml --out runs/NAME

Writes into the run directory: config.yaml (resolved), bad_files.csv, split_manifest.csv
(+ sha256), labels.json, model.keras (the best epoch by train.monitor), export/ (SavedModel on raw
waveforms), metrics.json, classification_report.txt, confusion_matrix.png, training_curves.png,
history.csv and TensorBoard logs (logs/). A run killed at any moment and started again with the
same --out resumes from its last finished epoch (models.training.run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

from models.training.run import train  # noqa: E402
from pipeline.config import add_config_arguments, config_from_arguments, exit_on_config_error  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--data-service", default="", metavar="HOST:PORT",
                        help="tf.data service dispatcher whose workers run the input pipelines (WAV "
                             "inputs only; see pipeline/datasets/service.py)")
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    with exit_on_config_error():
        train(cfg, Path(args.out), data_service=args.data_service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
