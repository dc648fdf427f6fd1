"""tuning/: the space's names and defaults, tune.fixed / tune.space, trial configs, and searches on
the synthesized demo data: every output, resume after a kill, a chief with two workers."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from models.backbones.registry import REGISTRY
from pipeline.config import ConfigError, load_config
from pipeline.tools.synth import synthesize
from tuning import hypermodel, search, space, tuners
from tests.helpers import free_ports, set_args

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

PINNED = {
    "model.name": "small_cnn",
    "model.width": 32,
    "model.depth": 3,
    "model.kernel_size": 3,
    "model.block_pooling": "max",
    "model.global_pooling": "avg",
    "model.dropout": 0.2,
    "frontend.kind": "logmel",
    "frontend.n_fft": 512,
    "frontend.hop_fraction": 0.25,
    "frontend.n_mels": 64,
    "frontend.fmin_fraction": 0.0,
    "frontend.fmax_fraction": 1.0,
    "augment.time_masks": 2,
    "augment.time_mask_max_frames": 20,
    "augment.freq_masks": 2,
    "augment.freq_mask_max_bins": 8,
    "augment.gain_db_range": 0.0,
    "augment.noise_prob": 0.0,
    "train.learning_rate": 1e-3,
    "pipeline.batch_size": 32,
}

# A search that takes seconds per trial: the demo config shrunk as in the smoke test, only the
# frontend searched (model, augmentation, learning rate and batch size kept from the config),
# one frontend value fixed.
TINY = ["model.width=4", "model.depth=1", "pipeline.batch_size=8", "tune.max_epochs=1",
        "tune.fixed={model.*: null, augment.*: null, train.*: null, pipeline.*: null, frontend.fmax_fraction: 0.875}",
        "tune.space={frontend.kind: [logmel, pcen], frontend.n_mels: [32, 48]}"]


def demo(*overrides):
    return load_config(CONFIGS / "demo.yaml", overrides)


def search_args(data_root, out, max_trials):
    sets = [f"data.root={data_root}", *TINY]
    return ["--config", str(CONFIGS / "demo.yaml"), "--out", str(out), "--tuner", "random",
            "--max-trials", str(max_trials), *set_args(sets)]


def read_trials(out):
    return pd.read_csv(out / "trials.csv", dtype={"trial_id": str})


def attempts(out):
    return {d.name[len("trial_"):]: tuners.read_attempts(d) for d in sorted((out / "search").glob("trial_*"))}


# ---------------------------------------------------------------------------------------------
# The space


def test_names_and_defaults_are_pinned():
    assert {p.name: p.default for p in space.SPACE} == PINNED
    assert space.NAMES == tuple(PINNED)
    params, notes = space.resolve(demo())
    assert space.define(keras_tuner.HyperParameters(), params) == PINNED
    assert notes == []
    families = next(p for p in params if p.name == "model.name")
    assert families.values == tuple(n for n in space.COMPACT_MODELS if n in REGISTRY)


def test_default_trial_config():
    cfg = space.trial_config(demo(), PINNED)
    fe = cfg.frontend
    assert (fe.kind, fe.n_fft, fe.hop_samples, fe.n_mels) == ("logmel", 512, 128, 64)
    assert (fe.fmin_hz, fe.fmax_hz) == (0.0, 8000.0)
    assert (cfg.model.width, cfg.pipeline.batch_size, cfg.train.learning_rate) == (32, 32, 1e-3)
    assert cfg.train.epochs == cfg.tune.max_epochs
    assert space.trial_config(demo(), {**PINNED, "tuner/epochs": 7}).train.epochs == 7


def test_fixed_and_narrowed_values_are_honoured():
    cfg = demo("tune.fixed={model.name: small_cnn, frontend.n_mels: 40, augment.*: null}",
               "tune.space={model.width: [8, 16], train.learning_rate: {min: 0.002}, frontend.n_fft: {max: 512}}")
    params, _ = space.resolve(cfg)
    hp = keras_tuner.HyperParameters()
    values = space.define(hp, params)
    kinds = {h.name: type(h).__name__ for h in hp.space}
    assert kinds["model.name"] == "Fixed" and values["model.name"] == "small_cnn"
    assert kinds["frontend.n_mels"] == "Fixed" and values["frontend.n_mels"] == 40
    assert not any(name.startswith("augment.") for name in values)
    by_name = {p.name: p for p in params}
    assert by_name["model.width"].values == (8, 16) and values["model.width"] == 8
    assert (by_name["train.learning_rate"].min_value, by_name["train.learning_rate"].max_value) == (0.002, 0.01)
    assert values["train.learning_rate"] == 0.002
    assert by_name["frontend.n_fft"].values == (256, 512)
    trial = space.trial_config(cfg, values)
    assert trial.frontend.n_mels == 40 and trial.model.name == "small_cnn"
    assert trial.augment == cfg.augment  # not searched: the config's values

    # A section kept as the config has it, but for the params named.
    params, _ = space.resolve(demo("tune.fixed={model.*: null, model.name: resnet}", "tune.space={model.width: [8]}"))
    assert [(p.name, p.kind, p.default) for p in params if p.name.startswith("model.")] == [
        ("model.name", "fixed", "resnet"), ("model.width", "fixed", 8)]


@pytest.mark.parametrize("fixed, narrowed, key, expected", [
    ("{model.widht: 8}", "{}", "tune.fixed.model.widht", "unknown hyperparameter"),
    ("{model.width: wide}", "{}", "tune.fixed.model.width", "expected an integer"),
    ("{model.*: 3}", "{}", "tune.fixed.model.*", "wildcard takes null"),
    ("{}", "{model.name: [nope]}", "tune.space.model.name", "unknown model 'nope'"),
    ("{}", "{model.depth: 3}", "tune.space.model.depth", "expected a list of choices"),
    ("{}", "{model.width: {min: 100}}", "tune.space.model.width", "none of the choices"),
    ("{model.width: 8}", "{model.width: [8, 16]}", "tune.space.model.width", "either fixed or searched"),
    ("{frontend.n_fft: 32768}", "{}", "tune.fixed.frontend.n_fft", "longer than the clip (24000 samples)"),
    ("{}", "{frontend.n_fft: [30000, 40000]}", "tune.space.frontend.n_fft", "every choice is longer"),
])
def test_space_errors_name_the_key(fixed, narrowed, key, expected):
    with pytest.raises(ConfigError) as err:
        space.resolve(demo(f"tune.fixed={fixed}", f"tune.space={narrowed}"))
    assert key in str(err.value) and expected in str(err.value)


def test_impossible_choices_dropped_and_conflicts_fail_the_trial():
    params, notes = space.resolve(demo("audio.clip_s=0.04", "augment.noise_prob=0", "augment.noise_glob="))
    by_name = {p.name: p for p in params}
    assert by_name["frontend.n_fft"].values == (256, 512)  # 640-sample clips
    assert by_name["augment.noise_prob"].kind == "fixed" and by_name["augment.noise_prob"].default == 0.0
    assert len(notes) == 2

    cfg = demo("tune.space={frontend.kind: [mfcc], frontend.n_mels: [16, 32]}")
    params, _ = space.resolve(cfg)
    hp = keras_tuner.HyperParameters()
    space.define(hp, params)
    hp.values["frontend.n_mels"] = 16
    with pytest.raises(ConfigError, match="frontend.n_mfcc"):
        space.trial_config(cfg, hp.values)
    model = hypermodel.SearchHyperModel(cfg, params, data=None, logs_dir=Path("unused"))
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="invalid trial: frontend.n_mfcc"):
        model.trial_config(hp)


def test_derived_frontend_values():
    # Window given in seconds: the hop is a fraction of it; the band edges are fractions of Nyquist.
    cfg = demo("audio.sample_rate_hz=8000", "frontend.window_s=0.05", "frontend.n_fft=null", "frontend.fmax_hz=null",
               "tune.fixed={frontend.n_fft: null}")
    values = {**{k: v for k, v in PINNED.items() if k != "frontend.n_fft"},
              "frontend.hop_fraction": 0.5, "frontend.fmin_fraction": 0.05, "frontend.fmax_fraction": 0.75}
    fe = space.trial_config(cfg, values).frontend
    assert (fe.window_s, fe.n_fft, fe.hop_s, fe.hop_samples) == (0.05, None, None, 200)
    assert (fe.fmin_hz, fe.fmax_hz) == (200.0, 3000.0)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_has_a_search_space(path):
    params, _ = space.resolve(load_config(path))
    assert {p.name for p in params} <= set(space.NAMES)


def test_deadline_stops_handing_out_trials():
    oracle = tuners.make_oracle(demo("tune.tuner=random"), "min", deadline=time.time() - 1)
    oracle.tuner_ids.add("tuner0")
    trial = oracle.create_trial("tuner0")
    assert trial.status == "STOPPED"
    assert oracle.tuner_ids == set() and oracle.trials == {}


def test_objective_must_be_a_tracked_metric():
    assert hypermodel.direction("val_loss") == "min" and hypermodel.direction("val_pr_auc") == "max"
    with pytest.raises(ConfigError, match="tune.objective"):
        hypermodel.direction("val_f1")


# ---------------------------------------------------------------------------------------------
# Searches on the demo data


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning") / "demo"
    synthesize(root, seed=1, clips_per_class=8, clip_s=1.5, long_s=12.0)
    return root


@pytest.fixture(scope="module")
def resumed(demo_data):
    """A two-trial search killed during its second trial (a subprocess), then run again with the
    same command in this process. Returns OUT and the attempts at each trial before the rerun."""
    out = demo_data.parent / "search"
    args = search_args(demo_data, out, max_trials=2)
    proc = subprocess.Popen([sys.executable, "-m", "tuning", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        second = out / "search" / "trial_1" / "attempts.json"
        deadline = time.time() + 150
        while not second.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert second.exists(), "the second trial never started"
    finally:
        proc.kill()  # while the second trial trains
        proc.wait()
    before = attempts(out)
    assert search.main(args) == 0
    return out, before


def test_killed_search_resumes_without_repeating_trials(resumed):
    out, before = resumed
    assert before["0"][0]["status"] == "COMPLETED" and "status" not in before["1"][0]
    runs = attempts(out)
    assert sorted(runs) == ["0", "1"]
    assert runs["0"] == before["0"]  # the finished trial was not run again
    assert len(runs["1"]) == 2 and runs["1"][-1]["status"] == "COMPLETED"  # killed, then rerun
    assert len(read_trials(out)) == 2


def hparams_runs(logs):
    from tensorboard.backend.event_processing import event_multiplexer
    from tensorboard.plugins.hparams import metadata

    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logs))
    mux.Reload()
    return mux, mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)


def test_two_trial_search_writes_every_output(resumed, demo_data):
    out, _ = resumed
    trials = read_trials(out)
    assert len(trials) == 2 and (trials["status"] == "COMPLETED").all()
    assert trials["objective"].is_monotonic_increasing  # val_loss, best first
    assert (trials["duration_s"] > 0).all() and (trials["epochs"] == 1).all()
    assert (trials["frontend.fmax_fraction"] == 0.875).all()  # the hp.Fixed from tune.fixed
    assert set(trials["frontend.kind"]) <= {"logmel", "pcen"}
    assert not any(c.startswith("model.") for c in trials.columns)  # kept from the config

    best = load_config(out / "best_config.yaml")  # what train.py --config does with it
    best_id = trials["trial_id"][0]
    assert Path(best.data.root) == demo_data
    assert best == load_config(out / "best" / "config.yaml")
    assert best.frontend.kind == trials["frontend.kind"][0] and best.frontend.fmax_hz == 7000.0
    assert (best.model.width, best.pipeline.batch_size, best.train.epochs) == (4, 8, 1)

    run = out / "best"
    for name in ("model.keras", "export/saved_model.pb", "metrics.json", "classification_report.txt",
                 "confusion_matrix.png", "training_curves.png", "labels.json", "split_manifest.csv",
                 "history.csv"):
        assert (run / name).exists(), name
    assert json.loads((run / "tuning.json").read_text())["trial_id"] == best_id
    assert json.loads((run / "metrics.json").read_text())["examples"] == 8
    model = keras.saving.load_model(run / "model.keras")
    assert model(np.zeros([1, model.framing.input_samples], np.float32)).shape == (1, 4)

    mux, hparams = hparams_runs(out / "logs")
    assert "_hparams_/experiment" in hparams["."]
    for row in trials.itertuples():
        assert "_hparams_/session_start_info" in hparams[row.trial_id]
        final = tf.make_ndarray(mux.Tensors(row.trial_id, "final/val_loss")[0].tensor_proto)
        assert float(final) == pytest.approx(row.objective, rel=1e-5)
        assert mux.GetAccumulator(f"{row.trial_id}/validation").Tags()["tensors"]  # epoch curves


def test_default_tuner_over_the_default_space(demo_data, tmp_path):
    """The README's command with the default tuner (Hyperband) and the whole default space (model
    families, widths, depths, frontends, augmentation, rates, batch sizes), shrunk to 2 epochs and 4 trials:
    every trial completes or fails with a reason, and the search ends by itself."""
    out = tmp_path / "default"
    args = ["--config", str(CONFIGS / "demo.yaml"), "--out", str(out), "--max-trials", "4",
            "--set", f"data.root={demo_data}", "--set", "tune.max_epochs=2"]
    assert search.main(args) == 0
    trials = read_trials(out)
    assert len(trials) >= 4
    assert set(trials["status"]) <= {"COMPLETED", "FAILED"}
    failed = trials[trials["status"] == "FAILED"]
    assert all(isinstance(m, str) and m for m in failed["message"]), failed
    assert (trials["status"] == "COMPLETED").any()


ABORT_SECOND_TRIAL = """
import json, os, pathlib, sys
count = pathlib.Path(sys.argv[2]).parent.parent / "started"
count.write_text(str(int(count.read_text()) + 1 if count.exists() else 1))
if count.read_text() == "2":
    os.abort()  # the trial takes its process down
