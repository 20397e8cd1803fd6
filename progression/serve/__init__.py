"""REST service: one patient's forecast as JSON or FHIR R4, from one loaded model.

``progression serve`` (progression/commands/serve.py) builds it; docs/serve.md shows how to
call it. Modules: :mod:`~progression.serve.predictor` (the loaded model, the one link to the
prediction code), :mod:`~progression.serve.schemas` (request/response bodies),
:mod:`~progression.serve.adapter` (a request as format-v1 tables), :mod:`~progression.serve.fhir`
(the FHIR mapping), :mod:`~progression.serve.safety` (token, limits, image root) and
:mod:`~progression.serve.app` (routes and errors).
"""
