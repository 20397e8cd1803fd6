"""Datasets, collation with masks, and a length-grouped (DDP-aware) batch sampler.

Two kinds of samples, one per training stage:

- :class:`VisitImageDataset`: one visit = its (up to 4) region films with per-region,
  per-joint and visit-total damage targets. Images are read from the
  :class:`~progression.cohort.ImageCache` (decoded once, uint8).
- :class:`SequenceDataset`: one patient = all visits in date order with pointers into a
  per-image feature table, covariates, observed scores and every (index visit -> later
  scored visit) pair as a change target.

Padding is always explicit: ``visit_mask`` marks real visits, ``image_index == -1`` a
region without a film, ``*_mask`` a missing covariate or score.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from progression.cohort import ImageCache
from progression.data.arrays import CohortArrays
from progression.data.changes import film_change_targets
from progression.data.horizons import HorizonWindow
from progression.scoring import RAPID_RATE, is_rapid


class VisitImageDataset(Dataset):
    """Visits with at least one film and at least one damage target (image stage)."""

    def __init__(self, arrays: CohortArrays, visit_rows: np.ndarray, cache: ImageCache,
                 slots: np.ndarray) -> None:
        self.arrays = arrays
        self.rows = np.asarray(visit_rows, dtype=np.int64)
        self.cache = cache
        self.slots = slots
        # patient (position) of every visit row: serial films of one patient for the ordering loss
        self.visit_patient = np.repeat(np.arange(arrays.n_patients), np.diff(arrays.patient_start))

    def __len__(self) -> int:
        return len(self.rows)

    def patients(self) -> np.ndarray:
        """The patient of each sample (visit), for :class:`PatientBatchSampler`."""
        return self.visit_patient[self.rows]

    def n_images(self) -> np.ndarray:
        return (self.arrays.image_index[self.rows] >= 0).sum(1)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        a = self.arrays
        v = self.rows[i]
        regions = np.flatnonzero(a.image_index[v] >= 0)
        return {
            "images": self.cache.get(self.slots[a.image_index[v, regions]]),
            "region": regions,
            "region_target": a.region_target[v, regions],
            "joint_target": a.joint_target[v, regions],
            "visit_target": a.obs[v],
            "complete": np.array(len(regions) == a.image_index.shape[1]),
            "patient": self.visit_patient[v],
            "years": a.years[v],
        }

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """The visits at ``indices`` (a batch: the DataLoader calls this instead of
        :meth:`__getitem__` per visit) with ONE cache read and array slices for all films."""
        a = self.arrays
        v = self.rows[np.asarray(indices, dtype=np.int64)]
        index = a.image_index[v]
        has = index >= 0
        visit, regions = np.nonzero(has)  # row-major: each visit's films in region order
        images = self.cache.get(self.slots[index[has]])
        region_target = a.region_target[v[visit], regions]
        joint_target = a.joint_target[v[visit], regions]
        ends = np.cumsum(has.sum(1)).tolist()
        complete = has.all(1)
        return [
            {"images": images[start:end], "region": regions[start:end],
             "region_target": region_target[start:end], "joint_target": joint_target[start:end],
             "visit_target": a.obs[row], "complete": np.array(done),
             "patient": self.visit_patient[row], "years": a.years[row]}
            for start, end, row, done in zip([0, *ends[:-1]], ends, v, complete)
        ]


def collate_visits(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Concatenate the films of a batch of visits; ``image_visit`` maps each film to its visit,
    ``visit_patient``/``visit_years`` each visit to its patient and date (years)."""
    counts = [len(it["region"]) for it in items]
    return {
        "images": torch.from_numpy(np.concatenate([it["images"] for it in items])),
        "region": torch.from_numpy(np.concatenate([it["region"] for it in items])),
        "image_visit": torch.from_numpy(np.repeat(np.arange(len(items)), counts)),
        "region_target": torch.from_numpy(np.concatenate([it["region_target"] for it in items])),
        "joint_target": torch.from_numpy(np.concatenate([it["joint_target"] for it in items])),
        "visit_target": torch.from_numpy(np.stack([it["visit_target"] for it in items])),
        "complete": torch.from_numpy(np.stack([it["complete"] for it in items])),
        "visit_patient": torch.tensor([int(it["patient"]) for it in items], dtype=torch.long),
        "visit_years": torch.tensor([float(it["years"]) for it in items], dtype=torch.float32),
    }


