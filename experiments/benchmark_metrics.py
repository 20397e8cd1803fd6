"""Benchmark: every evaluation metric with its patient-bootstrap CI at 10,000 patients.

Builds a synthetic per-patient frame (observed and predicted change with ties, an interval,
p_rapid, index scores, censored times to event), draws ``--bootstrap`` patient resamples and
times ``progression.metrics.compute`` over all metrics (``DELTA_METRICS``,
``INDEX_METRICS``, ``SURVIVAL_METRICS``), the work ``progression evaluate`` does per horizon.
Also checks that the point estimates equal the library values (scikit-learn, lifelines) and
prints one line to paste into docs/evaluation.md:

    nice python experiments/benchmark_metrics.py                     # 10,000 x 1,000
    python experiments/benchmark_metrics.py --patients 2000 --bootstrap 200
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from progression import metrics as m


def synthetic_frame(n: int, seed: int) -> pd.DataFrame:
    """One row per patient, with rounded values (ties) and 40% censoring."""
    rng = np.random.default_rng(seed)
    obs = np.round(rng.gamma(1.2, 3.0, n) - 1.0)  # heavy right tail, like the SvdH change
    pred = np.round(0.7 * obs + rng.normal(1.0, 2.5, n), 1)
    p_rapid = np.round(1.0 / (1.0 + np.exp(-(pred - 5.0) / 2.0)), 2)
    index_obs = np.round(rng.gamma(2.0, 10.0, n))
    return pd.DataFrame({
        "delta_svdh_obs": obs, "delta_svdh_pred": pred,
        "delta_svdh_lo": pred - 4.0, "delta_svdh_hi": pred + 6.0,
        "rapid_obs": (obs >= 5.0).astype(float), "p_rapid": p_rapid,
        "svdh_index_obs": index_obs, "svdh_index_pred": index_obs + rng.normal(0, 3, n),
        "time_to_event_years": np.round(rng.exponential(2.0 * np.exp(-obs / 8.0)), 1),
        "event": (rng.random(n) < 0.6).astype(float), "risk_score": pred,
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    frame = synthetic_frame(args.patients, args.seed)
    metrics = (*m.DELTA_METRICS, *m.INDEX_METRICS, *m.SURVIVAL_METRICS)
    start = time.perf_counter()
    counts = m.bootstrap_counts(len(frame), args.bootstrap, seed=args.seed)
    result = m.compute(metrics, frame, counts, np.arange(len(frame)))
    seconds = time.perf_counter() - start

    library = {
        "auroc_rapid": roc_auc_score(frame["rapid_obs"], frame["p_rapid"]),
        "cindex_event": concordance_index(frame["time_to_event_years"], -frame["risk_score"],
                                          frame["event"]),
    }
    for name, value in library.items():
        assert abs(result[name].value - value) < 1e-12, (name, result[name].value, value)
    for name, estimate in result.items():
        print(f"{name:20s} {estimate.value:8.4f} [{estimate.lo:8.4f}, {estimate.hi:8.4f}]")
    print(f"{len(metrics)} metrics, {args.patients:,} patients x {args.bootstrap:,} bootstrap "
          f"resamples: {seconds:.1f} s ({platform.machine()}, {platform.python_version()}; "
          f"AUROC and Harrell's C equal scikit-learn and lifelines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
