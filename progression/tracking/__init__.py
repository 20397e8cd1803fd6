"""MLflow tracking: where runs go (:mod:`.store`), how every run is written (:mod:`.runs`), and
what may leave the machine in a run (:mod:`.redact`).

``store``: tracking URIs, the reachability check, the offline fallback and ``progression sync``.
``runs``: the one run writer used by train, tune, evaluate and enrich (same tags, params,
datasets everywhere). ``redact``: credentials and absolute paths out of tags, params and
checkpoints unless ``tracking.share_identifiers=true``.
"""

from progression.tracking.redact import redact, redact_command, redact_config, redact_text
from progression.tracking.runs import (
    KIND_TAG,
    MODEL_VERSION_TAG,
    SOURCE_RUN_TAG,
    CohortInput,
    cohort_input,
    create_run,
    log_cohorts,
    log_metrics,
    log_params,
    log_report,
    run_tags,
    system_metrics,
    training_run_name,
)
from progression.tracking.store import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    SYNCED_FROM_TAG,
    artifact_location,
    check_tracking,
    experiment_id,
    fluent_store,
    git_commit,
    kept_tracking_uri,
    offline_uri,
    resolve_tracking_uri,
    sync_runs,
    usable_tracking_uri,
)

__all__ = [
    "EXPERIMENT_KIND_TAG", "KIND_TAG", "MODEL_TRAINING_KIND", "MODEL_VERSION_TAG",
    "SOURCE_RUN_TAG", "SYNCED_FROM_TAG", "CohortInput", "artifact_location", "check_tracking",
    "cohort_input", "create_run", "experiment_id", "fluent_store", "git_commit",
    "kept_tracking_uri", "log_cohorts", "log_metrics", "log_params", "log_report", "offline_uri", "redact", "redact_command",
    "redact_config", "redact_text", "resolve_tracking_uri", "run_tags", "sync_runs",
    "system_metrics", "training_run_name", "usable_tracking_uri",
]
