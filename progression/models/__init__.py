"""The forecasting network and its training module.

- :mod:`~progression.models.backbones`: timm backbones by name, plus ``small_cnn``.
- :mod:`~progression.models.encoder`: the shared (Siamese) image encoder and damage heads.
- :mod:`~progression.models.sequence`: the time-aware sequence model and forecast heads.
- :mod:`~progression.models.forecaster`: both together, built from a :class:`ModelConfig`.
- :mod:`~progression.models.module`: the LightningModule of the staged fit.
- :mod:`~progression.models.checkpoint`: the checkpoint's typed metadata (:class:`CheckpointMeta`)
  and rebuilding the network; :func:`progression.trained.load_trained` is the way in.
"""

from __future__ import annotations

from progression.models.encoder import ImageEncoder
from progression.models.forecaster import Forecaster, build_forecaster
from progression.models.sequence import SequenceModel

__all__ = ["Forecaster", "ImageEncoder", "SequenceModel", "build_forecaster"]
