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
    """uint8 or [0, 1] float ``[n, s, s]`` -> augmented float ``[n, s, s]`` in [0, 1].

    The sampling grid is two broadcast sums of per-image row and column terms, not
    ``F.affine_grid`` (a batched 3x2 matrix product that cost 3-4x the resampling itself on
    CPU), and the uint8 -> [0, 1] scaling is folded into the contrast after resampling (which
    is linear), saving a pass over the films.
    """
    x = images.float()
    n = x.shape[0]
    if n == 0:
        return x
    height, width = x.shape[1:]
    u = torch.rand(n, 6, device=x.device) * 2.0 - 1.0
    angle = u[:, 0] * math.radians(MAX_ROTATION_DEG)
    zoom = 1.0 + u[:, 1] * MAX_ZOOM
    cos, sin = (torch.cos(angle) / zoom)[:, None], (torch.sin(angle) / zoom)[:, None]
    shift_x, shift_y = u[:, 2:3] * MAX_SHIFT * 2, u[:, 3:4] * MAX_SHIFT * 2
    # Pixel centres in [-1, 1] where F.affine_grid puts them (align_corners=False).
    xs = (torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1
    # grid = theta @ (x, y, 1) with theta = [[cos, -sin, shift_x], [sin, cos, shift_y]]
    grid = torch.empty(n, height, width, 2, device=x.device, dtype=x.dtype)
    torch.add((cos * xs)[:, None, :], (shift_x - sin * ys)[:, :, None], out=grid[..., 0])
    torch.add((sin * xs)[:, None, :], (shift_y + cos * ys)[:, :, None], out=grid[..., 1])
    x = F.grid_sample(x.unsqueeze(1), grid, align_corners=False, padding_mode="zeros").squeeze(1)
    contrast = 1.0 + u[:, 4, None, None] * MAX_CONTRAST
    if images.dtype == torch.uint8:
        contrast = contrast / 255.0
    brightness = u[:, 5, None, None] * MAX_BRIGHTNESS
    return x.mul_(contrast).add_(brightness).clamp_(0.0, 1.0)
