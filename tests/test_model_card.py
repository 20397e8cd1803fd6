"""The model card states data, metrics with CIs, subgroups, calibration and limitations."""

from __future__ import annotations

import pandas as pd

from progression.calibration import ConformalCalibration, Correction
from progression.train.model_card import ModelCardInputs, write_model_card


def _card(**changes) -> ModelCardInputs:
    base = dict(
        name="tiny-resnet",
        run_id="abc123",
        created="2024-06-01",
        data={"cohort fingerprint": "sha256:1f2e", "patients": 64, "images": 812},
        metrics={
            "test/mae_delta_1y": {"value": 2.345, "ci_lo": 1.9, "ci_hi": 2.81, "n": 40},
            "test/auroc_rapid_1y": 0.8123,
        },
        subgroups=pd.DataFrame(
            {"subgroup": ["all", "sex"], "level": ["all", "F"], "n": [40, 22], "coverage": [0.9, 0.8636]}
        ),
        calibration=ConformalCalibration(
            level=0.9, scale_by_horizon=False, per_year=Correction(0.25, 1.25),
            corrections={1.0: Correction(0.5, 1.5), 2.0: Correction(0.75, 2.25)},
            n_calibration={1.0: 30, 2.0: 28},
        ),
        config={"train": {"lr": 0.001}, "model": {"backbone": "resnet10t"}},
        simulated_data=True,
    )
    base.update(changes)
    return ModelCardInputs(**base)


def test_card_lists_data_metrics_with_ci_subgroups_and_calibration(tmp_path):
    path = write_model_card(_card(), tmp_path / "MODEL_CARD.md")
    text = path.read_text()
    assert text.startswith("# Model card: tiny-resnet")
    assert "- cohort fingerprint: sha256:1f2e" in text and "- patients: 64" in text
    assert (
        "| `test/mae_delta_1y` | mean absolute error of the predicted change, 1-year horizon "
        "| 2.35 | 1.9 to 2.81 | 40 | SvdH units |" in text
    )
    assert "| `test/auroc_rapid_1y` | AUROC for rapid progression" in text
    assert "| 0.812 | not computed |" in text
    assert "| sex | F | 22 | 0.864 |" in text
    # horizon 2 y: lower bound 0.75 units further down, upper 2.25 further up, 28 patients
    assert "| 2 | 0.75 below, 2.25 above | 28 |" in text
    assert "SIMULATED cohort" in text
    assert "| `train.lr` | 0.001 |" in text
    assert [p.name for p in tmp_path.iterdir()] == ["MODEL_CARD.md"]


def test_card_of_pooled_or_old_symmetric_calibration_shows_both_sides():
    from progression.train.model_card import render_model_card

    pooled = ConformalCalibration(level=0.9, scale_by_horizon=True, per_year=Correction(-0.2, 1.5),
                                  n_calibration={1.0: 12, 2.0: 10})
    text = render_model_card(_card(calibration=pooled))
    assert "a correction of -0.2 (below) and 1.5 (above) SvdH units per year of horizon" in text
    assert "| 1 | -0.2 below, 1.5 above | 12 |" in text and "| 2 | -0.4 below, 3 above | 10 |" in text
    # a checkpoint calibrated before the asymmetric rule: one Q, the same on both sides
    old = ConformalCalibration.from_dict({
        "method": "cqr", "level": 0.9, "scale_by_horizon": False, "per_year": 1.25,
        "corrections": {"1.0": 1.5}, "n_calibration": {"1.0": 30},
    })
    assert "| 1 | 1.5 below, 1.5 above | 30 |" in render_model_card(_card(calibration=old))


def test_card_without_results_or_calibration_says_so():
    from progression.train.model_card import render_model_card

    text = render_model_card(_card(metrics={}, subgroups=None, calibration=None, simulated_data=False))
    assert "No evaluation results were given; run `progression evaluate`" in text
    assert "No subgroup results were given." in text
    assert "was not conformally calibrated" in text
    assert "SIMULATED" not in text


def test_estimate_objects_from_evaluation_are_accepted():
    from progression.metrics import Estimate
    from progression.train.model_card import render_model_card

    text = render_model_card(_card(metrics={"val/coverage_delta_2y": Estimate(0.88, 0.8, 0.95, 50)}))
    assert "| `val/coverage_delta_2y` | share of observed changes inside the interval, 2-year horizon | 0.88 | 0.8 to 0.95 | 50 | 0-1 |" in text


def test_metrics_json_of_evaluate_gives_the_models_test_metrics():
    from progression.train.model_card import evaluation_metrics

    results = {
        "settings": {"seed": 0, "bootstrap_resamples": 200},
        "model": "model",
        "metrics": {
            "model": {
                "horizons": {"1y": {"mae_delta": {"value": 2.1, "ci_lo": 1.8, "ci_hi": 2.5, "n": 50}}},
                "overall": {"cindex_event": {"value": 0.71, "ci_lo": 0.65, "ci_hi": 0.77, "n": 50}},
            },
            "cohort_mean": {"horizons": {"1y": {"mae_delta": {"value": 3.0}}}, "overall": {}},
        },
    }
    assert evaluation_metrics(results) == {
        "test/mae_delta_1y": {"value": 2.1, "ci_lo": 1.8, "ci_hi": 2.5, "n": 50},
        "test/cindex_event": {"value": 0.71, "ci_lo": 0.65, "ci_hi": 0.77, "n": 50},
    }
