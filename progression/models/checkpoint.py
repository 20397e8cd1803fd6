"""Checkpoints: what a trained model stores beside its weights, and reading it back.

A checkpoint is a Lightning checkpoint with one extra entry, ``"progression"``: the
resolved config, the covariate statistics of the training split, the input layout, the
patient split and the MLflow run id (:class:`CheckpointMeta`). That is enough to rebuild the
network and prepare a new cohort exactly as in training, on a machine that never saw the
training data. :func:`progression.trained.load_trained` is the one way in for users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from progression.config import Config, config_from_dict, to_dict
from progression.data.covariates import CovariateSpec
from progression.data.layout import InputLayout
from progression.errors import CheckpointError, ConfigError
from progression.models.forecaster import Forecaster, build_forecaster

CHECKPOINT_FORMAT = 1
META_KEY = "progression"  # the checkpoint entry holding CheckpointMeta.to_dict()
# What shapes the image encoder, and so must match for its weights to start another fit.
ENCODER_MODEL_KEYS = ("backbone", "backbone_kwargs", "embed_dim")


@dataclass
class CheckpointMeta:
    """The ``"progression"`` entry of a checkpoint, typed.

    ``config``: the resolved config as a plain dict (``to_dict``); ``covariates``: the
    training split's covariate statistics (:class:`CovariateSpec` dict); ``layout``: the
    non-image input sizes; ``image_epochs``: epochs of the image stage (0 = the encoder
    was not trained in this fit); ``joint_supervised``: whether the per-joint head had
    reader scores to learn from; ``split``: patient ids per split; ``mlflow``: run id,
    tracking URI and experiment. Optional: ``encoder_from`` (the checkpoint the encoder
    started from), ``image_reading`` (validation correlation of the finished encoder's
    region readings), ``calibration`` (the conformal correction, :mod:`progression.calibration`),
    ``crossfit`` (folds of out-of-fold readings for the sequence stage, ``train.crossfit_folds``).
    Keys this version does not know are kept in ``extra`` and written back unchanged.
    """

    config: dict[str, Any]
    covariates: dict[str, Any]
    layout: dict[str, Any]
    image_epochs: int = 1
    joint_supervised: bool = True
    split: dict[str, list[str]] = field(default_factory=dict)
    cohort_fingerprint: str | None = None
    mlflow: dict[str, Any] = field(default_factory=dict)
    encoder_from: dict[str, Any] | None = None
    image_reading: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    crossfit: dict[str, Any] | None = None
    format: int = CHECKPOINT_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    _OPTIONAL = ("encoder_from", "image_reading", "calibration", "crossfit")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        known = {k for k in cls.__dataclass_fields__ if k != "extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the same keys as checkpoints always had (absent optional ones left out)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        for key in self._OPTIONAL:
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}

    @property
    def run_id(self) -> str | None:
        """The MLflow run that trained the model (None when it was not tracked)."""
        return self.mlflow.get("run_id") or None

    @property
    def encoder_trained(self) -> bool:
        """Whether the image encoder learned anything: in this fit, or in the one it started from."""
        return self.image_epochs > 0 or self.encoder_from is not None

    def covariate_spec(self) -> CovariateSpec:
        return CovariateSpec.from_dict(self.covariates)

    def input_layout(self) -> InputLayout:
        return InputLayout(**self.layout)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict; CheckpointError when missing or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found; give the .ckpt path printed by "
                              "`progression train` or an MLflow URI (runs:/..., models:/...)")
    try:
        # weights_only: a checkpoint file cannot run code when it is loaded
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}: "
                              f"{exc}); the file is damaged or not a checkpoint") from None
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint '{path}' was not written by `progression train` "
                              "(no 'progression' entry); train a model with it first")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint '{path}' has format {meta.get('format')!r}, this version reads "
            f"format {CHECKPOINT_FORMAT}; predict with the progression version that trained "
            "it or train again")
    return ckpt


def checkpoint_meta(ckpt: dict[str, Any]) -> CheckpointMeta:
    """The typed metadata of a checkpoint read by :func:`read_checkpoint`."""
    return CheckpointMeta.from_dict(ckpt[META_KEY])


def stored_config(meta: CheckpointMeta, path: str | Path = "checkpoint") -> Config:
    """The config a checkpoint was trained with; CheckpointError when this version cannot read it."""
    try:
        return config_from_dict(meta.config)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config does not fit this version of "
                              f"progression ({exc}); train the model again") from None


def build_trained_model(cfg: Config, meta: CheckpointMeta, state_dict: dict[str, torch.Tensor],
                        path: str | Path = "checkpoint") -> Forecaster:
    """The trained :class:`Forecaster` (eval mode) from a checkpoint's config and weights."""
    model = build_forecaster(cfg.model, meta.input_layout())
    state = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the model its config describes "
                              f"({first}); the checkpoint is incompatible, train again") from None
    return model.eval()


def shape_differences(stored: dict[str, Any], cfg: Config,
                      model_keys: Sequence[str] | None = None) -> list[str]:
    """Dotted keys where ``cfg`` differs from a checkpoint's stored config (``to_dict``) in
    what shapes the weights: the ``model`` section (or only ``model_keys`` of it) and
    ``data.image_size``, the size the encoder learned on."""
    current = to_dict(cfg)
    keys = sorted(stored["model"]) if model_keys is None else model_keys
    diff = [f"model.{k}" for k in keys if stored["model"].get(k) != current["model"].get(k)]
    if stored["data"]["image_size"] != current["data"]["image_size"]:
        diff.append("data.image_size")
    return diff
