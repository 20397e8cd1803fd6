"""LightningDataModule for the two-stage fit: image batches first, then visit sequences.

The stage is chosen by epoch: epochs ``< image_epochs`` serve :class:`VisitImageDataset`
batches (films + damage targets), later epochs serve :class:`SequenceDataset` batches.
Lightning's validation loop only runs in the sequence stage (image-stage validation is run
by the module at the end of each image epoch), so ``val/mae_delta_1y`` exists whenever it runs.
Lightning reloads dataloaders every epoch (``reload_dataloaders_every_n_epochs=1``); the
loader objects are kept per stage, so persistent workers survive across epochs.

Images are decoded once into the :class:`~progression.cohort.ImageCache` by
:meth:`prepare_data` (rank 0 only; other DDP ranks find the work done) and only read
afterwards: no epoch decodes anything.
"""

from __future__ import annotations

import copy
import logging
from functools import partial

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from progression.cohort import Cohort, ImageCache
from progression.config import Config
from progression.data.arrays import CohortArrays, build_arrays, fit_covariates
from progression.data.covariates import CovariateSpec
from progression.data.datasets import (
    GroupedBatchSampler,
    PatientBatchSampler,
    SequenceDataset,
    VisitImageDataset,
    collate_sequences,
    collate_visits,
)
from progression.data.layout import InputLayout
from progression.data.split import split_patients
from progression.data.spread import spread_visit_scores
from progression.errors import CohortError, ConfigError
from progression.scoring import REGIONS

logger = logging.getLogger(__name__)

IMAGE_STAGE, SEQUENCE_STAGE = "image", "sequence"


