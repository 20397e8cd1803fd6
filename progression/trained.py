"""A trained model, loaded once: ``load_trained(path_or_uri) -> TrainedModel``.

The one way in to a trained model for predict, evaluate, explain, resume and
``train.init_encoder``: a checkpoint path or an MLflow model URI (``runs:/<id>/model``,
``models:/<name>@<alias>``, ``models:/<name>/<version>``) becomes the network, the config it
was trained with, its typed metadata (:class:`~progression.models.checkpoint.CheckpointMeta`)
and its conformal calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from progression.config import Config, to_dict
from progression.errors import CheckpointError
from progression.models.checkpoint import (
    ENCODER_MODEL_KEYS,
    CheckpointMeta,
    build_trained_model,
    checkpoint_meta,
    read_checkpoint,
    shape_differences,
    stored_config,
)

if TYPE_CHECKING:
    from progression.calibration import ConformalCalibration
    from progression.data.covariates import CovariateSpec
    from progression.models.forecaster import Forecaster

_MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def resolve_checkpoint(ref: str | Path, tracking_uri: str | None = None) -> Path:
    """A local checkpoint file for ``ref``: a path, or an MLflow URI (``runs:/<id>/model``,
    ``models:/<name>@<alias>``, ``models:/<name>/<version>``) downloaded from the tracking
    store (``tracking_uri``, else $MLFLOW_TRACKING_URI, else ./mlruns.db)."""
    text = str(ref)
    if not text.startswith(_MLFLOW_SCHEMES):
        return Path(ref)
    import mlflow

    from progression.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or "")
    try:
        # resolved in this store, not in the process-wide one MLflow's download would ask
        from progression.registry import model_artifact_uri, run_artifact_uri

        source = text
        if text.startswith("models:/"):
            source = model_artifact_uri(text, uri)
        elif text.startswith("runs:/"):
            source = run_artifact_uri(text, uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=uri))
    except Exception as exc:  # noqa: BLE001 - MlflowException, store or network errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointError(f"cannot fetch model '{text}' from the tracking store {uri} "
                              f"({first}); check the run id / model name and the tracking URI "
                              "(MLFLOW_TRACKING_URI)") from None
    if local.is_file():
        return local
    found = sorted(local.rglob("*.ckpt"))
    if not found:
        raise CheckpointError(f"model '{text}' holds no checkpoint (.ckpt); it was not logged by "
                              "`progression train`")
    return found[0]


@dataclass
class TrainedModel:
    """A checkpoint read back. ``path``: the local file (downloaded for an MLflow URI);
    ``config``: the config it was trained with; ``meta``: its stored metadata;
    ``state_dict``: the LightningModule's weights. The network (:attr:`model`) is built on
    first use, so reading the metadata alone costs no model construction."""

    path: Path
    config: Config
    meta: CheckpointMeta
    state_dict: dict[str, torch.Tensor]

    @cached_property
    def model(self) -> Forecaster:
        """The trained network, in eval mode on the CPU."""
        return build_trained_model(self.config, self.meta, self.state_dict, self.path)

    @property
    def covariates(self) -> CovariateSpec:
        return self.meta.covariate_spec()

    @property
    def calibration(self) -> ConformalCalibration | None:
        """The conformal interval correction fitted after training on histories with their
        reader scores, when there is one."""
        from progression.calibration import ConformalCalibration

        stored = self.meta.calibration
        return ConformalCalibration.from_dict(stored) if stored else None

    @property
    def calibration_unscored(self) -> ConformalCalibration | None:
        """The correction fitted with the calibration patients' scores hidden (films and
        covariates only); None for checkpoints calibrated before it existed."""
        from progression.calibration import ConformalCalibration

        stored = self.meta.calibration_unscored
        return ConformalCalibration.from_dict(stored) if stored else None

    @property
    def name(self) -> str:
        """The MLflow run id that trained it, else the checkpoint's file name."""
        return self.meta.run_id or self.path.name

    def encoder_state(self, cfg: Config) -> dict[str, torch.Tensor]:
        """The image encoder's weights, checked against ``cfg`` (``train.init_encoder``):
        backbone, its arguments, the embedding size and the image size must be those the
        encoder was trained with."""
        if not self.config.model.use_images:
            raise CheckpointError(f"config key 'train.init_encoder': {self.path} is a "
                                  "covariates-only model (no image encoder); give a checkpoint "
                                  "trained with images")
        stored = to_dict(self.config)
        diff = []
        for key in shape_differences(stored, cfg, ENCODER_MODEL_KEYS):
            section, _, name = key.partition(".")
            diff.append(f"{key}={stored[section][name]!r}")
        if diff:
            raise CheckpointError(
                f"config key 'train.init_encoder': the encoder of {self.path} was trained with "
                f"{', '.join(diff)}; set these keys to the same values (or --config that "
                "checkpoint's config)")
        prefix = "model.encoder."
        return {k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)}


def load_trained(ref: str | Path | TrainedModel, tracking_uri: str | None = None) -> TrainedModel:
    """The trained model at ``ref``: a .ckpt path or an MLflow model URI (see
    :func:`resolve_checkpoint`; ``tracking_uri`` is the store to fetch it from). A
    :class:`TrainedModel` is returned as it is. Raises CheckpointError, naming the file and
    the fix, when it is missing, damaged, not ours, or written by an incompatible version."""
    if isinstance(ref, TrainedModel):
        return ref
    path = resolve_checkpoint(ref, tracking_uri)
    ckpt = read_checkpoint(path)
    meta = checkpoint_meta(ckpt)
    return TrainedModel(path=path, config=stored_config(meta, path), meta=meta,
                        state_dict=ckpt["state_dict"])


def bundled_reader() -> Path:
    """The 256 px reader shipped inside the package (``progression/readers/simulated_256px.ckpt``,
    0.7 MB): a model trained on 300 patients of the project's own simulator, whose image
    encoder reads damage from the simulator's stylised default-style films. It is for the demo,
    tests and experiments on simulated cohorts only: it has never seen a real radiograph and
    does not read one (nor the simulator's other film style; docs/simulator.md). See
    progression/readers/README.md for how it was trained."""
    from importlib.resources import files

    return Path(str(files("progression") / "readers" / "simulated_256px.ckpt"))
