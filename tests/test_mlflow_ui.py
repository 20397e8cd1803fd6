"""What an analyst sees in the MLflow UI, checked in a real headless browser.

Two tiny training runs (named) and an ``evaluate`` run are logged to a real ``mlflow server``
on loopback (the fixture of test_mlflow_server.py); headless Chromium then opens the
experiment's runs table, the compare view of the three runs and the evaluate run's page (its
description links to the training run it scored). The rendered DOM
(``--dump-dom`` after a virtual-time budget, so the page's API calls have answered) must show
the run names and the metric names; the screenshots must be real images. Skipped, saying
why, where no Chromium is installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from test_mlflow_server import mlflow_server  # noqa: F401 - the real server fixture
from test_train_support import simulated_cohort, tiny_overrides

from progression.cli import main
from progression.config import load_config
from progression.simulate import SimulationConfig, simulate_cohort
from progression.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from progression.train import fit

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (chromium, chromium-browser "
                       "or google-chrome) on PATH; `apt-get install chromium` or run .ci/run"),
]
RUN_NAMES = ("tiny-lr3e-3", "tiny-lr1e-4")


def _chromium(url: str, profile: Path, *action: str) -> subprocess.CompletedProcess:
    """Load ``url`` in a fresh headless profile, let it run 20 s of virtual time, then act."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--window-size=1600,1000", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", *action, url],
        capture_output=True, text=True, timeout=120, check=False)


def _page_text(url: str, tmp_path: Path, name: str) -> str:
    """The visible text of the rendered page (scripts and styles removed)."""
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    dom = _chromium(url, tmp_path / "profile", "--dump-dom").stdout
    (tmp_path / f"{name}.html").write_text(dom)
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def _screenshot(url: str, tmp_path: Path, name: str) -> Path:
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    path = tmp_path / f"{name}.png"
    _chromium(url, tmp_path / "profile", f"--screenshot={path}")
    assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot of {url}"
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.shape == (1000, 1600) and pixels.std() > 5  # a rendered page, not a blank one
    return path


def test_runs_table_and_compare_view_show_run_names_and_metrics(
        mlflow_server, tmp_path_factory, tmp_path):  # noqa: F811 - fixture imported above
    cohort = simulated_cohort(tmp_path_factory)
    checkpoints = []
    for name in RUN_NAMES:
        overrides = tiny_overrides(cohort, tmp_path, mlflow_server, **{
            "train.max_epochs": 2, "train.image_epochs": 1, "train.lr": name.split("lr")[1],
            "tracking.log_model": False, "tracking.experiment": "ui",
            "tracking.run_name": name})
        checkpoints.append(fit(load_config("tiny", overrides)).checkpoint_path)
    test_cohort = simulate_cohort(tmp_path / "test_cohort", SimulationConfig(
        n_patients=8, seed=1, image_size=32, oracle_draws=16), progress=False)
    assert main(["evaluate", "--checkpoint", str(checkpoints[0]), "--data", str(test_cohort),
                 "--out", str(tmp_path / "report"), "--bootstrap", "20", "--baselines",
                 "cohort_mean,linear", "--tracking-uri", mlflow_server, "--experiment", "ui",
                 "--no-progress"]) == 0

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ui")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted([*RUN_NAMES, "evaluate"])

    # MLflow 3.17 keeps a GenAI / Model training switch per browser (GenAI first); the URL
    # parameter picks Model training, as the switch at the top left does.
    runs_url = f"{mlflow_server}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    text = _page_text(runs_url, tmp_path, "runs")
    assert all(name in text for name in (*RUN_NAMES, "evaluate")), text[:2000]
    assert "Run Name" in text and "Dataset" in text and "3 matching runs" in text
    _screenshot(runs_url, tmp_path, "runs")

    ids = urllib.parse.quote(json.dumps([r.info.run_id for r in runs]))
    experiments = urllib.parse.quote(json.dumps([experiment.experiment_id]))
    compare_url = f"{mlflow_server}/#/compare-runs?runs={ids}&experiments={experiments}"
    text = _page_text(compare_url, tmp_path, "compare")
    assert f"Comparing {len(runs)} Runs" in text, text[:2000]
    assert all(name in text for name in (*RUN_NAMES, "evaluate"))
    # a training metric and an evaluation metric, by the names the runs logged them under
    assert "best/val/mae_delta_1y" in text and "test/auroc_rapid_1y" in text
    assert "train.lr" in text  # the parameters table, flattened config keys
    _screenshot(compare_url, tmp_path, "compare")

    # the evaluate run's page links to the training run whose checkpoint it scored
    evaluate_run = next(r for r in runs if r.info.run_name == "evaluate")
    trained = next(r for r in runs if r.info.run_name == RUN_NAMES[0])
    assert evaluate_run.data.tags["progression.source_run"] == trained.info.run_id
    page = (f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/"
            f"{evaluate_run.info.run_id}")
    text = _page_text(page, tmp_path, "evaluate_run")
    assert f"Scores the model of training run {RUN_NAMES[0]}" in text, text[:2000]
    dom = (tmp_path / "evaluate_run.html").read_text()
    assert f'runs/{trained.info.run_id}"' in dom  # a link to the training run's page
