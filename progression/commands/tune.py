"""Hyper-parameter search with Optuna, tracked in MLflow (parent run per study, child run per
trial). Re-running the same command resumes the study; a trial whose worker died is retried.

Example: progression tune --config tiny --space tiny --data COHORT --study lr-search --n-trials 8 --workers 2
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default", help="base training config (default: %(default)s)")
    parser.add_argument(
        "--space", default="default", help="search space YAML or bundled name: tiny, default (default: %(default)s)"
    )
    parser.add_argument("--data", help="cohort directory (sets data.path)")
    parser.add_argument("--study", required=True, help="study name; the same name resumes the study")
    parser.add_argument(
        "--storage",
        help="journal file path or RDB URL (postgresql://user@host/db; password from ~/.pgpass or "
        "PGPASSWORD). Default: <train.output_dir>/tune/<study>/study.journal",
    )
    parser.add_argument("--n-trials", type=int, default=20, help="finished trials the study should hold (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (default: %(default)s)")
    parser.add_argument(
        "--heartbeat-interval", type=int, default=60, help="RDB storage: seconds between trial heartbeats (default: %(default)s)"
    )
    parser.add_argument(
        "--grace-period", type=int, help="RDB storage: seconds without heartbeat before a trial is retried (default: 2 x interval)"
    )
    parser.add_argument("--max-retry", type=int, default=2, help="retries of a trial whose worker died (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs=5")


def run(args: argparse.Namespace) -> int:
    from progression.config import load_config
    from progression.tuning.study import load_search_space, tune

    overrides = [*([f"data.path={args.data}"] if args.data else []), *args.overrides]
    cfg = load_config(args.config, overrides)
    space = load_search_space(args.space, cfg)
    result = tune(
        cfg,
        space,
        args.study,
        storage=args.storage,
        n_trials=args.n_trials,
        workers=args.workers,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        max_retry=args.max_retry,
        progress=not args.no_progress,
    )
    print(
        f"study '{result.study_name}' ({result.storage}): {result.n_complete} complete, "
        f"{result.n_pruned} pruned, {result.n_failed} failed; MLflow parent run {result.parent_run_id}"
    )
    if result.best_trial is not None:
        print(f"best trial {result.best_trial} (run {result.best_run_id}): {space.metric} = {result.best_value:.4g}")
        for key, value in result.best_params.items():
            print(f"  {key} = {value}")
        print(f"best config: {result.best_config_path}  (progression train --config {result.best_config_path})")
    for message in result.worker_errors:
        print(f"warning: {message}")
    if result.worker_errors:
        print("some trials did not finish; re-run the same command to resume the study")
        return 1
    return 0
