"""Run the whole pipeline on small simulated cohorts: simulate a training cohort and an
independent held-out cohort, validate, train the tiny model (tracked in MLflow), predict
the held-out patients, and evaluate them against the simulator's truth, the baselines and
the oracle. Everything (cohorts, MLflow store, outputs) goes under --out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="progression-demo", help="output directory (default: %(default)s)")
    parser.add_argument("--patients", type=int, default=80,
                        help="simulated training patients; the held-out cohort has half as many "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="tiny", help="training config (default: the bundled tiny config)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs=2")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _simulate(path: Path, n_patients: int, seed: int, image_size: int, progress: bool) -> None:
    from progression.simulate import SimulationConfig, simulate_cohort

    # The demo's own folder: a rerun reuses a cohort made with the same settings and replaces
    # one made with others or left unfinished by an interrupted run.
    simulate_cohort(path, SimulationConfig(n_patients=n_patients, seed=seed, image_size=image_size),
                    progress=progress, overwrite=True, reuse=True)


def run(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from progression.cohort import validate_cohort
    from progression.config import load_config
    from progression.evaluate import evaluate
    from progression.io import atomic_write_csv
    from progression.predict import predict_cohort
    from progression.train import fit

    progress = not args.no_progress
    out = Path(args.out).resolve()
    train_dir, test_dir = out / "cohort_train", out / "cohort_test"
    tracking_uri = f"sqlite:///{out / 'mlruns.db'}"
    cfg = load_config(
        args.config,
        [
            f"data.path={train_dir}",
            f"data.cache_dir={out / 'cache'}",
            f"train.output_dir={out / 'runs'}",
            f"tracking.tracking_uri={tracking_uri}",
            "tracking.experiment=progression-demo",
            *args.overrides,
        ],
    )
    started = time.perf_counter()
    n_test = max(args.patients // 2, 10)

    t = _step(f"1/5 simulate {args.patients} training and {n_test} held-out patients")
    _simulate(train_dir, args.patients, args.seed, cfg.data.image_size, progress)
    _simulate(test_dir, n_test, args.seed + 1, cfg.data.image_size, progress)
    print(f"   done in {time.perf_counter() - t:.0f} s")

    _step("2/5 validate both cohorts")
    for path in (train_dir, test_dir):
        report = validate_cohort(path, progress=False)
        print(f"   {path.name}: {len(report.errors)} errors, {len(report.warnings)} warnings")
        if report.errors:
            print(report.render())
            return 1

    t = _step(f"3/5 train config '{args.config}' (MLflow store {tracking_uri})")
    result = fit(cfg, progress=progress)
    print(f"   run id {result.run_id}\n   checkpoint {result.checkpoint_path}")
    print(f"   done in {time.perf_counter() - t:.0f} s")

    _step("4/5 predict the held-out patients' 1- and 2-year change")
    predictions = predict_cohort(result.checkpoint_path, test_dir, horizons=(1.0, 2.0),
                                 progress=progress, cache_dir=cfg.data.cache_dir)
    predictions_csv = out / "predictions.csv"
    atomic_write_csv(predictions_csv, predictions)
    print(f"   {predictions['patient_id'].nunique()} patients -> {predictions_csv}")

    _step("5/5 evaluate against the truth, the baselines and the oracle")
    report_dir = out / "report"
    results = evaluate(predictions, test_dir, out_dir=report_dir, train_cohort=train_dir,
                       n_boot=200, seed=args.seed, tracking_uri=tracking_uri,
                       experiment="progression-demo", progress=progress)
    one_year = {m: v["horizons"].get("1y", {}) for m, v in results["metrics"].items()}
    print(f"   {'method':<16} {'MAE 1y':>7} {'AUROC 1y':>9}")
    for method, row in one_year.items():
        mae = row.get("mae_delta", {}).get("value")
        auc = row.get("auroc_rapid", {}).get("value")
        print(f"   {method:<16} {mae if mae is None else f'{mae:7.2f}':>7} "
              f"{auc if auc is None else f'{auc:9.2f}':>9}")

    print(f"\nFinished in {time.perf_counter() - started:.0f} s. Outputs in {out}:")
    print(f"  predictions   {predictions_csv}")
    print(f"  evaluation    {report_dir / 'report.html'}")
    print(f"  checkpoint    {result.checkpoint_path}")
    print("The tiny config proves the pipeline, not accuracy (64 px films hide small erosions);")
    print("see docs/model.md for the 256 px results. Open the MLflow UI with:")
    print(f"  mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    # MLflow 3.17's UI starts on its GenAI pages; the parameter opens the runs table instead.
    experiment = MlflowClient(tracking_uri).get_experiment_by_name("progression-demo")
    print(f"  then browse http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
          "?workflowType=machine_learning")
    return 0
