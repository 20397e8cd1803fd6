"""Patient-level split: no patient's visits in two splits.

``train`` patients fit the weights, ``val`` patients select the checkpoint (``train.monitor``),
``calibration`` patients calibrate the forecast interval after the fit
(:func:`progression.train.finalize.calibrate_checkpoint`) and ``test`` patients are left for
``evaluate``. Calibration patients are a share (``data.calibration_share``) of the validation
patients: held out from training like them, but never looked at while the checkpoint is chosen,
so the conformal guarantee (exchangeable calibration and new patients) is not spent on picking
the epoch that fits them best. Taking them from the validation patients, not the training ones,
keeps the training set of a given cohort and ``data.val_fraction`` what it was.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from progression.errors import ConfigError


def split_patients(
    patient_ids: Iterable[str], val_fraction: float, test_fraction: float, seed: int,
    calibration_share: float = 0.0,
) -> dict[str, list[str]]:
    """``{"train", "val", "calibration", "test"}`` patient ids, disjoint.

    The ids are sorted before the seeded shuffle, so the split depends only on the set of
    patients and ``seed`` (not on row order). A non-zero fraction gets at least one patient.
    ``calibration_share`` of the ``val_fraction`` patients (rounded) go to ``calibration``;
    at least one stays in ``val`` to select the checkpoint, so a pilot cohort with one or two
    validation patients calibrates nothing (``calibrate_checkpoint`` then warns).
    """
    ids = sorted({str(p) for p in patient_ids})
    n = len(ids)
    for key, frac in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction),
                      ("data.calibration_share", calibration_share)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"config key '{key}': must be in [0, 1), got {frac}")
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ConfigError(
            f"{n} patients cannot give a training split with data.val_fraction={val_fraction} "
            f"and data.test_fraction={test_fraction}; lower the fractions or add patients"
        )
    n_cal = min(round(calibration_share * n_val), max(n_val - 1, 0))
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    # val first, as before calibration patients existed: the same seed keeps the same
    # train and test patients; calibration patients are the tail of the old validation block
    return {
        "val": sorted(shuffled[: n_val - n_cal]),
        "calibration": sorted(shuffled[n_val - n_cal : n_val]),
        "test": sorted(shuffled[n_val : n_val + n_test]),
        "train": sorted(shuffled[n_val + n_test :]),
    }
