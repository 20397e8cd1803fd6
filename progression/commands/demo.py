"""Show what the films add, on simulated cohorts: simulate a training cohort and an
independent held-out cohort, validate them, train the model (tracked in MLflow) and the same
model without films, predict the held-out patients and evaluate both against the simulator's
truth, the baselines and the oracle. Everything (cohorts, MLflow store, outputs) goes under
--out.

By default the model starts from the reader bundled for the project's simulated films
(``progression.trained.bundled_reader``): its image encoder is kept and only the sequence
model trains (``train.init_encoder``, ``train.image_epochs=0``), so films are read as well as
76 minutes of image training taught it, in a few minutes on a CPU. ``--reader none`` trains
the ``--config`` model (default ``tiny``) from scratch instead: the fast path for tests."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

# The held-out cohort's seed is the training seed plus this: far from the bundled reader's own
# training cohort (seed 1) and from the training cohorts of nearby demo seeds.
HELD_OUT_SEED_OFFSET = 1000
# Sequence-stage epochs on a kept reader (experiments/sequence_variants.py's default).
SEQUENCE_EPOCHS = 40
# The final table: evaluate's method keys and how they are shown, in this order.
METHODS = {
    "model": "model: films + covariates",
    "covariates_only": "same model without films",
    "covariates": "gradient boosting, covariates",
    "linear": "linear extrapolation",
    "clinical_matrix": "clinical matrix",
    "cohort_mean": "cohort mean",
    "oracle": "oracle (knows the truth)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="progression-demo", help="output directory (default: %(default)s)")
    parser.add_argument("--patients", type=int, default=200,
                        help="simulated training patients; the held-out cohort has half as many "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"training cohort and training seed; the held-out cohort uses "
                             f"seed + {HELD_OUT_SEED_OFFSET} (default: %(default)s)")
    parser.add_argument("--reader", default="bundled",
                        help="checkpoint (or MLflow model URI) whose image encoder is kept, so only "
                             "the sequence model trains; 'bundled': the reader shipped for the "
                             "project's simulated films (256 px; not for real radiographs); "
                             "'none': train the --config model from scratch (default: %(default)s)")
    parser.add_argument("--config", default=None,
                        help="training config (default: the reader's own config; 'tiny' with "
                             "--reader none)")
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


def _configs(args: argparse.Namespace, out: Path) -> tuple[Any, Any, str | None]:
    """(the model's config, the same without films, the reader kept or None)."""
    from progression.config import load_config
    from progression.trained import bundled_reader, load_trained

    reader = None if args.reader == "none" else (
        str(bundled_reader()) if args.reader == "bundled" else args.reader)
    common = [
        f"data.path={out / 'cohort_train'}",
        f"data.cache_dir={out / 'cache'}",
        f"train.output_dir={out / 'runs'}",
        f"tracking.tracking_uri=sqlite:///{out / 'mlruns.db'}",
        "tracking.experiment=progression-demo",
        f"train.seed={args.seed}",
    ]
    if reader is None:
        cfg = load_config(args.config or "tiny", [*common, *args.overrides])
    else:
        base = None if args.config else load_trained(reader).config
        keep = [f"train.init_encoder={reader}", "train.image_epochs=0",
                f"train.max_epochs={SEQUENCE_EPOCHS}"]
        cfg = load_config(args.config, [*common, *keep, *args.overrides], base=base)
    films = load_config(None, ["tracking.run_name=model"], base=cfg)
    no_films = load_config(None, ["model.use_images=false", "train.init_encoder=",
                                  "train.image_epochs=0", "tracking.run_name=covariates-only"],
                           base=cfg)
    return films, no_films, reader


def _train_and_predict(cfg: Any, test_dir: Path, predictions_csv: Path, progress: bool) -> Any:
    """Fit ``cfg``, forecast the held-out patients' 1- and 2-year change, write the CSV."""
    from progression.io import atomic_write_csv
    from progression.predict import predict_cohort
    from progression.train import fit

    result = fit(cfg, progress=progress)
    print(f"   run id {result.run_id}\n   checkpoint {result.checkpoint_path}")
    predictions = predict_cohort(result.checkpoint_path, test_dir, horizons=(1.0, 2.0),
                                 progress=progress, cache_dir=cfg.data.cache_dir)
    atomic_write_csv(predictions_csv, predictions)
    print(f"   forecasts for {predictions['patient_id'].nunique()} held-out patients -> "
          f"{predictions_csv}")
    return result


def _one_year(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per method: 1-year MAE of the change and AUROC for rapid progression."""
    rows = {}
    for method, values in results["metrics"].items():
        row = values["horizons"].get("1y", {})
        rows[method] = {"mae": row.get("mae_delta", {}).get("value"),
                        "auroc": row.get("auroc_rapid", {}).get("value")}
    return rows


def _print_table(rows: dict[str, dict[str, float | None]]) -> None:
    def cell(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:{width}.2f}"

    print(f"   {'method':<31} {'MAE 1y':>7} {'AUROC rapid 1y':>15}")
    for method in [*(m for m in METHODS if m in rows), *(m for m in rows if m not in METHODS)]:
        print(f"   {METHODS.get(method, method):<31} {cell(rows[method]['mae'], 7)} "
              f"{cell(rows[method]['auroc'], 15)}")


def _verdict(rows: dict[str, dict[str, float | None]]) -> str:
    """What the table says about the films, in words, whichever way it came out."""
    mae = {m: rows.get(m, {}).get("mae") for m in ("model", "covariates_only", "linear")}
    if any(v is None for v in mae.values()):
        return "The 1-year MAE is missing for the model or a baseline (see the report)."
    model, no_films, linear = mae["model"], mae["covariates_only"], mae["linear"]
    gain = 100 * (1 - model / no_films)
    if model < no_films and model < linear:
        return (f"What the films add: the model's 1-year MAE is {model:.2f}, {gain:.0f}% below "
                f"the same model without films ({no_films:.2f}) and below linear extrapolation "
                f"({linear:.2f}).")
    behind = [name for name, value in (("the same model without films", no_films),
                                       ("linear extrapolation", linear)) if model >= value]
    return (f"On these held-out patients the model (1-year MAE {model:.2f}) is NOT ahead of "
            f"{' and '.join(behind)} ({no_films:.2f} without films, {linear:.2f} linear): "
            "with this few patients the ranking moves from seed to seed (docs/model.md).")


def _evaluate(out: Path, test_dir: Path, train_dir: Path, seed: int, uri: str,
              progress: bool) -> dict[str, dict[str, float | None]]:
    """Both models and the baselines on the held-out patients; the 1-year table rows."""
    from progression.evaluate import evaluate

    common = dict(train_cohort=train_dir, n_boot=200, seed=seed, tracking_uri=uri,
                  experiment="progression-demo", progress=progress)
    results = evaluate(out / "predictions.csv", test_dir, out_dir=out / "report",
                       run_name="evaluate-model", **common)
    no_films = evaluate(out / "predictions_covariates_only.csv", test_dir, baselines=(),
                        out_dir=out / "report_covariates_only", model_name="covariates_only",
                        run_name="evaluate-covariates-only", **common)
    return {**_one_year(results), **_one_year(no_films)}


def run(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from progression.cohort import validate_cohort

    progress = not args.no_progress
    out = Path(args.out).resolve()
    train_dir, test_dir = out / "cohort_train", out / "cohort_test"
    cfg, no_films_cfg, reader = _configs(args, out)
    uri = cfg.tracking.tracking_uri
    started = time.perf_counter()
    n_test = max(args.patients // 2, 10)
    size = cfg.data.image_size

    t = _step(f"1/5 simulate {args.patients} training and {n_test} held-out patients "
              f"({size} px films)")
    _simulate(train_dir, args.patients, args.seed, size, progress)
    _simulate(test_dir, n_test, args.seed + HELD_OUT_SEED_OFFSET, size, progress)
    print(f"   done in {time.perf_counter() - t:.0f} s")

    _step("2/5 validate both cohorts")
    for path in (train_dir, test_dir):
        report = validate_cohort(path, progress=False)
        print(f"   {path.name}: {len(report.errors)} errors, {len(report.warnings)} warnings")
        if report.errors:
            print(report.render())
            return 1

    how = (f"sequence model on the kept reader {reader}" if reader
           else f"config '{args.config or 'tiny'}' from scratch")
    t = _step(f"3/5 train the model: {how} (MLflow store {uri})")
    model = _train_and_predict(cfg, test_dir, out / "predictions.csv", progress)
    print(f"   done in {time.perf_counter() - t:.0f} s")
    t = _step("4/5 train the same model without films (covariates and scored history only)")
    _train_and_predict(no_films_cfg, test_dir, out / "predictions_covariates_only.csv", progress)
    print(f"   done in {time.perf_counter() - t:.0f} s")

    _step("5/5 evaluate the held-out patients against the truth, the baselines and the oracle")
    rows = _evaluate(out, test_dir, train_dir, args.seed, uri, progress)
    _print_table(rows)
    print(f"   {_verdict(rows)}")

    print(f"\nFinished in {time.perf_counter() - started:.0f} s. Outputs in {out}:")
    print(f"  predictions   {out / 'predictions.csv'} (without films: "
          "predictions_covariates_only.csv)")
    print(f"  evaluation    {out / 'report' / 'report.html'}")
    print(f"  checkpoint    {model.checkpoint_path}")
    if reader:
        print("The bundled reader reads the project's simulated films only, not real radiographs;")
        print("for real films train a reader of your own (docs/model.md). Open the MLflow UI with:")
    else:
        print("A model trained from scratch at this size proves the pipeline, not accuracy;")
        print("see docs/model.md for the 256 px results. Open the MLflow UI with:")
    print(f"  mlflow ui --backend-store-uri {uri} --port 5000")
    # MLflow 3.17's UI starts on its GenAI pages; the parameter opens the runs table instead.
    experiment = MlflowClient(uri).get_experiment_by_name("progression-demo")
    print(f"  then browse http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
          "?workflowType=machine_learning")
    return 0
