"""Attributions of a forecast to its inputs, and a check of heatmaps against true progression.

- :func:`integrated_gradients` (Sundararajan et al., ICML 2017): attribution of a scalar
  forecast to each input value, relative to a baseline input. The attributions add up to
  ``forecast(x) - forecast(baseline)`` (completeness), so for covariates standardised to the
  training mean a baseline of zeros reads as "compared with an average patient", in the
  forecast's own units (SvdH units).
- :func:`visit_attributions`: the same, summed over each visit's features: how much each visit
  moved the forecast.
- :func:`joint_mass` / :func:`hit_rate`: the share of a heatmap inside a window around each
  joint, and how often the top-k joints by that share include a joint that truly progressed,
  against the exact rate for k joints drawn at random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np
import pandas as pd
import torch

DEFAULT_WINDOW = 0.06  # half-width of a joint window, as a fraction of the image side


def integrated_gradients(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
) -> torch.Tensor:
    """Integrated gradients of ``fn`` at ``x`` (same shape as ``x``), in ``fn``'s units.

    ``fn`` maps a batch ``[S, *x.shape]`` of inputs to ``[S]`` scalars (all ``steps`` points
    of the straight path from ``baseline`` (default zeros) to ``x`` go through in one batch).
    Midpoint Riemann sum; the attributions sum to ``fn(x) - fn(baseline)`` up to the
    discretisation error.
    """
    x = x.detach()
    base = torch.zeros_like(x) if baseline is None else baseline.detach().to(x)
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    alphas = alphas.view(-1, *([1] * x.ndim))
    path = (base + alphas * (x - base)).requires_grad_(True)
    with torch.enable_grad():
        out = fn(path)
        (grads,) = torch.autograd.grad(out.sum(), path)
    return (x - base) * grads.mean(dim=0)


def visit_attributions(
    fn: Callable[[torch.Tensor], torch.Tensor],
    visits: torch.Tensor,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
) -> np.ndarray:
    """How much each visit moved a forecast: integrated gradients over per-visit inputs
    ``[T, ...]``, summed over everything but the visit axis. Returns ``[T]`` in ``fn``'s units.
    """
    attr = integrated_gradients(fn, visits, baseline, steps)
    return attr.reshape(attr.shape[0], -1).sum(dim=1).numpy()


def joint_mass(
    cam: np.ndarray, locations: pd.DataFrame, half_width: float = DEFAULT_WINDOW
) -> pd.Series:
    """Share (0-1) of a heatmap's mass inside a square window around each joint.

    ``locations`` has columns ``joint``, ``x``, ``y``: the joint centre as a fraction (0-1) of
    the heatmap's width and height. Windows are ``2 * half_width`` of the side wide and may
    overlap for neighbouring joints. A map with no mass gives zeros.
    """
    height, width = cam.shape
    total = float(cam.sum())
    masses = {}
    for joint, x, y in locations[["joint", "x", "y"]].itertuples(index=False):
        x0, x1 = (int(round((x + s * half_width) * width)) for s in (-1, 1))
        y0, y1 = (int(round((y + s * half_width) * height)) for s in (-1, 1))
        window = cam[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
        masses[joint] = float(window.sum()) / total if total > 0 else 0.0
    return pd.Series(masses, dtype=float)


def progressing_joints(
    joint_scores: pd.DataFrame,
    patient_id: str,
    date_from: str,
    date_to: str,
    min_increase: float = 1.0,
) -> set[str]:
    """Joints whose erosion + JSN grade rose by at least ``min_increase`` between two visits.

    ``joint_scores`` follows cohort format v1 (``patient_id, visit_date, joint, erosion,
    jsn``; empty components count as 0). Joints scored at only one of the visits are left out.
    """
    rows = joint_scores[joint_scores["patient_id"].astype(str) == str(patient_id)]
    grade = rows["erosion"].fillna(0.0) + rows["jsn"].fillna(0.0)
    by_date = rows.assign(grade=grade).pivot_table(
        index="joint", columns="visit_date", values="grade", aggfunc="sum"
    )
    if date_from not in by_date or date_to not in by_date:
        return set()
    change = (by_date[date_to] - by_date[date_from]).dropna()
    return set(change.index[change >= min_increase])


@dataclass(frozen=True)
class HitRate:
    """Top-k joint hit rate of attribution maps against truly progressing joints.

    ``hit_rate``: share of images where at least one of the k joints with the most heatmap mass
    progressed; ``random_hit_rate``: the exact expectation for k joints drawn at random from the
    same image. ``precision`` / ``random_precision``: share of the top-k joints that progressed.
    Only images with at least one progressing joint count (``n_images``).
    """

    k: int
    n_images: int
    hit_rate: float
    random_hit_rate: float
    precision: float
    random_precision: float


def hit_rate(
    masses: Sequence[pd.Series], progressing: Sequence[set[str]], k: int = 3, seed: int = 0
) -> HitRate:
    """Compare each image's top-k joints by :func:`joint_mass` with its progressing joints.

    Ties (e.g. a map with no mass) are broken at random with ``seed``, so an uninformative map
    scores like the random baseline rather than like the first joints listed.
    """
    rng = np.random.default_rng(seed)
    hits, rand_hits, precision, rand_precision = [], [], [], []
    for mass, truth in zip(masses, progressing):
        n = len(mass)
        m = len(truth & set(mass.index))
        if m == 0 or n == 0:
            continue
        kk = min(k, n)
        order = np.lexsort((rng.random(n), -mass.to_numpy()))
        top = set(mass.index[order[:kk]])
        hits.append(bool(top & truth))
        precision.append(len(top & truth) / kk)
        rand_hits.append(1.0 - comb(n - m, kk) / comb(n, kk))
        rand_precision.append(m / n)
    if not hits:
        return HitRate(k, 0, float("nan"), float("nan"), float("nan"), float("nan"))
    return HitRate(
        k=k,
        n_images=len(hits),
        hit_rate=float(np.mean(hits)),
        random_hit_rate=float(np.mean(rand_hits)),
        precision=float(np.mean(precision)),
        random_precision=float(np.mean(rand_precision)),
    )