os.execv(sys.executable, [sys.executable, "-m", "tuning.trial", *sys.argv[1:]])
"""


def test_a_trial_that_kills_its_process_fails_and_the_search_goes_on(demo_data, tmp_path, monkeypatch):
    wrapper = tmp_path / "abort_second.py"
    wrapper.write_text(ABORT_SECOND_TRIAL)
    monkeypatch.setattr(tuners, "TRIAL_COMMAND", [sys.executable, str(wrapper)])
    out = tmp_path / "aborting"
    assert search.main(search_args(demo_data, out, max_trials=3)) == 0
    trials = read_trials(out)
    assert len(trials) == 3
    assert list(trials["status"]).count("COMPLETED") == 2
    failed = trials[trials["status"] == "FAILED"]
    assert len(failed) == 1 and "SIGABRT" in failed["message"].iloc[0], failed["message"].tolist()
    assert (out / "best" / "model.keras").exists()


def test_distributed_chief_and_two_workers(demo_data, tmp_path):
    out = tmp_path / "distributed"
    port = str(free_ports(1)[0])
    procs, logs = {}, {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": port}
        logs[tuner_id] = tmp_path / f"{tuner_id}.log"
        with open(logs[tuner_id], "wb") as log:
            procs[tuner_id] = subprocess.Popen([sys.executable, "-m", "tuning", *search_args(demo_data, out, 2)],
                                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 200  # a hang fails the test instead of blocking CI
        for tuner_id, proc in procs.items():
            proc.wait(timeout=max(1.0, deadline - time.time()))
            assert proc.returncode == 0, f"{tuner_id}:\n{logs[tuner_id].read_text(errors='replace')[-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    trials = read_trials(out)
    assert len(trials) == 2 and (trials["status"] == "COMPLETED").all()
    ran_by = {a["tuner_id"] for runs in attempts(out).values() for a in runs}
    assert ran_by <= {"tuner0", "tuner1"} and ran_by  # the chief only hands out trials
    assert (out / "best_config.yaml").exists() and (out / "best" / "export" / "saved_model.pb").exists()
