"""Train a forecasting model on a cohort directory; tracked as one MLflow run.

Examples:
  progression train --data cohort/ --config tiny
  progression train --data cohort/ --config default train.max_epochs=150 data.image_size=256
  progression train --resume runs/<run_id>/checkpoints/last.ckpt train.max_epochs=120
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--data", help="cohort directory (format v1); sets data.path")
    parser.add_argument("--config", help="YAML file or bundled config name (tiny, default, gpu); "
                        "with --resume, default: the run's config.yaml (else the checkpoint's own config)")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue training from this checkpoint, in the same MLflow run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.max_epochs=5 data.image_size=128")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pytorch_lightning.utilities import rank_zero_only

    from progression.config import config_from_dict, load_config
    from progression.errors import ConfigError
    from progression.train import fit
    from progression.trained import load_trained

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.resume and not args.config:
        # The run directory's config.yaml has the paths as given; the checkpoint's own config
        # has them cut to their last component (tracking.share_identifiers=false).
        local = Path(args.resume).resolve().parent.parent / "config.yaml"
        if local.is_file():
            cfg = load_config(local, overrides)
        else:
            base = config_from_dict(load_trained(args.resume).meta.config)
            cfg = load_config(None, overrides, base=base)
    else:
        cfg = load_config(args.config, overrides)
    if not cfg.data.path:
        raise ConfigError("no cohort given: pass --data DIR (or data.path=DIR)")
    result = fit(cfg, resume=args.resume)
    if rank_zero_only.rank == 0:  # DDP ranks re-run this command; only rank 0 reports
        print(f"run id      {result.run_id}")
        print(f"checkpoint  {result.checkpoint_path}")
        if result.model_uri:
            print(f"mlflow model {result.model_uri}")
    return 0
