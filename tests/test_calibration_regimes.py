"""Intervals calibrated where they are used: the checkpoint the README tells users to predict
with carries a correction fitted on patients that neither trained nor chose it, one for
histories with a scored visit and one for films + covariates only, and each reaches its
nominal coverage on held-out patients; a checkpoint without calibration says so on every row."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from progression.calibration import empirical_coverage
from progression.data.outcomes import OutcomeRule, landmark_outcomes
from progression.data.split import split_patients
from progression.models.checkpoint import META_KEY, CheckpointMeta
from progression.predict import NOTE_SCORED_ONLY, NOTE_UNCALIBRATED, predict_cohort

README = Path(__file__).resolve().parents[1] / "README.md"
# 120 train / 300 validation / 300 calibration / 480 test patients; every history visit scored
# and up to 10 visits, so that about 290 (1 year) and 190 (2 years) test patients have a
# landmark pair: coverage +-0.02 (1 SE) on each side of the check
N_PATIENTS = 1200


def readme_checkpoint_name() -> str:
    """The checkpoint file the README's everyday `progression predict` command uses."""
    found = re.search(r"progression predict --checkpoint runs/<run>/checkpoints/(\w+\.ckpt)",
                      README.read_text())
    assert found, "README has no `progression predict --checkpoint runs/<run>/...` command"
    return found.group(1)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A covariates-only tiny model (seconds) on a simulated cohort of 1,200 patients split
    10/50/40 into train / validation (half selects the checkpoint, half calibrates) / test,
    and the test patients' landmark outcomes."""
    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    work = tmp_path_factory.mktemp("regimes")
    root = simulate_cohort(work / "cohort", SimulationConfig(
        n_patients=N_PATIENTS, seed=5, render_images=False, scored_fraction=1.0, max_visits=10,
    ), progress=False)
    # render_images=False lists films it did not write; a covariates-only cohort has none
    images = pd.read_csv(root / "images.csv")
    images.iloc[0:0].to_csv(root / "images.csv", index=False)
    cfg = load_config("tiny", [
        f"data.path={root}", f"train.output_dir={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}", "tracking.log_model=false",
        "train.progress=false", "model.use_images=false", "data.val_fraction=0.5",
        "data.test_fraction=0.4", "train.image_epochs=0", "train.max_epochs=3",
    ])
    result = fit(cfg)
    checkpoint = result.checkpoint_path.with_name(readme_checkpoint_name())
    cohort = read_cohort(root)
    meta = torch.load(checkpoint, weights_only=False)[META_KEY]
    split = CheckpointMeta.from_dict(meta).split_of(cohort.patient_ids)  # stored as hashes
    test = cohort.subset(split["test"])
    outcomes = landmark_outcomes(test, OutcomeRule()).dropna(subset=["delta_svdh_obs"])
    return {"checkpoint": checkpoint, "meta": meta, "split": split, "test": test,
            "outcomes": outcomes,
            "last": result.last_checkpoint_path, "work": work}


def _coverage(fitted, histories) -> pd.Series:
    outcomes = fitted["outcomes"]
    index = outcomes.drop_duplicates("patient_id")[["patient_id", "index_date"]]
    predictions = predict_cohort(fitted["checkpoint"], histories.subset(index["patient_id"]),
                                 index_dates=index, progress=False)
    table = predictions.merge(outcomes[["patient_id", "horizon_years", "delta_svdh_obs"]],
                              on=["patient_id", "horizon_years"])
    return empirical_coverage(table).set_index("horizon_years")["coverage"]


@pytest.mark.slow
def test_calibration_patients_neither_train_nor_select_the_checkpoint(fitted):
    split = fitted["split"]
    calibration = set(split["calibration"])
    assert len(calibration) == 300 and len(split["val"]) == 300
    assert not calibration & (set(split["train"]) | set(split["val"]) | set(split["test"]))
    n = {regime: sum(fitted["meta"][key]["n_calibration"].values())
         for regime, key in (("scored", "calibration"), ("unscored", "calibration_unscored"))}
    assert n["scored"] == n["unscored"] >= 250  # the same patients, two regimes


@pytest.mark.slow
def test_readme_checkpoint_covers_90_percent_of_held_out_scored_histories(fitted):
    coverage = _coverage(fitted, fitted["test"])
    assert len(fitted["outcomes"]) >= 400
    for h in (1.0, 2.0):
        assert abs(coverage[h] - 0.9) <= 0.05, coverage.to_dict()


@pytest.mark.slow
def test_readme_checkpoint_covers_90_percent_of_held_out_unscored_histories(fitted):
    coverage = _coverage(fitted, fitted["test"].without_scores())
    for h in (1.0, 2.0):
        assert abs(coverage[h] - 0.9) <= 0.05, coverage.to_dict()


@pytest.mark.slow
def test_last_checkpoint_carries_the_same_calibration(fitted):
    last = torch.load(fitted["last"], weights_only=False)[META_KEY]
    assert last["calibration"] and last["calibration_unscored"]


@pytest.mark.slow
def test_predict_warns_and_notes_every_row_when_the_checkpoint_has_no_calibration(
        fitted, caplog):
    ckpt = torch.load(fitted["checkpoint"], weights_only=False)
    del ckpt[META_KEY]["calibration"], ckpt[META_KEY]["calibration_unscored"]
    bare = fitted["work"] / "uncalibrated.ckpt"
    torch.save(ckpt, bare)
    patients = fitted["test"].subset(fitted["test"].patient_ids[:5])
    with caplog.at_level(logging.WARNING, logger="progression.predict"):
        predictions = predict_cohort(bare, patients, progress=False)
    assert "holds no interval calibration" in caplog.text
    assert predictions["note"].str.contains(NOTE_UNCALIBRATED, regex=False).all()
    raw = predict_cohort(fitted["checkpoint"], patients, progress=False, calibrate=False)
    pd.testing.assert_series_equal(predictions["delta_svdh_hi"], raw["delta_svdh_hi"])


@pytest.mark.slow
def test_a_checkpoint_calibrated_on_scored_histories_only_notes_unscored_rows(fitted):
    ckpt = torch.load(fitted["checkpoint"], weights_only=False)
    del ckpt[META_KEY]["calibration_unscored"]  # as checkpoints were before the two regimes
    old = fitted["work"] / "scored_only.ckpt"
    torch.save(ckpt, old)
    patients = fitted["test"].subset(fitted["test"].patient_ids[:5])
    notes = predict_cohort(old, patients.without_scores(), progress=False)["note"]
    assert notes.str.contains(NOTE_SCORED_ONLY, regex=False).all()
    scored = predict_cohort(old, patients, progress=False)["note"]
    assert not scored.str.contains(NOTE_SCORED_ONLY, regex=False).any()


def test_a_pilot_validation_split_keeps_a_patient_for_selection_and_calibrates_none():
    ids = [f"P{i:03d}" for i in range(12)]
    split = split_patients(ids, 0.1, 0.1, seed=0, calibration_share=0.5)
    assert (len(split["val"]), len(split["calibration"])) == (1, 0)
    split = split_patients(ids, 0.4, 0.1, seed=0, calibration_share=0.5)
    assert len(split["val"]) + len(split["calibration"]) == 5 and split["calibration"]
    assert sorted(sum(split.values(), [])) == ids
    # the same seed keeps the training and test patients of a split without calibration
    before = split_patients(ids, 0.4, 0.1, seed=0)
    assert (before["train"], before["test"]) == (split["train"], split["test"])
