"""Reading checkpoints back: the network and everything needed to feed it.

A checkpoint is a Lightning checkpoint with one extra entry, ``"progression"``: the
resolved config, the covariate statistics of the training split, the input layout, the
patient split and the MLflow run id. That is enough to rebuild the network and prepare a
new cohort exactly as in training, on a machine that never saw the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from progression.config import Config, config_from_dict, to_dict
from progression.errors import CheckpointError, ConfigError
from progression.models.forecaster import Forecaster, build_forecaster
from progression.models.sequence import InputLayout

CHECKPOINT_FORMAT = 1
# What shapes the image encoder, and so must match for its weights to start another fit.
ENCODER_MODEL_KEYS = ("backbone", "backbone_kwargs", "embed_dim")


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
    meta = ckpt.get("progression") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint '{path}' was not written by `progression train` "
                              "(no 'progression' entry); train a model with it first")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint '{path}' has format {meta.get('format')!r}, this version reads "
            f"format {CHECKPOINT_FORMAT}; predict with the progression version that trained "
            "it or train again")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    try:
        return config_from_dict(ckpt["progression"]["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config does not fit this version of "
                              f"progression ({exc}); train the model again") from None


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> Forecaster:
    """The trained :class:`Forecaster` of a checkpoint read by :func:`read_checkpoint`."""
    cfg = checkpoint_config(ckpt, path)
    layout = InputLayout(**ckpt["progression"]["layout"])
    model = build_forecaster(cfg.model, layout)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
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


def trained_encoder(path: str | Path, cfg: Config) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The image encoder's weights of checkpoint ``path`` and its stored metadata, checked
    against ``cfg`` (``train.init_encoder``): backbone, its arguments, the embedding size
    and the image size must be those the encoder was trained with."""
    ckpt = read_checkpoint(path)
    source = checkpoint_config(ckpt, path)
    if not source.model.use_images:
        raise CheckpointError(f"config key 'train.init_encoder': {path} is a covariates-only "
                              "model (no image encoder); give a checkpoint trained with images")
    stored = to_dict(source)
    diff = []
    for key in shape_differences(stored, cfg, ENCODER_MODEL_KEYS):
        section, _, name = key.partition(".")
        diff.append(f"{key}={stored[section][name]!r}")
    if diff:
        raise CheckpointError(
            f"config key 'train.init_encoder': the encoder of {path} was trained with "
            f"{', '.join(diff)}; set these keys to the same values (or --config that "
            "checkpoint's config)")
    prefix = "model.encoder."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return state, ckpt["progression"]
