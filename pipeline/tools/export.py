"""Write the examples exactly as the pipeline makes them, for inspection or other tools.

python -m pipeline.tools.export --config configs/X.yaml --split train --out DIR [--set k=v ...]
    [--augmented] [--shard-size 256]

Each shard DIR/<split>_<n>.npz holds `features` [n, frames, bins] float32 (the frontend's
output), `targets`, and per-example `path` (the audio file; `file` is a reserved name in
np.savez), `start_s`, `end_s`, `label`, `split`; DIR/
examples.csv lists every example with its shard and index. Training never needs these files.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import numpy as np
import pandas as pd

from models.backbones.registry import model_framing
from pipeline.config import add_config_arguments, config_from_arguments
from pipeline.datasets.build import make_dataset
from pipeline.records.labels import LabelSpec
from pipeline.records.prepare import prepare_records


def export_split(cfg, records: pd.DataFrame, labels: LabelSpec, split: str, out: Path,
                 augmented: bool = False, shard_size: int = 256) -> pd.DataFrame:
    """Writes the shards of one split; returns the listing of examples."""
    part = records[records["split"] == split].reset_index(drop=True)
    # Evaluation order is the table order, so example i of the dataset is row i of `part`.
    cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(
        cfg.pipeline, placement="pipeline", batch_size=shard_size, shuffle_buffer=0))
    if not augmented:
        cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, enabled=False))
    dataset = make_dataset(part, labels, cfg, model_framing(cfg), training=augmented)
    out.mkdir(parents=True, exist_ok=True)
    listing, row = [], 0
    for shard, (inputs, targets) in enumerate(dataset):
        features = inputs["features"]
        n = int(features.shape[0])
        meta = part.iloc[row:row + n]
        name = f"{split}_{shard:05d}.npz"
        np.savez_compressed(
            str(out / name), features=features.numpy()[..., 0], targets=targets.numpy(),
            path=meta["file"].to_numpy(str), start_s=meta["start_s"].to_numpy(float),
            end_s=meta["end_s"].to_numpy(float), label=meta["label"].to_numpy(str),
            split=np.full(n, split))
        listing.append(meta.assign(shard=name, index=np.arange(n)))
        row += n
    return pd.concat(listing, ignore_index=True) if listing else part.assign(shard="", index=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--augmented", action="store_true",
                        help="training-mode examples (random crops and augmentation, unshuffled; "
                             "a last partial shard is dropped)")
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args(argv)
    cfg = config_from_arguments(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, _ = prepare_records(cfg, out)
    labels = LabelSpec.from_records(records, cfg.train.task, cfg.data.negative_label)
    splits = ["train", "val", "test"] if args.split == "all" else [args.split]
    listing = pd.concat([export_split(cfg, records, labels, s, out, args.augmented, args.shard_size)
                         for s in splits], ignore_index=True)
    listing.to_csv(out / "examples.csv", index=False)
    print(f"wrote {len(listing)} examples of {', '.join(splits)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
