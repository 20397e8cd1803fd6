"""Honest stacking, measured: the sequence stage on in-fold vs out-of-fold readings.

Arm ``in`` is today's fit (``train.crossfit_folds=1``: the sequence stage learns from readings
of the training films by the encoder fitted on those films). Arm ``out`` cross-fits
(``train.crossfit_folds=K``: each training patient's films are read by an encoder trained on
the other folds). The final encoder of both arms is the same network trained the same way
(cross-fitting restores the random state), so the arms differ only in what the sequence
stage learned from. Each arm is trained over several training seeds on one simulated
cohort, the arm is chosen on a development cohort (another simulator seed) and reported on
the test cohorts, never chosen on them. Reported per cohort: 1-year MAE (ratio to the
oracle), calibration slope of the 1-year change (true on predicted; compressed forecasts
have a slope above 1) and the MAE of the fastest-progressing 10%.

Cost: per training seed, 1 image stage for ``in`` and K + 1 for ``out``; with the ``cpu256``
config on 300 patients that is hours on a 2-core CPU (76 min per image stage): run it on a GPU
or overnight.

    python experiments/stacking_ablation.py --folds 3 --seeds 0 1 2 --config cpu256 \\
        --train-patients 300 --eval-patients 150 --image-size 256

A smoke run (minutes; checks the script, measures nothing):

    python experiments/stacking_ablation.py --folds 2 --seeds 0 --config tiny \\
        --train-patients 24 --eval-patients 12 --image-size 32 --test-seeds 1001 \\
        --set train.max_epochs=4 --set train.image_epochs=2 --out /tmp/stacking_smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from forecast_accuracy import _simulate, score_on_cohorts


def _extra_metrics(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Calibration slope of the 1-year change (true regressed on predicted) and the MAE of
    the 10% of patients with the largest true 1-year change."""
    p = pred[pred["horizon_years"] == 1.0].set_index("patient_id")
    t = truth.set_index("patient_id").loc[p.index, "delta_true_1y"].to_numpy()
    f = p["delta_svdh_pred"].to_numpy()
    slope = float(np.cov(f, t)[0, 1] / f.var(ddof=1)) if f.var() > 0 else float("nan")
    fast = t >= np.quantile(t, 0.9)
    return {"calibration_slope_1y": slope, "mae_delta_1y_fastest10": float(np.abs(f - t)[fast].mean())}


def _simulate_totals_only(path: Path, n: int, seed: int, size: int) -> Path:
    from progression.simulate import SimulationConfig, simulate_cohort

    cfg = SimulationConfig(n_patients=n, seed=seed, image_size=size, joint_scores=False)
    return simulate_cohort(path, cfg, progress=False, overwrite=True, reuse=True)


def _run(task: dict) -> dict:
    """Train one (arm, seed) and score it on every evaluation cohort."""
    from progression.config import load_config
    from progression.train import fit

    work = Path(task["work"])
    cfg = load_config(task["config"], [
        f"data.path={task['train_dir']}", f"data.image_size={task['image_size']}",
        f"data.cache_dir={work / 'cache'}", f"train.output_dir={work / 'runs'}",
        f"tracking.tracking_uri={task['uri']}", "tracking.experiment=stacking_ablation",
        f"tracking.run_name={task['arm']}-seed{task['seed']}", "tracking.log_model=false",
        f"train.seed={task['seed']}", f"train.crossfit_folds={task['folds']}", "train.threads=1",
        *task["overrides"]])
    t = time.perf_counter()
    run = fit(cfg, progress=False)
    out = {"arm": task["arm"], "seed": task["seed"], "run_id": run.run_id,
           "train_s": round(time.perf_counter() - t, 1), "results": {}}
    out["results"] = score_on_cohorts(run.checkpoint_path, task["cohorts"], work / "cache",
                                      _extra_metrics)
    return out


