"""Reader-scored change between serial films: the targets of the Siamese change head.

For each visit and region with a film and an earlier film of the same region, the change of
the region's reader score (erosion + JSN, SvdH units) between the two visits; and for a
visit whose four films all follow films of one earlier visit, the change of the visit total
(supervision when a cohort has visit totals only, no joint_scores.csv). NaN = not scored.
"""

from __future__ import annotations

import numpy as np

from progression.data.arrays import CohortArrays


def film_change_targets(arrays: CohortArrays, rows: np.ndarray, image_index: np.ndarray,
                        prev_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(film_change [T, R], visit_change [T])`` for the visit ``rows`` (one patient, date
    order) with their ``image_index``/``prev_index`` ``[T, R]`` (-1 = no film), SvdH units."""
    t, r = image_index.shape
    film = np.full((t, r), np.nan, dtype=np.float32)
    visit = np.full(t, np.nan, dtype=np.float32)
    pair = (image_index >= 0) & (prev_index >= 0)
    if len(rows) == 0 or not pair.any():  # no serial films (a covariates-only cohort has none)
        return film, visit
    region = arrays.region_target[rows].sum(-1)  # [T, R], NaN unless both parts scored
    prev_visit = np.where(pair, arrays.image_visit[prev_index.clip(min=0)], 0)
    before = arrays.region_target[prev_visit, np.arange(r)].sum(-1)  # [T, R]
    film[pair] = (region - before)[pair]
    same = pair.all(1) & (prev_visit == prev_visit[:, :1]).all(1)
    total = arrays.obs[rows, 0] - arrays.obs[prev_visit[:, 0], 0]
    visit[same] = total[same]
    return film, visit
