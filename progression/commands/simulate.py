"""Write a synthetic cohort in format v1 (patients, visits, radiographs, joint scores)
with its ground truth under OUT/truth (true damage, follow-up, oracle forecasts).

Example: progression simulate --out cohort --patients 200 --seed 0
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new directory for the cohort")
    parser.add_argument(
        "--patients", type=int, default=200, help="number of patients (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; same seed = same files (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size", type=int, default=256,
        help="radiograph height in pixels; width follows the hand/foot (or --style film) aspect "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--scored-fraction", type=float, default=0.6,
        help="fraction of visits with reader SvdH scores (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--sites",
        type=int,
        default=3,
        help="hospitals with different imaging (default: %(default)s)",
    )
    parser.add_argument(
        "--dicom-fraction", type=float, default=0.5,
        help="fraction of radiographs written as DICOM, the rest PNG/TIFF/JPEG (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--style", default="default",
        help="film style, the equipment's look (the truth does not change): default, or cassette "
        "(older CR room: wider field, log response, grainy noise, looser positioning, "
        "collimation borders, L/R markers) (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--scoring", choices=("svdh", "larsen"), default="svdh",
        help="scoring system of the cohort's totals: svdh, or larsen (Larsen 1995, 0-160; "
        "simulation convention SvdH x 160/448, docs/scoring.md) (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--no-images", action="store_true", help="tables and truth only (fast)")
    parser.add_argument(
        "--workers", type=int, default=0,
        help="processes; 0 = one per CPU core. The output does not depend on it (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing simulated cohort at --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    import time

    import pandas as pd

    from progression.scoring import scoring_system
    from progression.simulate import SimulationConfig, simulate_cohort

    cfg = SimulationConfig(
        n_patients=args.patients,
        seed=args.seed,
        image_size=args.image_size,
        scored_fraction=args.scored_fraction,
        n_sites=args.sites,
        dicom_fraction=args.dicom_fraction,
        style=args.style,
        render_images=not args.no_images,
        scoring=args.scoring,
    )
    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    started = time.perf_counter()
    out = simulate_cohort(
        args.out, cfg, workers=workers, progress=not args.no_progress, overwrite=args.overwrite
    )
    seconds = time.perf_counter() - started
    truth = pd.read_csv(out / "truth" / "truth.csv")
    n_images = len(pd.read_csv(out / "images.csv"))
    print(
        f"cohort: {out} ({cfg.n_patients} patients, {n_images} radiographs, {cfg.style} films) "
        f"in {seconds:.0f} s"
    )
    print(
        f"truth:  {out / 'truth'} (truth.csv, truth_visits.csv, followup.csv, joint_locations.csv)"
    )
    system = scoring_system(cfg.scoring)
    print(
        f"true 1-year change: mean {truth['delta_true_1y'].mean():.2f} {system.unit}, "
        f"rapid progressors (>= {system.rapid_rate:.3g}/yr) "
        f"{100 * truth['rapid_true_1y'].mean():.1f}%"
    )
    return 0
