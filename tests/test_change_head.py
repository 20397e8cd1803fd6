"""The Siamese change head (``model.change_head``): antisymmetric, masked where a region has no
earlier film, trained on reader-scored change, and usable end to end (train -> predict)."""

from __future__ import annotations

import numpy as np
import torch
from test_train_support import simulated_cohort, tiny_overrides


def _sequence_model(change_head: bool = True):
    from progression.data.layout import InputLayout
    from progression.models.sequence import SequenceModel

    torch.manual_seed(0)
    layout = InputLayout(n_static_num=0, static_cat_sizes=[], n_visit_num=0, visit_cat_sizes=[])
    return SequenceModel(layout, image_dim=8, hidden=16, change_head=change_head).eval()


def _batch(image_index: np.ndarray, prev_index: np.ndarray, lengths: list[int]) -> dict:
    b, t, _ = image_index.shape
    years = np.tile(np.arange(t, dtype=np.float32), (b, 1))
    return {
        "image_index": torch.from_numpy(image_index), "prev_index": torch.from_numpy(prev_index),
        "first_index": torch.from_numpy(prev_index), "prev_gap": torch.ones(b, t, 4),
        "first_gap": torch.ones(b, t, 4), "years": torch.from_numpy(years),
        "gap": torch.ones(b, t), "visit_mask": torch.arange(t)[None] < torch.tensor(lengths)[:, None],
        "obs_log": torch.zeros(b, t, 3), "obs_mask": torch.zeros(b, t, 3, dtype=torch.bool),
        "visit_num": torch.zeros(b, t, 0), "visit_num_mask": torch.zeros(b, t, 0),
        "visit_cat": torch.zeros(b, t, 0, dtype=torch.long), "static_num": torch.zeros(b, 0),
        "static_num_mask": torch.zeros(b, 0), "static_cat": torch.zeros(b, 0, dtype=torch.long),
    }


def test_swapping_the_two_films_negates_the_read_change_exactly():
    from progression.models.change_head import ChangeHead

    torch.manual_seed(0)
    head = ChangeHead(embed_dim=8, n_regions=4)
    a, b = torch.randn(50, 8), torch.randn(50, 8)
    region = torch.randint(0, 4, (50,))
    forward = head(a, b, region)
    assert torch.equal(head(b, a, region), -forward)
    assert torch.equal(head(a, a, region), torch.zeros(50))
    assert forward.abs().min() > 0
    head.train()  # no dropout: the same holds while training
    assert torch.equal(head(b, a, region), -head(a, b, region))


def test_change_inputs_are_masked_for_a_one_visit_patient_and_set_for_serial_films():
    model = _sequence_model()
    # patient 0: one visit, 4 films (rows 0-3); patient 1: three visits, 4 films each
    # (rows 4-15), each film's previous film is the same region one visit earlier.
    image_index = np.full((2, 3, 4), -1, dtype=np.int64)
    prev_index = np.full((2, 3, 4), -1, dtype=np.int64)
    image_index[0, 0] = np.arange(4)
    image_index[1] = np.arange(4, 16).reshape(3, 4)
    prev_index[1, 1:] = image_index[1, :-1]
    batch = _batch(image_index, prev_index, lengths=[1, 3])
    feats = torch.randn(16, 2 + 8)
    read = model.film_changes(feats, batch)
    assert read.shape == (2, 3, 4)
    assert torch.equal(read[0], torch.zeros(3, 4))  # no pair: nothing read
    assert torch.equal(read[1, 0], torch.zeros(4))  # first visit: no earlier film
    assert (read[1, 1:] != 0).all()
    x, _ = model.visit_inputs(feats, batch)
    assert x.shape == (2, 3, model.n_inputs)
    out = model(feats, batch)
    assert out["state"].shape == (2, 3, 16) and torch.isfinite(out["current_log"]).all()
    plain = _sequence_model(change_head=False)
    assert model.n_inputs - plain.n_inputs == 4 * 2  # read change and rate per region


def test_change_targets_are_the_reader_scored_change_since_the_previous_film(tmp_path_factory):
    from progression.cohort import read_cohort
    from progression.data.arrays import build_arrays, fit_covariates
    from progression.data.changes import film_change_targets

    cohort = read_cohort(simulated_cohort(tmp_path_factory))
    a = build_arrays(cohort, fit_covariates(cohort))
    checked = totals = 0
    for p in range(a.n_patients):
        v = a.visits_of(p)
        rows = np.arange(v.start, v.stop)
        film, visit = film_change_targets(a, rows, a.image_index[v], a.prev_index[v])
        assert film.shape == (len(rows), 4) and visit.shape == (len(rows),)
        for t, r in zip(*np.nonzero(np.isfinite(film))):
            before = a.image_visit[a.prev_index[rows[t], r]]
            expected = a.region_target[rows[t], r].sum() - a.region_target[before, r].sum()
            assert film[t, r] == np.float32(expected)
            checked += 1
        for t in np.flatnonzero(np.isfinite(visit)):
            before = a.image_visit[a.prev_index[rows[t], 0]]
            assert visit[t] == np.float32(a.obs[rows[t], 0] - a.obs[before, 0])
            totals += 1
    assert checked > 0 and totals > 0


def test_a_tiny_fit_with_the_change_head_trains_it_and_predicts(tmp_path_factory, tmp_path):
    from mlflow import MlflowClient

    from progression.config import load_config
    from progression.predict import predict_cohort
    from progression.train import fit
    from progression.trained import load_trained

    cohort = simulated_cohort(tmp_path_factory)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = load_config("tiny", tiny_overrides(cohort, tmp_path, uri, **{
        "model.change_head": True, "train.max_epochs": 4, "tracking.log_model": False}))
    result = fit(cfg)
    history = MlflowClient(uri).get_metric_history(result.run_id, "train/loss_change")
    assert len(history) == 2 and all(m.value > 0 for m in history)  # the sequence epochs
    assert load_trained(result.checkpoint_path).model.sequence.change_head is not None
    table = predict_cohort(result.checkpoint_path, cohort, horizons=(1.0, 2.0), calibrate=False)
    assert table["delta_svdh_pred"].notna().all() and len(table) > 0
