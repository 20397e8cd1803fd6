"""Figure: simulated radiographs at low and high damage, with the true SvdH grades.

Top row: a left hand and a right foot at low and at high damage (damage drawn by the
simulator's own accrual process); each damaged joint is labelled E<erosion> N<JSN>.
Bottom row: one MCP joint through erosion grades 0-5 and JSN grades 0-4.

With ``--styles``: the same patient's films in every film style (``progression simulate
--style``) side by side, and one MCP joint through the erosion grades in each style.

    python experiments/figure_simulated_hands.py           # docs/figures/simulated_hands.png
    python experiments/figure_simulated_hands.py --styles  # docs/figures/simulated_styles.png
"""

from __future__ import annotations

import argparse
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from progression.io import atomic_write_bytes  # noqa: E402
from progression.scoring import JOINTS  # noqa: E402
from progression.simulate import FILM_STYLES, FilmStyle, SimulationConfig, render_region  # noqa: E402
from progression.simulate import process as proc  # noqa: E402

N = proc.N_JOINTS


def _damage(units: int, seed: int) -> np.ndarray:
    """Grades (2 x 56) after ``units`` SvdH units accrued by the simulator's process."""
    rng = np.random.default_rng(seed)
    patient, _ = proc.draw_patient(SimulationConfig(), rng)
    grades = np.zeros(2 * N, dtype=np.int64)
    for _ in range(10):  # in steps, so damaged joints attract more damage
        proc.allocate(grades, units // 10, patient.propensity, rng)
    return grades


def _region_grades(grades: np.ndarray, region: str) -> tuple[dict, dict]:
    erosion, jsn = {}, {}
    for j, joint in enumerate(JOINTS):
        if joint.region == region:
            erosion[joint.site] = int(grades[j])
            jsn[joint.site] = int(grades[N + j])
    return erosion, jsn


def _panel(
    ax, region: str, grades: np.ndarray, size: int, title: str, style: FilmStyle | None = None
) -> None:
    erosion, jsn = _region_grades(grades, region)
    kind = region.split("_")[0]
    img, locations = render_region(
        kind, region.endswith("right"), erosion, jsn, size, np.random.default_rng(7), style=style
    )
    h, w = img.shape
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    total = sum(erosion.values()) + sum(jsn.values())
    ax.set_title(f"{title}\n{region}: SvdH {total}", fontsize=9)
    for site, (x, y) in locations.items():
        e, n = erosion.get(site, 0), jsn.get(site, 0)
        if e or n:
            label = " ".join(t for t in (f"E{e}" if e else "", f"N{n}" if n else "") if t)
            ax.annotate(
                label, (x * w, y * h), xytext=(4, 5), textcoords="offset points",
                color="yellow", fontsize=6.5, va="bottom",
                bbox={"boxstyle": "round,pad=0.1", "fc": "black", "alpha": 0.35, "lw": 0},
            )  # fmt: skip
            ax.plot(x * w, y * h, "o", mfc="none", mec="orange", ms=4, mew=0.6)
    ax.set_axis_off()


def _ladder(ax, what: str, size: int, style: FilmStyle | None = None, name: str = "") -> None:
    tiles = []
    grades = range(6) if what == "erosion" else range(5)
    style = style or FilmStyle()
    for g in grades:
        erosion = {"mcp2": g} if what == "erosion" else {}
        jsn = {"mcp2": g} if what == "jsn" else {}
        img, locations = render_region(
            "hand", False, erosion, jsn, size, np.random.default_rng(1), style=style
        )
        h, w = img.shape
        x, y = locations["mcp2"]
        cx, cy, r = int(x * w), int(y * h), int(0.075 * h * style.field)
        tiles.append(np.pad(img[cy - r : cy + r, cx - r : cx + r], 2, constant_values=1.0))
    ax.imshow(np.concatenate(tiles, axis=1), cmap="gray", vmin=0, vmax=1)
    step = tiles[0].shape[1]
    for k, g in enumerate(grades):
        ax.text(
            k * step + step / 2,
            -4,
            f"{'E' if what == 'erosion' else 'N'}{g}",
            ha="center",
            fontsize=8,
        )
    ax.set_title(f"{name}MCP2, {what} grades ({size} px image)", fontsize=9, pad=14)
    ax.set_axis_off()


def _styles_figure(size: int):
    """The same patient (same grades, same random stream) in every film style."""
    grades = _damage(120, seed=11)
    fig = plt.figure(figsize=(8 * len(FILM_STYLES), 9.6))
    grid = fig.add_gridspec(
        2, 2 * len(FILM_STYLES), height_ratios=[3.4, 1.0], hspace=0.02, wspace=0.04
    )
    for k, (name, style) in enumerate(FILM_STYLES.items()):
        _panel(fig.add_subplot(grid[0, k]), "hand_left", grades, size, f"{name} style", style)
        _panel(
            fig.add_subplot(grid[0, len(FILM_STYLES) + k]), "foot_right", grades, size,
            f"{name} style", style,
        )  # fmt: skip
        _ladder(
            fig.add_subplot(grid[1, 2 * k : 2 * k + 2]), "erosion", 256, style, f"{name} style: "
        )
    fig.suptitle(
        "One simulated patient's films in each film style (progression simulate --style): "
        "same joints, same grades, another scanner's look",
        fontsize=10,
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="PNG to write (default: docs/figures/simulated_hands.png, "
                        "or simulated_styles.png with --styles)")
    parser.add_argument("--size", type=int, default=512, help="radiograph height in pixels")
    parser.add_argument("--styles", action="store_true",
                        help="the same patient in every film style instead")
    args = parser.parse_args()
    out = args.out or f"docs/figures/simulated_{'styles' if args.styles else 'hands'}.png"
    if args.styles:
        _save(_styles_figure(args.size), out)
        return

    low, high = _damage(12, seed=11), _damage(320, seed=11)
    fig = plt.figure(figsize=(16, 9.6))
    grid = fig.add_gridspec(2, 4, height_ratios=[3.4, 1.0], hspace=0.02, wspace=0.04)
    _panel(fig.add_subplot(grid[0, 0]), "hand_left", low, args.size, "low damage")
    _panel(fig.add_subplot(grid[0, 1]), "hand_left", high, args.size, "high damage")
    _panel(fig.add_subplot(grid[0, 2]), "foot_right", low, args.size, "low damage")
    _panel(fig.add_subplot(grid[0, 3]), "foot_right", high, args.size, "high damage")
    _ladder(fig.add_subplot(grid[1, :2]), "erosion", 256)
    _ladder(fig.add_subplot(grid[1, 2:]), "jsn", 256)
    fig.suptitle(
        "Simulated radiographs (progression simulate): E = erosion grade, N = joint space narrowing grade",
        fontsize=10,
    )
    _save(fig, out)


def _save(fig, out: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=170, bbox_inches="tight")
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
