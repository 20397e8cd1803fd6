"""The image encoder: one timm backbone shared by every region and visit (Siamese).

Adapter in the style of open_clip's ``TimmModel``: the backbone's classifier is removed,
its pooled features are projected to ``embed_dim``, and small heads read damage from the
embedding. There is exactly one backbone instance; left/right hands and feet at every visit
go through the same weights, so the same film always gives the same embedding and a change
between visits is a change in the film, not in the network.

Damage heads predict ``log1p`` of SvdH units (squared error in that space; L1 with a
softplus output collapsed to the median, docs/design_decisions.md#damage-is-learned-in-log-space).
Each region has its own output rows because hands and feet score different joints on
different scales.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from progression.models.backbones import create_backbone
from progression.scoring import REGIONS, joints_in_region

N_REGIONS = len(REGIONS)
# Joints per region in progression.scoring order (22 per hand, 6 per foot).
JOINTS_PER_REGION: tuple[int, ...] = tuple(len(joints_in_region(r)) for r in REGIONS)
MAX_JOINTS = max(JOINTS_PER_REGION)


def images_to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[n, s, s]`` (or float in [0, 1]) -> float ``[n, 1, s, s]`` centred near 0.

    Batches travel as uint8 (4x less to copy to the GPU) and become floats here, in one new
    tensor scaled in place (each extra film-sized temporary cost ~5% of a tiny encoder's pass).
    """
    if images.dtype == torch.uint8:
        x = images.float().div_(255.0).sub_(0.5)
    else:
        x = images.float() - 0.5  # never in place on the caller's tensor
    return x.div_(0.25).unsqueeze(1)


class ImageEncoder(nn.Module):
    """Backbone -> embedding -> per-region and per-joint damage (log1p SvdH units).

    ``forward(images, region)`` takes images ``[n, s, s]`` and region indices ``[n]`` (into
    :data:`progression.scoring.REGIONS`) and returns ``embedding [n, embed_dim]``,
    ``region_log [n, 2]`` (erosion, JSN of the whole region) and ``joint_log
    [n, MAX_JOINTS, 2]`` (per joint; rows beyond the region's joints are padding).
    """

    def __init__(
        self, backbone: str, embed_dim: int, backbone_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, backbone_kwargs)
        self.proj = nn.Sequential(
            nn.Linear(self.backbone.num_features, embed_dim), nn.LayerNorm(embed_dim), nn.GELU()
        )
        self.embed_dim = embed_dim
        self.region_head = nn.Linear(embed_dim, N_REGIONS * 2)
        self.joint_head = nn.Linear(embed_dim, N_REGIONS * MAX_JOINTS * 2)

    def init_damage_bias(self, region_log_mean: torch.Tensor, joint_log_mean: torch.Tensor) -> None:
        """Start the damage heads at the training mean (``[R, 2]`` and ``[R, J, 2]``, log1p).

        Saves the first epochs from only learning the average damage level.
        """
        with torch.no_grad():
            self.region_head.bias.copy_(region_log_mean.reshape(-1))
            self.joint_head.bias.copy_(joint_log_mean.reshape(-1))

    def forward(self, images: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.proj(self.backbone(images_to_input(images)))
        n = emb.shape[0]
        rows = torch.arange(n, device=emb.device)
        region_log = self.region_head(emb).view(n, N_REGIONS, 2)[rows, region]
        joint_log = self.joint_head(emb).view(n, N_REGIONS, MAX_JOINTS, 2)[rows, region]
        return {"embedding": emb, "region_log": region_log, "joint_log": joint_log}
