"""Model card (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019) in markdown.

One card per trained model says what data it saw (cohort fingerprint and sizes), what it is
for and not for, how well it did (metrics with 95% confidence intervals, overall and by
subgroup), how its intervals were calibrated, and its known limitations. Metric values are
taken as evaluation produces them: a number, a mapping ``{"value", "ci_lo", "ci_hi", "n"}``
or an :class:`~progression.metrics.Estimate`, keyed by names like
``val/mae_delta_1y``; :func:`evaluation_metrics` reads ``metrics.json`` of evaluate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progression.calibration import ConformalCalibration, Correction
from progression.io import atomic_write_text
from progression.scoring import DEFAULT_SYSTEM, scoring_system

TEMPLATE = "model_card.md.j2"

# metric stem -> (what it measures, unit); the target suffix (_1y, _2y) is read off the name
_METRICS: dict[str, tuple[str, str]] = {
    "mae_delta": ("mean absolute error of the predicted change", "SvdH units"),
    "rmse_delta": ("root mean squared error of the predicted change", "SvdH units"),
    "bias_delta": ("mean predicted minus observed change", "SvdH units"),
    "spearman_delta": ("rank correlation of predicted and observed change", "-1 to 1"),
    "coverage_delta": ("share of observed changes inside the interval", "0-1"),
    "width_delta": ("mean width of the interval", "SvdH units"),
    "auroc_rapid": ("AUROC for rapid progression (>= 5 units/yr)", "0.5 = chance, 1 = perfect"),
    "auprc_rapid": ("area under the precision-recall curve, rapid progression", "0-1"),
    "brier_rapid": ("Brier score of p_rapid (lower is better)", "0-1"),
    "calslope_delta": ("calibration slope of the predicted change (1 = ideal)", ""),
    "calslope_rapid": ("calibration slope of p_rapid (1 = ideal)", ""),
    "calintercept_rapid": ("calibration intercept of p_rapid (0 = ideal)", "log-odds"),
    "cindex_event": ("Harrell's C for time to progression", "0.5 = chance, 1 = perfect"),
    "mae_index": ("mean absolute error of the current-score estimate", "SvdH units"),
    "icc_index": ("agreement (ICC) of the current-score estimate with readers", "0-1"),
    "mae_svdh_current": ("mean absolute error of the current-score estimate", "SvdH units"),
    "mae_region": ("mean absolute error of per-region damage readings", "SvdH units"),
    "corr_region": ("correlation of per-region damage readings with reader scores", "-1 to 1"),
    "coverage_interval": ("share of observed changes inside the raw (uncalibrated) interval", "0-1"),
}

DEFAULT_LIMITATIONS: tuple[str, ...] = (
    "Research software, not a medical device: forecasts must not drive treatment decisions.",
    "Performance holds for patients like those in the training cohort (same kind of centres, "
    "radiograph protocols, disease stage); it has not been checked on an external cohort unless "
    "the metrics above say so.",
    "Reader scores (the training targets) vary between readers by a few SvdH units; errors of "
    "that size are within reading noise.",
    "Intervals cover the stated share of patients on average over a cohort, not for each "
    "patient; subgroups (see Subgroups) can be over- or under-covered.",
    "Patients without usable radiographs get a covariates-only forecast (flagged in `note`), "
    "which is less accurate.",
    "Heatmaps show where the model looked, not where damage is; they can highlight image "
    "artefacts.",
)


@dataclass
class ModelCardInputs:
    """What a card says about one model.

    ``data`` describes the training data in plain words (``{"cohort fingerprint": ...,
    "patients": 300, ...}``); ``metrics`` maps metric names to values (see module docstring);
    ``subgroups`` is a tidy table with ``subgroup`` and ``level`` columns plus metric columns
    (e.g. :func:`progression.calibration.empirical_coverage` output); ``config`` is the
    resolved config as nested dicts.
    """

    name: str
    data: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    subgroups: pd.DataFrame | None = None
    calibration: ConformalCalibration | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    run_id: str = ""
    created: str = ""
    simulated_data: bool = False
    limitations: Sequence[str] = ()
    scoring: str = DEFAULT_SYSTEM  # the scoring system of the training cohort: the card's units


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _both_sides(correction: Correction) -> str:
    """``"0.5 below, 3.2 above"``: how far a calibrated bound moved out (negative: in)."""
    return f"{_number(correction.lo)} below, {_number(correction.hi)} above"


def _describe(name: str) -> tuple[str, str]:
    """``("test/mae_delta_1y")`` -> ("mean absolute error of the predicted change, 1 year", unit)."""
    stem = name.rsplit("/", 1)[-1]
    match = re.fullmatch(r"(.+?)_(\d+(?:\.\d+)?)y", stem)
    base, horizon = (match.group(1), match.group(2)) if match else (stem, None)
    text, unit = _METRICS.get(base, ("", ""))
    if text and horizon:
        text += f", {horizon}-year horizon"
    return text, unit


def metric_rows(metrics: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows ``metric, meaning, value, ci (95%), n, unit`` for the card's metrics table,
    named metrics first in the given order, then the rest (training losses and the like)."""
    rows = []
    named = sorted(metrics, key=lambda name: not _describe(name)[0])
    for name in named:
        raw = metrics[name]
        value = dataclasses.asdict(raw) if dataclasses.is_dataclass(raw) else raw
        if isinstance(value, Mapping):
            point, n = value.get("value"), value.get("n")
            lo, hi = value.get("ci_lo", value.get("lo")), value.get("ci_hi", value.get("hi"))
        else:
            point, lo, hi, n = value, None, None, None
        meaning, unit = _describe(name)
        has_ci = lo is not None and hi is not None and np.isfinite([lo, hi]).all()
        rows.append(
            {
                "metric": name,
                "meaning": meaning,
                "value": _number(point),
                "ci": f"{_number(lo)} to {_number(hi)}" if has_ci else "not computed",
                "n": _number(n),
                "unit": unit,
            }
        )
    return rows


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (no extra dependency), numbers to 3 significant digits."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(_number(v) if not isinstance(v, str) else v for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def render_model_card(card: ModelCardInputs) -> str:
    """The card as markdown text."""
    import jinja2

    from progression.config import flatten

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
        autoescape=False,  # markdown, not HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    limitations = list(DEFAULT_LIMITATIONS)
    if card.simulated_data:
        limitations.insert(0, "Trained on a SIMULATED cohort: it demonstrates the pipeline and "
                              "says nothing about real patients.")
    if card.calibration is None:
        limitations.append("The forecast interval was not conformally calibrated (too few "
                           "calibration patients or calibration switched off): it may be too narrow.")
    limitations.extend(card.limitations)
    calibration = None
    if card.calibration is not None:
        # Asymmetric CQR widens the two sides by different amounts (skewed SvdH change needs
        # far more room above than below), so every cell names both.
        cal = card.calibration
        calibration = {
            "level": f"{cal.level:.0%}",
            "pooled": cal.scale_by_horizon,
            "per_year": f"{_number(cal.per_year.lo)} (below) and {_number(cal.per_year.hi)} (above)",
            "rows": [
                {"horizon": f"{h:g}", "q": _both_sides(cal.correction_for(h)[0]),
                 "n": cal.n_calibration[h]}
                for h in sorted(cal.n_calibration)
            ],
        }
    rows = metric_rows(card.metrics)
    return env.get_template(TEMPLATE).render(
        name=card.name,
        run_id=card.run_id,
        created=card.created,
        data=card.data,
        simulated=card.simulated_data,
        metrics=[r for r in rows if r["meaning"]],
        other_metrics=[r for r in rows if not r["meaning"]],
        subgroups=None if card.subgroups is None or card.subgroups.empty else markdown_table(card.subgroups),
        calibration=calibration,
        limitations=limitations,
        config=flatten(dict(card.config)),
        system=scoring_system(card.scoring),
    )


