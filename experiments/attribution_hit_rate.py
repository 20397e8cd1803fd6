"""Do Grad-CAM heatmaps point at the joints that changed? Hit rate vs random on simulated data.

Simulates a training cohort and an independent test cohort (another seed), trains a model on
the first (or takes --checkpoint), computes Grad-CAM maps over the index-visit films of the
test cohort, and reports the top-k joint hit rate against the simulator's truth next to the
exact rate for k joints drawn at random (see progression.explain.localisation). The encoder's
per-joint head ranks the same films' joints a second way, by the change it reads since the
region's first film, against the same truth and baseline. Writes
attribution_hit_rate.json and .md to --results (default experiments/results/) and prints the
table.

    python experiments/attribution_hit_rate.py --patients 120 --test-patients 60 \
        --image-size 128 --image-epochs 20 --out /tmp/hit_rate
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MEANING = {
    "progressed_before_index": "change-forecast map vs joints that worsened between the first and the index visit",
    "progresses_next_year": "change-forecast map vs joints that worsen in the year after the index",
    "damaged_at_index": "damage map vs joints with any damage at the index visit",
    "joint_head_progressed_before_index": "per-joint head's change since the first film vs "
    "joints that worsened between the first and the index visit",
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120, help="training cohort size")
    parser.add_argument("--test-patients", type=int, default=60, help="test cohort size")
    parser.add_argument("--image-size", type=int, default=128, help="pixels per film side")
    parser.add_argument("--image-epochs", type=int, default=20, help="image-stage epochs")
    parser.add_argument("--width", type=int, default=8, help="small_cnn width (channels of stage 1)")
    parser.add_argument("--sequence-epochs", type=int, default=10, help="sequence-stage epochs")
    parser.add_argument("--rate-median", type=float, default=0.9,
                        help="simulated SvdH units/yr of an average patient (simulator default 0.9)")
    parser.add_argument("--k", type=int, default=3, help="top-k joints per film")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="use this trained model instead of training one")
    parser.add_argument("--out", default="hit_rate_work", help="working directory (cohorts, runs)")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON and markdown go")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from progression.cohort import read_cohort
    from progression.config import load_config
    from progression.explain.localisation import index_film_heatmaps, localisation_hit_rates
    from progression.io import atomic_write_text
    from progression.simulate import SimulationConfig, simulate_cohort
    from progression.trained import load_trained

    work = Path(args.out).resolve()
    start = time.perf_counter()
    cohorts = {}
    wanted = [("test", args.test_patients, args.seed + 1000)]
    if args.checkpoint is None:  # a given model needs no training cohort
        wanted.insert(0, ("train", args.patients, args.seed))
    for name, n, seed in wanted:
        cohorts[name] = work / f"{name}_{n}_{args.image_size}px_seed{seed}"
        simulate_cohort(cohorts[name], SimulationConfig(
            n_patients=n, seed=seed, image_size=args.image_size, rate_median=args.rate_median),
            progress=not args.no_progress, overwrite=True, reuse=True)
    checkpoint = args.checkpoint
    if checkpoint is None:
        from progression.train import fit

        cfg = load_config("tiny", [
            f"data.path={cohorts['train']}", f"data.image_size={args.image_size}",
            f"data.cache_dir={work / 'cache'}", f"train.output_dir={work / 'runs'}",
            f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}", "tracking.log_model=false",
            f"train.image_epochs={args.image_epochs}", f"model.backbone_kwargs={{width: {args.width}}}",
            f"train.max_epochs={args.image_epochs + args.sequence_epochs}",
            f"train.seed={args.seed}", f"train.progress={not args.no_progress}",
        ])
        checkpoint = str(fit(cfg).checkpoint_path)
    trained = time.perf_counter()
    test = read_cohort(cohorts["test"])
    films = index_film_heatmaps(checkpoint, test, test.patient_ids, progress=not args.no_progress)
    size = load_trained(checkpoint).config.data.image_size
    rates = localisation_hit_rates(films, cohorts["test"], size, k=args.k, seed=args.seed)
    done = time.perf_counter()

    result = {
        "settings": vars(args),
        "checkpoint": checkpoint,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "seconds_train": round(trained - start, 1),
        "seconds_heatmaps": round(done - trained, 1),
        "hit_rates": {name: asdict(rate) for name, rate in rates.items()},
    }
    lines = [
        f"| truth (k = {args.k}) | films | hit rate | random | precision | random |",
        "|---|---|---|---|---|---|",
    ]
    for name, rate in rates.items():
        lines.append(f"| {MEANING[name]} | {rate.n_images} | {rate.hit_rate:.2f} | "
                     f"{rate.random_hit_rate:.2f} | {rate.precision:.2f} | {rate.random_precision:.2f} |")
    table = "\n".join(lines)
    results = Path(args.results)
    atomic_write_text(results / "attribution_hit_rate.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(results / "attribution_hit_rate.md", table + "\n")
    print(table)
    print(f"train {result['seconds_train']} s, heatmaps {result['seconds_heatmaps']} s")
    return result


if __name__ == "__main__":
    main()
