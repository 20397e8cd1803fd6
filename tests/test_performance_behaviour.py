"""Behaviour that makes training and prediction fast (issue #6); no wall-clock assertions.

- prediction encodes each film exactly once, in large batches, then runs the sequence model;
- the sequence stage of training encodes the films once, not once per epoch;
- batches grouped by sequence length carry less padding than batches in arbitrary order;
- the image cache reads films through a memory map instead of loading its shard files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_train_support import shared_run, simulated_cohort, tiny_overrides

from progression.cohort import ImageCache, read_cohort
from progression.config import load_config
from progression.data.arrays import build_arrays, fit_covariates
from progression.data.datasets import GroupedBatchSampler, SequenceDataset, collate_sequences
from progression.models.encoder import ImageEncoder
from progression.scoring import REGIONS


@pytest.fixture
def encoder_calls(monkeypatch) -> list[int]:
    """Films per :class:`ImageEncoder` forward pass, recorded while the test runs."""
    calls: list[int] = []
    forward = ImageEncoder.forward

    def counting(self, images, region):
        calls.append(int(images.shape[0]))
        return forward(self, images, region)

    monkeypatch.setattr(ImageEncoder, "forward", counting)
    return calls


def _n_films(cohort_dir) -> int:
    images = pd.read_csv(cohort_dir / "images.csv")
    return int(images["region"].isin(REGIONS).sum())


def test_predict_encodes_each_film_exactly_once_in_batches_of_four_times_the_patients(
        tmp_path_factory, encoder_calls):
    from progression.predict import predict_cohort

    run = shared_run(tmp_path_factory)
    encoder_calls.clear()  # the shared fit may have run inside this test
    predictions = predict_cohort(run.result.checkpoint_path, run.cohort, batch_size=3,
                                 progress=False)
    n_films = _n_films(run.cohort)
    assert predictions["patient_id"].nunique() == 12
    assert sum(encoder_calls) == n_films  # every film once, none twice
    assert encoder_calls[:-1] == [12] * (len(encoder_calls) - 1)  # 4 x batch_size films a pass
    assert len(encoder_calls) == math.ceil(n_films / 12)


def test_sequence_stage_encodes_the_films_once_for_all_its_epochs(tmp_path, tmp_path_factory,
                                                                   encoder_calls):
    import pytorch_lightning as pl

    from progression.train import fit

    class Window(pl.Callback):
        """Encoder calls made while Lightning trains (not the calibration after it)."""

        def on_fit_start(self, trainer, pl_module) -> None:
            self.start = len(encoder_calls)

        def on_fit_end(self, trainer, pl_module) -> None:
            self.calls = encoder_calls[self.start:]

    cohort = simulated_cohort(tmp_path_factory)
    # No image stage: every encoder call is the sequence stage's feature table (or validation).
    cfg = load_config("tiny", tiny_overrides(
        cohort, tmp_path, f"sqlite:///{tmp_path / 'mlruns.db'}", **{
            "train.image_epochs": 0, "train.max_epochs": 3, "tracking.log_model": False}))
    window = Window()
    fit(cfg, callbacks=[window])
    split = pd.read_csv(next((tmp_path / "runs").glob("*/split.csv")))
    used = set(split.loc[split["split"].isin(["train", "val"]), "patient_id"].astype(str))
    images = pd.read_csv(cohort / "images.csv", dtype={"patient_id": str})
    films = int((images["patient_id"].isin(used) & images["region"].isin(REGIONS)).sum())
    assert sum(window.calls) == films  # three epochs, one encoding


def _padded_slots(dataset: SequenceDataset, batches) -> int:
    """Visit slots that collation fills with padding, over all ``batches``."""
    return sum(int((~collate_sequences([dataset[i] for i in b])["visit_mask"]).sum())
               for b in batches)


def test_batches_grouped_by_length_carry_less_padding_than_batches_in_arbitrary_order(
        tmp_path_factory):
    cohort = read_cohort(simulated_cohort(tmp_path_factory))
    arrays = build_arrays(cohort, fit_covariates(cohort))
    dataset = SequenceDataset(arrays, np.arange(arrays.n_patients))
    lengths = dataset.lengths()
    assert lengths.min() < lengths.max()  # patients differ in their number of visits
    grouped = list(GroupedBatchSampler(lengths, 4, shuffle=True, seed=0))
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    # The least padding any split into batches of 4 can have: consecutive sorted lengths.
    ordered = np.argsort(lengths, kind="stable")
    least = _padded_slots(dataset, [ordered[i:i + 4] for i in range(0, len(ordered), 4)])
    assert _padded_slots(dataset, grouped) == least
    rng = np.random.default_rng(0)
    arbitrary = []
    for _ in range(5):
        order = rng.permutation(len(lengths))
        arbitrary.append(_padded_slots(dataset, [order[i:i + 4] for i in range(0, len(order), 4)]))
    assert least < np.mean(arbitrary)


def test_cache_reads_a_film_through_a_memory_map_without_loading_its_shard(tmp_path,
                                                                           tmp_path_factory):
    import psutil

    cohort = read_cohort(simulated_cohort(tmp_path_factory))
    paths = cohort.images["abs_path"].tolist()
    slots = ImageCache(tmp_path, 32).ensure(paths, progress=False)
    shard = next(tmp_path.glob("32/shard_*.u8"))
    assert shard.stat().st_size >= 32 * 2**20  # one shard holds tens of MiB of slots
    fresh = ImageCache(tmp_path, 32)  # as in a new process or DataLoader worker
    process = psutil.Process()
    before = process.memory_info().rss
    film = fresh.get(slots[:1])
    grown = process.memory_info().rss - before
    assert film.shape == (1, 32, 32) and film.max() > 0  # a real film, read back
    assert grown < 4 * 2**20  # only the film's pages, not the shard file
