"""Light, label-preserving augmentation of radiographs, on whole batches (CPU or GPU).

Small rotations, zooms and shifts (positioning differs between visits and sites) and
contrast/brightness changes (exposure differs). No flips: left and right films keep their
own heads, and erosion grades do not depend on orientation anyway.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 5.0
MAX_ZOOM = 0.05  # +-5 %
MAX_SHIFT = 0.04  # fraction of the image side
MAX_CONTRAST = 0.1
MAX_BRIGHTNESS = 0.05


def augment_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float ``[n, s, s]`` -> augmented float ``[n, s, s]`` in [0, 1]."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    n = x.shape[0]
    if n == 0:
        return x
    u = torch.rand(n, 6, device=x.device) * 2.0 - 1.0
    angle = u[:, 0] * math.radians(MAX_ROTATION_DEG)
    zoom = 1.0 + u[:, 1] * MAX_ZOOM
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([
        torch.stack([cos, -sin, u[:, 2] * MAX_SHIFT * 2], dim=-1),
        torch.stack([sin, cos, u[:, 3] * MAX_SHIFT * 2], dim=-1),
    ], dim=1)
    grid = F.affine_grid(theta, (n, 1, *x.shape[1:]), align_corners=False)
    x = F.grid_sample(x.unsqueeze(1), grid, align_corners=False, padding_mode="zeros").squeeze(1)
    contrast = 1.0 + u[:, 4, None, None] * MAX_CONTRAST
    brightness = u[:, 5, None, None] * MAX_BRIGHTNESS
    return (x * contrast + brightness).clamp(0.0, 1.0)
