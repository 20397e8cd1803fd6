"""How accurate is the 1-year SvdH change forecast on held-out patients?

Simulates a training cohort and an independent test cohort (another seed: different
patients), trains the image model and a covariates-only model with the same pipeline
(``model.use_images=false``), predicts the test cohort from each patient's index date, and
compares with the simulator's truth, its oracle (which knows each patient's latent
progression rate) and gradient boosting of the annual rate
(``progression.evaluate.baselines.CovariatesModel``). The test histories are evaluated twice: as simulated (about 60 % of
visits carry reader scores) and with every score removed (films and covariates only).

    python experiments/forecast_accuracy.py                      # 128 px, ~15 min on 2 cores
    python experiments/forecast_accuracy.py --image-size 256 --config cpu256  # ~80 min on 2 cores
    python experiments/forecast_accuracy.py --image-size 256 --config gpu     # on a GPU

Writes ``forecast_accuracy.json`` and ``forecast_accuracy.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _simulate(path: Path, n: int, seed: int, size: int) -> Path:
    from progression.simulate import SimulationConfig, simulate_cohort

    return simulate_cohort(path, SimulationConfig(n_patients=n, seed=seed, image_size=size),
                           progress=False, overwrite=True, reuse=True)


def _auroc(label: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label, score)) if 0 < label.sum() < len(label) else float("nan")


def _metrics(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for h, tag in ((1.0, "1y"), (2.0, "2y")):
        p = pred[pred["horizon_years"] == h].set_index("patient_id")
        t = truth.set_index("patient_id").loc[p.index]
        out[f"mae_delta_{tag}"] = float(np.abs(p["delta_svdh_pred"] - t[f"delta_true_{tag}"]).mean())
        out[f"auroc_rapid_{tag}"] = _auroc(t[f"rapid_true_{tag}"].to_numpy(), p["p_rapid"].to_numpy())
        inside = (t[f"delta_true_{tag}"] >= p["delta_svdh_lo"]) & (t[f"delta_true_{tag}"] <= p["delta_svdh_hi"])
        out[f"coverage_{tag}"] = float(inside.mean())
    p = pred[pred["horizon_years"] == 1.0].set_index("patient_id")
    t = truth.set_index("patient_id").loc[p.index]
    out["mae_svdh_current"] = float(np.abs(p["svdh_index_pred"] - t["svdh_true_index"]).mean())
    out["corr_svdh_current"] = float(np.corrcoef(p["svdh_index_pred"], t["svdh_true_index"])[0, 1])
    return out


def score_on_cohorts(checkpoint, cohorts: dict[str, str], cache_dir, extra=None) -> dict:
    """``{"<cohort>/<scored|unscored>": metrics}`` of ``checkpoint`` on each simulated cohort,
    forecast from its history as it is and with every score removed; ``extra(pred, truth)``
    adds metrics of the caller's own."""
    from progression.cohort import read_cohort
    from progression.predict import predict_cohort

    results = {}
    for name, root in cohorts.items():
        truth = pd.read_csv(Path(root) / "truth" / "truth.csv", dtype={"patient_id": str})
        cohort = read_cohort(root)
        for history, data in (("scored", cohort), ("unscored", cohort.without_scores())):
            pred = predict_cohort(checkpoint, data, horizons=(1.0, 2.0),
                                  index_dates=truth.set_index("patient_id")["index_date"],
                                  progress=False, cache_dir=cache_dir)
            results[f"{name}/{history}"] = {**_metrics(pred, truth),
                                            **(extra(pred, truth) if extra else {})}
    return results


