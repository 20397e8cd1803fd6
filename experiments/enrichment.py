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
3. Checks that the planned sizes deliver their power (``--sizing-check``; the table of
   docs/enrichment.md and the README): on a large table-only validation cohort
   (``--validation-patients``, default 50,000, seed + 2) three selectors enrol their top
   ``--top-fraction``: the oracle, the clinical matrix and, standing in for the model, the
   covariates-only gradient boosting (``CovariatesModel``, tuned; the image model is too
   slow to forecast 20,000 patients on this CPU). The matrix and the booster are fitted on
   a table-only reference cohort (``--reference-patients``, default 20,000, the seed). Each
   selector's trial is sized twice: from its own forecasts (gamma-Poisson predictive law,
   the default of ``progression enrich``) and from reference outcomes (the realised changes
   of the reference patients the selector would enrol, with cross-fitted forecasts:
   ``plan_selector(reference=...)``); then ``--n-sim`` trials of each planned size are
   simulated on the validation cohort's realised outcomes. The band is 2 x the combined
   Monte Carlo and finite-cohort standard error.

Writes experiments/results/enrichment.md (and the full HTML reports under ``--work``).

    nice python experiments/enrichment.py                        # model, ~15 min on 2 cores
    nice python experiments/enrichment.py --oracle-only          # no training, ~3 min
    nice python experiments/enrichment.py --sizing-check-only    # the power table (+ ~15 min to simulate)
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
from progression.enrich.plan import plan_selector
from progression.enrich.report import write_report
from progression.enrich.selection import at_horizon, check_predictions, select
from progression.enrich.trial import simulate_power
from progression.io import atomic_write_text
from progression.scoring import is_rapid
from progression.simulate import Oracle, SimulationConfig, simulate_cohort

RESULTS = Path(__file__).resolve().parent / "results" / "enrichment.md"
SIZING_RESULTS = RESULTS.with_name("enrichment_sizing.md")
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


def _reference_pools(ref_dir: Path, rule: SelectionRule, seed: int) -> dict[str, object]:
    """Realised 1-year changes of the reference patients each selector enrols, from its
    cross-fitted (5-fold) forecasts on the reference cohort (the oracle needs no fit)."""
    from progression.evaluate.forecasts import cross_fit
    from progression.evaluate.inputs import read_tables

    tables = read_tables(ref_dir)
    oracle = at_horizon(_oracle(ref_dir), 1.0, "reference oracle")
    index = oracle.set_index("patient_id")["index_date"]
    outcomes = load_outcomes(ref_dir, 1.0).deltas.set_index("patient_id")["delta"]
    pools = {"none": outcomes.to_numpy(float)}
    forecasts = {"oracle": oracle}
    for name in ("clinical_matrix", "covariates"):
        forecasts[name] = at_horizon(check_predictions(
            cross_fit(name, tables, (1.0,), index, folds=5, seed=seed), name), 1.0, name)
    n = len(select(oracle, rule, "reference"))
    for name, frame in forecasts.items():
        chosen = select(frame, SelectionRule(enrol=n), name)["patient_id"]
        pools[name] = outcomes.reindex(chosen).dropna().to_numpy(float)
    return pools


