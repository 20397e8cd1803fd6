"""Loss terms with missing targets masked out (a missing score never counts as 0).

Damage is compared in ``log1p`` space with squared error: SvdH scores are skewed (most
patients low, a few very high), and this loss learns from films where L1 with a softplus
output collapsed to the median (docs/design_decisions.md#damage-is-learned-in-log-space).
Changes are compared with a Huber loss
in units of the training cohort's mean progression rate, so one SvdH unit matters the same
whatever the cohort's scale; intervals with the pinball loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (with a gradient path) where nothing is observed."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def log_damage_loss(pred_log: torch.Tensor, target_units: torch.Tensor) -> torch.Tensor:
    """Squared error between predicted ``log1p`` damage and ``log1p(target)`` (NaN = missing)."""
    ok = torch.isfinite(target_units)
    target = torch.log1p(torch.nan_to_num(target_units).clamp(min=0))
    return masked_mean((pred_log.float() - target) ** 2, ok)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantile: float) -> torch.Tensor:
    """Quantile (pinball) loss; minimised by the ``quantile``-th conditional quantile."""
    diff = target - pred
    return torch.maximum(quantile * diff, (quantile - 1.0) * diff).mean()


def change_losses(out: dict[str, torch.Tensor], delta: torch.Tensor, rapid: torch.Tensor,
                  scale: torch.Tensor, huber_beta: float, interval_level: float
                  ) -> dict[str, torch.Tensor]:
    """Huber (point), BCE (rapid) and pinball (interval) losses of the pair heads.

    ``delta`` is the observed change (SvdH units); ``scale`` the rate scale (units/year).
    """
    if delta.numel() == 0:
        zero = out["delta"].sum() * 0.0
        return {"delta": zero, "rapid": zero, "quantile": zero}
    lo_q = (1.0 - interval_level) / 2.0
    return {
        "delta": F.smooth_l1_loss(out["delta"] / scale, delta / scale, beta=huber_beta),
        "rapid": F.binary_cross_entropy_with_logits(out["rapid_logit"], rapid),
        "quantile": pinball_loss(out["lo"] / scale, delta / scale, lo_q)
        + pinball_loss(out["hi"] / scale, delta / scale, 1.0 - lo_q),
    }


def film_change_loss(read: torch.Tensor, film: torch.Tensor, visit: torch.Tensor,
                     scale: torch.Tensor, huber_beta: float) -> torch.Tensor:
    """Huber loss (rate-scale units) of the change head's readings ``read`` ``[B, T, R]``
    (rate-scale units) against the reader-scored change of each region ``film`` and, summed
    over the regions, against the change of the visit total ``visit`` ``[B, T]`` (SvdH units,
    NaN = not scored): visit totals alone are enough to train the head."""
    diffs = []
    ok = torch.isfinite(film)
    if ok.any():
        diffs.append(read[ok] - film[ok] / scale)
    whole = torch.isfinite(visit)
    if whole.any():
        diffs.append(read.sum(-1)[whole] - visit[whole] / scale)
    if not diffs:
        return read.sum() * 0.0
    d = torch.cat(diffs).float()
    return F.smooth_l1_loss(d, torch.zeros_like(d), beta=huber_beta)


def ordering_loss(reading_log: torch.Tensor, image_visit: torch.Tensor, region: torch.Tensor,
                  visit_patient: torch.Tensor, visit_years: torch.Tensor) -> torch.Tensor:
    """Damage does not heal: mean hinge ``max(0, earlier - later)`` of the ``log1p`` readings
    ``[n, 2]`` (erosion, JSN) over every pair of films of one region of one patient taken on
    different dates (``image_visit`` [n] -> ``visit_patient``/``visit_years`` [V]). Needs no
    reader score; 0 when every later film reads at least as much damage."""
    patient, years = visit_patient[image_visit], visit_years[image_visit]
    pairs = ((patient[:, None] == patient[None]) & (region[:, None] == region[None])
             & (years[:, None] < years[None]))
    earlier, later = pairs.nonzero(as_tuple=True)
    if earlier.numel() == 0:
        return reading_log.sum() * 0.0
    return F.relu(reading_log[earlier].float() - reading_log[later].float()).mean()