def _oracle(truth: pd.DataFrame, train_truth: pd.DataFrame) -> dict[str, float]:
    out = {}
    for tag in ("1y", "2y"):
        out[f"mae_delta_{tag}"] = float(np.abs(truth[f"oracle_delta_{tag}"] - truth[f"delta_true_{tag}"]).mean())
        out[f"auroc_rapid_{tag}"] = _auroc(truth[f"rapid_true_{tag}"].to_numpy(), truth[f"oracle_p_rapid_{tag}"].to_numpy())
        inside = ((truth[f"delta_true_{tag}"] >= truth[f"oracle_delta_q05_{tag}"])
                  & (truth[f"delta_true_{tag}"] <= truth[f"oracle_delta_q95_{tag}"]))
        out[f"coverage_{tag}"] = float(inside.mean())
    median = float(train_truth["svdh_true_index"].median())  # a guess without any film
    out["mae_svdh_current_median_guess"] = float(np.abs(truth["svdh_true_index"] - median).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "progression-forecast-accuracy"),
                        help="cohorts, cache, runs and MLflow store (reused when present)")
    parser.add_argument("--out", default="experiments/results")
    parser.add_argument("--train-patients", type=int, default=300)
    parser.add_argument("--test-patients", type=int, default=150)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--test-seed", type=int, help="test cohort seed (default: --seed + 1000)")
    parser.add_argument("--checkpoints", nargs=2, metavar=("IMAGES", "COVARIATES"),
                        help="evaluate these trained models (e.g. of an earlier run) instead of training")
    parser.add_argument("--config", default="cpu",
                        help="training config: bundled name (cpu = 128 px on 2 cores) or YAML")
    parser.add_argument("overrides", nargs="*", help="config overrides (KEY=VALUE)")
    args = parser.parse_args()

    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.evaluate.baselines import CovariatesModel
    from progression.io import atomic_write_text
    from progression.predict import predict_cohort
    from progression.train import fit

    work = Path(args.work).resolve()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    train_dir = _simulate(work / "train_cohort", args.train_patients, args.seed, args.image_size)
    test_seed = args.seed + 1000 if args.test_seed is None else args.test_seed
    test_name = "test_cohort" if args.test_seed is None else f"test_cohort_{test_seed}"
    test_dir = _simulate(work / test_name, args.test_patients, test_seed, args.image_size)
    timings["simulate_s"] = time.perf_counter() - t
    common = [f"data.path={train_dir}", f"data.image_size={args.image_size}",
              f"data.cache_dir={work / 'cache'}", f"train.output_dir={work / 'runs'}",
              f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
              "tracking.experiment=forecast_accuracy", f"train.seed={args.seed}",
              *args.overrides]
    results: dict[str, dict] = {}
    checkpoints, runs = {}, {}
    for k, (name, extra) in enumerate((("images", []), ("covariates_only", ["model.use_images=false", "train.init_encoder="]))):
        if args.checkpoints:
            checkpoints[name] = Path(args.checkpoints[k])
            continue
        cfg = load_config(args.config, [*common, *extra, f"tracking.run_name={name}"])
        t = time.perf_counter()
        run = fit(cfg, progress=False)
        checkpoints[name], runs[name] = run.checkpoint_path, run.run_id
        timings[f"train_{name}_s"] = time.perf_counter() - t
        print(f"{name}: run {run.run_id}, {timings[f'train_{name}_s']:.0f} s", flush=True)

    truth = pd.read_csv(test_dir / "truth" / "truth.csv", dtype={"patient_id": str})
    train_truth = pd.read_csv(train_dir / "truth" / "truth.csv", dtype={"patient_id": str})
    index_dates = truth.set_index("patient_id")["index_date"]
    test = read_cohort(test_dir)
    # Reference: gradient boosting of the annual rate on covariates (+ past scores when given).
    boosting = CovariatesModel(seed=args.seed).fit(read_cohort(train_dir))
    for variant, cohort in (("scored_history", test), ("unscored_history", test.without_scores())):
        for name, checkpoint in checkpoints.items():
            t = time.perf_counter()
            pred = predict_cohort(checkpoint, cohort, horizons=(1.0, 2.0),
                                  index_dates=index_dates, progress=False, cache_dir=work / "cache")
            timings[f"predict_{variant}_{name}_s"] = time.perf_counter() - t
            results[f"{variant}/{name}"] = _metrics(pred, truth)
        pred = boosting.predict(cohort, horizons=(1.0, 2.0), index_dates=index_dates)
        results[f"{variant}/gradient_boosting"] = _metrics(pred, truth)
    results["oracle"] = _oracle(truth, train_truth)

    report = {
        "command": "python experiments/forecast_accuracy.py " + " ".join(os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU",
        "train_patients": args.train_patients, "test_patients": args.test_patients,
        "image_size": args.image_size, "config": args.config, "overrides": args.overrides,
        "runs": runs, "checkpoints": {k: str(v) for k, v in checkpoints.items()},
        "test_seed": test_seed,
        "results": results, "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    out = Path(args.out)
    atomic_write_text(out / "forecast_accuracy.json", json.dumps(report, indent=2))
    atomic_write_text(out / "forecast_accuracy.md", _markdown(report))
    print(_markdown(report))


def _markdown(report: dict) -> str:
    res = report["results"]
    oracle = res["oracle"]

    def f(x: float) -> str:
        return "-" if x is None or not np.isfinite(x) else f"{x:.2f}"

    lines = [
        f"Held-out test cohort: {report['test_patients']} simulated patients (seed {report['test_seed']}); "
        f"trained on {report['train_patients']}; {report['image_size']} px films. "
        f"Machine: {report['machine']}.",
        "",
        "| history at prediction | model | 1y MAE | 2y MAE | AUROC rapid 1y | 90% interval coverage 1y | current-score MAE |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, m in res.items():
        if key == "oracle":
            continue
        variant, name = key.split("/")
        lines.append(f"| {variant.replace('_', ' ')} | {name.replace('_', ' ')} | {f(m['mae_delta_1y'])} | "
                     f"{f(m['mae_delta_2y'])} | {f(m['auroc_rapid_1y'])} | {f(m['coverage_1y'])} | "
                     f"{f(m['mae_svdh_current'])} |")
    lines.append(f"| - | oracle (knows the latent rate) | {f(oracle['mae_delta_1y'])} | "
                 f"{f(oracle['mae_delta_2y'])} | {f(oracle['auroc_rapid_1y'])} | "
                 f"{f(oracle['coverage_1y'])} | - |")
    lines.append(f"| - | median guess of the current score | - | - | - | - | "
                 f"{f(oracle['mae_svdh_current_median_guess'])} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":  # image decoding starts worker processes (spawn)
    main()
