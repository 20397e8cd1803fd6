"""Compare forecasts with observed outcomes, the baselines and (on simulated cohorts) the oracle.

Give the model as --checkpoint (forecasts are made from the outcomes' index dates) or as a
predictions table (--predictions, from any model). Outcomes come from --outcomes FILE, else
from the cohort: the simulator's truth/ or, for real cohorts with later scored visits, a
landmark split. Writes metrics.json, metrics.csv, report.html, figures and the subgroup
(and with --leave-one-site-out, per-site) tables to --out.
See docs/evaluation.md.
"""

from __future__ import annotations

import argparse

from progression.data.horizons import LANDMARK_TOLERANCE_YEARS
from progression.errors import ProgressionError


def _horizons(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--horizons '{text}': give years separated by commas, e.g. 1,2"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--horizons '{text}': years must be > 0")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="model checkpoint to forecast with")
    source.add_argument("--predictions", help="predictions table (CSV) of any model")
    parser.add_argument("--data", required=True, help="evaluation cohort directory (format v1)")
    parser.add_argument("--out", required=True, help="report directory to write")
    parser.add_argument("--outcomes", help="outcomes table (CSV, docs/evaluation.md); default: "
                        "derived from the cohort")
    parser.add_argument("--train-data", help="cohort to fit the baselines on; default: the "
                        "training cohort recorded in the checkpoint, else 5-fold cross-fitting "
                        "on --data")
    parser.add_argument("--horizons", type=_horizons, default=(1.0, 2.0),
                        help="forecast horizons in years, comma-separated (default: 1,2)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="patient-bootstrap resamples for 95%% CIs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap / cross-fitting seed")
    parser.add_argument("--baselines", default="cohort_mean,linear,clinical_matrix,covariates,oracle",
                        help="comma-separated baselines, '' for none (default: %(default)s)")
    parser.add_argument("--event", choices=("rapid", "sdc"), default="rapid",
                        help="progression event: rapid (>= 5 units/yr) or sdc (change > --sdc)")
    parser.add_argument("--sdc", type=float, default=None,
                        help="smallest detectable change in the cohort's score units (default: "
                        "5 SvdH units; 1.79 for a Larsen cohort, docs/scoring.md)")
    parser.add_argument("--tolerance", type=float, default=LANDMARK_TOLERANCE_YEARS,
                        help="landmark: years a later visit may be off index + horizon "
                        "(default: %(default)s)")
    parser.add_argument("--observed-followup", action="store_true",
                        help="simulated cohorts: progression events from reader-noisy scores")
    parser.add_argument("--subgroups", default="",
                        help="covariates (patients.csv / visits.csv columns), comma-separated, to "
                        "report every metric by, besides sex, site, rf, acpa, treatment, "
                        "baseline damage tertile and number of scored visits")
    parser.add_argument("--leave-one-site-out", action="store_true",
                        help="add a leave-one-site-out section: baselines refitted without each "
                        "site and scored on it; a --checkpoint scored on the sites it never "
                        "trained on (it is not retrained)")
    parser.add_argument("--site-column", default="site",
                        help="patients.csv column naming the site (default: %(default)s)")
    parser.add_argument("--model-name", default="model", help="name of the model in the report")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI to log metrics and report to")
    parser.add_argument("--experiment", default="progression", help="MLflow experiment")
    parser.add_argument("--share-identifiers", action="store_true",
                        help="also log per-patient tables and absolute paths to MLflow (default: "
                             "they stay in --out)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def defaults() -> argparse.Namespace:
    """Every option at its default (for callers such as ``progression demo``)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--data", "", "--out", ""])


def run(args: argparse.Namespace) -> int:
    from progression.commands import refuse_output_in_cohort
    from progression.data.outcomes import NoObservedOutcomes
    from progression.evaluate import OutcomeRule, evaluate
    from progression.evaluate.inputs import read_predictions

    if not args.checkpoint and not args.predictions and not args.baselines:
        raise ProgressionError("give --checkpoint or --predictions (or baselines to evaluate)")
    refuse_output_in_cohort(args.out, args.data, "--out")
    # read here: evaluate() tells a table from a checkpoint by the .csv suffix
    source = read_predictions(args.predictions) if args.predictions else args.checkpoint
    rule = OutcomeRule(horizons=tuple(args.horizons), event=args.event, sdc_units=args.sdc,
                       tolerance_years=args.tolerance, observed_followup=args.observed_followup)
    try:
        results = evaluate(
            source,
            args.data,
            outcomes=args.outcomes,
            baselines=[b.strip() for b in args.baselines.split(",") if b.strip()],
            out_dir=args.out,
            train_cohort=args.train_data,
            share_identifiers=args.share_identifiers,
            rule=rule,
            n_boot=args.bootstrap,
            seed=args.seed,
            model_name=args.model_name,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            progress=not args.no_progress,
            subgroups=[c.strip() for c in args.subgroups.split(",") if c.strip()],
            leave_one_site_out=args.leave_one_site_out,
            site_column=args.site_column,
        )
    except NoObservedOutcomes as exc:  # the message stays neutral; the options are ours
        raise ProgressionError(f"{exc}, widen --tolerance (now {args.tolerance:g} y), or pass "
                               "--outcomes FILE") from None
    _print_summary(results)
    return 0


def _print_summary(results: dict) -> None:
    metrics = results["metrics"]
    print(f"evaluated {results['cohort']['n_patients']} patients; report: "
          f"{results['out_dir']}/report.html")
    print(f"changes in {results['cohort']['unit']}; rapid: >= "
          f"{results['cohort']['rapid_rate']:.3g} {results['cohort']['unit']}/yr")
    for label in next(iter(metrics.values()))["horizons"]:
        print(f"\n{label}: {'method':<16} {'MAE':>7} {'AUROC':>7} {'coverage':>9}")
        for method, values in metrics.items():
            row = values["horizons"].get(label, {})

            def cell(name: str, row: dict = row) -> str:
                value = row.get(name, {}).get("value")
                return f"{value:.2f}" if value is not None else "-"

            print(f"    {method:<16} {cell('mae_delta'):>7} {cell('auroc_rapid'):>7} "
                  f"{cell('coverage_delta'):>9}")
    groups = results["subgroups"]
    small = sum(1 for row in groups["rows"] if row["note"])
    print(f"\nsubgroups: {', '.join(v['name'] for v in groups['variables'])} "
          f"({small} of {len(groups['rows'])} subgroup metrics too small to estimate); "
          f"{results['out_dir']}/subgroups.csv")
    if "leave_one_site_out" in results:
        sites = results["leave_one_site_out"]
        print(f"leave-one-site-out: {', '.join(sites['sites'])} scored by "
              f"{', '.join(sites['methods']) or 'no method'}; "
              f"{results['out_dir']}/leave_one_site_out.csv")
    if results.get("skipped"):
        print("\nskipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()))
    if results.get("mlflow_run_id"):
        print(f"\nlogged to MLflow run {results['mlflow_run_id']}")
