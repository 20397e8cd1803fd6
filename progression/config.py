"""Typed configuration: dataclasses loaded from YAML, merged, and overridden from the CLI.

A config file only names the values it changes; everything else keeps the dataclass
default, so ``configs/tiny.yaml`` stays short. Overrides use dotted keys
(``train.max_epochs=3``). Unknown keys and values of the wrong type raise
:class:`~progression.errors.ConfigError` naming the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from progression.errors import ConfigError

# YAML configs live at the top of the repository (installed with `pip install -e .`).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    """Where the cohort is and how it becomes batches."""

    path: str = ""  # cohort directory in format v1
    image_size: int = 256  # pixels per side of each region radiograph (aspect kept, padded)
    cache_dir: str = ""  # decoded-image cache; "" = $PROGRESSION_CACHE_DIR or ~/.cache/progression
    val_fraction: float = 0.15  # of patients
    test_fraction: float = 0.15  # of patients
    split_seed: int = 0
    batch_size: int = 8  # patients per batch
    num_workers: int = 0
    skip_bad_images: bool = False  # skip unreadable images with a warning instead of stopping


@dataclass
class ModelConfig:
    """Encoder (timm backbone shared across visits and regions) and sequence model."""

    backbone: str = "resnet18"
    embed_dim: int = 64
    seq_model: str = "gru"  # "gru" or "transformer"
    seq_dim: int = 64
    seq_layers: int = 1
    dropout: float = 0.1
    interval_level: float = 0.9  # nominal coverage of delta_svdh_lo/hi


@dataclass
class LossConfig:
    """Weights of the loss terms; a weight of 0 switches a head's loss off."""

    region: float = 1.0
    joint: float = 1.0
    current: float = 1.0
    delta: float = 1.0
    rapid: float = 0.5
    quantile: float = 0.5


@dataclass
class TrainConfig:
    """Optimisation and the Lightning Trainer."""

    seed: int = 0
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"  # "bf16-mixed" on GPU
    output_dir: str = "runs"
    monitor: str = "val/mae_delta_1y"


@dataclass
class TrackingConfig:
    """MLflow tracking; the URI falls back to $MLFLOW_TRACKING_URI, then a local SQLite file."""

    tracking_uri: str = ""
    experiment: str = "progression"
    run_name: str = ""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML dumps and MLflow params)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}`` (MLflow param names)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': {value!r} is not of type {tp}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return origin(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"config key '{key}': expected {tp.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """A copy of dataclass ``obj`` with ``updates`` applied, checking keys and types."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{full}'; valid keys here: {close}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value or {}, full + ".")
        else:
            changes[key] = _coerce(value, hints[key], full)
    return dataclasses.replace(obj, **changes)


def parse_override(text: str) -> dict[str, Any]:
    """``"train.max_epochs=3"`` -> ``{"train": {"max_epochs": 3}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or the name of a bundled config (``tiny``, ``default``)."""
    p = Path(path)
    if p.is_file():
        return p
    bundled = CONFIG_DIR / f"{p.stem}.yaml"
    if p.suffix in ("", ".yaml") and bundled.is_file() and not p.exists():
        return bundled
    raise ConfigError(
        f"config file '{path}' not found; give a YAML path or one of: "
        + ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.yaml")))
    )


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: Config | None = None,
) -> Config:
    """Defaults <- YAML file <- dotted overrides, validated.

    ``path`` may be a file or a bundled config name. Raises ConfigError naming the key.
    """
    cfg = base or Config()
    if path is not None:
        file = resolve_config_path(path)
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{file}' is not valid YAML: {exc}") from None
        try:
            cfg = _merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None
    for text in overrides:
        cfg = _merge(cfg, parse_override(text))
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from :func:`to_dict` output (e.g. stored in a checkpoint)."""
    return _merge(Config(), data)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so a run can be repeated exactly."""
    from progression.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
