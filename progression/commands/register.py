"""Register a run's model in the MLflow model registry and point an alias (e.g. champion) at
it, so `progression predict --checkpoint models:/NAME@champion` uses it.

Example: progression register --run 3f2c... --name progression-ra --alias champion
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="MLflow run id of a `progression train` (or tune trial) run")
    parser.add_argument("--name", required=True, help="registered model name, e.g. progression-ra")
    parser.add_argument("--alias", help="alias to set on the new version, e.g. champion or challenger")
    parser.add_argument(
        "--tracking-uri", default="", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlruns.db)"
    )


def run(args: argparse.Namespace) -> int:
    from progression.registry import register_run_model
    from progression.tracking import resolve_tracking_uri

    version = register_run_model(args.run, args.name, args.alias, resolve_tracking_uri(args.tracking_uri))
    print(f"registered run {version.run_id} as {version.name} version {version.version}")
    print(f"use it with: progression predict --checkpoint {version.uri}")
    return 0
