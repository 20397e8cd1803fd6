"""Typed configuration: dataclasses loaded from YAML, merged, and overridden from the CLI.

A config file only names the values it changes; everything else keeps the dataclass
default, so the bundled ``tiny`` config (``progression/configs/tiny.yaml``) stays short. Overrides use dotted keys
(``train.max_epochs=3``). Unknown keys and values of the wrong type raise
:class:`~progression.errors.ConfigError` naming the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from progression.errors import ConfigError

# Bundled YAML configs ship inside the package (package data), so a plain `pip install` of
# the wheel finds `--config tiny` as an editable checkout does; read through importlib.resources.
BUNDLED_CONFIGS: Traversable = files("progression") / "configs"


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-4`` and ``1E5`` are numbers.

    PyYAML follows YAML 1.1, whose float pattern needs a dot and a signed exponent
    (``1.0e-4``), so ``train.lr=1e-4`` arrived as the string ``'1e-4'`` and was refused.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse config YAML (files, overrides, search spaces) with YAML 1.2 number rules."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class DataConfig:
    """Where the cohort is and how it becomes batches."""

    path: str = ""  # cohort directory in format v1
    image_size: int = 256  # pixels per side of each region radiograph (aspect kept, padded)
    cache_dir: str = ""  # decoded-image cache; "" = $PROGRESSION_CACHE_DIR or ~/.cache/progression
    val_fraction: float = 0.15  # of patients
    test_fraction: float = 0.15  # of patients
    # of the validation patients: calibrate the interval and take no part in choosing the
    # checkpoint (progression.data.split); 0 = none, the interval stays uncalibrated
    calibration_share: float = 0.5
    split_seed: int = 0
    batch_size: int = 32  # patients per batch (sequence stage)
    visit_batch_size: int = 16  # visits per batch (image stage; up to 4 films each)
    num_workers: int = 0
    skip_bad_images: bool = False  # skip unreadable images with a warning instead of stopping
    augment: bool = True  # small random shifts/rotations and contrast changes (image stage)
    min_pair_years: float = 0.25  # shortest index -> follow-up gap used as a change target
    max_pair_years: float = 5.0  # longest index -> follow-up gap used as a change target


@dataclass
class ModelConfig:
    """Encoder (timm backbone shared across visits and regions) and sequence model."""

    backbone: str = "small_cnn"  # "small_cnn" or any timm model name (e.g. resnet18)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {width: 8}
    embed_dim: int = 64
    use_images: bool = True  # false = covariates and observed scores only
    image_feature_dim: int = 4  # embedding dims passed to the sequence model (0 = scores only)
    embedding_dropout: float = 0.5
    seq_model: str = "gru"  # "gru" or "transformer"
    seq_dim: int = 64
    seq_layers: int = 1
    dropout: float = 0.1
    cat_embed_dim: int = 4  # embedding size per categorical covariate
    score_input_dropout: float = 0.5  # share of observed scores hidden from the input in training
    interval_level: float = 0.9  # nominal coverage of delta_svdh_lo/hi
    # Siamese change head (models/change_head.py): the change read between two films of one
    # region, and its rate, become sequence-model inputs; trained on reader-scored pairs.
    change_head: bool = False


@dataclass
class LossConfig:
    """Weights of the loss terms; a weight of 0 switches a head's loss off."""

    region: float = 1.0  # per-region erosion/JSN, squared error of log1p (image stage)
    joint: float = 0.5  # per-joint erosion/JSN, squared error of log1p (image stage)
    current: float = 1.0  # visit total/erosion/JSN, squared error of log1p (both stages)
    delta: float = 1.0  # change over a horizon, Huber in units of the rate scale
    rapid: float = 0.5  # rapid progression (>= 5 units/yr), binary cross-entropy
    quantile: float = 0.5  # interval bounds, pinball loss
    huber_beta: float = 0.5  # Huber transition, in rate-scale units
    change: float = 1.0  # Siamese change head vs scored change between films (model.change_head)
    # Damage does not heal: hinge on a later film's reading below an earlier one of the same
    # region and patient (image stage; 0 = off; > 0 also trains on unscored films' order).
    ordering: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation and the Lightning Trainer.

    One fit has two stages: ``image_epochs`` epochs train the encoder on single visits'
    films, then the remaining ``max_epochs - image_epochs`` train the sequence model on
    features of every film encoded once with the frozen encoder.
    """

    seed: int = 0
    max_epochs: int = 100  # both stages together
    image_epochs: int = 60  # stage 1; 0 skips it (covariates-only models skip it anyway)
    # A checkpoint (path or MLflow model URI) whose trained image encoder starts this fit instead
    # of a random one: with image_epochs=0 only the sequence model is trained (a reader reused).
    init_encoder: str = ""
    # Honest stacking: K > 1 trains K image-stage encoders, each on K-1 folds of the training
    # patients, and the sequence stage reads each training patient's films with the encoder
    # that did not see them (K x the image-stage cost); 1 = one encoder reads everything.
    crossfit_folds: int = 1
    lr: float = 2e-3  # sequence stage
    image_lr: float = 1e-3  # image stage
    weight_decay: float = 1e-4
    gradient_clip_val: float = 1.0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"  # "bf16-mixed" on GPU
    deterministic: bool = True
    output_dir: str = "runs"
    monitor: str = "val/mae_delta_1y"
    progress: bool = True  # Lightning progress bar
    threads: int = 0  # torch CPU threads; 0 = torch's default (all cores); 1 for tiny models


@dataclass
class TrackingConfig:
    """MLflow tracking; the URI falls back to $MLFLOW_TRACKING_URI, then a local SQLite file."""

    tracking_uri: str = ""
    experiment: str = "progression"
    run_name: str = ""
    log_model: bool = True  # log an MLflow pyfunc model wrapping the checkpoint
    # Store unreachable: train anyway, logging to <train.output_dir>/offline/mlruns.db, and
    # copy the run to the server later with `progression sync` (default: stop with an error).
    offline: bool = False
    # Privacy (docs/mlflow.md): false keeps patient ids, absolute paths and credentials out of
    # runs, checkpoints and logged models (split stored as salted hashes, paths cut to their
    # directory name, URL passwords hidden, split.csv not logged). true stores them as given.
    share_identifiers: bool = False
    # Sample CPU/memory/GPU use into the run (MLflow's system metrics; needs psutil).
    system_metrics: bool = True
    # The bundled config or file this config was loaded from (names training runs).
    config_name: str = ""


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
    value = load_yaml(raw) if raw != "" else ""
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def bundled_config(name: str, folder: str = "") -> Traversable | None:
    """The bundled YAML ``<folder>/<name>.yaml`` inside the package, or None."""
    base = BUNDLED_CONFIGS / folder if folder else BUNDLED_CONFIGS
    found = base / f"{name}.yaml"
    return found if found.is_file() else None


def bundled_config_names(folder: str = "") -> list[str]:
    """Names of the bundled configs (``tiny``, ``default``, ...) in ``folder``."""
    base = BUNDLED_CONFIGS / folder if folder else BUNDLED_CONFIGS
    return sorted(c.name[: -len(".yaml")] for c in base.iterdir()
                  if c.is_file() and c.name.endswith(".yaml"))


def resolve_config_path(path: str | Path) -> Path | Traversable:
    """A config path as given, or the name of a bundled config (``tiny``, ``default``)."""
    p = Path(path)
    if p.is_file():
        return p
    bundled = bundled_config(p.stem)
    if p.suffix in ("", ".yaml") and bundled is not None and not p.exists():
        return bundled
    raise ConfigError(
        f"config file '{path}' not found; give a YAML path or one of: "
        + ", ".join(bundled_config_names())
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
            data = load_yaml(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{file}' is not valid YAML: {exc}") from None
        try:
            cfg = _merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None
        named = "config_name" in ((data.get("tracking") or {}) if isinstance(data, dict) else {})
        if not named:  # a file that names itself (a dumped config) keeps its name
            cfg = _merge(cfg, {"tracking": {"config_name": file.stem}})
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
