"""One patient's model inputs, and the forecast seen as a function of the films.

What the explanations differentiate: :func:`load_patient` builds the inputs exactly as
``predict`` does (history cut at the index visit, unreadable films left out);
:class:`ChangeFromFilms` and :class:`DamageFromFilms` turn the films into the change forecast
and each film's damage reading, for Grad-CAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from progression.cohort import Cohort, ImageCache
from progression.data.arrays import CohortArrays, build_arrays
from progression.data.covariates import CovariateSpec
from progression.data.datasets import SequenceDataset, collate_sequences
from progression.models.forecaster import Forecaster


@dataclass
class PatientInputs:
    """One patient's model inputs on the CPU."""

    arrays: CohortArrays
    batch: dict[str, torch.Tensor]
    images: torch.Tensor | None  # float [n, s, s] in 0-1 (the films as the model sees them)
    regions: torch.Tensor | None  # [n] region index


def repeat_batch(batch: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """``n`` copies of a one-patient batch (the change-target pairs are not needed)."""
    return {
        k: v.repeat(n, *([1] * (v.ndim - 1))) for k, v in batch.items() if not k.startswith("pair_")
    }


def change_forecast(model: Forecaster, feats: torch.Tensor | None, batch: dict[str, torch.Tensor],
            horizon: float) -> torch.Tensor:
    """Forecast change ``[B]`` (SvdH units) at ``horizon`` years from the last visit."""
    out = model.sequence(feats, batch)
    rows = torch.arange(out["state"].shape[0])
    state = out["state"][rows, batch["length"] - 1]
    return model.sequence.pair_outputs(state, torch.full((len(rows),), horizon))["delta"]


class ChangeFromFilms(nn.Module):
    """Films -> one patient's change forecast (for Grad-CAM over every film at once)."""

    def __init__(self, model: Forecaster, patient: PatientInputs, horizon: float) -> None:
        super().__init__()
        self.model, self.patient, self.horizon = model, patient, horizon

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.model.image_features(self.model.encoder(images, self.patient.regions))
        return change_forecast(self.model, feats, self.patient.batch, self.horizon)


class DamageFromFilms(nn.Module):
    """Films -> each film's damage reading (SvdH units: erosion + JSN of its region)."""

    def __init__(self, model: Forecaster, regions: torch.Tensor) -> None:
        super().__init__()
        self.model, self.regions = model, regions

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.expm1(self.model.encoder(images, self.regions)["region_log"]).sum(-1)


def load_patient(model: Forecaster, spec: CovariateSpec, cohort: Cohort, image_size: int,
                 cache_dir: str | Path | None) -> PatientInputs:
    """The model inputs of a one-patient ``cohort``, history cut at the index visit as in
    ``predict``; unreadable films are left out like ``predict`` does."""
    use_images = model.encoder is not None
    arrays = build_arrays(cohort, spec, use_images, truncate_to_index=True)
    images = regions = None
    if use_images and arrays.image_path:
        cache = ImageCache(cache_dir, image_size)
        slots = cache.ensure(arrays.image_path, progress=False, skip_bad=True)
        if (slots < 0).any():
            bad = {p for p, s in zip(arrays.image_path, slots) if s < 0}
            arrays = build_arrays(cohort, spec, True, truncate_to_index=True, drop_images=bad)
            slots = slots[slots >= 0]
        if len(slots):
            images = torch.from_numpy(cache.get(slots)).float() / 255.0
            regions = torch.from_numpy(arrays.image_region)
    batch = collate_sequences([SequenceDataset(arrays, np.array([0]))[0]])
    return PatientInputs(arrays, batch, images, regions)
