"""Training: one MLflow run per fit, checkpoints, resume, the logged pyfunc model, the CLI."""

from __future__ import annotations

import logging
import os

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from test_train_support import shared_run, simulated_cohort, tiny_overrides

from progression.cli import main
from progression.cohort import read_cohort
from progression.columns import PREDICTION_COLUMNS
from progression.config import load_config
from progression.data.datamodule import ProgressionDataModule
from progression.data.datasets import collate_sequences
from progression.errors import TrackingError
from progression.models import build_forecaster
from progression.models.module import MIN_READING_CORR, ForecastModule
from progression.tracking import kept_tracking_uri
from progression.train import fit
from progression.train.fitting import _warn_if_films_unread


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_fit_logs_one_run_with_config_params_tags_metrics_and_checkpoint(run):
    client = MlflowClient(run.tracking_uri)
    result = run.result
    assert result.checkpoint_path.is_file() and result.checkpoint_path.name == "best.ckpt"
    assert result.last_checkpoint_path.name == "last.ckpt"
    info = client.get_run(result.run_id)
    assert info.info.status == "FINISHED"
    assert info.data.params["train.lr"] == "0.003"
    assert info.data.params["data.image_size"] == "32"
    assert info.data.params["model.backbone_kwargs.width"] == "4"
    tags = info.data.tags
    assert len(tags["cohort_fingerprint"]) >= 8 and tags["n_patients"] == "12"
    assert {"host", "command"} <= set(tags)
    metrics = info.data.metrics
    for key in ("train/loss", "train/loss_region", "train/loss_delta", "val/mae_delta_1y",
                "val/mae_svdh_current", "val/mae_region"):
        assert key in metrics, key
    assert len(_history(client, result.run_id, "train/loss")) == 5  # one value per epoch
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.ckpt"}
    # the split holds patient ids: logged only with tracking.share_identifiers=true
    assert {a.path for a in client.list_artifacts(result.run_id, "config")} == {
        "config/config.yaml"}
    ckpt = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)
    assert ckpt["progression"]["mlflow"]["run_id"] == result.run_id


def test_logged_mlflow_model_loads_and_predicts(run):
    # As a user would: point MLflow at the store the run was logged to (training leaves the
    # process-wide URI as it found it).
    with kept_tracking_uri():
        mlflow.set_tracking_uri(run.tracking_uri)
        model = mlflow.pyfunc.load_model(f"runs:/{run.result.run_id}/model")
    out = model.predict(pd.DataFrame({"cohort_dir": [str(run.cohort)]}))
    assert list(out.columns) == list(PREDICTION_COLUMNS)
    assert len(out) == 2 * 12  # 12 patients x horizons 1 and 2 years


def test_training_leaves_mlflows_process_wide_tracking_uri_as_it_found_it(tmp_path_factory,
                                                                         tmp_path):
    # Lightning's MLFlowLogger sets it (and $MLFLOW_TRACKING_URI) to the run's store
    before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    overrides = tiny_overrides(simulated_cohort(tmp_path_factory), tmp_path,
                               f"sqlite:///{tmp_path / 'elsewhere.db'}", **{
                                   "train.max_epochs": 1, "train.image_epochs": 0,
                                   "tracking.log_model": False})
    fit(load_config("tiny", overrides))
    assert (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()) == before


def test_logging_the_model_skips_mlflows_notices_about_deliberate_choices(run, caplog):
    from progression.pyfunc_model import log_pyfunc_model

    with caplog.at_level("INFO", logger="mlflow"):
        uri = log_pyfunc_model(run.tracking_uri, run.result.run_id, run.result.checkpoint_path)
    assert uri.startswith("models:/")
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "Python object as `python_model`" not in said and "infer model signature" not in said
    # other mlflow.pyfunc messages still get through
    logging.getLogger("mlflow.pyfunc").warning("something else")
    assert caplog.records[-1].getMessage() == "something else"


