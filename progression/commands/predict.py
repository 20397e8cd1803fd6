"""Forecast radiographic change for every patient of a cohort and write the predictions table.

Changes are in the units of the checkpoint's scoring system (SvdH, or Larsen for a model
trained on a Larsen-scored cohort; docs/scoring.md); the columns keep their names.

Examples:
  progression predict --checkpoint runs/<run_id>/checkpoints/best.ckpt --data cohort/ --out predictions.csv
  progression predict --checkpoint runs:/<run_id>/model --data cohort/ --out p.csv --horizons 1,2,5
  progression predict --checkpoint models:/progression-ra@champion --data cohort/ --out p.csv
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True,
                        help="a .ckpt file or an MLflow model URI (runs:/ID/model, models:/NAME@ALIAS)")
    parser.add_argument("--data", required=True, help="cohort directory (format v1); scores not needed")
    parser.add_argument("--out", required=True, help="predictions CSV to write (atomically)")
    parser.add_argument("--horizons", default="1,2",
                        help="forecast horizons in years, comma-separated (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="patients per batch (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None,
                        help="decoded-image cache (default: the training config's, else "
                        "$PROGRESSION_CACHE_DIR or ~/.cache/progression)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI for runs:/ and models:/ (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from progression.commands import refuse_output_in_cohort
    from progression.errors import ConfigError
    from progression.io import atomic_write_csv
    from progression.predict import predict_cohort
    from progression.scoring import scoring_system

    refuse_output_in_cohort(args.out, args.data, "--out")
    try:
        horizons = tuple(float(h) for h in args.horizons.split(",") if h.strip())
    except ValueError:
        raise ConfigError(f"--horizons '{args.horizons}': give years separated by commas, e.g. 1,2") from None
    predictions = predict_cohort(args.checkpoint, args.data, horizons=horizons,
                                 batch_size=args.batch_size, progress=not args.no_progress,
                                 cache_dir=args.cache_dir, tracking_uri=args.tracking_uri)
    atomic_write_csv(args.out, predictions)
    n_notes = int((predictions["note"] != "").sum() // max(1, len(horizons)))
    unit = scoring_system(predictions.attrs.get("scoring")).unit
    print(f"{predictions['patient_id'].nunique()} patients x {len(horizons)} horizons -> {args.out}"
          + (f" ({n_notes} with a note, e.g. covariates only)" if n_notes else ""))
    print(f"changes (delta_svdh_*) and svdh_index_pred in {unit}")
    return 0
