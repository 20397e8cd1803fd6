"""How much does a reader trained on one film style lose on another scanner's films?

Simulates one held-out cohort twice with the same seed, once per film style (``progression
simulate --style``): the same patients, disease and truth, only the films differ. Predicts
both with the project's shipped 256 px model (``progression/readers/simulated_256px.ckpt``, trained on
default-style films), from each patient's index date, twice per style: with the cohort's
scored history (about 60 % of visits carry reader scores) and with every score removed
(films and covariates only: the current score then comes from the films alone). Compares
the current-score reading (``svdh_index_pred`` vs ``truth/truth.csv:svdh_true_index``) and
the 1-year change forecast with the truth and the simulator's oracle. Trains nothing.

    nice python experiments/scanner_shift.py                  # ~5 min on this 2-core CPU
    nice python experiments/scanner_shift.py --ablate         # + what in the style hurts, ~25 min

``--ablate``: for each style after the first, the same cohort again with one group of the
style's settings put back to the first (default) style's (e.g. no collimation borders or
marker), and the default style with only that group of the other's, to see which part of
another scanner's look the reader stumbles on.

Writes ``scanner_shift.json`` and ``scanner_shift.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BANDS = ((0, 20), (20, 60), (60, 10_000))  # true current SvdH, for the reading by damage band
# --ablate: groups of FilmStyle settings put back to the default style's, one group at a time
ABLATIONS = {
    "borders_and_marker": ("collimation", "marker"),
    "framing": ("field", "film_aspect"),
    "response": ("log_response",),
    "noise_and_blur": ("noise_scale", "grain_px", "blur_scale"),
    "positioning": ("rotation_sd", "rotation_max", "shift_sd", "shift_max"),
}


def _ablated_styles(styles: list[str]) -> list[str]:
    """Register, for each style after the first, that style with one group of settings put
    back to the first style's (``<style>-<first>_<group>``) and the first style with only that
    group taken from the other (``<first>+<style>_<group>``); returns the new names. They
    exist in this process only, so those cohorts are simulated with one worker."""
    from progression.simulate import FILM_STYLES

    first = styles[0]
    names = []
    for style in styles[1:]:
        for group, keys in ABLATIONS.items():
            for name, base, donor in ((f"{style}-{first}_{group}", style, first),
                                      (f"{first}+{style}_{group}", first, style)):
                FILM_STYLES[name] = dataclasses.replace(
                    FILM_STYLES[base], **{k: getattr(FILM_STYLES[donor], k) for k in keys}
                )
                names.append(name)
    return names


def _simulate(path: Path, n: int, seed: int, size: int, style: str, workers: int) -> Path:
    from progression.simulate import SimulationConfig, simulate_cohort

    cfg = SimulationConfig(n_patients=n, seed=seed, image_size=size, style=style)
    return simulate_cohort(path, cfg, workers=workers, progress=False, overwrite=True, reuse=True)


def _metrics(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    from progression.metrics import auroc, bias, mae

    p = pred[pred["horizon_years"] == 1.0].set_index("patient_id")
    t = truth.set_index("patient_id").loc[p.index]
    current, read = t["svdh_true_index"].to_numpy(float), p["svdh_index_pred"].to_numpy(float)
    out = {
        "mae_current": mae(current, read),
        "bias_current": bias(current, read),
        "corr_current": float(np.corrcoef(current, read)[0, 1]),
        "mae_delta_1y": mae(t["delta_true_1y"].to_numpy(float), p["delta_svdh_pred"].to_numpy(float)),
        "bias_delta_1y": bias(t["delta_true_1y"].to_numpy(float), p["delta_svdh_pred"].to_numpy(float)),
        "auroc_rapid_1y": auroc(t["rapid_true_1y"].to_numpy(), p["p_rapid"].to_numpy(float)),
    }
    for lo, hi in BANDS:
        band = (current >= lo) & (current < hi)
        out[f"mae_current_{lo}_{hi}"] = mae(current[band], read[band]) if band.any() else float("nan")
        out[f"n_current_{lo}_{hi}"] = int(band.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "progression-scanner-shift"),
                        help="cohorts and image cache (reused when present)")
    parser.add_argument("--out", default="experiments/results")
    parser.add_argument("--checkpoint", default="progression/readers/simulated_256px.ckpt")
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--seed", type=int, default=4001, help="cohort seed (the checkpoint trained on seed 1)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--styles", default="default,cassette", help="film styles, comma-separated")
    parser.add_argument("--ablate", action="store_true",
                        help="also each style after the first with one group of settings put back")
    args = parser.parse_args()

    from progression.cohort import read_cohort
    from progression.io import atomic_write_text
    from progression.metrics import auroc, mae
    from progression.predict import predict_cohort

    work = Path(args.work).resolve()
    styles = args.styles.split(",")
    ablated = _ablated_styles(styles) if args.ablate else []
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    truths = {}
    for style in styles + ablated:
        t = time.perf_counter()
        workers = 1 if style in ablated else os.cpu_count() or 1
        cohort_dir = _simulate(work / f"cohort_{style}", args.patients, args.seed, args.image_size,
                               style, workers)
        timings[f"simulate_{style}_s"] = time.perf_counter() - t
        truth = pd.read_csv(cohort_dir / "truth" / "truth.csv", dtype={"patient_id": str})
        truths[style] = truth
        index_dates = truth.set_index("patient_id")["index_date"]
        cohort = read_cohort(cohort_dir)
        for variant, data in (("scored_history", cohort), ("unscored_history", cohort.without_scores())):
            t = time.perf_counter()
            pred = predict_cohort(args.checkpoint, data, horizons=(1.0, 2.0), index_dates=index_dates,
                                  progress=False, cache_dir=work / "cache")
            timings[f"predict_{style}_{variant}_s"] = time.perf_counter() - t
            results[f"{style}/{variant}"] = _metrics(pred, truth)
            print(style, variant, json.dumps(results[f"{style}/{variant}"]), flush=True)
    # the style changes only the films: the truth (hence the oracle) is the same for every style
    first = truths[styles[0]]
    same_truth = all(truth.equals(first) for truth in truths.values())
    results["oracle"] = {
        "mae_delta_1y": mae(first["delta_true_1y"].to_numpy(float), first["oracle_delta_1y"].to_numpy(float)),
        "auroc_rapid_1y": auroc(first["rapid_true_1y"].to_numpy(), first["oracle_p_rapid_1y"].to_numpy(float)),
        "mae_current_median_guess": mae(first["svdh_true_index"].to_numpy(float),
                                        np.full(len(first), first["svdh_true_index"].median())),
    }
    report = {
        "command": "nice python experiments/scanner_shift.py " + " ".join(os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU",
        "checkpoint": args.checkpoint, "patients": args.patients, "seed": args.seed,
        "image_size": args.image_size, "styles": styles + ablated,
        "ablations": {name: list(keys) for name, keys in ABLATIONS.items()} if ablated else {},
        "same_truth_for_every_style": same_truth,
        "rapid_1y": int(first["rapid_true_1y"].sum()),
        "results": results, "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    out = Path(args.out)
    atomic_write_text(out / "scanner_shift.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "scanner_shift.md", _markdown(report))
    print(_markdown(report))


def _markdown(report: dict) -> str:
    res = report["results"]
    oracle = res["oracle"]

    def f(x: float) -> str:
        return "-" if x is None or not np.isfinite(x) else f"{x:.2f}"

    bands = " | ".join(f"current MAE, true {lo}-{hi if hi < 10_000 else ''}" for lo, hi in BANDS)
    lines = [
        f"Reader trained on default-style films (`{report['checkpoint']}`), tested on one held-out "
        f"cohort of {report['patients']} simulated patients (seed {report['seed']}, "
        f"{report['image_size']} px) rendered in each film style: same patients and truth "
        f"(identical truth files: {report['same_truth_for_every_style']}), only the films differ. "
        f"{report['rapid_1y']} rapid progressors at 1 year. Machine: {report['machine']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"| films | history at prediction | current-score MAE | bias | corr | {bands} "
        "| 1y MAE | ratio to oracle | 1y bias | AUROC rapid 1y |",
        "|---|---|---|---|---|" + "---|" * len(BANDS) + "---|---|---|---|",
    ]
    for key, m in res.items():
        if key == "oracle":
            continue
        style, variant = key.split("/")
        band_cells = " | ".join(
            f"{f(m[f'mae_current_{lo}_{hi}'])} (n={m[f'n_current_{lo}_{hi}']})" for lo, hi in BANDS
        )
        lines.append(
            f"| {style} | {variant.replace('_', ' ')} | {f(m['mae_current'])} | {f(m['bias_current'])} | "
            f"{f(m['corr_current'])} | {band_cells} | {f(m['mae_delta_1y'])} | "
            f"{f(m['mae_delta_1y'] / oracle['mae_delta_1y'])}x | {f(m['bias_delta_1y'])} | "
            f"{f(m['auroc_rapid_1y'])} |"
        )
    lines.append("| - | oracle (knows the latent rate) | - | - | - | " + " | ".join("-" for _ in BANDS)
                 + f" | {f(oracle['mae_delta_1y'])} | 1.00x | - | {f(oracle['auroc_rapid_1y'])} |")
    lines.append(f"| - | median guess of the current score | {f(oracle['mae_current_median_guess'])} | "
                 "- | - | " + " | ".join("-" for _ in BANDS) + " | - | - | - | - |")
    if report["ablations"]:
        lines += ["", "`<style>-default_<group>`: that style with one group of settings put back to the "
                  "default style's; `default+<style>_<group>`: the default style with only that group "
                  "taken from the other. Groups: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in report["ablations"].items())
                  + " (`FilmStyle` in progression/simulate/render.py)."]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":  # simulation and image decoding start worker processes (spawn)
    main()