def write_model_card(card: ModelCardInputs, path: str | Path) -> Path:
    """Write the card as markdown (atomically) and return its path."""
    atomic_write_text(path, render_model_card(card))
    return Path(path)


def flatten_metrics(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Metric name -> value from a nested results dict (e.g. ``metrics.json`` of evaluate).

    A leaf is a number or a mapping with a ``value`` key; other nesting levels are joined
    with ``/`` (``{"model": {"test/mae_delta_1y": {...}}}`` -> ``model/test/mae_delta_1y``).
    """
    out: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "value" not in value:
            out.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, Mapping | int | float) and not isinstance(value, bool):
            out[name] = value
    return out


def evaluation_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """The model's metrics from the results of ``progression evaluate`` (``metrics.json``),
    named as in MLflow (``test/mae_delta_1y``, ``test/cindex_event``); a plain mapping of
    name -> value is read with :func:`flatten_metrics`."""
    if not {"model", "metrics"} <= set(results) or results["model"] not in results["metrics"]:
        return flatten_metrics(results)
    mine = results["metrics"][results["model"]]
    out = {f"test/{name}_{label}": value
           for label, by_name in mine.get("horizons", {}).items() for name, value in by_name.items()}
    out.update({f"test/{name}": value for name, value in mine.get("overall", {}).items()})
    return out


def checkpoint_card(
    checkpoint: str | Path, metrics: Mapping[str, Any] | None = None,
    subgroups: pd.DataFrame | None = None,
) -> ModelCardInputs:
    """Card inputs from a checkpoint's stored metadata (config, split, fingerprint, calibration);
    ``subgroups``: the subgroup table (:func:`progression.train.validation.validation_subgroups`)."""
    from progression.trained import load_trained

    trained = load_trained(checkpoint)
    meta = trained.meta
    cfg = meta.config
    data_path = cfg["data"]["path"]
    split = meta.split
    data = {
        "cohort": f"`{data_path}`",
        "cohort fingerprint": f"`{meta.cohort_fingerprint or 'unknown'}`",
        **{f"{name} patients": len(split[name]) for name in ("train", "val", "calibration", "test")
           if name in split},
        "image size": f"{cfg['data']['image_size']} px",
        "backbone": cfg["model"]["backbone"],
    }
    source = meta.encoder_from
    if source:
        data["image encoder"] = (f"trained on cohort `{source.get('cohort_fingerprint')}` "
                                 f"(`{source['checkpoint']}`), then {meta.image_epochs} "
                                 "image epochs on this cohort")
    if meta.crossfit:  # train.crossfit_folds > 1
        corr = [c for c in meta.crossfit["fold_val_corr_region"] if c is not None]
        data["sequence stage readings"] = (
            f"out of fold: {meta.crossfit['folds']} fold encoders, each trained on the other "
            "folds, read the training films"
            + (f" (held-out correlation with reader region scores {min(corr):.2f}-{max(corr):.2f})"
               if corr else ""))
    limitations = []
    reading = meta.image_reading
    if reading:
        from progression.models.module import MIN_READING_CORR

        corr = reading["val_corr_region"]
        data["image reading (validation)"] = (
            f"correlation {corr:.2f} with reader region scores after {reading['image_epochs']} image epochs")
        if corr < MIN_READING_CORR:
            limitations.append(
                f"The image encoder did not learn to read damage (validation correlation {corr:.2f} "
                "with reader region scores): forecasts rest on covariates and scored history, "
                "and per-joint readings and heatmaps say little.")
    return ModelCardInputs(
        name=meta.run_id or Path(checkpoint).stem,
        run_id=meta.run_id or "",
        data=data,
        metrics=dict(metrics or {}),
        subgroups=subgroups,
        calibration=trained.calibration,
        config=cfg,
        simulated_data=(meta.simulated if meta.simulated is not None  # older: look at the cohort
                        else bool(data_path) and (Path(data_path) / "truth").is_dir()),
        limitations=limitations,
        scoring=meta.scoring,
    )


def write_checkpoint_card(
    checkpoint: str | Path,
    path: str | Path,
    metrics: Mapping[str, Any] | None = None,
    metrics_path: str | Path | None = None,
    subgroups: pd.DataFrame | None = None,
) -> Path:
    """Write the model card of ``checkpoint`` to ``path``.

    ``metrics``: a results dict; ``metrics_path``: a JSON file holding one (evaluate's
    ``metrics.json``); ``subgroups``: the card's subgroup table. A missing or unreadable JSON file raises ProgressionError.
    """
    import json

    from progression.errors import ProgressionError

    results = dict(metrics or {})
    if metrics_path is not None:
        try:
            results.update(json.loads(Path(metrics_path).read_text()))
        except (OSError, ValueError) as exc:
            raise ProgressionError(
                f"metrics file '{metrics_path}' cannot be read as JSON ({exc}); give the "
                "metrics.json written by `progression evaluate`"
            ) from None
    card = checkpoint_card(checkpoint, evaluation_metrics(results), subgroups)
    return write_model_card(card, path)
