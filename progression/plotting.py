"""Matplotlib figures made and encoded without pyplot.

Reports are written from notebooks as often as from the command line: pyplot (and
``matplotlib.use``) would change the caller's global backend and keep figures alive in its
registry. Figures here are plain :class:`~matplotlib.figure.Figure` objects with an Agg
canvas, encoded to PNG bytes by one function, so every report draws the same way.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float, dpi: float = 100) -> Figure:
    """A figure of ``width`` x ``height`` inches, drawn by Agg, unknown to pyplot."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, crop: bool = False) -> bytes:
    """``fig`` as PNG at its own dpi. ``crop`` trims the canvas to what is drawn
    (``bbox_inches="tight"``): it draws the figure twice, so fixed margins suit figures that
    are made many times (evaluation reports), cropping those with free-form legends."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight" if crop else None)
    return buffer.getvalue()
