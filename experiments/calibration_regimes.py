"""Do the stored interval corrections reach 90% on held-out patients, per history regime?

Simulates the cohort of ``tests/test_calibration_regimes.py`` (every history visit scored, up
to 10 visits, render_images=False), fits a covariates-only ``tiny`` model split 10/50/40 into
train / validation (half selects the checkpoint, half calibrates: ``data.calibration_share``)
/ test, and forecasts the test patients from their landmark visits twice: with their scored
histories and with every score hidden. For each regime it reports the coverage and mean
width of the raw interval, of the scored-history correction alone (what checkpoints stored
before the two regimes) and of the correction ``predict`` now applies.

    nice python experiments/calibration_regimes.py                         # ~2 min, 3 epochs
    nice python experiments/calibration_regimes.py --max-epochs 20         # a model that leans on scores

Writes ``calibration_regimes_<epochs>ep.md`` and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    from progression.calibration import ConformalCalibration, empirical_coverage
    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.data.outcomes import OutcomeRule, landmark_outcomes
    from progression.predict import predict_cohort
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    work = args.work or Path(tempfile.mkdtemp(prefix="calibration_regimes_"))
    start = time.time()
    root = simulate_cohort(work / "cohort", SimulationConfig(
        n_patients=args.patients, seed=args.seed, render_images=False, scored_fraction=1.0,
        max_visits=10), progress=False)
    images = pd.read_csv(root / "images.csv")  # render_images=False lists unwritten films
    images.iloc[0:0].to_csv(root / "images.csv", index=False)
    cfg = load_config("tiny", [
        f"data.path={root}", f"train.output_dir={work / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}", "tracking.log_model=false",
        "train.progress=false", "model.use_images=false", "data.val_fraction=0.5",
        "data.test_fraction=0.4", "train.image_epochs=0", f"train.max_epochs={args.max_epochs}",
    ])
    checkpoint = fit(cfg).checkpoint_path
    meta = torch.load(checkpoint, weights_only=False)["progression"]
    scored_only = ConformalCalibration.from_dict(meta["calibration"])
    test = read_cohort(root).subset(meta["split"]["test"])
    outcomes = landmark_outcomes(test, OutcomeRule()).dropna(subset=["delta_svdh_obs"])
    index = outcomes.drop_duplicates("patient_id")[["patient_id", "index_date"]]
    observed = outcomes[["patient_id", "horizon_years", "delta_svdh_obs"]]

    rows = []
    for regime, histories in (("scored", test), ("unscored", test.without_scores())):
        histories = histories.subset(index["patient_id"])
        raw = predict_cohort(checkpoint, histories, index_dates=index, progress=False,
                             calibrate=False)
        used = predict_cohort(checkpoint, histories, index_dates=index, progress=False)
        for interval, table in (("raw", raw), ("scored-history correction",
                                               scored_only.apply(raw)),
                                ("correction predict applies", used)):
            coverage = empirical_coverage(table.merge(observed, on=["patient_id",
                                                                    "horizon_years"]))
            for r in coverage.itertuples():
                rows.append({"history": regime, "interval": interval,
                             "horizon_years": r.horizon_years, "n": r.n,
                             "coverage": round(r.coverage, 3),
                             "mean_width": round(r.mean_width, 2)})
    result = {
        "settings": vars(args) | {"out": str(args.out), "work": str(work)},
        "n_calibration": {k: meta[k]["n_calibration"]
                          for k in ("calibration", "calibration_unscored")},
        "rows": rows,
        "seconds": round(time.time() - start),
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"calibration_regimes_{args.max_epochs}ep"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = pd.DataFrame(rows)
    lines = [f"# Interval coverage per history regime ({args.max_epochs} epochs)", "",
             f"{args.patients} simulated patients (seed {args.seed}), covariates-only `tiny` "
             f"model; calibration patient-horizons {result['n_calibration']}; "
             f"{result['seconds']} s on {result['machine']}.", "",
             "| history | interval | horizon (y) | n | coverage | mean width (SvdH) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.history} | {r.interval} | {r.horizon_years:g} | {r.n} | {r.coverage:.3f} "
              f"| {r.mean_width:.2f} |" for r in table.itertuples()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
