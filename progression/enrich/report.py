"""Write an enrichment analysis: selected.csv, enrichment.json, figures and report.html.

Every file goes through :mod:`progression.io` (atomic). The HTML is self-contained
(inline CSS, no scripts, no network) and shows the figures as PNG files written next to
it, referenced by relative paths, so the output directory can be zipped or attached to
an MLflow run as it is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from progression.enrich.analysis import LABELS, MATRIX, MODEL, NONE, EnrichmentResult
from progression.enrich.plan import SelectorPlan, Sizing
from progression.enrich.sample_size import ArmSizes
from progression.io import atomic_write_bytes, atomic_write_csv, atomic_write_text, json_safe
from progression.plotting import new_figure, png_bytes

SELECTED_COLUMNS = ("patient_id", "rank", "risk_score", "p_rapid", "delta_svdh_pred",
                    "delta_svdh_lo", "delta_svdh_hi", "svdh_index_pred", "index_date",
                    "horizon_years", "note")
COLOURS = {MODEL: "#1b6ca8", MATRIX: "#d1495b", NONE: "#555555"}
ENDPOINTS = {"mean": "mean change", "rapid": "proportion rapid"}
TEMPLATE = "report.html.j2"


def _arms(sizes: ArmSizes | None) -> dict[str, int] | None:
    return None if sizes is None else {"control": sizes.control, "treated": sizes.treated,
                                       "total": sizes.total}


def _sizing_dict(sizing: Sizing, saved: dict | None) -> dict[str, Any]:
    out = {
        "control": sizing.control,
        "treated": sizing.treated,
        "completers_per_arm": _arms(sizing.completers),
        "formula_completers_per_arm": _arms(sizing.formula),
        "sized_by": sizing.sized_by,
        "enrolled_per_arm": _arms(sizing.enrolled),
        "screened": sizing.screened,
        "saved_vs_no_enrichment": saved,
        "note": sizing.note,
    }
    if sizing.sd_control is not None:
        out["sd_control"], out["sd_treated"] = sizing.sd_control, sizing.sd_treated
    return out


def _selector_dict(result: EnrichmentResult, name: str, plan: SelectorPlan) -> dict[str, Any]:
    out = {
        "label": LABELS[name],
        "n_screened": plan.n_screened,
        "n_selected": plan.n_selected,
        "fraction_enrolled": plan.fraction,
        "screening_ratio": plan.screening_ratio,
        "expected": dataclasses.asdict(plan.summary),
        "enrichment_ratio": result.plan.enrichment_ratio(name),
    }
    for endpoint, sizing in (("mean_change", plan.mean), ("rapid", plan.rapid)):
        saved = None if name == NONE else result.plan.saved(
            name, "mean" if endpoint == "mean_change" else "rapid")
        out[endpoint] = _sizing_dict(sizing, saved)
    return out


def summary_dict(result: EnrichmentResult, inputs: dict[str, str]) -> dict[str, Any]:
    """Everything measured, as the JSON written to enrichment.json."""
    design = result.plan.design
    out: dict[str, Any] = {
        "inputs": inputs,
        "rule": result.plan.rule,
        "design": {**dataclasses.asdict(design), "rapid_threshold_svdh": design.rapid_threshold},
        "selectors": {name: _selector_dict(result, name, plan)
                      for name, plan in result.plan.plans.items()},
        "strictness_curve": {name: curve.to_dict(orient="list")
                             for name, curve in result.curves.items()},
    }
    val = result.validation
    if val is not None:
        out["validation"] = {
            "outcome": val.outcome,
            "n_with_outcomes": len(val.deltas),
            "n_sim": val.n_sim,
            "seed": val.seed,
            "realised": {name: frame.to_dict(orient="records")
                         for name, frame in val.realised.items()},
            "time_to_rapid": {name: {"logrank_statistic": s.logrank_statistic,
                                     "logrank_p": s.logrank_p,
                                     "reached_by_end": s.event_fraction}
                              for name, s in val.survival.items()},
            "needed_given_outcomes": {
                name: {ep: _arms(sizes) for ep, sizes in needed.items()}
                for name, needed in val.needed.items()
            },
            "power_resolution": max((2 * p.total_se for powers in val.power.values()
                                     for p in powers.values()), default=0.0),
            "simulated_trials": {
                name: {ep: {**dataclasses.asdict(p), "enrolled": _arms(p.enrolled),
                     "total_se": p.total_se, "band": 2 * p.total_se}
                       for ep, p in powers.items()}
                for name, powers in val.power.items()
            },
        }
    return json_safe(out)


def metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics ``enrich/<what>_<selector>_<h>y`` from :func:`summary_dict`."""
    h = f"{summary['design']['horizon']:g}y"
    out: dict[str, float] = {}
    for name, sel in summary["selectors"].items():
        out[f"enrich/fraction_enrolled_{name}_{h}"] = sel["fraction_enrolled"]
        out[f"enrich/expected_mean_delta_{name}_{h}"] = sel["expected"]["mean_delta"]
        out[f"enrich/expected_rapid_fraction_{name}_{h}"] = sel["expected"]["rapid_fraction"]
        out[f"enrich/enrichment_ratio_{name}_{h}"] = sel["enrichment_ratio"]["mean_delta"]
        for endpoint, key in (("mean_change", "mean"), ("rapid", "rapid")):
            sizing = sel[endpoint]
            if sizing["enrolled_per_arm"] is not None:
                out[f"enrich/enrolled_total_{key}_{name}_{h}"] = sizing["enrolled_per_arm"]["total"]
                out[f"enrich/screened_{key}_{name}_{h}"] = sizing["screened"]
            if sizing["saved_vs_no_enrichment"] is not None:
                out[f"enrich/saved_fraction_{key}_{name}_{h}"] = (
                    sizing["saved_vs_no_enrichment"]["fraction"])
    for name, powers in summary.get("validation", {}).get("simulated_trials", {}).items():
        for endpoint, p in powers.items():
            key = "mean" if endpoint == "mean_change" else "rapid"
            out[f"enrich/empirical_power_{key}_{name}_{h}"] = p["empirical"]
    return {k: float(v) for k, v in out.items() if v is not None}