def test_resume_continues_training_in_the_same_mlflow_run(run, tmp_path):
    client = MlflowClient(run.tracking_uri)
    before = _history(client, run.result.run_id, "train/loss")
    overrides = [o for o in run.overrides if not o.startswith("train.max_epochs=")]
    cfg = load_config("tiny", [*overrides, "train.max_epochs=7", "tracking.log_model=false"])
    # resume from a copy: the shared run's files stay as they were for other tests
    last = tmp_path / "last.ckpt"
    last.write_bytes(run.result.last_checkpoint_path.read_bytes())
    resumed = fit(cfg, resume=last)
    assert resumed.run_id == run.result.run_id
    after = _history(client, resumed.run_id, "train/loss")
    assert after[: len(before)] == before
    new_steps = [s for s, _ in after[len(before):]]
    assert len(new_steps) == 2 and min(new_steps) > max(s for s, _ in before)
    assert client.get_run(resumed.run_id).data.tags["resumed.train.max_epochs"] == "7"
    assert torch.load(resumed.last_checkpoint_path, weights_only=True)["epoch"] == 6


def test_network_overfits_a_tiny_simulated_cohort(tmp_path_factory, tmp_path, request):
    """Both stages' training losses fall by a large factor on a fixed batch (memorisation)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two busy-waiting ones
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    cohort = simulated_cohort(tmp_path_factory)
    cfg = load_config("tiny", tiny_overrides(
        cohort, tmp_path, "sqlite://", **{"data.augment": False, "model.dropout": 0.0,
                                          "model.embedding_dropout": 0.0,
                                          "model.score_input_dropout": 0.0,
                                          "data.visit_batch_size": 8}))
    dm = ProgressionDataModule(cfg, read_cohort(cohort), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    model = build_forecaster(cfg.model, dm.layout)
    model.sequence.rate_scale.fill_(float(dm.target_stats()["rate_scale"]))
    module = ForecastModule(model, cfg, image_epochs=1, meta={})

    def train(step, batch, steps, lr):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            loss = step(batch, train=True)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        return losses

    image_batch = next(iter(dm._loader("image", "train")))
    image_losses = train(module._image_step, image_batch, steps=30, lr=3e-3)
    assert image_losses[-1] < image_losses[0] / 10
    images = torch.from_numpy(dm.cache.get(dm.slots))
    with torch.no_grad():
        module._features = model.image_features(
            model.eval().encoder(images, torch.from_numpy(dm.arrays.image_region)))
    model.train()
    sequence_batch = collate_sequences(
        [dm._loader("sequence", "train").dataset[i] for i in range(len(dm.patients["train"]))])
    assert len(sequence_batch["pair_delta"]) >= 5
    sequence_losses = train(module._sequence_step, sequence_batch, steps=100, lr=6e-3)
    assert sequence_losses[-1] < sequence_losses[0] / 10


def test_unreachable_tracking_server_fails_before_training(run, tmp_path):
    overrides = tiny_overrides(run.cohort, tmp_path, "http://127.0.0.1:9")
    with pytest.raises(TrackingError, match="cannot reach the MLflow tracking store"):
        fit(load_config("tiny", overrides))
    assert not (tmp_path / "cache").exists()  # failed before decoding a single film
    overrides = tiny_overrides(run.cohort, tmp_path, tmp_path / "mlruns")
    with pytest.raises(TrackingError, match="file store"):
        fit(load_config("tiny", overrides))


def test_train_command_prints_run_id_and_checkpoint(run, tmp_path, capsys):
    overrides = tiny_overrides(run.cohort, tmp_path, run.tracking_uri,
                               **{"train.max_epochs": 2, "train.image_epochs": 1,
                                  "tracking.log_model": False})
    overrides = [o for o in overrides if not o.startswith("data.path=")]
    assert main(["train", "--data", str(run.cohort), "--config", "tiny", *overrides]) == 0
    out = capsys.readouterr().out
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("run id"))
    checkpoint = next(line.split()[-1] for line in out.splitlines() if line.startswith("checkpoint"))
    assert MlflowClient(run.tracking_uri).get_run(run_id).info.status == "FINISHED"
    assert checkpoint.endswith(".ckpt") and run_id in checkpoint


def test_train_command_reports_a_bad_config_key_without_traceback(run, capsys):
    assert main(["train", "--data", str(run.cohort), "--config", "tiny", "train.lrr=1"]) == 2
    assert "unknown config key 'train.lrr'" in capsys.readouterr().err


def test_fit_records_how_well_the_encoder_reads_damage_and_the_card_says_so(run):
    ckpt = torch.load(run.result.checkpoint_path, map_location="cpu", weights_only=True)
    reading = ckpt["progression"]["image_reading"]
    assert reading["image_epochs"] == ckpt["progression"]["image_epochs"] > 0
    assert -1.0 <= reading["val_corr_region"] <= 1.0
    card = (run.result.checkpoint_path.parent.parent / "MODEL_CARD.md").read_text()
    assert f"correlation {reading['val_corr_region']:.2f} with reader region scores" in card
    unread = reading["val_corr_region"] < MIN_READING_CORR
    assert ("The image encoder did not learn to read damage" in card) == unread


def test_a_fit_whose_encoder_cannot_read_films_says_why_and_what_to_change(caplog):
    cfg = load_config("tiny")
    with caplog.at_level("WARNING", logger="progression.train"):
        _warn_if_films_unread({"val_corr_region": 0.19, "image_epochs": 8}, cfg)
    (record,) = caplog.records
    assert "correlate 0.19" in record.getMessage() and "after 8 image epochs" in record.getMessage()
    assert "--config cpu256" in record.getMessage() and "data.image_size is 64" in record.getMessage()
    caplog.clear()
    _warn_if_films_unread({"val_corr_region": 0.81, "image_epochs": 40}, cfg)
    _warn_if_films_unread(None, cfg)  # covariates-only model, or no validation films
    assert caplog.records == []


def test_a_trained_encoder_starts_a_sequence_only_fit_unchanged(run, tmp_path):
    """train.init_encoder with image_epochs=0: the reader's weights are reused as they are
    and only the sequence model learns (a trained reader refitted on another cohort)."""
    source = run.result.checkpoint_path
    overrides = [o for o in run.overrides if not o.startswith(("train.max_epochs=", "train.image_epochs="))]
    cfg = load_config("tiny", [*overrides, f"train.output_dir={tmp_path / 'runs'}",
                               "train.max_epochs=2", "train.image_epochs=0",
                               f"train.init_encoder={source}", "tracking.log_model=false"])
    result = fit(cfg)
    before = torch.load(source, map_location="cpu", weights_only=True)
    after = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)
    encoder = [k for k in before["state_dict"] if k.startswith("model.encoder.")]
    assert encoder and all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in encoder)
    sequence = [k for k in before["state_dict"] if k.startswith("model.sequence.")]
    assert any(not torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in sequence)
    meta = after["progression"]
    assert meta["encoder_from"]["checkpoint"] == source.name  # no absolute path (privacy)
    assert meta["encoder_from"]["image_epochs"] == before["progression"]["image_epochs"]
    assert meta["image_reading"] == before["progression"]["image_reading"]
    card = (result.checkpoint_path.parent.parent / "MODEL_CARD.md").read_text()
    assert "then 0 image epochs on this cohort" in card
    # the reused reader's per-joint head was trained, so explain shows its readings
    from progression.explain.patient import explain_patient

    report = explain_patient(result.checkpoint_path, run.cohort, "P0001", steps=2,
                             cache_dir=run.root / "cache")
    assert report.joints is not None


def test_a_trained_encoder_can_be_named_by_its_mlflow_model_uri(run, tmp_path):
    overrides = [o for o in run.overrides if not o.startswith(("train.max_epochs=", "train.image_epochs="))]
    model_uri = f"runs:/{run.result.run_id}/model"
    cfg = load_config("tiny", [*overrides, f"train.output_dir={tmp_path / 'runs'}",
                               "train.max_epochs=1", "train.image_epochs=0",
                               f"train.init_encoder={model_uri}", "tracking.log_model=false"])
    result = fit(cfg)
    before = torch.load(run.result.checkpoint_path, map_location="cpu", weights_only=True)
    after = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)
    assert after["progression"]["encoder_from"]["checkpoint"] == model_uri
    encoder = [k for k in before["state_dict"] if k.startswith("model.encoder.")]
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in encoder)


@pytest.mark.parametrize("override, named", [
    ("data.image_size=48", "data.image_size=32"),
    ("model.embed_dim=8", "model.embed_dim=16"),
])
def test_an_encoder_trained_with_other_shapes_is_refused_naming_the_keys(run, override, named, capsys):
    args = ["train", "--data", str(run.cohort), "--config", "tiny", *run.overrides,
            "train.image_epochs=0", f"train.init_encoder={run.result.checkpoint_path}", override]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "train.init_encoder" in err and named in err and "Traceback" not in err


def test_an_encoder_from_a_covariates_only_model_is_refused(run, capsys):
    args = ["train", "--data", str(run.cohort), "--config", "tiny", *run.overrides,
            f"train.init_encoder={run.result.checkpoint_path}", "model.use_images=false"]
    assert main(args) != 0
    assert "needs an image model" in capsys.readouterr().err
