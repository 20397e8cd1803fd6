"""Siamese change head: the damage change read between two films of one region of one patient.

The shared encoder makes the same film give the same embedding at any visit, but a change
computed as the difference of two single-film readings carries the noise of both. This head
reads the change from the pair of embeddings directly and is trained on reader-scored pairs
(the change of the region score, or of the visit total summed over the regions, between the
two visits). It is antisymmetric by construction, ``h(a, b) = g(a, b) - g(b, a)``: swapping
the films negates the change exactly (IEEE subtraction is exactly antisymmetric, and the two
calls of ``g`` are the same computations in swapped order; no dropout, which would draw
different masks for the two calls). The sequence model receives the
read change and its rate (``model.change_head=true``).
"""

from __future__ import annotations

import torch
from torch import nn

REGION_EMBED = 4  # size of the region code given to g (hands and feet change on other scales)


class ChangeHead(nn.Module):
    """``forward(later, earlier, region)`` -> change from ``earlier`` to ``later`` ``[n]``,
    in units of the sequence model's rate scale (SvdH units = output x ``rate_scale``).

    ``later``/``earlier``: embeddings ``[n, embed_dim]`` of two films of the same region;
    ``region``: region indices ``[n]``.
    """

    def __init__(self, embed_dim: int, n_regions: int, hidden: int = 32):
        super().__init__()
        self.region = nn.Embedding(n_regions, REGION_EMBED)
        self.g = nn.Sequential(
            nn.Linear(3 * embed_dim + REGION_EMBED, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def _g(self, a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        return self.g(torch.cat([a, b, a - b, region], dim=-1)).squeeze(-1)

    def forward(self, later: torch.Tensor, earlier: torch.Tensor, region: torch.Tensor
                ) -> torch.Tensor:
        code = self.region(region)
        return self._g(later, earlier, code) - self._g(earlier, later, code)
