"""Run the whole pipeline on a small simulated cohort: simulate, validate, train, predict,
evaluate, enrich, explain. Everything (cohort, MLflow store, outputs) goes under --out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="progression-demo", help="output directory (default: %(default)s)")
    parser.add_argument("--patients", type=int, default=60, help="simulated patients (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="tiny", help="training config (default: the bundled tiny config)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs=2")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from progression.cohort import validate_cohort
    from progression.config import load_config
    from progression.predict import predict_cohort
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.train import fit

    out = Path(args.out).resolve()
    cohort_dir = out / "cohort"
    tracking_uri = f"sqlite:///{out / 'mlruns.db'}"
    cfg = load_config(
        args.config,
        [
            f"data.path={cohort_dir}",
            f"data.cache_dir={out / 'cache'}",
            f"train.output_dir={out / 'runs'}",
            f"tracking.tracking_uri={tracking_uri}",
            "tracking.experiment=progression-demo",
            *args.overrides,
        ],
    )
    started = time.perf_counter()

    t = _step(f"1/5 simulate {args.patients} patients -> {cohort_dir}")
    if (cohort_dir / "patients.csv").exists():
        print("   (cohort already there, reusing it)")
    else:
        simulate_cohort(
            cohort_dir,
            SimulationConfig(n_patients=args.patients, seed=args.seed, image_size=cfg.data.image_size),
        )
    print(f"   done in {time.perf_counter() - t:.0f} s")

    _step("2/5 validate the cohort")
    report = validate_cohort(cohort_dir)
    print(f"   {len(report.errors)} errors, {len(report.warnings)} warnings")
    if report.errors:
        print(report.render())
        return 1

    t = _step(f"3/5 train (config '{args.config}', tracked in {tracking_uri})")
    result = fit(cfg)
    print(f"   run id {result.run_id}\n   checkpoint {result.checkpoint_path}")
    print(f"   done in {time.perf_counter() - t:.0f} s")

    _step("4/5 predict 1- and 2-year change for every patient")
    from progression.io import atomic_write_csv

    predictions = predict_cohort(result.checkpoint_path, cohort_dir, horizons=(1.0, 2.0))
    predictions_csv = out / "predictions.csv"
    atomic_write_csv(predictions_csv, predictions)
    print(f"   {predictions['patient_id'].nunique()} patients -> {predictions_csv}")

    _step("5/5 evaluate against the simulator's truth, baselines and the oracle")
    from progression.commands import evaluate as evaluate_command

    report_dir = out / "report"
    evaluate_command.run(
        argparse.Namespace(
            **{
                **vars(evaluate_command.defaults()),
                "predictions": str(predictions_csv),
                "data": str(cohort_dir),
                "out": str(report_dir),
            }
        )
    )

    print(f"\nFinished in {time.perf_counter() - started:.0f} s. Outputs in {out}:")
    print(f"  predictions      {predictions_csv}")
    print(f"  evaluation       {report_dir / 'report.html'}")
    print(f"  checkpoint       {result.checkpoint_path}")
    print("Open the MLflow UI with:")
    print(f"  mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    print("  then browse http://127.0.0.1:5000 (experiment 'progression-demo')")
    return 0
