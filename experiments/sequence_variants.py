"""Which sequence-model settings forecast best, given a trained reader? Minutes, not hours, on a CPU.

Training the 256 px reader takes 76 minutes on a 2-core CPU; its sequence stage takes about
a minute. This script keeps a trained image encoder (``train.init_encoder``,
``train.image_epochs=0``) and retrains only the sequence model, once per variant and
training seed, on the reader's own training cohort (same seed, same split). Variants are
compared on a development cohort (another simulated seed) and only then reported on the
test cohorts, so the choice is never made on the patients it is reported on. The
seed-to-seed spread of the sequence stage is itself one of the results.

    python experiments/sequence_variants.py --reader progression/readers/simulated_256px.ckpt \\
        --variant base --variant dropout02:model.score_input_dropout=0.2

A variant is ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]`` (config overrides of the
``--config`` config). Writes ``sequence_variants.json`` and ``sequence_variants.md`` to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from forecast_accuracy import _simulate, score_on_cohorts


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(",") if o]


def _run(task: dict) -> dict:
    """Train one (variant, seed) and score it on every evaluation cohort."""
    from progression.config import load_config
    from progression.train import fit

    work = Path(task["work"])
    cfg = load_config(task["config"], [
        f"data.path={task['train_dir']}", f"data.image_size={task['image_size']}",
        f"data.cache_dir={work / 'cache'}", f"train.output_dir={work / 'runs'}",
        f"tracking.tracking_uri={task['uri']}", "tracking.experiment=sequence_variants",
        f"tracking.run_name={task['variant']}-seed{task['seed']}", "tracking.log_model=false",
        f"train.init_encoder={task['reader']}", "train.image_epochs=0",
        f"train.max_epochs={task['epochs']}", f"train.seed={task['seed']}",
        *task["overrides"]])
    t = time.perf_counter()
    run = fit(cfg, progress=False)
    out = {"variant": task["variant"], "seed": task["seed"], "run_id": run.run_id,
           "train_s": round(time.perf_counter() - t, 1), "results": {}}
    out["results"] = score_on_cohorts(run.checkpoint_path, task["cohorts"], work / "cache")
    return out


def _oracle_mae(root: Path) -> float:
    truth = pd.read_csv(root / "truth" / "truth.csv")
    return float((truth["oracle_delta_1y"] - truth["delta_true_1y"]).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", required=True, help="checkpoint whose image encoder is kept")
    parser.add_argument("--variant", action="append", required=True, help="NAME[:KEY=VALUE,...]")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "progression-sequence-variants"),
                        help="cohorts, cache, runs and MLflow store (reused when present)")
    parser.add_argument("--out", default="experiments/results")
    parser.add_argument("--config", default="cpu256")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--train-patients", type=int, default=300)
    parser.add_argument("--train-seed", type=int, default=1, help="the reader's training cohort seed")
    parser.add_argument("--dev-seed", type=int, default=500)
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[1001, 2001, 3001])
    parser.add_argument("--eval-patients", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--epochs", type=int, default=40, help="sequence-stage epochs")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    args = parser.parse_args()

    from mlflow import MlflowClient

    work = Path(args.work).resolve()
    t = time.perf_counter()
    train_dir = _simulate(work / "train_cohort", args.train_patients, args.train_seed, args.image_size)
    cohorts = {"dev": _simulate(work / f"cohort_{args.dev_seed}", args.eval_patients,
                                args.dev_seed, args.image_size)}
    for seed in args.test_seeds:
        cohorts[f"test{seed}"] = _simulate(work / f"cohort_{seed}", args.eval_patients, seed,
                                           args.image_size)
    simulate_s = time.perf_counter() - t
    uri = f"sqlite:///{work / 'mlruns.db'}"
    MlflowClient(uri).search_experiments()  # create the store once, before parallel runs
    variants = [_variant(v) for v in args.variant]
    tasks = [{"variant": name, "overrides": overrides, "seed": seed, "work": str(work),
              "train_dir": str(train_dir), "cohorts": {k: str(v) for k, v in cohorts.items()},
              "config": args.config, "image_size": args.image_size, "uri": uri,
              "reader": str(Path(args.reader).resolve()), "epochs": args.epochs}
             for name, overrides in variants for seed in args.seeds]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t = time.perf_counter()
    # spawn: each run starts a fresh interpreter (no OpenMP state inherited through fork)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = []
        for run in pool.map(_run, tasks):
            runs.append(run)
            dev = run["results"]["dev/scored"]["mae_delta_1y"]
            print(f"{run['variant']} seed {run['seed']}: dev 1y MAE {dev:.2f} ({run['train_s']:.0f} s)",
                  flush=True)
    report = {
        "command": "python experiments/sequence_variants.py " + " ".join(os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "reader": args.reader, "config": args.config, "image_size": args.image_size,
        "train_patients": args.train_patients, "eval_patients": args.eval_patients,
        "variants": {name: overrides for name, overrides in variants},
        "oracle_mae_delta_1y": {k: _oracle_mae(v) for k, v in cohorts.items()},
        "runs": runs,
        "timings_s": {"simulate": round(simulate_s, 1), "runs": round(time.perf_counter() - t, 1)},
    }
    out = Path(args.out)
    from progression.io import atomic_write_text

    atomic_write_text(out / "sequence_variants.json", json.dumps(report, indent=2))
    atomic_write_text(out / "sequence_variants.md", _markdown(report))
    print(_markdown(report))


def _markdown(report: dict) -> str:
    cohorts = list(report["oracle_mae_delta_1y"])
    oracle = report["oracle_mae_delta_1y"]
    lines = [
        f"Command: `{report['command']}`", "",
        f"Reader `{report['reader']}` kept; sequence stage retrained per variant and seed on "
        f"the reader's {report['train_patients']}-patient training cohort "
        f"({report['image_size']} px, `{report['config']}` config). Evaluation cohorts of "
        f"{report['eval_patients']} patients: `dev` chooses, the `test*` cohorts report. "
        f"Machine: {report['machine']}.",
        "",
        "1-year MAE of the change (SvdH units), mean over training seeds (min-max); ratio to "
        "the oracle in brackets. `scored` = the histories as simulated, `unscored` = films "
        "and covariates only.",
        "",
        "| variant | overrides | history | " + " | ".join(cohorts) + " |",
        "|---|---|---|" + "---|" * len(cohorts),
    ]
    for name, overrides in report["variants"].items():
        runs = [r for r in report["runs"] if r["variant"] == name]
        for history in ("scored", "unscored"):
            cells = []
            for c in cohorts:
                v = np.array([r["results"][f"{c}/{history}"]["mae_delta_1y"] for r in runs])
                cells.append(f"{v.mean():.2f} ({v.min():.2f}-{v.max():.2f}) [{v.mean() / oracle[c]:.2f}x]")
            lines.append(f"| {name} | {', '.join(overrides) or '-'} | {history} | " + " | ".join(cells) + " |")
    lines += ["", "| oracle | | | " + " | ".join(f"{oracle[c]:.2f}" for c in cohorts) + " |", "",
              f"Timings (s): {report['timings_s']}; training per run "
              f"{np.mean([r['train_s'] for r in report['runs']]):.0f} s on average.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
