"""Per-patient forecast report: timeline of radiographs with heatmaps, scores over time, the
forecast with its interval in plain language, and the clinical values that moved it.

Writes OUT/<patient_id>/report.html with its figures in OUT/<patient_id>/figures/ (PNG,
relative links: the folder is self-contained and opens from disk). With --model-card, also
(re)writes the model card of the checkpoint, with evaluation metrics from --metrics.
The cohort directory is only read.
"""

from __future__ import annotations

import argparse
import re


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="FILE",
                        help="trained model: .ckpt path or MLflow URI (runs:/..., models:/...)")
    parser.add_argument("--data", metavar="DIR", help="cohort directory (format v1)")
    parser.add_argument("--patient", action="append", default=[], metavar="ID",
                        help="patient_id to explain; repeat for several patients")
    parser.add_argument("--out", metavar="DIR", help="output directory for the reports")
    parser.add_argument("--horizons", default="1,2", metavar="YEARS",
                        help="forecast horizons in years, comma separated (default 1,2)")
    parser.add_argument("--steps", type=int, default=32,
                        help="integrated-gradient steps (more = more exact effects; default 32)")
    parser.add_argument("--model-card", metavar="FILE",
                        help="also write the model card (markdown) of the checkpoint to FILE")
    parser.add_argument("--metrics", metavar="JSON",
                        help="evaluation metrics for the model card: metrics.json written by "
                             "`progression evaluate`, or a JSON object name -> value")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def safe_name(patient_id: str) -> str:
    """A folder name for a patient id (anything but letters, digits, . _ - becomes _)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", patient_id) or "_"


def _horizons(text: str) -> tuple[float, ...]:
    from progression.errors import ConfigError

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--horizons '{text}': give positive years separated by commas, e.g. 1,2")
    return values


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from progression.errors import ConfigError

    if not args.patient and not args.model_card:
        raise ConfigError("nothing to do: give --patient ID (with --data and --out) and/or "
                          "--model-card FILE")
    if args.model_card:
        from progression.train.model_card import write_checkpoint_card

        path = write_checkpoint_card(args.checkpoint, args.model_card, metrics_path=args.metrics)
        print(f"model card: {path}")
    if not args.patient:
        return 0
    if not args.data or not args.out:
        raise ConfigError("--patient needs --data DIR (the cohort) and --out DIR (for the reports)")
    cohort_dir, out = Path(args.data).resolve(), Path(args.out).resolve()
    if out == cohort_dir or cohort_dir in out.parents:
        raise ConfigError(f"--out {args.out} is inside the cohort directory; reports are never "
                          "written there: choose a directory outside it")
    horizons = _horizons(args.horizons)
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")

    from progression.cohort import read_cohort
    from progression.explain.patient import explain_patient
    from progression.explain.report import render_report

    cohort = read_cohort(cohort_dir)
    for pid in tqdm(args.patient, desc="patients", unit="report", disable=args.quiet):
        report = explain_patient(args.checkpoint, cohort, pid, horizons=horizons, steps=args.steps)
        path = render_report(report, out / safe_name(pid))
        print(f"{pid}: {path}")
    return 0