def image_batches(cache: ImageCache, slots: np.ndarray, regions: np.ndarray, rows: np.ndarray,
                  batch_size: int):
    """``(rows, uint8 images [n, s, s], region [n])`` chunks of the image ``rows``, in order."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        yield (chunk, torch.from_numpy(cache.get(slots[chunk])),
               torch.from_numpy(regions[chunk]))


class ProgressionDataModule(pl.LightningDataModule):
    """Split, covariate statistics, cached images and loaders for one cohort.

    ``spec`` reuses covariate statistics (resuming from a checkpoint); otherwise they are
    fitted on the training patients.
    """

    def __init__(self, cfg: Config, cohort: Cohort, spec: CovariateSpec | None = None,
                 progress: bool = True) -> None:
        super().__init__()
        d = cfg.data
        if d.min_pair_years <= 0 or d.max_pair_years < d.min_pair_years:
            raise ConfigError(
                "config keys 'data.min_pair_years'/'data.max_pair_years': need "
                f"0 < min <= max, got {d.min_pair_years} and {d.max_pair_years}")
        for key, value in (("data.batch_size", d.batch_size),
                           ("data.visit_batch_size", d.visit_batch_size)):
            if value < 1:
                raise ConfigError(f"config key '{key}': must be >= 1, got {value}")
        self.cfg = cfg
        self.cohort = cohort
        self.spec = spec
        self.progress = progress
        self.use_images = cfg.model.use_images
        self.cache = ImageCache(d.cache_dir, d.image_size) if self.use_images else None
        self._ready = False
        self._loaders: dict[tuple[str, str], DataLoader] = {}

    # ---- Lightning hooks ------------------------------------------------------------------
    def _image_paths(self) -> list[str]:
        images = self.cohort.images
        return images.loc[images["region"].isin(REGIONS), "abs_path"].astype(str).tolist()

    def prepare_data(self) -> None:
        """Decode every film into the cache (once; later calls and runs only read it)."""
        if self.cache is not None:
            self.cache.ensure(self._image_paths(), progress=self.progress,
                              skip_bad=self.cfg.data.skip_bad_images)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = self.cfg.data
        self.split = split_patients(self.cohort.patient_ids, d.val_fraction, d.test_fraction,
                                    d.split_seed, d.calibration_share)
        if self.spec is None:
            self.spec = fit_covariates(self.cohort.subset(self.split["train"]))
        arrays = build_arrays(self.cohort, self.spec, self.use_images)
        self.slots = np.zeros(0, dtype=np.int64)
        if self.cache is not None:
            slots = self.cache.ensure(arrays.image_path, progress=self.progress,
                                      skip_bad=d.skip_bad_images)
            if (slots < 0).any():
                bad = {p for p, s in zip(arrays.image_path, slots) if s < 0}
                arrays = build_arrays(self.cohort, self.spec, self.use_images, drop_images=bad)
                slots = slots[slots >= 0]
            self.slots = slots
        self.arrays: CohortArrays = arrays
        position = {p: i for i, p in enumerate(arrays.patient_ids)}
        self.patients = {k: np.array([position[p] for p in ids], dtype=np.int64)
                         for k, ids in self.split.items()}
        self._check_targets()
        self.layout = InputLayout(
            n_static_num=len(self.spec.static_numeric),
            static_cat_sizes=[c.size for c in self.spec.static_categorical],
            n_visit_num=len(self.spec.visit_numeric),
            visit_cat_sizes=[c.size for c in self.spec.visit_categorical],
        )
        self._ready = True

    def with_patients(self, train: np.ndarray, val: np.ndarray) -> ProgressionDataModule:
        """A view sharing this module's arrays, image cache and covariate statistics, with
        ``train`` and ``val`` (positions into ``arrays``) as its training and validation
        patients and no test patients: cross-fitting trains each fold's encoder on one."""
        view = copy.copy(self)
        view.patients = {"train": np.asarray(train, dtype=np.int64),
                         "val": np.asarray(val, dtype=np.int64), "test": np.zeros(0, np.int64)}
        ids = self.arrays.patient_ids
        view.split = {k: sorted(str(ids[i]) for i in v) for k, v in view.patients.items()}
        view._loaders = {}
        return view

    # ---- targets -----------------------------------------------------------------------------
    def _visit_patient(self) -> np.ndarray:
        a = self.arrays
        return np.repeat(np.arange(a.n_patients), np.diff(a.patient_start))

    def image_visits(self, split: str) -> np.ndarray:
        """Visit rows of ``split`` with a film and some damage target (image stage); with
        ``loss.ordering`` > 0 every imaged visit (unscored films teach the order of damage)."""
        a = self.arrays
        has = a.image_index >= 0
        region_ok = (np.isfinite(a.region_target).any(-1) & has).any(1)
        joint_ok = (np.isfinite(a.joint_target).any((-1, -2)) & has).any(1)
        total_ok = np.isfinite(a.obs[:, 0]) & has.all(1)
        in_split = np.isin(self._visit_patient(), self.patients[split])
        targets = region_ok | joint_ok | total_ok
        if self.cfg.loss.ordering > 0 and targets[in_split].any():
            targets = np.ones_like(targets)
        return np.flatnonzero(in_split & has.any(1) & targets)

    def _check_targets(self) -> None:
        train_visits = np.isin(self._visit_patient(), self.patients["train"])
        if not np.isfinite(self.arrays.obs[train_visits, 0]).any():
            raise CohortError(
                f"{self.cohort.root}: no training patient has a scored visit (svdh_total in "
                "visits.csv or complete joint_scores.csv); training needs scored follow-up; "
                "use `progression predict` with a trained model for unscored cohorts")

    @property
    def image_epochs(self) -> int:
        """Image-stage epochs actually run (0 without images or without damage targets)."""
        if not self.use_images or len(self.image_visits("train")) == 0:
            return 0
        return self.cfg.train.image_epochs

    def stage(self, epoch: int) -> str:
        return IMAGE_STAGE if epoch < self.image_epochs else SEQUENCE_STAGE

    def target_stats(self) -> dict[str, np.ndarray | float]:
        """Training-split statistics that initialise heads and scale the change loss.

        ``rate_scale``: mean observed progression rate (SvdH units/year, negatives as 0,
        at least 0.5); ``region_log_mean`` ``[R, 2]`` and ``joint_log_mean`` ``[R, J, 2]``:
        mean log1p damage (where no region is scored, of the visit scores spread over the
        regions: :func:`~progression.data.spread.spread_visit_scores`).
        """
        a = self.arrays
        train = SequenceDataset(a, self.patients["train"], self.cfg.data.min_pair_years,
                                self.cfg.data.max_pair_years)
        rates = [np.maximum(it["pair_delta"], 0) / it["pair_h"] for it in map(train.__getitem__, range(len(train)))]
        rates = np.concatenate(rates) if rates else np.zeros(0)
        rate_scale = max(0.5, float(rates.mean())) if len(rates) else 1.0
        rows = self.image_visits("train")
        with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
            sup.filter(RuntimeWarning)
            region = np.nanmean(np.log1p(a.region_target[rows]), axis=0)
            # Scored per visit only: start from the visit scores spread over the regions.
            spread = np.nanmean(np.log1p(spread_visit_scores(a.obs[rows])), axis=0)
            region = np.nan_to_num(np.where(np.isnan(region), spread, region))
            joint = np.nan_to_num(np.nanmean(np.log1p(a.joint_target[rows]), axis=0))
        return {"rate_scale": rate_scale, "region_log_mean": region, "joint_log_mean": joint}

    # ---- loaders -------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, stage: str, split: str) -> DataLoader:
        key = (stage, split)
        if key not in self._loaders:
            d = self.cfg.data
            rank, world = self._rank()
            if stage == IMAGE_STAGE:
                dataset = VisitImageDataset(self.arrays, self.image_visits(split), self.cache,
                                            self.slots)
                lengths, batch_size, collate = dataset.n_images(), d.visit_batch_size, collate_visits
            else:
                dataset = SequenceDataset(self.arrays, self.patients[split], d.min_pair_years,
                                          d.max_pair_years)
                lengths, batch_size = dataset.lengths(), d.batch_size
                collate = partial(collate_sequences, rapid_rate=self.cohort.system.rapid_rate)
            shuffle, seed = split == "train", self.cfg.train.seed
            if stage == IMAGE_STAGE and self.cfg.loss.ordering > 0:
                # loss.ordering compares serial films of one patient: keep them in one batch
                sampler = PatientBatchSampler(dataset.patients(), batch_size, shuffle, seed,
                                              rank, world)
            else:
                sampler = GroupedBatchSampler(lengths, batch_size, shuffle, seed, rank, world)
            workers = d.num_workers if stage == IMAGE_STAGE else 0  # sequences are array slices
            self._loaders[key] = DataLoader(
                dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
        return self._loaders[key]

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        epoch = self._epoch()
        loader = self._loader(self.stage(epoch), "train")
        loader.batch_sampler.set_epoch(epoch)
        return loader

    def val_dataloader(self) -> DataLoader | list:
        """Sequence-stage validation; empty in the image stage (see :meth:`image_val_loader`)."""
        if len(self.patients["val"]) == 0 or self.stage(self._epoch()) == IMAGE_STAGE:
            return []
        return self._loader(SEQUENCE_STAGE, "val")

    def image_val_loader(self) -> DataLoader | None:
        """Validation visits for the image stage, or None when there are none."""
        if len(self.image_visits("val")) == 0:
            return None
        return self._loader(IMAGE_STAGE, "val")

    def feature_rows(self) -> np.ndarray:
        """Image rows of training and validation patients (encoded for the sequence stage)."""
        a = self.arrays
        patient_of_image = self._visit_patient()[a.image_visit]
        wanted = np.concatenate([self.patients["train"], self.patients["val"]])
        return np.flatnonzero(np.isin(patient_of_image, wanted))
