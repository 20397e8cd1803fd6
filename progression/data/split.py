"""Patient-level train/validation/test split: no patient's visits in two splits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from progression.errors import ConfigError


def split_patients(
    patient_ids: Iterable[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}`` patient ids, disjoint.

    The ids are sorted before the seeded shuffle, so the split depends only on the set of
    patients and ``seed`` (not on row order). A non-zero fraction gets at least one patient.
    """
    ids = sorted({str(p) for p in patient_ids})
    n = len(ids)
    for key, frac in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"config key '{key}': must be in [0, 1), got {frac}")
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ConfigError(
            f"{n} patients cannot give a training split with data.val_fraction={val_fraction} "
            f"and data.test_fraction={test_fraction}; lower the fractions or add patients"
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {
        "val": sorted(shuffled[:n_val]),
        "test": sorted(shuffled[n_val : n_val + n_test]),
        "train": sorted(shuffled[n_val + n_test :]),
    }