class SequenceDataset(Dataset):
    """Patients as visit sequences pointing into the per-image feature table (sequence stage)."""

    def __init__(self, arrays: CohortArrays, patients: np.ndarray,
                 min_pair_years: float = 0.25, max_pair_years: float = 5.0) -> None:
        self.arrays = arrays
        self.patients = np.asarray(patients, dtype=np.int64)
        self.min_pair_years = min_pair_years
        self.max_pair_years = max_pair_years

    def __len__(self) -> int:
        return len(self.patients)

    def lengths(self) -> np.ndarray:
        a = self.arrays
        return np.maximum(1, a.patient_start[self.patients + 1] - a.patient_start[self.patients])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        a = self.arrays
        p = self.patients[i]
        v = a.visits_of(p)
        n = v.stop - v.start
        item = {
            "patient": np.array(p),
            "years": a.years[v],
            "gap": a.gap[v],
            "obs": a.obs[v],
            "image_index": a.image_index[v],
            "prev_index": a.prev_index[v],
            "prev_gap": a.prev_gap[v],
            "first_index": a.first_index[v],
            "first_gap": a.first_gap[v],
            **{k: x[v] for k, x in a.visit_cov.items()},
            **{k: x[p] for k, x in a.static_cov.items()},
        }
        if n == 0:
            # No visit at all (or none before the index date): one empty visit at time 0 so
            # the covariates still give a forecast.
            item = {k: (x if k == "patient" or k.startswith("static")
                        else np.zeros((1, *x.shape[1:]), dtype=x.dtype)) for k, x in item.items()}
            for key in ("image_index", "prev_index", "first_index"):
                item[key][:] = -1
            item["obs"][:] = np.nan
            n = 1
        item["length"] = np.array(n)
        rows = np.arange(v.start, v.stop)
        item["film_change"], item["visit_change"] = film_change_targets(
            a, rows, item["image_index"], item["prev_index"])
        # Change targets: every scored visit i -> later scored visit j within the horizon range.
        total = item["obs"][:, 0]
        scored = np.flatnonzero(np.isfinite(total))
        i_idx, j_idx = np.meshgrid(scored, scored, indexing="ij")
        i_idx, j_idx = i_idx.ravel(), j_idx.ravel()
        h = item["years"][j_idx] - item["years"][i_idx]
        window = HorizonWindow(self.min_pair_years, self.max_pair_years, 1.0)
        keep = (j_idx > i_idx) & window.contains(h)
        item["pair_i"], item["pair_j"], item["pair_h"] = i_idx[keep], j_idx[keep], h[keep]
        item["pair_delta"] = (total[j_idx] - total[i_idx])[keep]
        return item


_VISIT_KEYS = ("years", "gap", "obs", "image_index", "prev_index", "prev_gap", "first_index",
               "first_gap", "visit_num", "visit_num_mask", "visit_cat", "film_change",
               "visit_change")
_PAD = {"image_index": -1, "prev_index": -1, "first_index": -1, "obs": np.nan,
        "film_change": np.nan, "visit_change": np.nan}