def _figure_curve(result: EnrichmentResult, curves: dict[str, pd.DataFrame],
                  none: dict[str, ArmSizes | None], basis: str):
    """Patients per arm and screened vs enrolled fraction; ``none``: sizes without enrichment
    per endpoint (``mean``, ``rapid``); ``basis`` says where the sizes come from."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    design = result.plan.design
    fig = new_figure(11, 4.2, dpi=110)
    axes = fig.subplots(1, 2)
    for ax, what, ylabel in ((axes[0], "n_per_arm", "patients enrolled per arm (control)"),
                             (axes[1], "screened", "patients screened")):
        for name, curve in curves.items():
            for endpoint, style in (("mean", "-"), ("rapid", "--")):
                ax.plot(curve["fraction"], curve[f"{what}_{endpoint}"], style, marker=".",
                        color=COLOURS[name], label=f"{LABELS[name]}, {ENDPOINTS[endpoint]}")
        for endpoint, style in (("mean", "-"), ("rapid", "--")):
            arms = none[endpoint]
            if arms is not None:
                ax.axhline(arms.control if what == "n_per_arm" else arms.total, ls=style,
                           color=COLOURS[NONE], lw=1, label=f"no enrichment, {ENDPOINTS[endpoint]}")
        ax.axvline(result.plan.plans[MODEL].fraction, color="#999999", lw=0.8, ls=":")
        ax.set_xlabel("fraction of screened patients enrolled (1 = no enrichment)")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Trial size vs strictness of selection, {basis} ({design.horizon:g}-year "
                 f"change, effect {design.effect:.0%}, power {design.power:.0%})", fontsize=10)
    return fig


def _figure_predicted(result: EnrichmentResult):
    frame = result.forecasts[MODEL]
    chosen = frame["patient_id"].isin(result.selected_ids[MODEL])
    fig = new_figure(6.5, 3.8, dpi=110)
    ax = fig.subplots()
    bins = np.histogram_bin_edges(frame["delta_svdh_pred"], bins=30)
    ax.hist(frame.loc[~chosen, "delta_svdh_pred"], bins=bins, color="#bbbbbb", label="not selected")
    ax.hist(frame.loc[chosen, "delta_svdh_pred"], bins=bins, color=COLOURS[MODEL], alpha=0.8,
            label="selected")
    ax.set_xlabel(f"predicted SvdH change over {result.plan.design.horizon:g} y (units)")
    ax.set_ylabel("patients")
    ax.legend()
    return fig


def _figure_realised(result: EnrichmentResult):
    outcomes = result.validation.deltas
    names = list(result.validation.realised)
    fig = new_figure(6.5, 3.8, dpi=110)
    ax = fig.subplots()
    data, labels = [], []
    for name in names:
        chosen = outcomes["patient_id"].isin(result.selected_ids[name])
        data += [outcomes.loc[chosen, "delta"], outcomes.loc[~chosen, "delta"]]
        labels += [f"{LABELS[name]}\nselected", f"{LABELS[name]}\nnot selected"]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.axhline(result.plan.design.rapid_threshold, color="#999999", ls="--", lw=0.8,
               label="rapid threshold")
    ax.set_ylabel(f"realised SvdH change over {result.plan.design.horizon:g} y (units)")
    ax.legend(fontsize=8)
    return fig


def _figure_km(result: EnrichmentResult):
    from lifelines import KaplanMeierFitter

    survival = result.validation.survival
    fig = new_figure(5.5 * len(survival), 3.8, dpi=110)
    axes = fig.subplots(1, len(survival), squeeze=False)
    for ax, (name, comp) in zip(axes[0], survival.items(), strict=True):
        for group, colour in (("selected", COLOURS[name]), ("unselected", "#888888")):
            part = comp.times[comp.times["group"] == group]
            KaplanMeierFitter().fit(part["years"], part["event"], label=group).plot_survival_function(
                ax=ax, color=colour)
        ax.set_title(f"{LABELS[name]} (log-rank p = {comp.logrank_p:.2g})", fontsize=10)
        ax.set_xlabel("years from index")
        ax.set_ylabel("free of rapid progression")
        ax.set_ylim(0, 1.02)
    return fig


def _figure_power(result: EnrichmentResult):
    val = result.validation
    fig = new_figure(6.5, 3.8, dpi=110)
    ax = fig.subplots()
    x, ticks = 0, []
    for name, powers in val.power.items():
        for endpoint, p in powers.items():
            ax.bar(x, p.empirical, yerr=2 * p.total_se, color=COLOURS[name], capsize=4)
            ax.plot(x, p.implied, "kx")
            ticks.append((x, f"{LABELS[name]}\n{endpoint.replace('_', ' ')}\nn={p.enrolled.total}"))
            x += 1
    ax.axhline(result.plan.design.power, color="black", ls="--", lw=1, label="nominal power")
    ax.plot([], [], "kx", label="power implied by realised outcomes")
    ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"empirical power ({val.n_sim} trials; +-2 SE)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def write_report(result: EnrichmentResult, out_dir: str | Path,
                 inputs: dict[str, str]) -> dict[str, Any]:
    """Write selected.csv, enrichment.json, the PNG figures and report.html; return the JSON.

    ``inputs`` names the files used (keys ``predictions``, ``matrix``, ``outcomes``).
    """
    out = Path(out_dir)
    selected = result.selected[[c for c in SELECTED_COLUMNS if c in result.selected.columns]]
    atomic_write_csv(out / "selected.csv", selected)
    summary = summary_dict(result, inputs)
    atomic_write_text(out / "enrichment.json", json.dumps(summary, indent=2) + "\n")

    none = result.plan.plans[NONE]
    planned_none = {"mean": none.mean.enrolled, "rapid": none.rapid.enrolled}
    makers = [("sample_size_vs_fraction.png", "Trial size vs fraction enrolled",
               lambda: _figure_curve(result, result.curves, planned_none,
                                     "planned from each selector's forecasts")),
              ("predicted_change.png", "Predicted change, selected vs not selected (model)",
               lambda: _figure_predicted(result))]
    val = result.validation
    if val is not None:
        needed_none = {"mean": val.needed[NONE]["mean_change"], "rapid": val.needed[NONE]["rapid"]}
        makers.append(("needed_vs_fraction.png", "Patients needed given the outcomes",
                       lambda: _figure_curve(result, val.needed_curves, needed_none,
                                             "needed given the realised outcomes")))
        makers.append(("realised_change.png", "Realised change, selected vs not selected",
                       lambda: _figure_realised(result)))
        if val.survival:
            makers.append(("time_to_rapid_km.png", "Time to rapid progression (Kaplan-Meier)",
                           lambda: _figure_km(result)))
        if any(val.power.values()):
            makers.append(("simulated_power.png", "Simulated trials: empirical power",
                           lambda: _figure_power(result)))
    figures = []
    for filename, title, make in makers:
        atomic_write_bytes(out / filename, png_bytes(make(), crop=True))
        figures.append({"file": filename, "title": title})

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("progression.enrich", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    html = env.get_template(TEMPLATE).render(
        s=summary, figures={f["file"]: f for f in figures}, labels=LABELS,
        selected_head=selected.head(20).to_dict(orient="records"), n_selected=len(selected),
    )
    atomic_write_text(out / "report.html", html)
    return summary


def _num(value: Any, digits: int = 3) -> str:
    """Numbers for the HTML: integers as they are, floats with ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"
