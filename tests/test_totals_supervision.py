"""Supervision from whatever the cohort has: a reader trained on visit totals only (no
joint_scores.csv), and the ordering term between serial films (damage does not heal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_support import simulated_cohort, tiny_overrides


@pytest.fixture(name="totals_only")
def totals_only_fixture(tmp_path_factory, copy_cohort):
    """The shared simulated cohort without joint_scores.csv: visit totals and subtotals only."""
    cohort = copy_cohort(simulated_cohort(tmp_path_factory), "totals_only")
    (cohort / "joint_scores.csv").unlink()
    return cohort


def test_visit_scores_spread_over_the_regions_add_back_up_to_the_visit():
    from progression.data.spread import spread_visit_scores

    spread = spread_visit_scores(np.array([[20.0, 12.0, 8.0], [30.0, np.nan, np.nan],
                                           [np.nan, np.nan, np.nan]]))
    assert spread.shape == (3, 4, 2)
    assert np.allclose(spread[0].sum(0), [12.0, 8.0])
    assert np.isclose(spread[1].sum(), 30.0)
    assert np.isnan(spread[2]).all()
    assert np.allclose(spread[0, 0], spread[0, 1]) and spread[0, 0, 0] > spread[0, 2, 0]


def test_ordering_loss_is_zero_for_ordered_readings_and_positive_otherwise():
    from progression.models.losses import ordering_loss

    # patient 0: visits at 0 and 1 year, patient 1: one visit; two regions each.
    visit_patient = torch.tensor([0, 0, 1])
    visit_years = torch.tensor([0.0, 1.0, 0.0])
    image_visit = torch.tensor([0, 0, 1, 1, 2, 2])
    region = torch.tensor([0, 1, 0, 1, 0, 1])
    ordered = torch.tensor([[1.0, 1.0], [2.0, 0.5], [1.5, 1.0], [2.0, 0.5], [9.0, 9.0], [0.0, 0.0]])
    assert ordering_loss(ordered, image_visit, region, visit_patient, visit_years) == 0
    healed = ordered.clone()
    healed[2, 0] = 0.5  # region 0 of patient 0 reads 0.5 less a year later
    loss = ordering_loss(healed, image_visit, region, visit_patient, visit_years)
    assert loss == pytest.approx(0.5 / 4)  # one of 2 pairs x 2 channels is out of order
    # patient 1's films pair with no other film, however different their readings
    single = ordering_loss(ordered[4:], torch.tensor([0, 0]), region[4:], torch.tensor([1]),
                           torch.tensor([0.0]))
    assert single == 0


def test_patient_batches_keep_each_patients_visits_together():
    from progression.data.datasets import PatientBatchSampler

    patients = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4])
    sampler = PatientBatchSampler(patients, batch_size=4, shuffle=True, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(patients)))
    assert all(len(set(patients[b])) == len(set(patients[b])) for b in batches)
    for p in np.unique(patients):
        assert sum(p in set(patients[b]) for b in batches) == 1  # never split across batches
    assert len(sampler) == len(batches)


def _totals_module(totals_only, tmp_path, ordering: float = 0.0):
    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.models.checkpoint import CheckpointMeta
    from progression.models.module import ForecastModule
    from progression.train.fitting import build_model, prepare_data

    cfg = load_config("tiny", tiny_overrides(totals_only, tmp_path, "sqlite://", **{
        "data.augment": False, "loss.ordering": ordering}))
    torch.manual_seed(0)
    dm = prepare_data(cfg, read_cohort(totals_only), None, False, True)
    model = build_model(cfg, dm, None)
    module = ForecastModule(model, cfg, dm.image_epochs, CheckpointMeta({}, {}, {}))
    return dm, module


def test_a_totals_only_reader_learns_from_the_visit_total_on_a_tiny_overfit(totals_only, tmp_path):
    dm, module = _totals_module(totals_only, tmp_path)
    assert dm.image_epochs > 0  # totals alone are targets for the image stage
    assert np.isnan(dm.arrays.region_target).all()
    # the damage heads start at the visit scores spread over the regions, not at 0 units
    assert (module.model.encoder.region_head.bias > 0.1).all()
    batch = next(iter(dm._loader("image", "train")))
    optimizer = torch.optim.Adam(module.model.encoder.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        losses = module._image_step(batch, train=True)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(float(losses["current"]))
    assert history[0] > 0
    assert losses["region"] == 0 and losses["joint"] == 0  # nothing below the visit to learn from
    assert history[-1] < 0.3 * history[0]


def test_a_totals_only_fit_with_the_ordering_term_runs_and_predicts(totals_only, tmp_path):
    from mlflow import MlflowClient

    from progression.config import load_config
    from progression.predict import predict_cohort
    from progression.train import fit
    from progression.trained import load_trained

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = load_config("tiny", tiny_overrides(totals_only, tmp_path, uri, **{
        "loss.ordering": 0.1, "train.max_epochs": 3, "tracking.log_model": False}))
    result = fit(cfg)
    client = MlflowClient(uri)
    current = client.get_metric_history(result.run_id, "train/loss_current")
    ordering = client.get_metric_history(result.run_id, "train/loss_ordering")
    assert len(ordering) == 2 and all(m.value >= 0 for m in ordering)  # the image epochs
    assert all(m.value > 0 for m in current)
    assert not load_trained(result.checkpoint_path).meta.joint_supervised
    table = predict_cohort(result.checkpoint_path, totals_only, horizons=(1.0,), calibrate=False)
    assert table["delta_svdh_pred"].notna().all()


def test_with_ordering_unscored_films_join_the_image_stage(totals_only, tmp_path):
    plain, _ = _totals_module(totals_only, tmp_path / "plain")
    ordered, _ = _totals_module(totals_only, tmp_path / "ordered", ordering=0.1)
    scored = plain.image_visits("train")
    every = ordered.image_visits("train")
    assert set(scored) < set(every)
    assert np.isnan(ordered.arrays.obs[np.setdiff1d(every, scored), 0]).all()