def sizing_check(args: argparse.Namespace, work: Path, rule: SelectionRule,
                 design: TrialDesign, progress: bool) -> str:
    """Planned size vs simulated-trial power for the oracle, the matrix and the booster."""
    from progression.evaluate.baselines import CovariatesModel
    from progression.evaluate.inputs import read_tables

    ref_dir = _simulate(work / "reference_tables", args.reference_patients, args.seed,
                        args.image_size, False, progress)
    val_dir = _simulate(work / "validation_tables", args.validation_patients, args.seed + 2,
                        args.image_size, False, progress)
    print("== reference pools (cross-fitted forecasts on the reference cohort)")
    pools = _reference_pools(ref_dir, rule, args.seed)
    oracle = _oracle(val_dir)
    index = oracle[["patient_id", "index_date"]]
    print("== forecasts of the validation cohort")
    booster = CovariatesModel(seed=args.seed).fit(read_tables(ref_dir))
    forecasts = {
        "oracle": oracle,
        "clinical_matrix": predict_matrix(ref_dir, val_dir, 1.0, index_dates=index),
        "covariates": check_predictions(booster.predict(read_tables(val_dir), (1.0,),
                                                        index_dates=index), "covariates"),
    }
    outcomes = load_outcomes(val_dir, 1.0)
    realised = outcomes.deltas.set_index("patient_id")["delta"]
    n_enrol = len(select(at_horizon(oracle, 1.0, "oracle"), rule, "oracle"))
    labels = {"oracle": "oracle", "clinical_matrix": "clinical matrix",
              "covariates": "covariates-only gradient boosting (model stand-in)"}
    lines = ["| selector | endpoint | sized from | planned enrolled per arm (completers) "
             "| simulated-trial power ± band | within 0.03 of 0.80 |",
             "|---|---|---|---|---|---|"]
    for name, frame in forecasts.items():
        chosen = select(at_horizon(frame, 1.0, name), SelectionRule(enrol=n_enrol), name)
        pool = realised.reindex(chosen["patient_id"]).dropna().to_numpy(float)
        for basis, reference in (("forecasts", None), ("reference outcomes", pools[name])):
            plan = plan_selector(name, chosen, len(frame), design, reference=reference)
            for j, sizing in enumerate((plan.mean, plan.rapid)):
                if sizing.enrolled is None:
                    lines.append(f"| {labels[name]} | {sizing.endpoint} | {basis} | "
                                 f"not sized: {sizing.note} | | |")
                    continue
                power = simulate_power(pool, sizing, design, args.n_sim,
                                       seed=args.seed + 10 * j + (basis == "forecasts"))
                band = 2 * power.total_se
                ok = abs(power.empirical - design.power) <= 0.03
                lines.append(
                    f"| {labels[name]} | {sizing.endpoint.replace('_', ' ')} | {basis} "
                    f"| {sizing.enrolled.control} ({sizing.completers.control}) "
                    f"| {power.empirical:.3f} ± {band:.3f} | {'yes' if ok else 'no'} |")
                print(lines[-1], flush=True)
    # the full enrichment reports of the validation cohort, sized from reference outcomes
    result = run_enrichment(
        forecasts["covariates"], rule, design, matrix=forecasts["clinical_matrix"],
        outcomes=outcomes, n_sim=args.n_sim, seed=args.seed, progress=progress,
        reference={"model": pools["covariates"], "clinical_matrix": pools["clinical_matrix"],
                   "none": pools["none"]})
    write_report(result, work / "validation_report",
                 {"predictions": "covariates-only gradient boosting (model stand-in)",
                  "matrix": "clinical matrix", "outcomes": str(val_dir)})
    return "\n".join([
        f"## Do the planned sizes deliver their power? ({args.validation_patients:,} simulated "
        f"patients, seed {args.seed + 2}; reference cohort {args.reference_patients:,}, seed "
        f"{args.seed})",
        "",
        f"Each selector enrols the top {args.top_fraction:.0%} ({n_enrol:,} patients). "
        f"{args.n_sim:,} simulated trials per planned size, drawn with replacement from the "
        "realised 1-year change of the patients the selector enrols, 10% dropout, treated "
        f"change x {1 - args.effect:g}, the planned test (Welch's t for the mean change, the "
        "corrected two-proportion test for rapid progression). Band: 2 x the combined Monte "
        "Carlo and finite-cohort (bootstrap) standard error. 'forecasts': sized by simulation "
        "from the selector's own forecasts (gamma-Poisson predictive law); 'reference "
        "outcomes': sized from the realised changes of the reference patients the selector "
        "enrols (cross-fitted forecasts).",
        "",
        *lines,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="outputs/enrichment",
                        help="directory for cohorts, runs and the reports")
    parser.add_argument("--train-patients", type=int, default=240)
    parser.add_argument("--test-patients", type=int, default=300)
    parser.add_argument("--validation-patients", type=int, default=50_000,
                        help="table-only cohort for the power check (0: skip)")
    parser.add_argument("--reference-patients", type=int, default=20_000,
                        help="table-only cohort the check's selectors are fitted on and "
                             "reference outcomes come from")
    parser.add_argument("--sizing-check-only", action="store_true",
                        help="only the power check (no image cohorts, no model)")
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
    parser.add_argument("--n-sim", type=int, default=4000,
                        help="simulated trials per design (4000: Monte Carlo SE <= 0.008)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="training config overrides (key=value)")
    args = parser.parse_args(argv)

    progress = not args.no_progress
    work = Path(args.work).resolve()
    images = not args.oracle_only
    started = time.perf_counter()
    command = "nice python experiments/enrichment.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.sizing_check_only:
        rule = SelectionRule(top_fraction=args.top_fraction)
        design = TrialDesign(horizon=1.0, effect=args.effect, seed=args.seed)
        check = sizing_check(args, work, rule, design, progress)
        minutes = (time.perf_counter() - started) / 60
        text = "\n".join([
            "# Trial enrichment: do the planned sizes deliver their power? (simulated)", "",
            "Trial: 1-year SvdH change, effect 50% relative reduction, alpha 0.05, power 0.8, "
            "1:1, 10% dropout.", "", check,
            f"Command: `{command}`  ",
            f"Machine: {platform.machine()} {platform.system()}, {cpus} CPU cores (shared), no "
            f"GPU; total {minutes:.1f} min.  ",
            f"Report: `{work / 'validation_report' / 'report.html'}`.", ""])
        atomic_write_text(SIZING_RESULTS, text)
        print("\n" + text)
        print(f"written to {SIZING_RESULTS}")
        return 0
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
        print(f"== sizing check on {args.validation_patients} table-only patients")
        check = sizing_check(args, work, rule, design, progress)

    minutes = (time.perf_counter() - started) / 60
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
