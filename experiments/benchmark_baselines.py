"""Benchmark: the model against every baseline and the oracle on a held-out simulated cohort.

Simulates a training and a test cohort (different seeds), trains the model on the training
cohort (``progression.train.fit``), fits every baseline on the same whole training cohort,
and evaluates the checkpoint (forecasting the test cohort from each patient's index visit),
every baseline and the oracle with ``progression.evaluate.evaluate``. Writes the full report under ``--work`` and the
side-by-side table (MAE, RMSE, AUROC, Harrell's C, interval coverage, 95% bootstrap CIs) as
markdown to ``experiments/results/benchmark_baselines.md`` (``_seed<N>.md`` for other
seeds), and prints it.

    nice python experiments/benchmark_baselines.py                    # model + baselines, ~6 min
    python experiments/benchmark_baselines.py --skip-model            # baselines + oracle only
    python experiments/benchmark_baselines.py --train-patients 80 --test-patients 40 \\
        --image-size 64 --config tiny train.max_epochs=4              # quicker

Without ``--skip-model`` radiographs are rendered (the model reads them); with it the
cohorts are tables only, which takes seconds.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from progression.evaluate import evaluate, load_cohort, read_tables
from progression.io import atomic_write_text
from progression.simulate import SimulationConfig, simulate_cohort

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (  # (metric, horizon or None, header)
    ("mae_delta", "1y", "MAE 1y"),
    ("mae_delta", "2y", "MAE 2y"),
    ("rmse_delta", "2y", "RMSE 2y"),
    ("auroc_rapid", "1y", "AUROC rapid 1y"),
    ("auroc_rapid", "2y", "AUROC rapid 2y"),
    ("cindex_event", None, "Harrell's C"),
    ("coverage_delta", "2y", "90% interval coverage 2y"),
)


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    lo, hi = entry.get("ci_lo"), entry.get("ci_hi")
    interval = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{entry['value']:.2f}{interval}"


def markdown_table(results: dict) -> str:
    """Methods as rows, the headline metrics as columns, value [95% CI]."""
    header = "| method | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for method in results["methods"]:
        metrics = results["metrics"][method]
        cells = []
        for metric, horizon, _ in COLUMNS:
            where = metrics["horizons"].get(horizon, {}) if horizon else metrics["overall"]
            cells.append(_cell(where.get(metric)))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _simulate(root: Path, n: int, seed: int, image_size: int, images: bool,
              progress: bool) -> Path:
    cfg = SimulationConfig(n_patients=n, seed=seed, image_size=image_size, render_images=images)
    return Path(simulate_cohort(root, cfg, progress=progress, overwrite=True, reuse=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="outputs/benchmark_baselines",
                        help="directory for cohorts, runs and the report")
    parser.add_argument("--train-patients", type=int, default=300)
    parser.add_argument("--test-patients", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="train cohort seed (test: +1)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--config", default="cpu", help="training config (bundled name or YAML)")
    parser.add_argument("--skip-model", action="store_true",
                        help="baselines and oracle only (no training, no radiographs)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="training config overrides (key=value)")
    args = parser.parse_args(argv)

    work = Path(args.work).resolve()
    images = not args.skip_model
    started = time.perf_counter()
    print(f"== simulate {args.train_patients} training and {args.test_patients} test patients")
    suffix = "" if images else "_tables"
    train_dir = _simulate(work / f"train{suffix}", args.train_patients, args.seed,
                          args.image_size, images, not args.no_progress)
    test_dir = _simulate(work / f"test{suffix}", args.test_patients, args.seed + 1,
                         args.image_size, images, not args.no_progress)

    source, train_seconds = None, 0.0
    if not args.skip_model:
        from progression.config import load_config
        from progression.train import fit

        cfg = load_config(args.config, [
            f"data.path={train_dir}",
            f"data.cache_dir={work / 'cache'}",
            f"train.output_dir={work / 'runs'}",
            f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
            "tracking.experiment=benchmark_baselines",
            *args.overrides,
        ])
        print(f"== train the model (config {args.config} {' '.join(args.overrides)})")
        t = time.perf_counter()
        result = fit(cfg, progress=not args.no_progress)
        train_seconds = time.perf_counter() - t
        print(f"   {train_seconds / 60:.1f} min, checkpoint {result.checkpoint_path}")
        source = result.checkpoint_path  # evaluate forecasts from the outcomes' index dates

    print("== fit the baselines on the training cohort and evaluate on the test cohort")
    load = load_cohort if images else read_tables
    results = evaluate(source, load(test_dir), out_dir=work / "report",
                       train_cohort=load(train_dir), n_boot=args.bootstrap, seed=args.seed,
                       progress=not args.no_progress)
    minutes = (time.perf_counter() - started) / 60
    command = "python experiments/benchmark_baselines.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    cohort = results["cohort"]
    text = "\n".join([
        "# Benchmark: model vs baselines vs oracle (simulated, held-out test cohort)",
        "",
        f"Training cohort: {args.train_patients} simulated patients (seed {args.seed}); test "
        f"cohort: {cohort['n_patients']} patients (seed {args.seed + 1}); "
        f"{'radiographs ' + str(args.image_size) + ' px' if images else 'no radiographs'}. "
        f"Outcomes: the simulator's true change; rapid = >= 5 SvdH units/yr; Harrell's C for "
        f"time to rapid progression over {cohort['survival']['median_followup_years']:g} years "
        f"of follow-up ({cohort['survival']['events']} events). Values: estimate "
        f"[95% patient-bootstrap CI, {args.bootstrap} resamples].",
        "",
        markdown_table(results),
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()} {platform.system()}, {_cpus()} CPU cores, no GPU; "
        f"total {minutes:.1f} min (training {train_seconds / 60:.1f} min).  ",
        f"Full report: `{Path(args.work) / 'report' / 'report.html'}` (under --work).",
        "",
    ])
    # One file per seed, so a second run does not overwrite the first one's table.
    results = RESULTS / ("benchmark_baselines.md" if args.seed == 0
                         else f"benchmark_baselines_seed{args.seed}.md")
    atomic_write_text(results, text)
    print("\n" + text)
    print(f"written to {results}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
