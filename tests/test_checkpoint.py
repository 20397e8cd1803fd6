"""Checkpoints written by earlier versions still load, and their metadata is written back as read."""

from __future__ import annotations

import torch

from progression.models.checkpoint import CheckpointMeta
from progression.trained import bundled_reader, load_trained

READER = bundled_reader()


def test_a_checkpoint_of_an_earlier_version_loads_with_its_metadata_unchanged():
    stored = torch.load(READER, map_location="cpu", weights_only=True)["progression"]

    trained = load_trained(READER)

    assert trained.meta.to_dict() == stored
    assert trained.config.data.image_size == stored["config"]["data"]["image_size"] == 256
    assert trained.meta.image_epochs == stored["image_epochs"]
    assert trained.calibration is not None  # stored by the fit that trained it
    assert trained.model.encoder is not None


def test_metadata_keys_this_version_does_not_know_survive_a_round_trip():
    stored = {"format": 1, "config": {}, "covariates": {}, "layout": {}, "written_by": "later"}

    meta = CheckpointMeta.from_dict(stored)

    assert meta.extra == {"written_by": "later"}
    assert {k: v for k, v in meta.to_dict().items() if k in stored} == stored
