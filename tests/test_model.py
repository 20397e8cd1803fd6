"""The network: shared (Siamese) encoder, masking of missing inputs, shapes, forecast heads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from progression.cohort import read_cohort
from progression.config import ModelConfig
from progression.data.arrays import build_arrays, fit_covariates
from progression.data.datasets import SequenceDataset, collate_sequences
from progression.data.layout import InputLayout
from progression.errors import ConfigError
from progression.models import build_forecaster
from progression.models.sequence import REGION_FEATURES

TINY = ModelConfig(backbone_kwargs={"width": 4}, embed_dim=16, seq_dim=16)


def _layout(spec) -> InputLayout:
    return InputLayout(
        n_static_num=len(spec.static_numeric),
        static_cat_sizes=[c.size for c in spec.static_categorical],
        n_visit_num=len(spec.visit_numeric),
        visit_cat_sizes=[c.size for c in spec.visit_categorical],
    )


@pytest.fixture
def edge_cohort(handmade_cohort, copy_cohort):
    """Handmade cohort (hands only: feet are missing regions) where p3 has a single visit and
    p2 has no biomarker measured at all."""
    root = copy_cohort(handmade_cohort)
    visits = pd.read_csv(root / "visits.csv", dtype=str)
    visits = visits[~((visits["patient_id"] == "p3") & (visits["visit_date"] == "2021-06-12"))]
    visits.loc[visits["patient_id"] == "p2", ["crp", "das28", "treatment"]] = np.nan
    visits.to_csv(root / "visits.csv", index=False)
    images = pd.read_csv(root / "images.csv", dtype=str)
    images = images[~((images["patient_id"] == "p3") & (images["visit_date"] == "2021-06-12"))]
    images.to_csv(root / "images.csv", index=False)
    return read_cohort(root)


def _batch(cohort):
    torch.manual_seed(0)
    spec = fit_covariates(cohort)
    arrays = build_arrays(cohort, spec)
    dataset = SequenceDataset(arrays, np.arange(arrays.n_patients))
    batch = collate_sequences([dataset[i] for i in range(len(dataset))])
    model = build_forecaster(TINY, _layout(spec)).eval()
    feats = torch.randn(len(arrays.image_path), 2 + TINY.embed_dim)
    return arrays, batch, model, feats


def test_small_cnn_is_a_timm_backbone_and_unknown_names_are_refused():
    backbone = timm.create_model("small_cnn", pretrained=False, in_chans=1, num_classes=0, width=4)
    assert backbone(torch.zeros(2, 1, 32, 32)).shape == (2, backbone.num_features)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet_does_not_exist'"):
        build_forecaster(ModelConfig(backbone="resnet_does_not_exist"), InputLayout())


def test_one_encoder_reads_every_region_and_visit():
    model = build_forecaster(TINY, InputLayout()).eval()
    backbones = {k.split(".backbone.")[0] for k in model.state_dict() if ".backbone." in k}
    assert backbones == {"encoder"}  # a single backbone instance in the whole network
    film = torch.randint(0, 256, (32, 32), dtype=torch.uint8)
    other = torch.randint(0, 256, (32, 32), dtype=torch.uint8)
    # the same film at visit 1 and visit 2 (left hand), a different film at visit 2 (right hand)
    images = torch.stack([film, film, other])
    with torch.no_grad():
        emb = model.encoder(images, torch.tensor([0, 0, 1]))["embedding"]
    assert torch.equal(emb[0], emb[1])
    assert not torch.allclose(emb[0], emb[2])


def test_sequence_outputs_have_visit_shapes_with_single_visit_and_missing_data(edge_cohort):
    arrays, batch, model, feats = _batch(edge_cohort)
    assert batch["visit_mask"].sum(1).tolist() == [2, 2, 1]  # p3 kept one visit
    assert (batch["image_index"][..., 2:] == -1).all()  # no foot films anywhere
    assert batch["visit_num_mask"][1].sum() == 0  # p2: no biomarker measured
    with torch.no_grad():
        out = model.sequence(feats, batch)
    assert out["state"].shape == (3, 2, TINY.seq_dim)
    assert out["current_log"].shape == (3, 2, 3)
    assert torch.isfinite(out["current_log"]).all()


def test_missing_regions_are_masked_not_read_as_zero_damage(edge_cohort):
    arrays, batch, model, feats = _batch(edge_cohort)
    x, _ = model.sequence.visit_inputs(feats, batch)
    region = x[..., : 4 * REGION_FEATURES].reshape(*x.shape[:2], 4, REGION_FEATURES)
    feet = region[:, :, 2:]
    assert torch.count_nonzero(feet) == 0  # no values and presence flag 0
    hands = region[batch["visit_mask"]][:, :2]
    assert (hands[..., 2] == 1).all()  # presence flag of the imaged hands
    # Whatever the feature table holds, a missing region contributes nothing.
    x2, _ = model.sequence.visit_inputs(feats * 10 + 3, batch)
    region2 = x2[..., : 4 * REGION_FEATURES].reshape(*x.shape[:2], 4, REGION_FEATURES)
    assert torch.count_nonzero(region2[:, :, 2:]) == 0


def test_change_since_previous_film_uses_the_same_region_and_the_time_gap(edge_cohort):
    arrays, batch, model, feats = _batch(edge_cohort)
    p1_second = arrays.patient_start[0] + 1
    prev = arrays.prev_index[p1_second, :2]
    assert (arrays.image_region[prev] == [0, 1]).all()  # left hand <- left hand
    assert arrays.prev_gap[p1_second, 0] == pytest.approx((370 / 365.25), abs=1e-4)
    assert (arrays.prev_index[arrays.patient_start[:-1]] == -1).all()  # first visits: none


def test_later_visits_do_not_change_earlier_states(edge_cohort):
    arrays, batch, model, feats = _batch(edge_cohort)
    with torch.no_grad():
        full = model.sequence(feats, batch)["state"]
        cut = {k: (v[:, :1] if v.ndim >= 2 and v.shape[1] == 2 and k not in ("static_num",
               "static_num_mask", "static_cat") else v) for k, v in batch.items()}
        first = model.sequence(feats, cut)["state"]
    torch.testing.assert_close(full[:, 0], first[:, 0])


def test_forecast_is_non_negative_grows_with_horizon_and_interval_brackets_it(edge_cohort):
    arrays, batch, model, feats = _batch(edge_cohort)
    with torch.no_grad():
        state = model.sequence(feats, batch)["state"][:, 0]
        h = [model.sequence.pair_outputs(state, torch.full((3,), y)) for y in (0.5, 1.0, 2.0)]
    deltas = torch.stack([o["delta"] for o in h])
    assert (deltas >= 0).all()
    assert (deltas[1:] >= deltas[:-1]).all()
    for o in h:
        assert (o["lo"] <= o["delta"]).all() and (o["delta"] <= o["hi"]).all()


def test_transformer_sequence_model_gives_the_same_shapes(edge_cohort):
    arrays, batch, _, feats = _batch(edge_cohort)
    spec = fit_covariates(edge_cohort)
    model = build_forecaster(ModelConfig(backbone_kwargs={"width": 4}, embed_dim=16, seq_dim=16,
                                         seq_model="transformer"), _layout(spec)).eval()
    with torch.no_grad():
        out = model.sequence(feats, batch)
    assert out["state"].shape == (3, 2, 16)
    assert torch.isfinite(out["state"][batch["visit_mask"]]).all()


def test_observed_history_carries_the_last_score_and_the_past_rate_forward():
    from progression.models.sequence import observed_history

    years = torch.tensor([[0.0, 1.0, 1.5, 2.0, 3.0]])
    totals = torch.tensor([[10.0, 12.0, 0.0, 14.0, 0.0]])
    observed = torch.tensor([[True, True, False, True, False]])
    obs_log = torch.log1p(totals).unsqueeze(-1).expand(1, 5, 3)
    hist = observed_history(obs_log, observed.unsqueeze(-1).expand(1, 5, 3), years)[0]
    last_log, seen, since, slope, has_slope = hist.unbind(-1)
    assert seen.tolist() == [1, 1, 1, 1, 1]
    torch.testing.assert_close(torch.expm1(last_log), torch.tensor([10.0, 12, 12, 14, 14]))
    torch.testing.assert_close(since * 5, torch.tensor([0.0, 0, 0.5, 0, 1]))
    assert has_slope.tolist() == [0, 1, 1, 1, 1]
    torch.testing.assert_close(slope[3:] * 5, torch.tensor([2.0, 2.0]))  # SvdH units/year