def _oracle(root: Path) -> dict[str, float]:
    truth = pd.read_csv(root / "truth" / "truth.csv")
    err = (truth["oracle_delta_1y"] - truth["delta_true_1y"]).abs()
    fast = truth["delta_true_1y"] >= truth["delta_true_1y"].quantile(0.9)
    return {"mae_delta_1y": float(err.mean()), "mae_delta_1y_fastest10": float(err[fast].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3, help="K of the out-of-fold arm")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "progression-stacking"),
                        help="cohorts, cache, runs and MLflow store (reused when present)")
    parser.add_argument("--out", default="experiments/results")
    parser.add_argument("--config", default="cpu256")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both arms (repeatable)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--train-patients", type=int, default=300)
    parser.add_argument("--train-seed", type=int, default=1, help="training cohort's simulator seed")
    parser.add_argument("--totals-only", action="store_true",
                        help="training cohort without joint_scores.csv (visit scores only)")
    parser.add_argument("--dev-seed", type=int, default=500)
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[1001, 2001, 3001])
    parser.add_argument("--eval-patients", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    args = parser.parse_args()

    from mlflow import MlflowClient

    work = Path(args.work).resolve()
    t = time.perf_counter()
    if args.totals_only:
        train_dir = _simulate_totals_only(work / "train_cohort_totals", args.train_patients,
                                          args.train_seed, args.image_size)
    else:
        train_dir = _simulate(work / "train_cohort", args.train_patients, args.train_seed,
                              args.image_size)
    cohorts = {"dev": _simulate(work / f"cohort_{args.dev_seed}", args.eval_patients,
                                args.dev_seed, args.image_size)}
    for seed in args.test_seeds:
        cohorts[f"test{seed}"] = _simulate(work / f"cohort_{seed}", args.eval_patients, seed,
                                           args.image_size)
    simulate_s = time.perf_counter() - t
    uri = f"sqlite:///{work / 'mlruns.db'}"
    from progression.tracking import experiment_id

    # the store and the experiment exist before parallel runs race to create them
    experiment_id(MlflowClient(uri), "stacking_ablation", uri)
    arms = {"in": 1, "out": args.folds}
    tasks = [{"arm": arm, "folds": k, "seed": seed, "work": str(work), "train_dir": str(train_dir),
              "cohorts": {c: str(v) for c, v in cohorts.items()}, "config": args.config,
              "image_size": args.image_size, "uri": uri, "overrides": args.set}
             for arm, k in arms.items() for seed in args.seeds]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t = time.perf_counter()
    # spawn: each run starts a fresh interpreter (no OpenMP state inherited through fork)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = []
        for run in pool.map(_run, tasks):
            runs.append(run)
            dev = run["results"]["dev/unscored"]["mae_delta_1y"]
            print(f"{run['arm']} seed {run['seed']}: dev unscored 1y MAE {dev:.2f} "
                  f"({run['train_s']:.0f} s)", flush=True)
    report = {
        "command": "python experiments/stacking_ablation.py " + " ".join(os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"{'a GPU' if _has_gpu() else 'no GPU'}",
        "config": args.config, "overrides": args.set, "folds": args.folds,
        "totals_only": args.totals_only,
        "image_size": args.image_size, "train_patients": args.train_patients,
        "eval_patients": args.eval_patients, "seeds": args.seeds,
        "oracle": {k: _oracle(v) for k, v in cohorts.items()},
        "chosen_on_dev": _choose(runs),
        "runs": runs,
        "timings_s": {"simulate": round(simulate_s, 1), "runs": round(time.perf_counter() - t, 1)},
    }
    from progression.io import atomic_write_text

    out = Path(args.out)
    atomic_write_text(out / "stacking_ablation.json", json.dumps(report, indent=2))
    atomic_write_text(out / "stacking_ablation.md", _markdown(report))
    print(_markdown(report))


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _choose(runs: list[dict]) -> str:
    """The arm with the lower development-cohort 1-year MAE from films and covariates alone
    (mean over training seeds): the choice is made here, never on a test cohort."""
    mean = {arm: np.mean([r["results"]["dev/unscored"]["mae_delta_1y"] for r in runs
                          if r["arm"] == arm]) for arm in {r["arm"] for r in runs}}
    return min(mean, key=mean.get)


def _markdown(report: dict) -> str:
    cohorts = list(report["oracle"])
    oracle = report["oracle"]
    lines = [
        f"Command: `{report['command']}`", "",
        f"Sequence stage on in-fold (`in`, crossfit_folds=1) vs out-of-fold (`out`, "
        f"crossfit_folds={report['folds']}) readings; {report['train_patients']} training "
        f"patients{' (visit scores only)' if report['totals_only'] else ''}, "
        f"{report['image_size']} px, `{report['config']}` config "
        f"{' '.join(report['overrides'])}; training seeds {report['seeds']}. Evaluation cohorts "
        f"of {report['eval_patients']} patients: `dev` chooses (chosen: "
        f"**{report['chosen_on_dev']}**), the `test*` cohorts report. Machine: {report['machine']}.",
        "",
        "Mean over training seeds (min-max). MAE in SvdH units, ratio to the oracle in brackets; "
        "slope: calibration slope of the 1-year change (1 = not compressed); fastest 10%: MAE "
        "of the patients with the largest true 1-year change.",
        "",
        "| arm | history | metric | " + " | ".join(cohorts) + " |",
        "|---|---|---|" + "---|" * len(cohorts),
    ]
    metrics = (("1y MAE", "mae_delta_1y"), ("slope", "calibration_slope_1y"),
               ("fastest 10% MAE", "mae_delta_1y_fastest10"), ("AUROC rapid", "auroc_rapid_1y"))
    for arm in ("in", "out"):
        runs = [r for r in report["runs"] if r["arm"] == arm]
        for history in ("scored", "unscored"):
            for label, key in metrics:
                cells = []
                for c in cohorts:
                    v = np.array([r["results"][f"{c}/{history}"][key] for r in runs])
                    cell = f"{v.mean():.2f} ({v.min():.2f}-{v.max():.2f})"
                    if key in oracle[c]:
                        cell += f" [{v.mean() / oracle[c][key]:.2f}x]"
                    cells.append(cell)
                lines.append(f"| {arm} | {history} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "| oracle | | 1y MAE / fastest 10% | "
              + " | ".join(f"{oracle[c]['mae_delta_1y']:.2f} / {oracle[c]['mae_delta_1y_fastest10']:.2f}"
                           for c in cohorts) + " |", "",
              f"Timings (s): {report['timings_s']}; training per run: "
              + ", ".join(f"{r['arm']} seed {r['seed']} {r['train_s']:.0f}" for r in report["runs"]),
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
