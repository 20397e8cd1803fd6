"""Search spaces: every searched key must be a real config key, and bad files say what to fix."""

from __future__ import annotations

import optuna
import pytest

from progression.config import load_config
from progression.errors import ConfigError
from progression.tuning.space import apply_params, load_search_space, parse_search_space

BASE = load_config()

GOOD = """
metric: val/mae_delta_1y
direction: minimize
sampler: {type: tpe, seed: 3, n_startup_trials: 2}
pruner: {type: median, n_warmup_steps: 1}
params:
  train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}
  model.seq_layers: {type: int, low: 1, high: 3}
  model.seq_model: {type: categorical, choices: [gru, transformer]}
fixed:
  train.max_epochs: 2
"""


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_bundled_search_spaces_load_against_the_config(name):
    space = load_search_space(name, BASE)
    assert space.metric == "val/mae_delta_1y"
    assert space.direction == "minimize"
    assert "train.lr" in {p.key for p in space.params}


def test_sampled_values_stay_in_bounds_and_make_a_valid_config():
    space = parse_search_space(GOOD, BASE)
    study = optuna.create_study(sampler=space.make_sampler(space.worker_seed(0, 0)))
    for _ in range(5):
        params = space.suggest(study.ask())
        assert 1e-4 <= params["train.lr"] <= 1e-2  # "1e-4" (read by YAML as text) is a number
        assert params["model.seq_layers"] in (1, 2, 3)
        cfg = apply_params(apply_params(BASE, space.fixed), params)
        assert cfg.train.lr == params["train.lr"]
        assert cfg.model.seq_model == params["model.seq_model"]
        assert cfg.train.max_epochs == 2


def test_unknown_param_key_is_named_in_the_error():
    text = GOOD.replace("train.lr:", "train.lrr:")
    with pytest.raises(ConfigError, match=r"params\.train\.lrr.*unknown config key 'train\.lrr'"):
        parse_search_space(text, BASE, name="space.yaml")


def test_unknown_section_in_fixed_is_named_in_the_error():
    with pytest.raises(ConfigError, match="fixed: .*'trian'"):
        parse_search_space(GOOD.replace("train.max_epochs: 2", "trian.max_epochs: 2"), BASE)


def test_choice_of_the_wrong_type_for_the_config_key_is_rejected():
    text = GOOD.replace("choices: [gru, transformer]", "choices: [gru, 3]")
    with pytest.raises(ConfigError, match="model.seq_model"):
        parse_search_space(text, BASE)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{type: float, low: 0.0, high: 1.0, log: true}", "log: true needs low > 0"),
        ("{type: float, low: 1.0, high: 0.5}", "must be smaller than high"),
        ("{type: float, low: 1.0}", "needs 'low' and 'high'"),
        ("{type: normal, low: 1.0, high: 2.0}", "not one of float, int, categorical"),
        ("{type: categorical, choices: []}", "non-empty list"),
        ("{type: float, low: 0.1, high: 0.5, lo: 1}", "unknown field 'lo'"),
    ],
)
def test_malformed_distribution_is_reported_with_its_key(spec, message):
    text = f"params:\n  train.lr: {spec}\n"
    with pytest.raises(ConfigError, match=rf"params\.train\.lr.*{message}"):
        parse_search_space(text, BASE)


def test_grid_sampler_needs_categorical_params():
    with pytest.raises(ConfigError, match="grid sampler"):
        parse_search_space(GOOD.replace("type: tpe, seed: 3, n_startup_trials: 2", "type: grid"), BASE)


def test_unknown_sampler_option_is_named():
    with pytest.raises(ConfigError, match="unknown option 'n_startup' for tpe"):
        parse_search_space(GOOD.replace("n_startup_trials: 2", "n_startup: 2"), BASE)


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'metrics'"):
        parse_search_space("metrics: x\n" + GOOD, BASE)


def test_parallel_workers_and_resumes_get_different_sampler_seeds():
    space = parse_search_space(GOOD, BASE)
    seeds = {space.worker_seed(w, n) for w in range(3) for n in (0, 4)}
    assert len(seeds) == 6
    assert space.worker_seed(1, 4) == space.worker_seed(1, 4)  # reproducible for one history


def test_fingerprint_ignores_the_seed_but_not_the_params():
    space = parse_search_space(GOOD, BASE)
    reseeded = parse_search_space(GOOD.replace("seed: 3", "seed: 9"), BASE)
    widened = parse_search_space(GOOD.replace("high: 3", "high: 4"), BASE)
    assert space.fingerprint() == reseeded.fingerprint()
    assert space.fingerprint() != widened.fingerprint()


def test_missing_search_space_file_names_the_bundled_ones(tmp_path):
    with pytest.raises(ConfigError, match="default, tiny"):
        load_search_space(tmp_path / "nope.yaml", BASE)
