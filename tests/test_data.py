"""Splits, covariate encoding, the image-stage data path and the length-grouped sampler."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_support import simulated_cohort

from progression.cohort import read_cohort
from progression.config import load_config
from progression.data import CovariateSpec, split_patients
from progression.data.datamodule import ProgressionDataModule
from progression.data.datasets import GroupedBatchSampler
from progression.errors import ConfigError


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    return simulated_cohort(tmp_path_factory)


def test_split_puts_each_patient_in_exactly_one_split():
    ids = [f"P{i:03d}" for i in range(40)]
    split = split_patients(ids, 0.2, 0.1, seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert (len(split["val"]), len(split["test"])) == (8, 4)
    assert split == split_patients(list(reversed(ids)), 0.2, 0.1, seed=3)  # order-free
    assert split != split_patients(ids, 0.2, 0.1, seed=4)


def test_split_refuses_fractions_that_leave_no_training_patient():
    with pytest.raises(ConfigError, match="cannot give a training split"):
        split_patients(["a", "b"], 0.5, 0.5, seed=0)


def test_covariates_use_training_statistics_and_reserve_unknown_levels():
    train_p = pd.DataFrame({"patient_id": ["a", "b"], "sex": ["F", "M"]})
    train_v = pd.DataFrame({"crp": [2.0, 4.0, np.nan], "treatment": ["mtx", "mtx", None]})
    spec = CovariateSpec.fit(train_p, train_v, ["sex"], ["crp", "treatment"])
    assert spec.visit_numeric[0].mean == pytest.approx(3.0)
    new = spec.transform_visits(pd.DataFrame({"crp": [5.0, np.nan],
                                              "treatment": ["tnfi", np.nan]}))
    assert new["visit_num"][:, 0].tolist() == [pytest.approx(2.0), 0.0]  # (5 - 3) / 1
    assert new["visit_num_mask"][:, 0].tolist() == [1.0, 0.0]
    assert new["visit_cat"][:, 0].tolist() == [1, 0]  # unseen level -> 1, missing -> 0
    assert CovariateSpec.from_dict(spec.to_dict()) == spec


def _datamodule(cohort_dir, tmp_path, **extra):
    overrides = [f"data.path={cohort_dir}", "data.image_size=32", f"data.cache_dir={tmp_path}",
                 "data.val_fraction=0.25", "data.test_fraction=0.25", "train.image_epochs=1"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    cfg = load_config("tiny", overrides)
    dm = ProgressionDataModule(cfg, read_cohort(cohort_dir), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_no_patient_is_in_two_splits_of_any_loader(cohort_dir, tmp_path):
    dm = _datamodule(cohort_dir, tmp_path)
    seen = {}
    for split in ("train", "val", "test"):
        patients = {str(dm.arrays.patient_ids[p]) for p in dm.patients[split]}
        assert patients == set(dm.split[split])
        seen[split] = patients
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"]
                or seen["val"] & seen["test"])
    visit_patient = np.repeat(dm.arrays.patient_ids, np.diff(dm.arrays.patient_start))
    for split in ("train", "val"):
        rows = dm.image_visits(split)
        assert set(visit_patient[rows]) <= seen[split]
        batch_patients = {str(dm.arrays.patient_ids[p]) for b in dm._loader("sequence", split)
                          for p in b["patient"].tolist()}
        assert batch_patients == seen[split]


def test_films_are_decoded_once_and_only_read_in_later_epochs(cohort_dir, tmp_path):
    dm = _datamodule(cohort_dir, tmp_path)
    n_films = len(pd.read_csv(cohort_dir / "images.csv"))
    assert dm.cache.decode_count == n_films  # prepare_data: every film once
    loader = dm.train_dataloader()
    for _ in range(2):  # two image-stage epochs
        batches = list(loader)
        assert batches and batches[0]["images"].dtype == torch.uint8  # decoded pixels, not files
    assert dm.cache.decode_count == n_films
    again = _datamodule(cohort_dir, tmp_path)  # a later run on the same cache
    assert again.cache.decode_count == 0


def test_visit_batches_carry_region_joint_and_total_targets(cohort_dir, tmp_path):
    dm = _datamodule(cohort_dir, tmp_path)
    batch = next(iter(dm.train_dataloader()))
    n = batch["images"].shape[0]
    assert batch["images"].shape[1:] == (32, 32)
    assert batch["region_target"].shape == (n, 2)
    assert batch["joint_target"].shape == (n, 22, 2)
    assert np.isfinite(batch["region_target"].numpy()).any()
    assert int(batch["image_visit"].max()) == batch["visit_target"].shape[0] - 1


def test_grouped_sampler_splits_batches_evenly_across_ranks_and_limits_padding():
    lengths = np.array([1, 5, 2, 5, 1, 3, 2, 4, 4, 3, 1])
    ranks = [list(GroupedBatchSampler(lengths, 2, shuffle=True, seed=1, rank=r, world_size=2))
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 6 batches -> 3 each, padded evenly
    covered = {i for batches in ranks for b in batches for i in b}
    assert covered == set(range(len(lengths)))
    for batches in ranks:
        for b in batches:
            assert np.ptp(lengths[b]) <= 1  # neighbours in length share a batch
    sampler = GroupedBatchSampler(lengths, 2, shuffle=True, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # reshuffled each epoch
