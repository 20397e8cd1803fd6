"""Pair-counting statistics (Spearman, AUROC, AUPRC, Harrell's C) under bootstrap weights.

Each comes twice: the library point estimate (SciPy, scikit-learn, lifelines) and an exact
batched form over a ``(B, n)`` matrix of bootstrap multiplicities ``w``
(:func:`progression.metrics.bootstrap_counts`) that never forms the ``n x n`` pairs: the
patients are sorted once (the order is the same in every resample) and the pair counts come
from cumulative weight sums over the runs of tied values, O(B n), or for Harrell's C from a
Fenwick tree over risk ranks, O(B n log n). ``tests/test_metrics.py`` checks each batched form
with unit weights against its library counterpart, ties and censoring included.

Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med 1996;15:361-87.
"""

from __future__ import annotations

import numpy as np
from lifelines.utils import concordance_index
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score


def _tie_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order of ``x``, the start of each run of tied values in it, and each row's run.

    Returns ``(order, starts, group)``: ``x[order]`` is ascending, its runs of equal values
    begin at ``starts``, and ``group[i]`` is the run (0, 1, ...) of row ``i``.
    """
    order = np.argsort(x, kind="mergesort")
    new = np.r_[True, x[order][1:] != x[order][:-1]]
    group = np.empty(x.shape[0], dtype=np.intp)
    group[order] = np.cumsum(new) - 1
    return order, np.flatnonzero(new), group


def _group_sums(w: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``(B, K)`` total weight of each run of tied values (runs from :func:`_tie_groups`)."""
    if starts.size == 0:
        return np.zeros((w.shape[0], 0))
    return np.add.reduceat(w[:, order], starts, axis=1)


def spearman(obs: np.ndarray, pred: np.ndarray) -> float:
    """Spearman rank correlation of predicted with observed change (SciPy, mid-ranks for ties)."""
    if np.ptp(obs) == 0 or np.ptp(pred) == 0:
        return float("nan")
    return float(stats.spearmanr(obs, pred).statistic)


def _weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``x`` in the resample where patient i appears ``w[b, i]`` times: (B, n)."""
    # rank_i = (weight strictly below x_i) + (weight tied with x_i) / 2 + 1/2, from cumulative
    # sums over the sorted values: O(B n) after one sort shared by every resample.
    order, starts, group = _tie_groups(x)
    tied = _group_sums(w, order, starts)
    below = np.cumsum(tied, axis=1) - tied
    return (below + 0.5 * tied + 0.5)[:, group]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise weighted Pearson correlation; ``x``, ``y`` are (B, n) or (n,)."""
    total = w.sum(axis=1, keepdims=True)
    mx = (w * x).sum(axis=1, keepdims=True) / total
    my = (w * y).sum(axis=1, keepdims=True) / total
    cov = (w * (x - mx) * (y - my)).sum(axis=1)
    vx = (w * (x - mx) ** 2).sum(axis=1)
    vy = (w * (y - my) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(vx * vy)


def spearman_batch(obs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _weighted_pearson(_weighted_midranks(obs, w), _weighted_midranks(pred, w), w)


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve for rapid progression (scikit-learn); NaN with one class."""
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def auroc_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Mann-Whitney: sum over positives of the negative weight ranked below (ties 1/2), from
    # cumulative sums over the runs of tied p (O(B n)).
    order, starts, _ = _tie_groups(p)
    pos = (y == 1).astype(float)
    w_pos = _group_sums(w * pos, order, starts)
    w_neg = _group_sums(w * (y == 0), order, starts)
    num = (w_pos * (np.cumsum(w_neg, axis=1) - 0.5 * w_neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision for rapid progression (scikit-learn's step-wise AUPRC)."""
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, p))


def auprc_batch(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    # AP = sum over positives i of w_i * precision(threshold p_i) / total positive weight, where
    # precision(t) = positive weight with p >= t / all weight with p >= t (tied p share it).
    order, starts, _ = _tie_groups(p)
    w_all = _group_sums(w, order, starts)
    w_pos = _group_sums(w * (y == 1), order, starts)
    # weight at or above each run: the reversed cumulative sum
    above = np.cumsum(w_all[:, ::-1], axis=1)[:, ::-1]
    above_pos = np.cumsum(w_pos[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(w_pos > 0, above_pos / np.where(above > 0, above, 1.0), 0.0)
        return (w_pos * precision).sum(axis=1) / w_pos.sum(axis=1)


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of a risk score (higher = earlier event) for time to event (years).

    lifelines' ``concordance_index`` expects a score that is higher for *longer* survival,
    so the risk is negated: a perfect risk ordering gives 1. NaN without a comparable pair.
    """
    if event.sum() == 0:
        return float("nan")
    try:
        return float(concordance_index(time, -risk, event))
    except ZeroDivisionError:
        return float("nan")


def _fenwick_paths(size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Node lists of a Fenwick (binary indexed) tree over positions ``1..size``.

    ``update[r]`` are the nodes that hold position ``r``; ``prefix[r]`` the nodes whose sum is
    the total over positions ``1..r`` (``prefix[0]`` is empty).
    """
    update, prefix = [np.zeros(0, dtype=np.intp)], [np.zeros(0, dtype=np.intp)]
    for r in range(1, size + 1):
        up, k = [], r
        while k <= size:
            up.append(k)
            k += k & -k
        down, k = [], r
        while k > 0:
            down.append(k)
            k -= k & -k
        update.append(np.array(up, dtype=np.intp))
        prefix.append(np.array(down, dtype=np.intp))
    return update, prefix


def c_index_batch(time: np.ndarray, event: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    # lifelines' comparable pairs (i, j): i had the event and left first, or i had the event and
    # j was censored at the same time. Concordant when risk_i > risk_j; ties in risk count 1/2.
    # Patients enter a Fenwick tree over risk ranks, latest time first (at a tied time: the
    # censored ones, then the events are scored, then they enter), so each event is scored
    # against exactly its comparable partners: O(B n log n) for all resamples together.
    ev = event.astype(bool)
    n_boot = w.shape[0]
    _, risk_rank = np.unique(risk, return_inverse=True)
    size = int(risk_rank.max()) + 1 if risk.size else 0
    update, prefix = _fenwick_paths(size)
    tree = np.zeros((size + 1, n_boot))
    weights = np.ascontiguousarray(w.T)  # (n, B): one patient's weights are one row
    num = np.zeros(n_boot)
    den = np.zeros(n_boot)
    inserted = np.zeros(n_boot)
    order, starts, _ = _tie_groups(-time)  # latest time first
    for members in np.split(order, starts[1:]):
        for i in members[~ev[members]]:
            tree[update[risk_rank[i] + 1]] += weights[i]
            inserted += weights[i]
        events = members[ev[members]]
        for i in events:
            below = tree[prefix[risk_rank[i]]].sum(axis=0)
            at_or_below = tree[prefix[risk_rank[i] + 1]].sum(axis=0)
            num += weights[i] * 0.5 * (below + at_or_below)
            den += weights[i] * inserted
        for i in events:
            tree[update[risk_rank[i] + 1]] += weights[i]
            inserted += weights[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den
