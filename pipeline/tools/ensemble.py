"""Several trained runs as one classifier: their class probabilities averaged, scored on the split
they share.

python -m pipeline.tools.ensemble --runs runs/a runs/b [runs/c ...] --out runs/ensemble

Members are train.py run directories over the same records and split (the same split manifest,
checked by its digest: the same data section and data.seed, else pipeline.seed) and the same
labels and task; each may have its own model, sample rate and frontend, since each scores the
split through its own config's pipeline. Models that err on
different examples make an average that errs less: on Watkins10 a log-mel CNN and BirdNET each
scored macro F1 0.91 on the test cuts, wrong on 21 of 222 clips each but on only 10 of the same.

Writes OUT/metrics.json (the evaluation split's metrics for the ensemble, as a run's metrics.json,
plus `members`: each run's own macro F1, accuracy, PR-AUC on the validation and evaluation
splits, model, parameters and training seconds; and `validation`, the ensemble's on the
validation split), OUT/classification_report.txt and OUT/confusion_matrix.png, and prints one
table. Members are chosen by the user, before the evaluation split is looked at; the validation
columns are there to choose them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from models.classifier import load_classifier  # noqa: E402
from models.training.artifacts import scorer, write_confusion_matrix  # noqa: E402
from models.training.evaluation import classification_metrics, predict_scores  # noqa: E402
from models.training.setup import RunData, load_run_data, make_datasets  # noqa: E402
from pipeline.atomic import write_json, write_text  # noqa: E402
from pipeline.config import ConfigError, exit_on_config_error  # noqa: E402
from pipeline.config.load import load_config  # noqa: E402


class Member:
    """One run: its config, split and labels, and its scores of the validation and evaluation splits."""

    def __init__(self, run: Path):
        if not (run / "model.keras").exists():
            raise ConfigError(f"{run}: not a finished train.py run (no model.keras)")
        self.run = run
        self.cfg = load_config(run / "config.yaml")
        self.data: RunData = load_run_data(self.cfg, run)
        self.metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        self.scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def score(self, splits: list[str]) -> None:
        model = scorer(load_classifier(self.run / "model.keras"), self.cfg)
        sets = make_datasets(self.cfg, self.data)
        for split in splits:
            self.scores[split] = predict_scores(model, sets.test if split == "test" else sets.val)


def check_compatible(members: list[Member]) -> None:
    """The same records, split and labels in every member, or a ConfigError naming the first that differs."""
    first = members[0]
    for m in members[1:]:
        if m.data.digest != first.data.digest:
            raise ConfigError(f"{m.run}: its split manifest ({m.data.digest}) differs from {first.run}'s "
                              f"({first.data.digest}); an ensemble is scored on one split, so its members must "
                              "share the data section and the seed of the split (data.seed, else pipeline.seed)")
        if (m.data.labels.names, m.data.labels.task) != (first.data.labels.names, first.data.labels.task):
            raise ConfigError(f"{m.run}: labels {list(m.data.labels.names)} ({m.data.labels.task}) differ from "
                              f"{first.run}'s {list(first.data.labels.names)} ({first.data.labels.task})")
    if first.data.labels.task == "frames":
        raise ConfigError("frame models (train.task: frames) are not averaged here: their outputs are per frame")


def average(members: list[Member], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The members' mean probabilities on `split`, and its targets (the same in every member, checked)."""
    targets = members[0].scores[split][1]
    for m in members[1:]:
        if not np.array_equal(m.scores[split][1], targets):
            raise RuntimeError(f"{m.run}: the {split} examples come in another order than {members[0].run}'s")
    return np.mean([m.scores[split][0] for m in members], axis=0), targets


COLUMNS = ("accuracy", "macro_f1", "pr_auc")


def split_columns(metrics: dict[str, dict]) -> dict:
    """{split: metrics} -> the table's columns: {split}_accuracy, {split}_macro_f1, {split}_pr_auc."""
    return {f"{split}_{k}": m[k] for split, m in metrics.items() for k in COLUMNS}


def member_row(m: Member, splits: list[str]) -> dict:
    return {"run": str(m.run), "model": m.cfg.model.name, "sample_rate_hz": m.cfg.audio.sample_rate_hz,
            "parameters": m.metrics.get("parameters"), "train_seconds": m.metrics.get("train_seconds"),
            **split_columns({s: classification_metrics(*m.scores[s], m.data.labels)[0] for s in splits})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="train.py run directories (two or more)")
    parser.add_argument("--out", required=True, help="folder for metrics.json, the report and the confusion matrix")
    args = parser.parse_args(argv)
    with exit_on_config_error():
        if len(args.runs) < 2:
            raise ConfigError("--runs: an ensemble needs two or more runs")
        members = [Member(Path(r)) for r in args.runs]
        check_compatible(members)
    data = members[0].data
    split = data.eval_split
    splits = ["val", split] if split == "test" and len(data.part("val")) else [split]
    for m in members:
        m.score(splits)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [member_row(m, splits) for m in members]
    averaged = {s: average(members, s) for s in splits}
    results = {s: classification_metrics(*averaged[s], data.labels) for s in splits}
    metrics, report = results[split]
    scored = {s: r[0] for s, r in results.items()}
    write_json({"split": split, **metrics, "model": "ensemble", "members": rows,
                "validation": scored.get("val") if split == "test" else None,
                "parameters": sum(r["parameters"] or 0 for r in rows),
                "manifest_sha256": data.digest}, out / "metrics.json")
    write_text(out / "classification_report.txt", report)
    write_confusion_matrix(*averaged[split], data.labels, out,
                           f"{split} split, {len(averaged[split][1])} examples, ensemble of {len(members)}")
    table = pd.DataFrame(rows + [{"run": "ensemble (mean probability)", "model": "", **split_columns(scored)}])
    print(table[["run", "model", *split_columns(scored)]].to_string(
        index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    print(f"-> {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
