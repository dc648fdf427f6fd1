"""Config loading: every file in configs/ loads; bad keys, types and values are named."""
from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, dump_config, from_dict, load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    assert isinstance(load_config(path), Config)


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, expected", [
    ("audio:\n  sample_rate: 16000\n", "audio.sample_rate", "unknown key"),
    ("frontend:\n  n_mels: sixty\n", "frontend.n_mels", "expected int"),
    ("frontend:\n  fmax_hz: 9000\n", "frontend.fmax_hz", "at most Nyquist (8000 Hz"),
    ("frontend:\n  kind: cqt\n", "frontend.kind", "one of 'linear'"),
    ("audio:\n  clip_s: -1\n", "audio.clip_s", "positive duration"),
    ("nosuchsection:\n  a: 1\n", "nosuchsection", "unknown key"),
    ("augment:\n  noise_prob: 0.5\n", "augment.noise_glob", "glob of background audio"),
])
def test_errors_name_file_and_key(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and key in message and expected in message


def test_overrides_apply_and_are_checked(tmp_path):
    path = write(tmp_path, "audio:\n  clip_s: 2.0\n")
    cfg = load_config(path, ["audio.clip_s=1.5", "frontend.n_mels=40", "frontend.fmax_hz=null"])
    assert cfg.audio.clip_s == 1.5 and cfg.frontend.n_mels == 40 and cfg.frontend.fmax_hz is None
    with pytest.raises(ConfigError, match="frontend.fmin_hz"):
        load_config(path, ["frontend.fmin_hz=9000"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["clip_s=3"])


def test_window_in_seconds_or_samples_not_both():
    cfg = from_dict({"frontend": {"window_s": 0.032, "n_fft": None, "hop_s": 0.008, "hop_samples": None}})
    assert cfg.frontend.frame_length_samples(16000) == 512
    assert cfg.frontend.hop_length_samples(16000) == 128
    assert cfg.frontend.fft_length(16000) == 512
    with pytest.raises(ConfigError, match="frontend.window_s"):
        from_dict({"frontend": {"window_s": 0.032}})


def test_resolved_config_round_trips(tmp_path):
    cfg = from_dict({"audio": {"clip_s": 2.5}, "data": {"root": str(tmp_path)}})
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_relative_root_resolves_against_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path, "data:\n  root: sub\n")
    assert load_config(path).data.root == str((tmp_path / "sub").resolve())


def test_commands_stop_with_code_2_naming_the_key(tmp_path, capsys):
    import train

    path = write(tmp_path, "frontend:\n  fmax_hz: 9000\n")
    with pytest.raises(SystemExit) as stop:
        train.main(["--config", str(path), "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert "frontend.fmax_hz" in capsys.readouterr().err


@pytest.mark.parametrize("model, task", [("crnn", "binary"), ("small_cnn", "frames"), ("no_such_net", "binary")])
def test_train_refuses_a_model_that_does_not_fit_before_reading_any_data(tmp_path, capsys, model, task):
    """The data root does not exist: the model check must come first (the scan can take minutes)."""
    import train

    path = write(tmp_path, f"data:\n  root: {tmp_path / 'absent'}\n  source: annotations\n  annotations: a.csv\n"
                           f"model:\n  name: {model}\ntrain:\n  task: {task}\n")
    with pytest.raises(SystemExit) as stop:
        train.main(["--config", str(path), "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "model.name" in err and model in err


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    from pipeline.config import load_config, parse_override

    assert parse_override("train.learning_rate=1e-4") == (["train", "learning_rate"], 1e-4)
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 3E-3\n")
    assert load_config(path).train.learning_rate == 3e-3
    assert parse_override("data.label_regex=x1e3")[1] == "x1e3"
