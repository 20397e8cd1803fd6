"""Checkpoints: what a trained model stores beside its weights, and reading it back.

A checkpoint is a Lightning checkpoint with one extra entry, ``"progression"``: the
resolved config, the covariate statistics of the training split, the input layout, the
patient split and the MLflow run id (:class:`CheckpointMeta`). That is enough to rebuild the
network and prepare a new cohort exactly as in training, on a machine that never saw the
training data. :func:`progression.trained.load_trained` is the one way in for users.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from progression.config import Config, config_from_dict, to_dict
from progression.data.covariates import CovariateSpec
from progression.data.layout import InputLayout
from progression.errors import CheckpointError, ConfigError
from progression.models.forecaster import Forecaster, build_forecaster
from progression.scoring import DEFAULT_SYSTEM, ScoringSystem, scoring_system

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
    reader scores to learn from; ``split``: patient ids per split, as salted hashes when
    ``split_salt`` is set (:func:`hashed_split`; read them with :meth:`split_of`; checkpoints
    written before hashing, or with ``tracking.share_identifiers=true``, hold the ids);
    ``mlflow``: run id, tracking URI (credentials hidden) and experiment. Optional: ``encoder_from`` (the checkpoint the encoder
    started from), ``image_reading`` (validation correlation of the finished encoder's
    region readings), ``calibration`` (the conformal correction, :mod:`progression.calibration`,
    fitted on histories with their reader scores; checkpoints before it had only this one),
    ``calibration_unscored`` (the same fitted with the scores hidden: films and covariates
    only; ``predict`` uses it for histories without a scored visit).
    ``scoring``: the scoring system of the training cohort, the units of every forecast
    (checkpoints from before it was recorded are SvdH).
    ``crossfit`` (folds of out-of-fold readings for the sequence stage, ``train.crossfit_folds``),
    ``simulated`` (the training cohort came from the simulator: it has a ``truth/`` folder).
    Keys this version does not know are kept in ``extra`` and written back unchanged.
    """

    config: dict[str, Any]
    covariates: dict[str, Any]
    layout: dict[str, Any]
    image_epochs: int = 1
    joint_supervised: bool = True
    split: dict[str, list[str]] = field(default_factory=dict)
    split_salt: str | None = None
    cohort_fingerprint: str | None = None
    mlflow: dict[str, Any] = field(default_factory=dict)
    encoder_from: dict[str, Any] | None = None
    image_reading: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    calibration_unscored: dict[str, Any] | None = None
    scoring: str = DEFAULT_SYSTEM
    crossfit: dict[str, Any] | None = None
    simulated: bool | None = None
    format: int = CHECKPOINT_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    _OPTIONAL = ("encoder_from", "image_reading", "calibration", "calibration_unscored",
                 "split_salt", "crossfit", "simulated")

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
        if out["scoring"] == DEFAULT_SYSTEM:  # absent = SvdH, as before it was recorded
            del out["scoring"]
        return {**out, **self.extra}

    @property
    def run_id(self) -> str | None:
        """The MLflow run that trained the model (None when it was not tracked)."""
        return self.mlflow.get("run_id") or None

    def split_sizes(self) -> dict[str, int]:
        """Patients per split (``{"train": 120, "val": 40, "test": 40}``)."""
        return {name: len(ids) for name, ids in self.split.items()}

    def split_of(self, patient_ids: Iterable[str]) -> dict[str, list[str]]:
        """The split, as ids of ``patient_ids`` (a cohort's): hashed entries are matched by
        hashing each given id with the checkpoint's salt; ids not in a split are left out."""
        ids = [str(p) for p in patient_ids]
        if self.split_salt is None:
            given = set(ids)
            return {name: [str(p) for p in members if str(p) in given]
                    for name, members in self.split.items()}
        by_hash = {patient_hash(p, self.split_salt): p for p in ids}
        return {name: [by_hash[h] for h in members if h in by_hash]
                for name, members in self.split.items()}

    @property
    def encoder_trained(self) -> bool:
        """Whether the image encoder learned anything: in this fit, or in the one it started from."""
        return self.image_epochs > 0 or self.encoder_from is not None

    def covariate_spec(self) -> CovariateSpec:
        return CovariateSpec.from_dict(self.covariates)

    def input_layout(self) -> InputLayout:
        return InputLayout(**self.layout)

    @property
    def system(self) -> ScoringSystem:
        """The scoring system of the forecasts (:mod:`progression.scoring.systems`)."""
        return scoring_system(self.scoring)


def patient_hash(patient_id: str, salt: str) -> str:
    """HMAC-SHA256 of a patient id under a checkpoint's salt (hex): the same id gives the same
    hash in one checkpoint, and the hash does not give back the id."""
    return hmac.new(bytes.fromhex(salt), str(patient_id).encode(), hashlib.sha256).hexdigest()


def hashed_split(split: dict[str, list[str]]) -> tuple[dict[str, list[str]], str]:
    """``split`` with every patient id replaced by :func:`patient_hash` under a new random salt
    (sorted, so the order of the ids is not kept either); returns the hashed split and salt."""
    salt = secrets.token_hex(16)
    return {name: sorted(patient_hash(p, salt) for p in ids) for name, ids in split.items()}, salt


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
    model = build_forecaster(cfg.model, meta.input_layout(), meta.system.rapid_rate)
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
