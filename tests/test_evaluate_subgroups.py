"""Subgroup and leave-one-site-out sections of `evaluate`, and the model card's subgroup table,
on a real tiny fit (tests/test_train_support.py) and simulated multi-site cohorts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_train_support import shared_run

from progression.cohort import read_cohort
from progression.errors import ProgressionError
from progression.evaluate import evaluate
from progression.subgroups import MIN_PATIENTS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory) -> Path:
    """16 new patients over 4 sites: site4 is a site the shared fit (3 sites) never saw."""
    from progression.simulate import SimulationConfig, simulate_cohort

    root = tmp_path_factory.mktemp("four_sites")
    return Path(simulate_cohort(root / "cohort", SimulationConfig(
        n_patients=16, seed=1, image_size=32, oracle_draws=16, n_sites=4)))


@pytest.fixture(scope="module")
def report(run, four_sites, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    results = evaluate(run.result.checkpoint_path, four_sites, out_dir=out,
                       baselines=["cohort_mean", "oracle"], n_boot=20, progress=False,
                       subgroups=["smoker"], leave_one_site_out=True,
                       train_cohort=run.cohort,  # the checkpoint names its cohort, not where it is
                       tracking_uri=run.tracking_uri)
    return out, results


def _patients(cohort: Path) -> pd.DataFrame:
    return pd.read_csv(cohort / "patients.csv", dtype=str)


def test_every_metric_is_reported_by_subgroup_with_counts_of_the_cohort(report, four_sites):
    out, results = report
    on_disk = json.loads((out / "metrics.json").read_text())
    section = on_disk["subgroups"]
    names = [v["name"] for v in section["variables"]]
    assert names == ["sex", "site", "rf", "acpa", "treatment", "svdh_last", "n_scored", "smoker"]
    patients = _patients(four_sites)
    evaluated = results["cohort"]["n_patients"]
    assert evaluated == len(patients)
    by_name = {v["name"]: v["patients"] for v in section["variables"]}
    assert by_name["site"] == patients["site"].value_counts().to_dict()
    assert by_name["sex"] == patients["sex"].value_counts().to_dict()
    assert all(sum(levels.values()) == evaluated for levels in by_name.values())
    rows = pd.DataFrame(section["rows"])
    assert set(rows["method"]) == {"model"}
    assert {"mae_delta", "coverage_delta", "auroc_rapid", "cindex_event"} <= set(rows["metric"])
    site_rows = rows[(rows["variable"] == "site") & (rows["metric"] == "mae_delta")
                     & (rows["horizon_years"] == 1.0)]
    assert dict(zip(site_rows["level"], site_rows["n"])) == by_name["site"]
    # 16 patients: every subgroup is too small to say anything, and says so
    assert (rows["n"] < MIN_PATIENTS).all() and rows["value"].isna().all()
    assert (rows["note"] == f"fewer than {MIN_PATIENTS} patients").all()
    assert len(pd.read_csv(out / "subgroups.csv")) == len(rows)


def test_leave_one_site_out_scores_each_site_without_training_on_it(report, four_sites):
    out, results = report
    section = results["leave_one_site_out"]
    patients = _patients(four_sites)
    assert section["sites"] == patients["site"].value_counts().to_dict()
    # the checkpoint is not retrained: only site4, which its training cohort lacks, is scored
    assert "site4" in section["retrained"]["model"] and "not retrained" in section["retrained"]["model"]
    rows = pd.DataFrame(section["rows"])
    model = rows[rows["method"] == "model"]
    assert set(model["level"]) == {"site4"}
    assert set(model.loc[model["metric"] == "mae_delta", "n"]) == {
        int((patients["site"] == "site4").sum())}
    oracle = rows[(rows["method"] == "oracle") & (rows["metric"] == "mae_delta")
                  & (rows["horizon_years"] == 1.0)]
    assert dict(zip(oracle["level"], oracle["n"])) == section["sites"]
    assert "cohort_mean" in section["retrained"] or "cohort_mean" in section["skipped"]
    assert (out / "leave_one_site_out.csv").is_file()


def test_report_html_has_readable_subgroup_and_site_tables(report):
    out, _ = report
    html = (out / "report.html").read_text()
    assert "6. Subgroups" in html and "7. Leave-one-site-out" in html
    assert "rheumatoid factor (RF)" in html and "smoker" in html
    assert f'title="fewer than {MIN_PATIENTS} patients">too small' in html


def test_unknown_subgroup_or_site_column_is_named_before_any_work(four_sites, tmp_path):
    with pytest.raises(ProgressionError, match="--subgroups: bmi is not a covariate"):
        evaluate(None, four_sites, baselines=["oracle"], out_dir=tmp_path, subgroups=["bmi"],
                 progress=False)
    with pytest.raises(ProgressionError, match="--leave-one-site-out.*'hospital'"):
        evaluate(None, four_sites, baselines=["oracle"], out_dir=tmp_path, progress=False,
                 leave_one_site_out=True, site_column="hospital")


def test_model_card_shows_the_subgroup_table_of_validation_patients(run, tmp_path):
    from progression.train.model_card import write_checkpoint_card
    from progression.train.validation import validation_subgroups

    cohort = read_cohort(run.cohort)
    table = validation_subgroups(run.result.checkpoint_path, cohort, cohort.patient_ids,
                                 cache_dir=run.root / "cache", n_boot=20)
    assert table is not None
    first = table[table["horizon (years)"] == "1"]
    per_variable = first.groupby("subgroup")["patients"].sum()
    assert per_variable.nunique() == 1  # every patient with an outcome counted once per variable
    assert 0 < per_variable.iloc[0] <= len(cohort.patient_ids)
    assert (table["MAE of change"] == "too small").all()  # 12 patients
    card = write_checkpoint_card(run.result.checkpoint_path, tmp_path / "MODEL_CARD.md",
                                 subgroups=table).read_text()
    section = card.split("## Subgroups")[1].split("## Interval calibration")[0]
    assert "| subgroup | level | horizon (years) | patients | rapid | MAE of change |" in section
    site = first.loc[first["subgroup"] == "site", "level"].iloc[0]
    assert f"| site | {site} | 1 |" in section and "too small" in section
    # the fit wrote the table of its own validation patients into its card
    fitted = (run.result.checkpoint_path.parent.parent / "MODEL_CARD.md").read_text()
    assert "| subgroup | level | horizon (years) |" in fitted.split("## Subgroups")[1]
