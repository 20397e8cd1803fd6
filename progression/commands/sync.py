"""Copy runs logged offline (``tracking.offline=true``) to the tracking server.

Every run of the offline store is recreated on the server with its params, tags, metric
histories, artifacts and status (and its pyfunc model, logged again from the checkpoint).
Runs copied before are skipped, so running it twice is safe.

Example:
  progression sync --from sqlite:///runs/offline/mlruns.db --to http://mlflow.example.org:5000
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--from", dest="source", required=True,
                        help="the offline store, e.g. sqlite:///runs/offline/mlruns.db "
                        "(printed by `progression train` when it went offline)")
    parser.add_argument("--to", dest="target", default="",
                        help="tracking server or store to copy the runs to "
                        "(default: $MLFLOW_TRACKING_URI)")


def run(args: argparse.Namespace) -> int:
    import os

    from progression.errors import ConfigError
    from progression.pyfunc_model import log_pyfunc_model
    from progression.tracking import resolve_tracking_uri, sync_runs

    if not (args.target or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError("give the server to copy the runs to: --to http://host:5000 "
                          "(or set MLFLOW_TRACKING_URI)")
    target = resolve_tracking_uri(args.target)
    copied = sync_runs(args.source, target, log_pyfunc_model)
    for old, new in copied:
        print(f"{old} -> {new}")
    print(f"copied {len(copied)} run(s) from {args.source} to {target}")
    return 0
