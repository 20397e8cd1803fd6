"""Parts of ``progression tune`` (the entry point is :func:`progression.tuning.study.tune`): search spaces,
study storage and dead-worker recovery, the Lightning pruning callback, and the MLflow
parent/child runs of a study."""
