"""Search spaces for ``progression tune``: a small YAML file, validated against the config.

A search space names config keys (``train.lr``) and the distribution each is sampled from,
the metric the trials are ranked on, and how Optuna samples and prunes. Every key is checked
against :class:`progression.config.Config` when the file is loaded, so a typo fails before
the first trial instead of silently tuning nothing. Schema (see ``docs/tuning.md``)::

    metric: val/mae_delta_1y      # logged by `progression train`; SvdH units
    direction: minimize           # or maximize
    sampler: {type: tpe, seed: 0, n_startup_trials: 4}   # tpe | random | grid
    pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}  # median | threshold | none
    params:
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.seq_model: {type: categorical, choices: [gru, transformer]}
      model.seq_layers: {type: int, low: 1, high: 3}
    fixed:                        # optional: applied to every trial
      train.max_epochs: 20
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from progression.config import (
    Config,
    bundled_config,
    bundled_config_names,
    config_from_dict,
    load_yaml,
    to_dict,
)
from progression.errors import ConfigError

PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = {"tpe": {"seed", "n_startup_trials", "multivariate"}, "random": {"seed"}, "grid": {"seed"}}
PRUNERS = {
    "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
    "threshold": {"lower", "upper", "n_warmup_steps", "interval_steps"},
    "none": set(),
}
TOP_LEVEL_KEYS = {"metric", "direction", "sampler", "pruner", "params", "fixed"}


@dataclass(frozen=True)
class ParamSpec:
    """One searched config key and the distribution its values are drawn from."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def candidates(self) -> list[Any]:
        """Values that bound the distribution (used to check them against the config)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter for an Optuna trial (the name in Optuna is the config key)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; ``source`` is the YAML text it was read from."""

    params: tuple[ParamSpec, ...]
    metric: str = "val/mae_delta_1y"
    direction: str = "minimize"
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sampled values for one trial, keyed by config key."""
        return {p.key: p.suggest(trial) for p in self.params}

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for the MLflow artifact and to detect a changed space on resume)."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "params": {p.key: _spec_dict(p) for p in self.params},
            "fixed": self.fixed,
        }

    def fingerprint(self) -> str:
        """Canonical JSON of what defines the trials (sampler seed excluded: it may differ)."""
        data = self.as_dict()
        data["sampler"] = {k: v for k, v in self.sampler.items() if k != "seed"}
        return json.dumps(data, sort_keys=True, default=str)

    def make_sampler(self, worker_seed: int | None) -> Any:
        """The Optuna sampler; ``worker_seed`` keeps parallel workers from drawing the same values."""
        import optuna

        kind = self.sampler["type"]
        if kind == "grid":
            # Every worker must shuffle the grid identically, so all share the file's seed.
            grid = {p.key: list(p.choices) for p in self.params}
            return optuna.samplers.GridSampler(grid, seed=self.sampler.get("seed", 0))
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=worker_seed)
        options = {k: v for k, v in self.sampler.items() if k in ("n_startup_trials", "multivariate")}
        return optuna.samplers.TPESampler(seed=worker_seed, **options)

    def make_pruner(self) -> Any:
        import optuna

        options = {k: v for k, v in self.pruner.items() if k != "type"}
        kind = self.pruner["type"]
        if kind == "median":
            return optuna.pruners.MedianPruner(**options)
        if kind == "threshold":
            return optuna.pruners.ThresholdPruner(**options)
        return optuna.pruners.NopPruner()

    def worker_seed(self, worker_index: int, trials_so_far: int) -> int:
        """A sampler seed per worker and resume point, derived from the file's ``sampler.seed``.

        Workers with the same seed would propose identical trials, and a resumed study would
        repeat its first proposals; mixing in the worker index and the number of trials already
        in the study avoids both while staying reproducible for a given history.
        """
        seq = np.random.SeedSequence([int(self.sampler.get("seed", 0)), worker_index, trials_so_far])
        return int(seq.generate_state(1)[0])


def _spec_dict(p: ParamSpec) -> dict[str, Any]:
    """The YAML form of one parameter (what a user would write)."""
    if p.type == "categorical":
        return {"type": p.type, "choices": list(p.choices)}
    out: dict[str, Any] = {"type": p.type, "low": p.low, "high": p.high}
    if p.log:
        out["log"] = True
    if p.step is not None:
        out["step"] = p.step
    return out


def apply_params(cfg: Config, params: Mapping[str, Any]) -> Config:
    """``cfg`` with dotted keys set (``{"train.lr": 3e-4}``), checked like config overrides.

    Raises ConfigError naming an unknown key or a value of the wrong type.
    """
    data = to_dict(cfg)
    for key, value in params.items():
        cursor = data
        parts = key.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
            if not isinstance(cursor, dict):
                raise ConfigError(f"config key '{key}': '{part}' is a value, not a section")
        cursor[parts[-1]] = value
    return config_from_dict(data)


def _number(value: Any, where: str) -> float | int:
    # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number the user meant.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def _parse_param(key: str, raw: Any, where: str) -> ParamSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping like {{type: float, low: 0.0, high: 1.0}}")
    allowed = {"type", "low", "high", "log", "step", "choices"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'; valid fields: {', '.join(sorted(allowed))}")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(PARAM_TYPES)}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices: give a non-empty list of values")
        if set(raw) - {"type", "choices"}:
            raise ConfigError(f"{where}: a categorical parameter takes only 'choices'")
        return ParamSpec(key=key, type=kind, choices=tuple(choices))
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a {kind} parameter needs 'low' and 'high'")
    low, high = _number(raw["low"], f"{where}.low"), _number(raw["high"], f"{where}.high")
    step = None if raw.get("step") is None else _number(raw["step"], f"{where}.step")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if kind == "int":
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise ConfigError(f"{where}: an int parameter needs whole-number low/high/step")
        low, high, step = int(low), int(high), None if step is None else int(step)
    else:
        low, high = float(low), float(high)
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be smaller than high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0 (got {low})")
    if log and step is not None:
        raise ConfigError(f"{where}: 'step' and 'log: true' cannot be combined")
    return ParamSpec(key=key, type=kind, low=low, high=high, log=log, step=step)


def _parse_options(raw: Any, kinds: dict[str, set[str]], default: str, where: str) -> dict[str, Any]:
    if raw is None:
        return {"type": default}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{type: {default}}}")
    kind = raw.get("type", default)
    if kind not in kinds:
        raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(kinds)}")
    unknown = sorted(set(raw) - kinds[kind] - {"type"})
    if unknown:
        valid = ", ".join(sorted(kinds[kind])) or "none"
        raise ConfigError(f"{where}: unknown option '{unknown[0]}' for {kind}; valid: {valid}")
    return {**raw, "type": kind}


def parse_search_space(text: str, base: Config, name: str = "<search space>") -> SearchSpace:
    """Parse and validate a search space against ``base`` (the config the trials start from)."""
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping with 'params', 'metric', 'direction'")
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"{name}: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise ConfigError(f"{name}: 'params' must map config keys (e.g. train.lr) to distributions")
    params = tuple(_parse_param(k, v, f"{name}: params.{k}") for k, v in raw_params.items())
    direction = data.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"{name}: direction must be minimize or maximize, got {direction!r}")
    metric = data.get("metric", "val/mae_delta_1y")
    if not isinstance(metric, str) or "/" not in metric:
        raise ConfigError(f"{name}: metric must be a logged metric name like val/mae_delta_1y")
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{name}: 'fixed' must map config keys to values")
    space = SearchSpace(
        params=params,
        metric=metric,
        direction=direction,
        sampler=_parse_options(data.get("sampler"), SAMPLERS, "tpe", f"{name}: sampler"),
        pruner=_parse_options(data.get("pruner"), PRUNERS, "median", f"{name}: pruner"),
        fixed=dict(fixed),
        source=text,
    )
    if space.sampler["type"] == "grid" and any(p.type != "categorical" for p in params):
        raise ConfigError(f"{name}: the grid sampler needs every parameter to be categorical")
    if space.pruner["type"] == "threshold" and not ({"lower", "upper"} & set(space.pruner)):
        raise ConfigError(f"{name}: the threshold pruner needs 'lower' and/or 'upper'")
    # Every key and every bound must be a value the config accepts.
    try:
        fixed_cfg = apply_params(base, space.fixed)
    except ConfigError as exc:
        raise ConfigError(f"{name}: fixed: {exc}") from None
    for p in params:
        for value in p.candidates():
            try:
                apply_params(fixed_cfg, {p.key: value})
            except ConfigError as exc:
                raise ConfigError(f"{name}: params.{p.key}: {exc}") from None
    return space


def load_search_space(path: str | Path, base: Config) -> SearchSpace:
    """Read a search-space YAML file (or a bundled name: ``tiny``, ``default``)."""
    p = Path(path)
    if p.is_file():
        return parse_search_space(p.read_text(), base, name=str(p))
    bundled = bundled_config(p.stem, "search")
    if p.suffix in ("", ".yaml") and bundled is not None:
        return parse_search_space(bundled.read_text(), base, name=f"search space '{p.stem}'")
    raise ConfigError(
        f"search space '{path}' not found; give a YAML path or a bundled name ("
        + ", ".join(bundled_config_names("search")) + ")"
    )
