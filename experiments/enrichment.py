"""Experiment: does enrichment by the model need fewer patients than the clinical matrix
and than no enrichment? And do the computed sizes deliver their power?

1. Simulates a training and a held-out test cohort (different seeds), trains the model on
   the training cohort (``progression.train.fit``) and forecasts the test cohort
   (``progression.predict.predict_cohort``); fits the clinical matrix
   (``progression.evaluate.baselines.ClinicalMatrix``) on the same training cohort and
   forecasts the test cohort from the same index visits. With ``--oracle-only`` the
   oracle's forecasts stand in for the model (labelled so; no radiographs, no training).
2. Enrols the top ``--top-fraction`` of the test cohort by each selector, sizes the trial
   and validates it on the simulator's truth (``progression.enrich.run_enrichment``); the
   oracle (best possible forecasts) is added as an upper bound.
3. Checks the sizing on a large table-only cohort (``--validation-patients``, oracle
   forecasts): simulated trials of the computed sizes, empirical vs nominal power.

Writes experiments/results/enrichment.md (and the full HTML reports under ``--work``).

    nice python experiments/enrichment.py                        # model, ~15 min on 2 cores
    nice python experiments/enrichment.py --oracle-only          # no training, ~3 min
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from progression.enrich import SelectionRule, TrialDesign, load_outcomes, run_enrichment
from progression.enrich.analysis import EnrichmentResult, predict_matrix
from progression.enrich.report import write_report
from progression.enrich.selection import check_predictions
from progression.io import atomic_write_text
from progression.scoring import is_rapid
from progression.simulate import Oracle, SimulationConfig, simulate_cohort

RESULTS = Path(__file__).resolve().parent / "results" / "enrichment.md"
LABELS = {"model": "model", "clinical_matrix": "clinical matrix", "none": "no enrichment",
          "oracle": "oracle (upper bound)"}


def _simulate(root: Path, n: int, seed: int, image_size: int, images: bool,
              progress: bool) -> Path:
    cfg = SimulationConfig(n_patients=n, seed=seed, image_size=image_size, render_images=images)
    return Path(simulate_cohort(root, cfg, progress=progress, overwrite=True, reuse=True))


def _oracle(root: Path) -> pd.DataFrame:
    return check_predictions(Oracle.load(root).predictions(), f"oracle of {root}")


def _total(sizes) -> str:
    return "–" if sizes is None else str(sizes.total)


def selector_table(result: EnrichmentResult, oracle: EnrichmentResult,
                   outcomes: pd.DataFrame) -> str:
    """One row per selector: who is enrolled, what they did, what the trial needs."""
    lines = [
        "| selector | enrolled / screened | predicted mean change | realised mean change "
        "| realised rapid | mean endpoint: planned (screened) | needed given outcomes "
        "| empirical power | rapid endpoint: planned | needed given outcomes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(name, result, name) for name in result.plan.plans] + [("oracle", oracle, "model")]
    for label, res, key in rows:
        plan, val = res.plan.plans[key], res.validation
        chosen = outcomes[outcomes["patient_id"].isin(res.selected_ids[key])]["delta"]
        mean, rapid = plan.mean, plan.rapid
        power = val.power[key].get("mean_change")
        if power is None:
            lines.append(f"| {LABELS[label]} | sizing failed: {mean.note} |")
            continue
        lines.append(
            f"| {LABELS[label]} | {plan.n_selected} / {plan.n_screened} "
            f"| {plan.summary.mean_delta:.2f} | {chosen.mean():.2f} "
            f"| {is_rapid(chosen.to_numpy(), 1.0).mean():.0%} "
            f"| {_total(mean.enrolled)} ({mean.screened}) "
            f"| {_total(val.needed[key]['mean_change'])} "
            f"| {power.empirical:.2f} ± {2 * power.total_se:.2f} "
            f"| {_total(rapid.enrolled)} | {_total(val.needed[key]['rapid'])} |")
    return "\n".join(lines)


def power_table(result: EnrichmentResult) -> str:
    """Empirical vs nominal power of each computed size on the validation cohort (where the
    oracle's forecasts are the first selector)."""
    labels = {**LABELS, "model": "oracle"}
    lines = ["| design | endpoint | enrolled per arm | nominal | empirical ± 2 SE "
             "| formula fed the outcomes |", "|---|---|---|---|---|---|"]
    for name, powers in result.validation.power.items():
        for endpoint, p in powers.items():
            lines.append(
                f"| {labels[name]} | {endpoint.replace('_', ' ')} | {p.enrolled.control} "
                f"| {p.nominal:.2f} | {p.empirical:.3f} ± {2 * p.total_se:.3f} "
                f"| {p.implied:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="outputs/enrichment",
                        help="directory for cohorts, runs and the reports")
    parser.add_argument("--train-patients", type=int, default=240)
    parser.add_argument("--test-patients", type=int, default=300)
    parser.add_argument("--validation-patients", type=int, default=2000,
                        help="table-only cohort for the power check (0: skip)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0,
                        help="train cohort seed (test: +1, validation: +2)")
    parser.add_argument("--config", default="tiny", help="training config (bundled or YAML)")
    parser.add_argument("--oracle-only", action="store_true",
                        help="the oracle's forecasts stand in for the model (no training)")
    parser.add_argument("--checkpoint",
                        help="forecast with this trained model instead of training one")
    parser.add_argument("--top-fraction", type=float, default=0.3)
    parser.add_argument("--effect", type=float, default=0.5)
    parser.add_argument("--n-sim", type=int, default=1000)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="training config overrides (key=value)")
    args = parser.parse_args(argv)

    progress = not args.no_progress
    work = Path(args.work).resolve()
    images = not args.oracle_only
    started = time.perf_counter()
    suffix = "" if images else "_tables"
    print(f"== simulate {args.train_patients} training and {args.test_patients} test patients")
    train_dir = _simulate(work / f"train{suffix}", args.train_patients, args.seed,
                          args.image_size, images, progress)
    test_dir = _simulate(work / f"test{suffix}", args.test_patients, args.seed + 1,
                         args.image_size, images, progress)
    rule = SelectionRule(top_fraction=args.top_fraction)
    design = TrialDesign(horizon=1.0, effect=args.effect, seed=args.seed)

    train_seconds = 0.0
    if args.oracle_only:
        forecasts, source = _oracle(test_dir), "the oracle's forecasts (model not trained)"
    else:
        from progression.predict import predict_cohort

        checkpoint = args.checkpoint
        source = f"the model from {checkpoint}"
        if checkpoint is None:
            from progression.config import load_config
            from progression.train import fit

            cfg = load_config(args.config, [
                f"data.path={train_dir}", f"data.cache_dir={work / 'cache'}",
                f"train.output_dir={work / 'runs'}",
                f"tracking.tracking_uri=sqlite:///{work / 'mlruns.db'}",
                "tracking.experiment=enrichment", *args.overrides,
            ])
            print(f"== train the model (config {args.config} {' '.join(args.overrides)})")
            t = time.perf_counter()
            checkpoint = fit(cfg, progress=progress).checkpoint_path
            train_seconds = time.perf_counter() - t
            source = f"the model trained with config {args.config} {' '.join(args.overrides)}"
        forecasts = check_predictions(
            predict_cohort(checkpoint, test_dir, horizons=(1.0, 2.0), progress=progress),
            "model forecasts")

    print("== clinical matrix, enrichment and validation on the test cohort")
    matrix = predict_matrix(train_dir, test_dir, 1.0,
                            index_dates=forecasts[["patient_id", "index_date"]])
    outcomes = load_outcomes(test_dir, 1.0)
    result = run_enrichment(forecasts, rule, design, matrix=matrix, outcomes=outcomes,
                            n_sim=args.n_sim, seed=args.seed, progress=progress)
    write_report(result, work / "report", {"predictions": source, "matrix": "clinical matrix",
                                           "outcomes": str(test_dir)})
    oracle = run_enrichment(_oracle(test_dir), rule, design, outcomes=outcomes,
                            n_sim=args.n_sim, seed=args.seed, progress=progress)

    check = ""
    if args.validation_patients:
        print(f"== sizing check on {args.validation_patients} table-only patients (oracle)")
        val_dir = _simulate(work / "validation_tables", args.validation_patients,
                            args.seed + 2, args.image_size, False, progress)
        val_forecasts = _oracle(val_dir)
        val_matrix = predict_matrix(train_dir, val_dir, 1.0,
                                    index_dates=val_forecasts[["patient_id", "index_date"]])
        val_outcomes = load_outcomes(val_dir, 1.0)
        checked = run_enrichment(val_forecasts, rule, design, matrix=val_matrix,
                                 outcomes=val_outcomes, n_sim=args.n_sim, seed=args.seed,
                                 progress=progress)
        write_report(checked, work / "validation_report",
                     {"predictions": "oracle", "matrix": "clinical matrix",
                      "outcomes": str(val_dir)})
        check = "\n".join([
            f"## Do the sizes deliver their power? ({args.validation_patients} simulated "
            f"patients, seed {args.seed + 2}, oracle forecasts)",
            "",
            f"{args.n_sim} simulated trials per design, drawn with replacement from the "
            "patients each design enrols, 10% dropout, treated change x "
            f"{1 - args.effect:g}, the planned test. ± 2 SE combines the simulation error "
            "and the finite cohort's (bootstrap).",
            "",
            power_table(checked),
            "",
        ])

    minutes = (time.perf_counter() - started) / 60
    command = "nice python experiments/enrichment.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = "\n".join([
        "# Trial enrichment: model vs clinical matrix vs no enrichment (simulated)",
        "",
        f"Test cohort: {args.test_patients} simulated patients (seed {args.seed + 1}); "
        f"selectors fitted on {args.train_patients} training patients (seed {args.seed}). "
        f"Model row: {source}. Rule: top {args.top_fraction:.0%} by predicted rate; trial: "
        f"1-year SvdH change, effect {args.effect:.0%} relative reduction, alpha 0.05, power "
        "0.8, 1:1, 10% dropout. 'Planned' sizes come from each selector's own forecasts; "
        "'needed given outcomes' feeds the same sizing the selected patients' realised "
        "change (the fair comparison); empirical power: simulated trials of the planned "
        "size on the realised outcomes.",
        "",
        selector_table(result, oracle, outcomes.deltas),
        "",
        check,
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()} {platform.system()}, {cpus} CPU cores, no GPU; total "
        f"{minutes:.1f} min (training {train_seconds / 60:.1f} min).  ",
        f"Reports: `{work / 'report' / 'report.html'}`"
        + (f", `{work / 'validation_report' / 'report.html'}`." if check else "."),
        "",
    ])
    atomic_write_text(RESULTS, text)
    print("\n" + text)
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
