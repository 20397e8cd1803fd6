"""Image backbones, created by name through timm's registry.

Any timm model name works (``resnet18``, ``resnet10t``, ``efficientnet_b0``); weights are
never downloaded (``pretrained=False``) because radiographs are single-channel and the
machines that train this often have no internet. ``small_cnn`` is registered here
alongside the timm names: a plain conv-BN-ReLU network that reads 256 px hand and foot
films on a CPU (at 256 px it read per-region damage better than resnet18, and on a 2-core
CPU it trained about 5x faster than resnet10t, 35 vs 7 images/s; see
docs/design_decisions.md#one-shared-encoder-siamese-no-pretrained-weights-a-small-cnn), and,
with ``width=4``, the tiny backbone the tests use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import register_model
from torch import nn

from progression.errors import ConfigError


class SmallCNN(nn.Module):
    """Four stride-2 stages of two 3x3 conv-BN-ReLU layers, then global average pooling.

    Answers timm's small API (``num_features``, ``forward_features``, ``forward_head``,
    ``reset_classifier``) so the encoder treats it like any timm backbone. Widths double per
    stage from ``width``; ``num_features`` = 8 * ``width``. Average pooling keeps the output
    proportional to how much damage the film shows, which suits additive SvdH scores.
    """

    def __init__(
        self, in_chans: int = 1, num_classes: int = 0, width: int = 16, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if width < 1:
            raise ConfigError(f"config key 'model.backbone_kwargs.width': must be >= 1, got {width}")

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        layers: list[nn.Module] = conv(in_chans, width, 2)
        cin = width
        for i in range(4):
            cout = width * 2**i
            layers += conv(cin, cout, 2 if i else 1) + conv(cout, cout, 1)
            cin = cout
        layers += conv(cin, cin, 2)
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.drop_rate = drop_rate
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(cin, num_classes) if num_classes else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """timm entry point for :class:`SmallCNN` (no pretrained weights exist)."""
    if pretrained:
        raise ConfigError("backbone 'small_cnn' has no pretrained weights")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return SmallCNN(**kwargs)


def create_backbone(name: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A single-channel backbone without classifier: ``forward(x)`` gives pooled features.

    ``name`` is any timm model name or ``small_cnn``; ``kwargs`` go to the model's
    constructor (e.g. ``{"width": 8}``). Raises ConfigError for an unknown name.
    """
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigError(
            f"config key 'model.backbone_kwargs': expected a mapping like {{width: 8}}, got {kwargs!r}"
        )
    if not timm.is_model(name):
        raise ConfigError(
            f"config key 'model.backbone': unknown backbone '{name}'; use 'small_cnn' or a timm "
            "model name (e.g. resnet18; list them with `python -c \"import timm; "
            "print(timm.list_models())\"`)"
        )
    try:
        return timm.create_model(name, pretrained=False, in_chans=1, num_classes=0, **dict(kwargs or {}))
    except TypeError as exc:
        raise ConfigError(
            f"config key 'model.backbone_kwargs': backbone '{name}' does not accept {dict(kwargs or {})} ({exc})"
        ) from None
