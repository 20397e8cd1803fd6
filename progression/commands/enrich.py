"""Select predicted fast progressors and size an enriched two-arm trial.

Reads a predictions table (`progression predict`), enrols the patients predicted to
progress fastest, and sizes a trial on the mean SvdH change and on the proportion of
rapid progressors, compared with the clinical matrix model and with no enrichment.
With --outcomes (a simulated cohort or its truth.csv) it also checks the selection and
the sizes against what really happened, by simulated trials. Writes selected.csv,
enrichment.json, report.html and its PNG figures to --out. See docs/enrichment.md.
"""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True,
                        help="predictions CSV written by `progression predict`")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--horizon", type=float, default=1.0,
                        help="forecast horizon in years the trial's endpoint is measured at "
                             "(default 1)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--top-fraction", type=float,
                      help="enrol this fraction of the screened patients, fastest first "
                           "(default 0.3 when no rule is given)")
    rule.add_argument("--p-rapid-threshold", type=float,
                      help="enrol every patient with p_rapid >= this")
    rule.add_argument("--enrol", type=int, help="enrol this many patients, fastest first")
    parser.add_argument("--effect", type=float, default=0.5,
                        help="treatment effect: relative reduction of mean progression "
                             "(default 0.5 = halves it)")
    parser.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level")
    parser.add_argument("--power", type=float, default=0.8, help="target power")
    parser.add_argument("--allocation", type=float, default=1.0,
                        help="allocation ratio treated:control (default 1)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="fraction of enrolled patients expected to miss the endpoint")
    parser.add_argument("--method", choices=("t", "z"), default="t",
                        help="mean-change sizing: exact t-test power (default) or z approximation")
    parser.add_argument("--sizing", choices=("simulation", "formula"), default="simulation",
                        help="sizes of both endpoints: simulated from the forecasts with the "
                             "planned tests (default; right for heavy-tailed SvdH change) or "
                             "the closed-form formulas")
    parser.add_argument("--predictive", choices=("count", "normal"), default="count",
                        help="law of one patient's change around its forecast for the "
                             "simulation: gamma-Poisson count of score steps (default) or normal")
    parser.add_argument("--interval-level", type=float, default=0.9,
                        help="coverage of delta_svdh_lo/hi in the predictions (default 0.9)")
    parser.add_argument("--outcomes",
                        help="realised outcomes to validate the selection and the sizes: a "
                             "simulated cohort directory (its truth/), its truth/truth.csv, a "
                             "real cohort with later scored visits, or an outcomes table CSV")
    parser.add_argument("--reference-predictions",
                        help="the model's forecasts of other patients with outcomes (e.g. its "
                             "validation split): size the model's and the unenriched trial from "
                             "the realised change of those the same rule enrols, not from the "
                             "forecasts (right even when the forecasts' spread is off)")
    parser.add_argument("--reference-outcomes",
                        help="outcomes of the --reference-predictions patients (same kinds as "
                             "--outcomes)")
    matrix = parser.add_mutually_exclusive_group()
    matrix.add_argument("--matrix-predictions",
                        help="predictions CSV of the clinical matrix model on the same patients")
    matrix.add_argument("--matrix-from", metavar="COHORT_DIR",
                        help="fit the clinical matrix on --matrix-train and predict this cohort")
    parser.add_argument("--matrix-train", metavar="TRAIN_COHORT_DIR",
                        help="cohort the clinical matrix is fitted on (with --matrix-from)")
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI; no logging "
                             "when neither is set)")
    parser.add_argument("--experiment", default="progression", help="MLflow experiment name")
    parser.add_argument("--source-run", metavar="RUN_ID",
                        help="MLflow run that trained the model behind --predictions (tagged "
                             "progression.source_run on the enrich run)")
    parser.add_argument("--share-identifiers", action="store_true",
                        help="also log selected.csv (patient ids) and absolute paths to MLflow")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulations (sizing and simulated trials)")
    parser.add_argument("--n-sim", type=int, default=1000,
                        help="simulated trials per design (with --outcomes)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from progression.commands import refuse_output_in_cohort
    from progression.data.outcomes import NoObservedOutcomes
    from progression.enrich.analysis import run_enrichment
    from progression.enrich.outcomes import load_outcomes
    from progression.enrich.plan import TrialDesign
    from progression.enrich.report import write_report
    from progression.enrich.selection import SelectionRule, read_predictions
    from progression.enrich.tracking import log_enrichment
    from progression.errors import ProgressionError

    for cohort in (args.outcomes, args.matrix_from, args.matrix_train):
        if cohort and Path(cohort).is_dir():
            refuse_output_in_cohort(args.out, cohort, "--out")
    if args.matrix_from and not args.matrix_train:
        raise ProgressionError("--matrix-from needs --matrix-train (the cohort to fit it on)")
    if args.matrix_train and not args.matrix_from:
        raise ProgressionError("--matrix-train needs --matrix-from (the cohort to predict)")
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if tracking_uri:
        from progression.tracking import check_tracking

        check_tracking(tracking_uri)  # fail before the work, not after it
    given = (args.top_fraction, args.p_rapid_threshold, args.enrol)
    rule = (SelectionRule(args.top_fraction, args.p_rapid_threshold, args.enrol)
            if any(v is not None for v in given) else SelectionRule(top_fraction=0.3))
    design = TrialDesign(horizon=args.horizon, effect=args.effect, alpha=args.alpha,
                         power=args.power, allocation=args.allocation, dropout=args.dropout,
                         interval_level=args.interval_level, method=args.method,
                         sizing=args.sizing, predictive=args.predictive, seed=args.seed)
    predictions = read_predictions(args.predictions)
    matrix, matrix_source = None, ""
    if args.matrix_predictions:
        matrix, matrix_source = read_predictions(args.matrix_predictions), args.matrix_predictions
    elif args.matrix_from:
        from progression.enrich.analysis import predict_matrix

        matrix = predict_matrix(args.matrix_train, args.matrix_from, design.horizon,
                                index_dates=predictions[["patient_id", "index_date"]])
        matrix_source = f"clinical matrix fitted on {args.matrix_train}"
    try:
        outcomes = load_outcomes(args.outcomes, design.horizon) if args.outcomes else None
    except NoObservedOutcomes as exc:  # the message stays neutral; the options are ours
        raise ProgressionError(f"{exc}, or pass an outcomes table (CSV) as --outcomes") from None
    reference = _reference(args, predictions, rule, design)

    result = run_enrichment(
        predictions, rule, design, matrix=matrix, outcomes=outcomes, n_sim=args.n_sim,
        seed=args.seed, progress=not args.no_progress, source=args.predictions,
        matrix_source=matrix_source or "clinical-matrix predictions", reference=reference,
    )
    inputs = {"predictions": str(args.predictions), "matrix": matrix_source,
              "outcomes": str(args.outcomes or "")}
    out = Path(args.out)
    summary = write_report(result, out, inputs)
    if tracking_uri:
        log_enrichment(summary, out, tracking_uri, args.experiment, source_run=args.source_run,
                       share_identifiers=args.share_identifiers)
    model = summary["selectors"]["model"]["mean_change"]
    none = summary["selectors"]["none"]["mean_change"]
    if model["enrolled_per_arm"] and none["enrolled_per_arm"]:
        log.info("enriched trial: %d patients (%d screened) vs %d without enrichment",
                 model["enrolled_per_arm"]["total"], model["screened"],
                 none["enrolled_per_arm"]["total"])
    print(f"wrote {out / 'report.html'}, {out / 'enrichment.json'}, {out / 'selected.csv'}")
    return 0


def _reference(args: argparse.Namespace, predictions, rule, design):
    """The reference patients' forecasts and outcomes (--reference-predictions/-outcomes),
    read at the fraction the rule enrols from the screened forecasts; None when not given."""
    from progression.enrich.analysis import reference_changes
    from progression.enrich.outcomes import load_outcomes
    from progression.enrich.selection import at_horizon, read_predictions, select
    from progression.errors import ProgressionError

    if bool(args.reference_predictions) != bool(args.reference_outcomes):
        raise ProgressionError(
            "--reference-predictions and --reference-outcomes go together: the forecasts of "
            "the reference patients and their outcomes"
        )
    if not args.reference_predictions:
        return None
    screened = at_horizon(predictions, design.horizon, args.predictions)
    fraction = len(select(screened, rule, args.predictions)) / len(screened)
    return reference_changes(
        read_predictions(args.reference_predictions),
        load_outcomes(args.reference_outcomes, design.horizon), rule, design.horizon,
        fraction, args.reference_predictions)
