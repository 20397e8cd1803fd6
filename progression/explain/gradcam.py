"""Grad-CAM heatmaps: which parts of each radiograph pushed a forecast up.

Grad-CAM (Selvaraju et al., ICCV 2017) weights the feature maps of a convolutional layer by
the spatially averaged gradient of one scalar output (a patient's forecast change, or the
current-score head), sums them and keeps the positive part. It needs only a forward hook on
one layer (plain torch, no extra dependency), so it works with any timm backbone.

The scalar may depend on all images together: for a sequence model, ``model(images)`` is the
forecast from a patient's whole stack of radiographs and each image's map shows its share of
the gradient. A model that returns one value per image (``[N]``) is summed; as images do not
interact in eval mode, each map is then that image's own.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from progression.io import atomic_write_bytes


def _eval_mode(model: nn.Module) -> dict[nn.Module, bool]:
    """Switch every submodule to eval mode; returns each one's previous mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    return modes


def _restore_mode(modes: dict[nn.Module, bool]) -> None:
    # per module: a wrapper's own flag must not overwrite the wrapped model's
    for module, training in modes.items():
        module.training = training


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model``: the usual Grad-CAM layer (coarse but semantic)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer; pass target_layer")
    return convs[-1]


def finest_semantic_layer(model: nn.Module, image_size: int, min_cells: int = 8) -> nn.Module:
    """The last Conv2d whose output is still at least ``min_cells`` cells across.

    The very last conv of a CNN is often 2x2 at 64 px (stride 32): too coarse to tell one
    joint from the next. This picks the deepest layer that still resolves ``min_cells``
    positions per side (falls back to the first conv for tiny inputs), found with one dummy
    forward pass of a ``[1, C, image_size, image_size]`` input.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer; pass target_layer")
    sizes: dict[nn.Module, int] = {}
    handles = [
        c.register_forward_hook(lambda m, _i, out: sizes.__setitem__(m, min(out.shape[-2:])))
        for c in convs
    ]
    modes = _eval_mode(model)
    try:
        with torch.no_grad():
            model(torch.zeros(1, convs[0].in_channels, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
        _restore_mode(modes)
    fine = [c for c in convs if sizes.get(c, 0) >= min_cells]
    return fine[-1] if fine else convs[0]


def grad_cam(
    model: nn.Module, images: torch.Tensor, target_layer: nn.Module | None = None
) -> np.ndarray:
    """Grad-CAM maps ``[N, H, W]`` (float32, >= 0, unnormalised) for images ``[N, C, H, W]``.

    ``model`` maps the images to a scalar or to one value per image; ``target_layer`` (default:
    its last Conv2d) must run on the images in order (one call, or several calls on
    consecutive chunks). Maps are upsampled to the image size; divide by a shared maximum to
    compare images (see :func:`overlay`). The model runs in eval mode and is restored after.
    """
    layer = target_layer if target_layer is not None else last_conv_layer(model)
    activations: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: activations.append(out))
    modes = _eval_mode(model)
    try:
        # the input needs a gradient so the graph exists even when the weights are frozen
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            output = model(x)
            if not activations:
                raise ValueError(f"target layer {type(layer).__name__} was not run by the model")
            grads = torch.autograd.grad(output.sum(), activations)
    finally:
        handle.remove()
        _restore_mode(modes)
    feats = torch.cat([a.detach() for a in activations])
    grad = torch.cat(grads)
    if feats.shape[0] != images.shape[0] or feats.ndim != 4:
        raise ValueError(
            f"target layer output {tuple(feats.shape)} does not match {images.shape[0]} images"
        )
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * feats).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(
        cam, size=images.shape[-2:], mode="bilinear", align_corners=False
    )
    return cam[:, 0].numpy().astype(np.float32)


def overlay(
    image: np.ndarray, cam: np.ndarray, vmax: float | None = None, alpha: float = 0.5
) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``: the grey radiograph (0-1) with the heatmap blended over it.

    ``vmax`` scales the heatmap (default: this map's maximum; pass a patient-wide maximum so
    colours compare across images). Transparent where the map is zero, so the bone stays visible.
    """
    from matplotlib import colormaps

    scale = float(vmax if vmax is not None else cam.max())
    heat = np.clip(cam / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(cam)
    grey = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=2)
    colour = colormaps["inferno"](heat)[..., :3]
    weight = alpha * heat[..., None]
    rgb = (1.0 - weight) * grey + weight * colour
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a grey (``[H, W]`` in 0-1) or RGB uint8 image as PNG, atomically."""
    from matplotlib import image as mpimg

    buffer = io.BytesIO()
    if array.ndim == 2:
        mpimg.imsave(buffer, np.clip(array, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        mpimg.imsave(buffer, array, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
