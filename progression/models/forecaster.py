"""The whole forecasting network: shared image encoder + sequence model, built from config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from progression.config import ModelConfig
from progression.data.layout import InputLayout
from progression.models.encoder import ImageEncoder
from progression.models.sequence import SequenceModel
from progression.scoring import RAPID_RATE

if TYPE_CHECKING:
    from progression.cohort import ImageCache


class Forecaster(nn.Module):
    """Images and visit tables -> per-visit damage and change forecasts.

    ``encoder`` is None for a covariates-only model (``model.use_images: false``). The
    sequence model never sees pixels: it reads the per-image feature table made by
    :meth:`image_features`, so training can encode every film once and reuse the table
    (stage 2), and prediction encodes each image exactly once.
    """

    def __init__(self, encoder: ImageEncoder | None, sequence: SequenceModel) -> None:
        super().__init__()
        self.encoder = encoder
        self.sequence = sequence

    @staticmethod
    def image_features(encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-image table ``[n, 2 + embed_dim]``: region log-scores, then the embedding."""
        return torch.cat([encoded["region_log"], encoded["embedding"]], dim=-1)

    def forward(
        self, images: torch.Tensor, image_region: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """End to end: ``batch['image_index']`` points into ``images`` ``[n, s, s]``."""
        feats = None
        if self.encoder is not None and images.shape[0] > 0:
            feats = self.image_features(self.encoder(images, image_region))
        return self.sequence(feats, batch)

    @torch.no_grad()
    def encode_films(self, cache: ImageCache, slots: np.ndarray, regions: np.ndarray,
                     rows: np.ndarray, device: torch.device, batch_size: int,
                     bf16: bool = False, progress: bool = False) -> torch.Tensor:
        """The per-image feature table ``[len(slots), 2 + embed_dim]`` (:meth:`image_features`):
        each film of ``rows`` goes through the encoder once, in eval mode (the mode it was in
        is restored); other rows stay 0. ``slots``: the films' rows in ``cache``;
        ``regions``: their region codes; ``bf16``: autocast to bfloat16."""
        from tqdm.auto import tqdm

        from progression.data.datamodule import image_batches

        feats = torch.zeros(len(slots), 2 + self.encoder.embed_dim, device=device)
        was_training = self.encoder.training
        self.encoder.eval()
        with tqdm(total=len(rows), desc="encoding images", unit="img", disable=not progress) as bar:
            for chunk, images, region in image_batches(cache, slots, regions, rows, batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = self.encoder(images.to(device), region.to(device))
                feats[torch.from_numpy(chunk).to(device)] = self.image_features(out).float()
                bar.update(len(chunk))
        self.encoder.train(was_training)
        return feats


def build_forecaster(cfg: ModelConfig, layout: InputLayout,
                     rapid_rate: float = RAPID_RATE) -> Forecaster:
    """A freshly initialised :class:`Forecaster` for ``cfg`` and the cohort's ``layout``;
    ``rapid_rate``: rapid progression in the cohort's score units/year (its scoring system)."""
    encoder = (
        ImageEncoder(cfg.backbone, cfg.embed_dim, cfg.backbone_kwargs) if cfg.use_images else None
    )
    sequence = SequenceModel(
        layout,
        image_dim=cfg.embed_dim if cfg.use_images else 0,
        image_feature_dim=cfg.image_feature_dim,
        embedding_dropout=cfg.embedding_dropout,
        hidden=cfg.seq_dim,
        layers=cfg.seq_layers,
        kind=cfg.seq_model,
        dropout=cfg.dropout,
        cat_embed_dim=cfg.cat_embed_dim,
        interval_level=cfg.interval_level,
        rapid_rate=rapid_rate,
        change_head=cfg.change_head,
    )
    return Forecaster(encoder, sequence)