def collate_sequences(items: Sequence[dict[str, np.ndarray]],
                      rapid_rate: float = RAPID_RATE) -> dict[str, torch.Tensor]:
    """Pad visits to the longest patient of the batch; pairs become flat index tensors.

    ``obs_log``/``obs_mask``: observed scores as model input (log1p units) and where they
    exist. ``pair_b, pair_i, pair_j``: batch row, index visit, follow-up visit of each
    change target; ``pair_h`` years, ``pair_delta`` in the cohort's score units, ``pair_rapid``
    0/1 (change >= ``rapid_rate`` units/year: the cohort's scoring system's threshold).
    ``film_change`` ``[B, T, R]`` / ``visit_change`` ``[B, T]``: reader-scored change since each
    region's previous film / of the visit total (:mod:`progression.data.changes`).
    """
    b = len(items)
    t = max(int(it["length"]) for it in items)
    out: dict[str, torch.Tensor] = {}
    for key in _VISIT_KEYS:
        first = items[0][key]
        arr = np.full((b, t, *first.shape[1:]), _PAD.get(key, 0), dtype=first.dtype)
        for k, it in enumerate(items):
            arr[k, : len(it[key])] = it[key]
        out[key] = torch.from_numpy(arr)
    lengths = np.array([int(it["length"]) for it in items])
    out["visit_mask"] = torch.from_numpy(np.arange(t)[None, :] < lengths[:, None])
    obs = out.pop("obs")
    out["obs_mask"] = torch.isfinite(obs)
    out["obs_log"] = torch.log1p(torch.nan_to_num(obs).clamp(min=0))
    out["obs"] = obs
    for key in ("static_num", "static_num_mask", "static_cat"):
        out[key] = torch.from_numpy(np.stack([it[key] for it in items]))
    out["patient"] = torch.from_numpy(np.array([int(it["patient"]) for it in items]))
    out["length"] = torch.from_numpy(lengths)
    out["pair_b"] = torch.from_numpy(
        np.concatenate([np.full(len(it["pair_i"]), k) for k, it in enumerate(items)]).astype(np.int64))
    for key in ("pair_i", "pair_j"):
        out[key] = torch.from_numpy(np.concatenate([it[key] for it in items]).astype(np.int64))
    h = np.concatenate([it["pair_h"] for it in items]).astype(np.float32)
    delta = np.concatenate([it["pair_delta"] for it in items]).astype(np.float32)
    out["pair_h"] = torch.from_numpy(h)
    out["pair_delta"] = torch.from_numpy(delta)
    rapid = is_rapid(delta, h, rapid_rate) if len(h) else np.zeros(0, dtype=bool)
    out["pair_rapid"] = torch.from_numpy(np.asarray(rapid, dtype=np.float32))
    return out


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of samples of similar length (less padding), reshuffled every epoch.

    Samples are sorted by length with random tie-breaks, cut into batches, and the batch
    order is shuffled. Under DDP each rank takes every ``world_size``-th batch and all ranks
    get the same number of batches (a few are repeated), so no rank waits at a collective.
    Deterministic for a given ``seed`` and epoch (Lightning calls :meth:`set_epoch`).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        ties = rng.random(n) if self.shuffle else np.arange(n)
        order = np.lexsort((ties, self.lengths))
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        n_batches = math.ceil(len(self.lengths) / self.batch_size)
        return math.ceil(n_batches / self.world_size) if n_batches else 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if not batches:
            return iter([])
        per_rank = len(self)
        padded = [batches[k % len(batches)] for k in range(per_rank * self.world_size)]
        return iter([b.tolist() for b in padded[self.rank :: self.world_size]])


class PatientBatchSampler(GroupedBatchSampler):
    """Batches of whole patients' samples (``loss.ordering``: a patient's serial films meet in
    one batch): patients in a seeded random order per epoch, packed greedily up to
    ``batch_size`` samples (a patient with more gets a batch of its own). DDP split as in
    :class:`GroupedBatchSampler`."""

    def __init__(self, patients: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(np.ones(len(patients)), batch_size, shuffle, seed, rank, world_size)
        self.patients = np.asarray(patients)

    def _batches(self) -> list[np.ndarray]:
        ids, first = np.unique(self.patients, return_index=True)
        ids = ids[np.argsort(first)]
        if self.shuffle:
            ids = np.random.default_rng([self.seed, self.epoch]).permutation(ids)
        batches, current = [], []
        for p in ids:
            group = np.flatnonzero(self.patients == p).tolist()
            if current and len(current) + len(group) > self.batch_size:
                batches.append(np.array(current))
                current = []
            current += group
        if current:
            batches.append(np.array(current))
        return batches

    def __len__(self) -> int:
        n_batches = len(self._batches())
        return math.ceil(n_batches / self.world_size) if n_batches else 0
