"""Privacy by default: no patient id, password or absolute path leaves the machine in MLflow.

A cohort whose patient ids are planted secrets (``SECRETPATIENT0001`` ...) is trained on with
``progression train`` against a real ``mlflow server`` on loopback, reached through a URL
carrying a planted password (``http://analyst:<password>@127.0.0.1:<port>``, also on the
command line), then evaluated and registered. The whole server store (its SQLite database as
bytes and every text cell via SQL), every artifact file, every checkpoint and the registered
model's files are scanned: neither an id nor the password nor the cohort's absolute path is
found. The split can still be re-derived from the cohort: evaluate scores the test patients.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys

import pytest
import torch
from mlflow import MlflowClient
from test_mlflow_server import running_server
from test_train_support import simulated_cohort

from progression import cli
from progression.models.checkpoint import CheckpointMeta

PASSWORD = "PLANTEDPASSWORD42"
PREFIX = "SECRETPATIENT"


def _plant_ids(source, target):
    """A copy of ``source`` whose patient ids P0001... are SECRETPATIENT0001... everywhere
    (tables, truth files, image folders)."""
    shutil.copytree(source, target)
    for path in target.rglob("*.csv"):
        path.write_text(path.read_text().replace("P0", f"{PREFIX}0"))
    for folder in sorted((target / "images").iterdir()):
        folder.rename(folder.with_name(folder.name.replace("P0", f"{PREFIX}0")))
    return target


def _leaks(data: bytes, secrets: list[bytes]) -> list[str]:
    return [s.decode() for s in secrets if s in data]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("privacy")
    with running_server(tmp_path) as server, pytest.MonkeyPatch.context() as monkeypatch:
        yield _train_evaluate_register(tmp_path_factory, tmp_path, server, monkeypatch)


def _train_evaluate_register(tmp_path_factory, tmp_path, mlflow_server, monkeypatch):
    cohort = _plant_ids(simulated_cohort(tmp_path_factory), tmp_path / "secret_cohort")
    host = mlflow_server.removeprefix("http://")
    uri = f"http://analyst:{PASSWORD}@{host}"
    runs = tmp_path / "runs"
    argv = ["train", "--config", "tiny", "--data", str(cohort), f"tracking.tracking_uri={uri}",
            f"train.output_dir={runs}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.image_size=32", "data.val_fraction=0.25", "data.test_fraction=0.25",
            "train.max_epochs=2", "train.image_epochs=1", "train.progress=false",
            "train.threads=1", "tracking.experiment=privacy"]
    monkeypatch.setattr(sys, "argv", ["progression", *argv])
    assert cli.main(argv) == 0
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("privacy").experiment_id])
    ckpt = next(runs.glob("*/checkpoints/best.ckpt"))
    evaluate = ["evaluate", "--checkpoint", str(ckpt), "--data", str(cohort), "--out",
                str(tmp_path / "evaluation"), "--bootstrap", "20", "--baselines", "cohort_mean",
                "--tracking-uri", uri, "--experiment", "privacy", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["progression", *evaluate])
    assert cli.main(evaluate) == 0
    register = ["register", "--run", run.info.run_id, "--name", "privacy-model",
                "--tracking-uri", uri]
    assert cli.main(register) == 0
    return {"cohort": cohort, "root": tmp_path, "runs": runs, "client": client,
            "train_run": run.info.run_id, "checkpoint": ckpt}


def test_no_patient_id_password_or_cohort_path_reaches_the_store_artifacts_or_model(shared_store):
    root = shared_store["root"]
    patients = (shared_store["cohort"] / "patients.csv").read_text().split()
    ids = sorted({line.split(",")[0] for line in patients[1:]})
    assert len(ids) == 12 and all(i.startswith(PREFIX) for i in ids)
    secrets = [PASSWORD.encode(), PREFIX.encode(), str(shared_store["cohort"]).encode()]

    database = root / "server.db"
    assert _leaks(database.read_bytes(), secrets) == []
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - our own table names
                text = " ".join(str(cell) for cell in row)
                assert not any(s.decode() in text for s in secrets), (table, text[:300])

    scanned = [p for p in (root / "artifacts").rglob("*") if p.is_file()]
    scanned += sorted(shared_store["runs"].rglob("*.ckpt"))
    assert any(p.name == "MLmodel" for p in scanned) and any(p.suffix == ".ckpt" for p in scanned)
    for path in scanned:
        assert _leaks(path.read_bytes(), secrets) == [], path

    client = shared_store["client"]
    (version,) = client.search_model_versions("name='privacy-model'")
    assert version.run_id == shared_store["train_run"]


def test_runs_carry_the_redacted_command_datasets_and_the_link_to_the_training_run(shared_store):
    client = shared_store["client"]
    experiment = client.get_experiment_by_name("privacy").experiment_id
    runs = {r.data.tags["progression.kind"]: r for r in client.search_runs([experiment])}
    train, evaluate = runs["train"], runs["evaluate"]
    assert train.info.run_name == "train tiny small_cnn 32px seed0"
    assert "analyst:***@" in train.data.tags["command"]
    assert train.data.params["data.path"] == "secret_cohort"
    contexts = {d.dataset.name: {t.value for t in d.tags} for d in train.inputs.dataset_inputs}
    assert contexts == {"secret_cohort/train": {"training"},
                        "secret_cohort/val": {"validation"},
                        "secret_cohort/test": {"evaluation"}}
    assert evaluate.data.tags["progression.source_run"] == train.info.run_id
    (evaluated,) = evaluate.inputs.dataset_inputs
    assert {t.value for t in evaluated.tags} == {"evaluation"}


def test_the_hashed_split_is_re_derived_from_the_cohort(shared_store):
    meta = CheckpointMeta.from_dict(torch.load(shared_store["checkpoint"], map_location="cpu",
                                               weights_only=True)["progression"])
    assert meta.split_salt and all(len(h) == 64 for ids in meta.split.values() for h in ids)
    split = meta.split_of(f"{PREFIX}{n:04d}" for n in range(1, 13))
    assert sorted(len(v) for v in split.values()) == sorted(meta.split_sizes().values())
    assert sum(len(v) for v in split.values()) == 12
    local = (shared_store["runs"] / shared_store["train_run"] / "split.csv").read_text()
    for name, members in split.items():
        assert all(f"{pid},{name}" in local for pid in members)
