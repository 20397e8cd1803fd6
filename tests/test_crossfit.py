"""Honest stacking (``train.crossfit_folds``): the sequence stage reads each training patient's
films with an encoder that never trained on them; validation and prediction use the final one."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from test_train_support import simulated_cohort, tiny_overrides


class _SequenceStageSpy(pl.Callback):
    """Keeps what the first sequence-stage step trained on: the feature table and the encoders."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.stage() == "sequence" and not self.seen:
            dm = trainer.datamodule
            own = pl_module.model.encode_films(dm.cache, dm.slots, dm.arrays.image_region,
                                               dm.feature_rows(), pl_module.device, 64)
            self.seen = {"features": pl_module._features.detach().clone(), "own": own,
                         "oof": pl_module.out_of_fold, "dm": dm}


def test_folds_cover_the_training_patients_once_and_depend_only_on_ids_and_seed():
    from progression.train.crossfit import assign_folds

    ids = [f"P{i:03d}" for i in range(11)]
    folds = assign_folds(ids, 3, seed=5)
    assert sorted(folds) == ids
    assert sorted(np.bincount(list(folds.values()))) == [3, 4, 4]
    assert assign_folds(list(reversed(ids)), 3, seed=5) == folds
    assert assign_folds(ids, 3, seed=6) != folds


def test_crossfit_folds_above_one_need_an_image_stage():
    from progression.config import load_config
    from progression.errors import ConfigError
    from progression.train.crossfit import check_crossfit

    with pytest.raises(ConfigError, match="train.crossfit_folds"):
        check_crossfit(load_config("tiny", ["train.crossfit_folds=2", "train.image_epochs=0"]))
    with pytest.raises(ConfigError, match="train.crossfit_folds"):
        check_crossfit(load_config("tiny", ["train.crossfit_folds=0"]))


def test_no_training_patient_is_read_by_an_encoder_that_saw_its_films(tmp_path_factory, tmp_path):
    from progression.config import load_config
    from progression.predict import predict_cohort
    from progression.train import fit
    from progression.trained import load_trained

    cohort = simulated_cohort(tmp_path_factory)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    spy = _SequenceStageSpy()
    cfg = load_config("tiny", tiny_overrides(cohort, tmp_path, uri, **{
        "train.crossfit_folds": 2, "train.max_epochs": 3, "tracking.log_model": False}))
    result = fit(cfg, callbacks=[spy])

    oof, dm, used = spy.seen["oof"], spy.seen["dm"], spy.seen["features"]
    train = set(dm.split["train"])
    assert set(oof.encoded_by) == train
    for patient, fold in oof.encoded_by.items():
        assert patient not in oof.trained_on[fold]  # its reader never trained on its films
    assert all(set(oof.trained_on[k]) | {p for p, f in oof.encoded_by.items() if f == k} == train
               for k in range(2))
    # The sequence stage trained on exactly those out-of-fold readings for training films,
    # and on the final encoder's readings for validation films.
    ids = dm.arrays.patient_ids
    image_patient = np.repeat(ids, np.diff(dm.arrays.patient_start))[dm.arrays.image_visit]
    train_rows = np.flatnonzero(np.isin(image_patient, sorted(train)))
    val_rows = np.flatnonzero(np.isin(image_patient, dm.split["val"]))
    assert np.array_equal(oof.rows, train_rows) and len(val_rows)
    assert torch.equal(used[train_rows], oof.features[train_rows])
    assert not torch.allclose(used[train_rows], spy.seen["own"][train_rows])
    assert torch.equal(used[val_rows], spy.seen["own"][val_rows])

    trained = load_trained(result.checkpoint_path)
    assert trained.meta.crossfit["folds"] == 2
    assert sum(trained.meta.crossfit["fold_sizes"]) == len(train)
    card = (result.checkpoint_path.parent.parent / "MODEL_CARD.md").read_text()
    assert "out of fold: 2 fold encoders" in card
    table = predict_cohort(result.checkpoint_path, cohort, horizons=(1.0,), calibrate=False)
    assert table["delta_svdh_pred"].notna().all()
