"""Transparency for clinicians and reviewers: where the model looked, what drove a forecast.

- :mod:`~progression.explain.gradcam`: Grad-CAM heatmaps over each radiograph and overlays.
- :mod:`~progression.explain.attributions`: integrated gradients for covariates and visits,
  and the joint hit-rate check of heatmaps against the joints that truly progressed.
- :mod:`~progression.explain.joints`: the encoder's per-joint head read out as per-joint
  damage (SvdH units) for every film, and its change since each region's first film.
- :mod:`~progression.explain.report`: the per-patient HTML forecast report.

The markdown model card written for each model is :mod:`progression.train.model_card`.
"""
