"""The ``progression`` command line: parse, then hand over to one module per command.

Each command lives in ``progression/commands/<name>.py`` with ``add_arguments(parser)``
and ``run(args) -> int``. Command modules import heavy libraries (torch, mlflow) inside
``run`` so ``progression --help`` stays fast. A :class:`ProgressionError` is printed as
one clear message and exits non-zero; it is never shown as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from progression.errors import ProgressionError

# name -> one-line help; the module is progression.commands.<name> ('-' written '_')
COMMANDS: dict[str, str] = {
    "demo": "simulate a small cohort, train the tiny model, predict, and show where results are",
    "simulate": "write a synthetic cohort in format v1 with its ground truth",
    "validate": "check a cohort directory and report every problem found",
    "train": "train a forecasting model (tracked in MLflow)",
    "predict": "forecast SvdH change for every patient of a cohort",
    "evaluate": "compare forecasts with observed outcomes, baselines and the oracle",
    "enrich": "select predicted fast progressors and size an enriched trial",
    "tune": "hyper-parameter search with Optuna, tracked in MLflow",
    "register": "register a run's model in the MLflow model registry",
    "explain": "per-patient forecast report with image and biomarker attributions",
    "serve": "serve one patient's forecast over HTTP (JSON or FHIR R4) from a loaded model",
    "sync": "copy runs logged offline (tracking.offline=true) to the tracking server",
    "import-dicom": "build a cohort from a DICOM tree (PACS export): patients, visits, images",
    "import-scores": "merge reader scores (CSV/Excel, long or wide) into a copy of a cohort",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="progression",
        description="Forecast radiographic joint damage (SvdH) in rheumatoid arthritis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module_name = f"progression.commands.{name.replace('-', '_')}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # command not built yet
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _quiet_third_party() -> None:
    """Hide library chatter that says nothing to a user (hardware banners, tips, migrations)."""
    for name in ("pytorch_lightning", "lightning_fabric", "mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        _quiet_third_party()
    try:
        return int(args._module.run(args) or 0)
    except ProgressionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
