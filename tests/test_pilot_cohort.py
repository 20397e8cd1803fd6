"""Pilot-size cohorts: training too few patients to calibrate or validate still ends normally.

A 16-patient cohort leaves 3 held-out patients (1 to choose the epoch on, 2 to calibrate on,
``data.calibration_share``), none with a scored visit 1-2 years after a scored, imaged one: the fit warns (too few validation patients, interval not calibrated),
exits 0 and writes the checkpoint it prints. Messages name options of the command that
printed them: ``evaluate`` suggests its ``--tolerance`` and ``--outcomes``, ``train`` never
does.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_train_support import tiny_overrides

from progression.cli import main
from progression.trained import load_trained


@pytest.fixture(scope="module")
def pilot(tmp_path_factory) -> Path:
    from progression.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("pilot")
    return Path(simulate_cohort(root / "cohort", SimulationConfig(
        n_patients=16, seed=1, image_size=32, oracle_draws=16), progress=False))


def test_training_a_16_patient_cohort_exits_0_with_warnings_and_writes_the_checkpoint(
        pilot, tmp_path, capsys, caplog):
    overrides = tiny_overrides(pilot, tmp_path, f"sqlite:///{tmp_path / 'mlruns.db'}",
                               **{"train.max_epochs": 3, "train.image_epochs": 1,
                                  "data.val_fraction": 0.2, "tracking.log_model": False})
    overrides = [o for o in overrides if not o.startswith("data.path=")]
    with caplog.at_level(logging.WARNING):
        code = main(["train", "--data", str(pilot), "--config", "tiny", *overrides])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    checkpoint = Path(next(line.split()[-1] for line in captured.out.splitlines()
                           if line.startswith("checkpoint")))
    assert checkpoint.is_file()
    assert load_trained(checkpoint).meta.calibration is None  # usable, not calibrated
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "too few validation patients: 1 of 16" in warnings
    assert "interval not calibrated" in warnings
    assert "--tolerance" not in warnings + captured.err
    assert "--outcomes" not in warnings + captured.err


def test_evaluate_without_observable_outcomes_names_its_own_options(
        handmade_cohort, tmp_path, capsys):
    cohort = Path(shutil.copytree(handmade_cohort, tmp_path / "cohort"))
    visits = pd.read_csv(cohort / "visits.csv")
    later = visits.groupby("patient_id").cumcount() > 0
    visits.loc[later, ["svdh_total", "svdh_erosion", "svdh_jsn"]] = None  # baseline scores only
    visits.to_csv(cohort / "visits.csv", index=False)
    code = main(["evaluate", "--data", str(cohort), "--out", str(tmp_path / "report"),
                 "--baselines", "cohort_mean", "--bootstrap", "10"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no outcome can be observed" in err
    assert "widen --tolerance (now 0.25 y), or pass --outcomes FILE" in err
