"""The analyst notebook runs from top to bottom on a small real tracking store.

The store holds a 2-trial tuning study (a parent run and two trained trial runs) and the best
trial registered as ``champion``; the notebook finds them through its environment variables.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from test_train_support import simulated_cohort, tiny_overrides

from progression.config import load_config
from progression.registry import register_run_model
from progression.tuning.space import parse_search_space
from progression.tuning.study import tune

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_runs.ipynb"
SPACE = """
sampler: {type: random, seed: 1}
pruner: {type: none}
params:
  train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def _outputs(nb) -> tuple[str, set[str]]:
    """All text the notebook printed or displayed, and the MIME types it produced."""
    text, kinds = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                kinds |= set(out.data)
                text.append(out.data.get("text/plain", ""))
            elif out.output_type == "error":
                kinds.add("error")
    return "\n".join(text), kinds


def test_compare_runs_notebook_lists_trials_and_forecasts_with_the_champion(
    tmp_path_factory, tmp_path, monkeypatch
):
    cohort = simulated_cohort(tmp_path_factory)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = load_config("tiny", tiny_overrides(
        cohort, tmp_path, uri, **{"train.max_epochs": 2, "train.image_epochs": 0}))
    result = tune(cfg, parse_search_space(SPACE, cfg), "nb", n_trials=2, progress=False)
    champion_run = result.best_run_id
    register_run_model(champion_run, "progression-nb", alias="champion", tracking_uri=uri)

    monkeypatch.setenv("PROGRESSION_TRACKING_URI", uri)
    monkeypatch.setenv("PROGRESSION_EXPERIMENT", cfg.tracking.experiment)
    monkeypatch.setenv("PROGRESSION_MODEL", "models:/progression-nb@champion")
    monkeypatch.setenv("PROGRESSION_COHORT", str(cohort))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    text, kinds = _outputs(nb)
    assert "error" not in kinds
    assert "image/png" in kinds  # the comparison figure
    assert f"study nb: 2 trials, best trial {result.best_trial}" in text
    assert "nb #0" in text and "nb #1" in text  # both trials in the comparison table
    assert f"trained in run {champion_run}" in text
    assert "12 patients forecast" in text
