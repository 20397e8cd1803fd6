"""The config mechanism: YAML + dotted overrides, with unknown keys and wrong types refused."""

from __future__ import annotations

import pytest

from progression.config import (
    Config,
    config_from_dict,
    dump_config,
    flatten,
    load_config,
    to_dict,
)
from progression.errors import ConfigError


def test_defaults_load_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.data.image_size >= 256  # the default resolution shows grade-1 erosions


def test_yaml_file_changes_only_the_values_it_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_epochs: 3\n")
    cfg = load_config(path)
    assert cfg.train.max_epochs == 3
    assert cfg.train.lr == Config().train.lr


def test_dotted_override_wins_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_epochs: 3\n")
    cfg = load_config(path, ["train.max_epochs=7", "train.lr=0.01"])
    assert cfg.train.max_epochs == 7
    assert cfg.train.lr == pytest.approx(0.01)


def test_int_is_accepted_for_a_float_key():
    cfg = load_config(overrides=["train.lr=1"])
    assert isinstance(cfg.train.lr, float)


def test_unknown_key_is_named_in_the_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"train\.max_epoch"):
        load_config(path)


def test_unknown_section_is_refused():
    with pytest.raises(ConfigError, match="trainer"):
        load_config(overrides=["trainer.max_epochs=3"])


def test_wrong_type_is_named_in_the_error():
    with pytest.raises(ConfigError, match=r"train\.max_epochs.*int"):
        load_config(overrides=["train.max_epochs=many"])


def test_bool_is_not_accepted_as_a_number():
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        load_config(overrides=["data.image_size=true"])


def test_override_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["train.max_epochs"])


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)


def test_missing_config_file_lists_bundled_configs():
    with pytest.raises(ConfigError, match="not found.*cpu, cpu256, default, gpu, tiny"):
        load_config("/nonexistent/config.yaml")


@pytest.mark.parametrize("name", ["tiny", "cpu", "cpu256", "default", "gpu"])
def test_every_bundled_config_loads_by_name(name):
    cfg = load_config(name)
    assert cfg.data.image_size in (64, 128, 256)


def test_resolved_config_round_trips_through_yaml_and_dict(tmp_path):
    cfg = load_config(overrides=["train.max_epochs=5", "model.dropout=0.3"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert load_config(out) == cfg
    assert config_from_dict(to_dict(cfg)) == cfg


def test_flatten_gives_mlflow_param_names():
    flat = flatten(to_dict(Config()))
    assert "train.lr" in flat
    assert "data.image_size" in flat
    assert all("." in key for key in flat)


def test_bundled_configs_are_read_from_the_package_wherever_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: only the package's copy can answer
    assert load_config("tiny") == load_config("configs/tiny.yaml")  # the old top-level path still works
    assert load_config("tiny").data.image_size == 64
