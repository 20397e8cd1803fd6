"""One loaded model answering one patient at a time, with the numbers ``predict`` gives.

This is the service's only dependency on the prediction code: the model is loaded once
(:func:`~progression.trained.load_trained`) and every request goes through the same steps as
:func:`~progression.predict.predict_cohort` for a one-patient cohort: :meth:`Cohort.from_frames`
(the format-v1 checks), ``build_arrays`` cut at the index visit, each film encoded once
(:meth:`~progression.models.forecaster.Forecaster.encode_films`), the sequence model
(:func:`~progression.predict.forecast_arrays`) and the stored conformal correction of the
history's regime (:func:`~progression.predict.calibrate_forecasts`). Films are
decoded in a thread pool straight to the uint8 pixels the image cache would hold
(:func:`~progression.cohort.workers.decode_u8`), so no request writes to the shared cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from progression.cohort import Cohort
from progression.data.arrays import AGE_COLUMN, build_arrays
from progression.errors import ImageError
from progression.predict import calibrate_forecasts, forecast_arrays
from progression.trained import load_trained


@dataclass(frozen=True)
class Film:
    """One radiograph of a request: where it sits and the file to decode (absolute path)."""

    visit_date: str  # YYYY-MM-DD
    region: str
    path: str
    field: str  # the request field it came from, named in errors


class FilmError(ImageError):
    """A film of a request cannot be decoded; ``field`` names it in the request."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# Films through the encoder at once: predict_cohort's default (4 x 64 patients), so a request
# is encoded in the batches predict uses.
_FILMS_PER_BATCH = 256


class _DecodedFilms:
    """The ``get(slots)`` of :class:`~progression.cohort.ImageCache` over films decoded in memory,
    so :meth:`~progression.models.forecaster.Forecaster.encode_films` reads them exactly as it
    reads the cache."""

    def __init__(self, pixels: list[np.ndarray]):
        self._pixels = np.stack(pixels) if pixels else np.zeros((0, 1, 1), np.uint8)

    def get(self, slots: np.ndarray | Sequence[int]) -> np.ndarray:
        return self._pixels[np.asarray(slots, dtype=np.int64)]


class Predictor:
    """The model of ``checkpoint`` (a .ckpt path or an MLflow model URI), loaded once.

    ``decode_threads``: films decoded at once across all requests. ``parallel``: forecasts
    through the network at once (the weights are shared and read-only in inference); with one
    torch thread each, parallel requests use the cores better than one request spread over
    them (measured in docs/serve.md).
    """

    def __init__(self, checkpoint: str | Path, tracking_uri: str | None = None,
                 decode_threads: int = 4, parallel: int = 2):
        self.source = str(checkpoint)
        trained = load_trained(checkpoint, tracking_uri)
        self.path = trained.path
        self.meta = trained.meta
        self.cfg = trained.config
        self.model = trained.model
        self.spec = trained.covariates
        self.trained = trained
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        with open(self.path, "rb") as f:
            self.version = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()[:16]
        self._slots = threading.BoundedSemaphore(max(1, parallel))
        self._pool = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode")

    # ------------------------------------------------------------------ what it reads

    @property
    def uses_images(self) -> bool:
        return self.model.encoder is not None

    @property
    def static_covariates(self) -> list[str]:
        return [c.name for c in self.spec.static_numeric + self.spec.static_categorical]

    @property
    def visit_covariates(self) -> list[str]:
        """Per-visit covariates a request may send (age at visit is derived from birth_date)."""
        return [c.name for c in self.spec.visit_numeric + self.spec.visit_categorical
                if c.name != AGE_COLUMN]

    @property
    def interval_level(self) -> float:
        return float(self.cfg.model.interval_level)

    # ------------------------------------------------------------------ forecasting

    def forecast(self, patients: pd.DataFrame, visits: pd.DataFrame, films: Sequence[Film],
                 horizons: Sequence[float]) -> pd.DataFrame:
        """The predictions table (:data:`~progression.columns.PREDICTION_COLUMNS`) of one
        patient given as format-v1 tables; ``films`` are files already checked to exist.

        Raises :class:`FilmError` naming the request field of a film that cannot be decoded,
        and :class:`~progression.errors.CohortError` for tables format v1 refuses.
        """
        images = pd.DataFrame(
            [(f_.visit_date, f_.region, f_.path) for f_ in films],
            columns=["visit_date", "region", "path"])
        images.insert(0, "patient_id", patients["patient_id"].iloc[0])
        cohort = Cohort.from_frames(patients, visits, images if len(images) else None)
        arrays = build_arrays(cohort, self.spec, self.uses_images, None, truncate_to_index=True,
                              targets=False)
        pixels = self._decode(arrays.image_path, {f_.path: f_.field for f_ in films})
        with self._slots:
            feats = None
            if self.uses_images and arrays.image_path:
                slots = np.arange(len(pixels))
                feats = self.model.encode_films(_DecodedFilms(pixels), slots,
                                                arrays.image_region, slots, self.device,
                                                _FILMS_PER_BATCH)
            frame = forecast_arrays(self.model, arrays, feats, horizons, 1, self.device)
        return calibrate_forecasts(frame, self.trained, arrays)

    def _decode(self, paths: list[str], fields: dict[str, str]) -> list[np.ndarray]:
        from progression.cohort.workers import decode_u8

        size = self.cfg.data.image_size
        results = list(self._pool.map(decode_u8, [(p, size) for p in paths]))
        out = []
        for path, (pixels, error, _, _) in zip(paths, results):
            if error is not None:
                field = fields.get(path, "images")
                raise FilmError(field, f"{field}: the film cannot be decoded (DICOM, PNG, TIFF "
                                       "or JPEG expected); send a readable radiograph")
            out.append(np.frombuffer(pixels, dtype=np.uint8).reshape(size, size))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
