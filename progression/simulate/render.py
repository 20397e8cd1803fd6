"""Render a stylised hand or foot radiograph whose joints show given SvdH grades.

Bright bone (cortex brighter than marrow), grey soft tissue, dark air. A joint's space
narrows linearly with its JSN grade (grade 4 = ankylosis: the bones meet); erosions
are bites out of the bone margin next to the joint, more and larger with the grade.
Each image gets a small rotation/scale/shift, the site's exposure, blur and noise, and
the film style's framing, detector response, noise texture, collimation and side marker.
Everything is vectorised numpy on small bounding boxes: a 256-px hand takes ~10 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from progression.simulate.anatomy import ASPECT, GEOMETRY, Anchor, Geometry

_R_REF = 0.03  # bone radius (image heights) that renders at full bone density


@dataclass(frozen=True)
class ImagingProfile:
    """How one site's equipment looks: exposure, contrast, sharpness and noise."""

    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    blur_px: float = 0.6  # at 256 px; scaled with the image size
    noise: float = 0.02  # SD of additive noise, in [0, 1] intensity units
    heel: float = 0.08  # relative brightness change top-to-bottom (anode heel effect)
    soft_tissue: float = 0.22


@dataclass(frozen=True)
class FilmStyle:
    """How one make of equipment and one department's habits shape every film they take,
    on top of each site's exposure (:class:`ImagingProfile`).

    The defaults are the project's original films (style "default"); the steps they leave
    off are skipped, so those films stay byte-identical. Lengths are in film heights
    unless the name says px (pixels of a 256-px film, scaled with the image size).
    """

    rotation_sd: float = 0.035  # radians (about 2 degrees)
    rotation_max: float = 0.09  # radians; rotations are clipped here
    shift_sd: float = 0.012  # positioning offset of the hand/foot on the film
    shift_max: float = 0.03
    field: float = 1.0  # anatomy size on the film; < 1 = a larger film: fewer pixels per joint
    film_aspect: float | None = None  # film width / height; None = the anatomy's (ASPECT)
    log_response: float = 0.0  # k of a logarithmic detector curve log1p(k x) / log1p(k)
    noise_scale: float = 1.0  # times the site's noise SD
    grain_px: float = 0.0  # correlation length (SD, px) of the noise; 0 = white noise
    blur_scale: float = 1.0  # times the site's blur
    collimation: bool = False  # unexposed (bright) borders outside a tilted rectangular field
    marker: bool = False  # a lead 'L' or 'R' burned into a top corner of the field


# name -> style; `progression simulate --style NAME`. The docs (docs/simulator.md) show both.
FILM_STYLES: dict[str, FilmStyle] = {
    "default": FilmStyle(),
    # An older computed-radiography room: 24 x 30 cm cassettes (the hand fills less of the
    # film, feet get a film as wide as a hand's), a log detector curve that flattens bone
    # contrast, grainier and stronger noise, a softer plate, looser positioning, a collimated
    # field with bright unexposed borders and a lead side marker.
    "cassette": FilmStyle(
        rotation_sd=0.06, rotation_max=0.12, shift_sd=0.015, shift_max=0.035, field=0.82,
        film_aspect=0.8, log_response=3.0, noise_scale=1.3, grain_px=1.0, blur_scale=1.2,
        collimation=True, marker=True,
    ),  # fmt: skip
}

_UNEXPOSED = 0.9  # intensity of the film where the collimator blocked the beam
_LEAD = 0.97  # intensity of a lead side marker
# Letter strokes in letter units (x right, y down; height 1, width 0.7).
_ARC = [(0.4 + 0.3 * np.sin(a), 0.25 - 0.25 * np.cos(a)) for a in np.linspace(0, np.pi, 7)]
_LETTERS = {
    "L": [((0.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (0.7, 1.0))],
    "R": [((0.0, 0.0), (0.0, 1.0)), ((0.0, 0.0), (0.4, 0.0)), ((0.4, 0.5), (0.0, 0.5)),
          ((0.3, 0.5), (0.7, 1.0)), *zip(_ARC[:-1], _ARC[1:])],
}  # fmt: skip


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


class _Frame:
    """Maps canonical coordinates (image heights) to pixels of one jittered image."""

    def __init__(
        self, kind: str, mirror: bool, size: int, scale: float, theta: float, shift,
        film_aspect: float | None = None,
    ):  # fmt: skip
        self.aspect = ASPECT[kind]
        film_aspect = self.aspect if film_aspect is None else film_aspect
        self.h = size
        self.w = int(round(film_aspect * size))
        self.mirror = mirror
        self.scale = scale
        self.rot = _rot(theta) * scale
        self.centre = np.array([self.aspect / 2, 0.5])
        self.film_centre = np.array([film_aspect / 2, 0.5])  # the anatomy is centred on it
        self.shift = np.asarray(shift, dtype=float)

    def point(self, p) -> np.ndarray:
        p = np.array(p, dtype=float)
        if self.mirror:
            p[..., 0] = self.aspect - p[..., 0]
        q = (p - self.centre) @ self.rot.T + self.film_centre + self.shift
        return q * self.h

    def vector(self, v) -> np.ndarray:
        v = np.array(v, dtype=float)
        if self.mirror:
            v[..., 0] = -v[..., 0]
        return v @ _rot(np.arctan2(self.rot[1, 0], self.rot[0, 0])).T

    def length(self, r: float) -> float:
        return r * self.scale * self.h


def _box(shape: tuple[int, int], lo: np.ndarray, hi: np.ndarray, pad: float):
    """Pixel window around the points ``lo``/``hi`` (+ ``pad``), clipped to ``shape``."""
    x0 = max(int(np.floor(min(lo[0], hi[0]) - pad)), 0)
    x1 = min(int(np.ceil(max(lo[0], hi[0]) + pad)) + 1, shape[1])
    y0 = max(int(np.floor(min(lo[1], hi[1]) - pad)), 0)
    y1 = min(int(np.ceil(max(lo[1], hi[1]) + pad)) + 1, shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    # broadcasting row/column coordinates (float32; python-float scalars keep float32)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def _segment_distance(xs, ys, p0, p1):
    """Distance (px) to the segment p0-p1 and the position 0-1 of the nearest point."""
    ax, ay = float(p0[0]), float(p0[1])
    dx, dy = float(p1[0]) - ax, float(p1[1]) - ay
    length2 = max(dx * dx + dy * dy, 1e-9)
    rx, ry = xs - ax, ys - ay
    s = _unit_clip(rx * (dx / length2) + ry * (dy / length2))
    return np.hypot(rx - s * dx, ry - s * dy), s


def _unit_clip(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [0, 1] in place (np.clip's Python wrapper is slow on small arrays)."""
    return np.minimum(np.maximum(x, 0.0, out=x), 1.0, out=x)


def _flare(ends: np.ndarray) -> np.ndarray:
    """1 within 1.2 end-radii of a bone end (the head/base), easing to 0 (shaft) by 3.2."""
    t = _unit_clip((ends - 1.2) / 2.0)
    return 1.0 - t * t * (3 - 2 * t)


def _clip_lists(g: Geometry) -> dict[str, list[tuple[str, str]]]:
    """Bone name -> the joints that shape it, and on which side of the joint arc."""
    clips: dict[str, list[tuple[str, str]]] = {}
    for sp in g.spaces:
        for name in sp.inner:
            clips.setdefault(name, []).append((sp.name, "inner"))
        for name in sp.outer:
            clips.setdefault(name, []).append((sp.name, "outer"))
    return clips


_CLIPS = {kind: _clip_lists(g) for kind, g in GEOMETRY.items()}


def _spaces_px(g: Geometry, frame: _Frame, jsn: dict[str, int]) -> dict[str, tuple]:
    """Per joint: centre, unit direction, radius, current width (px) and half-length."""
    by_site = {space: site for site, space in g.jsn_space.items()}
    out = {}
    for sp in g.spaces:
        grade = jsn.get(by_site.get(sp.name, ""), 0)
        width = frame.length(sp.width) * (1.0 - grade / 4.0)
        out[sp.name] = (
            frame.point(sp.center),
            frame.vector(sp.u),
            frame.length(sp.rho),
            width,
            frame.length(sp.half_length),
        )
    return out


def _notches(anchor: Anchor, severity: int, side: float, spaces, frame: _Frame):
    """Discs (centre px, radius px) bitten out of the bone for one erosion severity 0-5.

    A bite of depth ``depth`` (px into the bone) is a disc of radius ``radius`` centred
    ``radius - depth`` outside the bone margin, so it breaks the bright cortex.
    """
    if severity <= 0:
        return []
    if anchor.space:
        centre, u, rho, width, half = spaces[anchor.space]
        joint = centre + u * rho
        if anchor.side == "inner":
            c0, v, r = joint - u * (width / 2 + 0.75 * half), -u, half
        else:
            c0, v, r = joint + u * (width / 2 + 0.55 * half), u, 0.9 * half
        n = np.array([-v[1], v[0]]) * side
        margins = [(c0 + n * r, -n), (c0 - n * r, n)]  # (point on the margin, inward)
    else:  # a point on the margin of a carpal or forearm bone
        c0 = frame.point(anchor.point)
        v = frame.vector(anchor.inward)
        r = frame.length(anchor.radius)
        n = np.array([-v[1], v[0]]) * side
        margins = [(c0, v), (c0 + n * 0.9 * r, v)]
    discs = []
    for k, (point, inward) in enumerate(margins):
        if k == 0 or severity >= 3:
            radius = r * (0.4 + 0.08 * severity - 0.1 * k)
            depth = r * (0.32 + 0.12 * severity - 0.15 * k)
            discs.append((point + inward * (depth - radius), radius))
    if severity >= 4:  # subchondral destruction under the joint surface
        discs.append((c0 - v * 0.1 * r, r * (0.1 + 0.08 * (severity - 3))))
    if severity >= 5:
        discs.append((c0 + v * 0.3 * r, 0.55 * r))
    return discs


def _split(kind: str, grade: int, n_anchors: int) -> list[int]:
    """Severity per anchor: feet 0-10 = 0-5 on each side; hands 0-5 mostly on the head."""
    if n_anchors == 1:
        return [grade]
    if kind == "foot":
        return [(grade + 1) // 2, grade // 2]
    return [grade, max(0, grade - 3)]


def _soft_tissue(g: Geometry, frame: _Frame) -> np.ndarray:
    """Soft-tissue thickness 0-1, computed at half resolution (it is smooth) and upsampled."""
    soft = np.zeros(((frame.h + 1) // 2, (frame.w + 1) // 2), dtype=np.float32)
    for p0, p1, radius in g.soft:
        a, b = frame.point(p0) / 2, frame.point(p1) / 2
        r = frame.length(radius) / 2
        box = _box(soft.shape, a, b, r + 1)
        if box is None:
            continue
        sl, xs, ys = box
        d, _ = _segment_distance(xs, ys, a, b)
        np.maximum(soft[sl], np.sqrt(_unit_clip(1.0 - (d / r) ** 2)), out=soft[sl])
    soft = np.repeat(np.repeat(soft, 2, axis=0), 2, axis=1)[: frame.h, : frame.w]
    return gaussian_filter(soft, 0.7)


def _collimate(img: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
    """Bright unexposed borders outside a rectangular field tilted by ~0.7 degrees (SD),
    inset 1-4% of the film height from each edge, with a 1.5-px penumbra, in place.
    Returns the insets (left, right, top, bottom) in pixels."""
    h, w = img.shape
    insets = rng.uniform(0.01, 0.04, 4) * h
    left, right, top, bottom = (float(x) for x in insets)
    phi = float(rng.normal(0.0, 0.012))
    c, s = float(np.cos(phi)), float(np.sin(phi))
    xs = np.arange(w, dtype=np.float32)[None, :] - w / 2  # from the film centre
    ys = np.arange(h, dtype=np.float32)[:, None] - h / 2
    u, v = c * xs + s * ys, c * ys - s * xs  # turned into the field's frame
    outside = np.maximum(
        np.maximum(left - w / 2 - u, u - (w / 2 - 1 - right)),
        np.maximum(top - h / 2 - v, v - (h / 2 - 1 - bottom)),
    )
    field = _unit_clip(0.5 - outside / (1.5 * px))
    img *= field
    img += _UNEXPOSED * (1 - field)
    return insets


def _burn_marker(img: np.ndarray, letter: str, insets, px: float, rng) -> None:
    """A lead letter 0.06 film heights tall in the top-left or top-right corner of the
    field (``insets``: its distances from the film's left, right, top and bottom, px)."""
    h, w = img.shape
    height = 0.06 * h
    left, right, top, _ = insets
    margin = 0.03 * h
    x0 = left + margin if rng.random() < 0.5 else w - 1 - right - margin - 0.7 * height
    y0 = top + margin
    half = max(0.0085 * h, 0.7 * px) / 2  # half the stroke width
    for a, b in _LETTERS[letter]:
        p0 = np.array([x0 + a[0] * height, y0 + a[1] * height])
        p1 = np.array([x0 + b[0] * height, y0 + b[1] * height])
        box = _box(img.shape, p0, p1, half + 1)
        if box is None:
            continue
        sl, xs, ys = box
        d, _ = _segment_distance(xs, ys, p0, p1)
        ink = _unit_clip(half + 0.5 - d)
        img[sl] = img[sl] * (1 - ink) + _LEAD * ink


def render_region(
    kind: str,
    mirror: bool,
    erosion: dict[str, int],
    jsn: dict[str, int],
    size: int,
    rng: np.random.Generator,
    anatomy_scale: float = 1.0,
    profile: ImagingProfile | None = None,
    style: FilmStyle | None = None,
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """One radiograph as float32 [H, W] in [0, 1] (bone bright) + joint positions.

    ``kind`` is "hand" or "foot"; ``mirror`` renders the right side. ``erosion`` and
    ``jsn`` map SvdH sites (``mcp2``, ``mtp5``, ``radius`` ...) to grades; absent = 0.
    ``profile``: the site's exposure; ``style``: the equipment's look (:data:`FILM_STYLES`).
    Positions are (x, y) of each SvdH site as fractions of the image width/height.
    """
    profile = profile or ImagingProfile()
    style = style or FilmStyle()
    g = GEOMETRY[kind]
    frame = _jittered_frame(kind, mirror, size, rng, anatomy_scale, style)
    spaces = _spaces_px(g, frame, jsn)
    soft = _soft_tissue(g, frame)
    bone = _bones(kind, g, frame, spaces, soft)
    _erode(bone, kind, g, erosion, frame, spaces)
    img = _expose(soft, bone, mirror, size, rng, profile, style, frame)
    return img, _joint_locations(g, frame, spaces)


def _jittered_frame(kind: str, mirror: bool, size: int, rng: np.random.Generator,
                    anatomy_scale: float, style: FilmStyle) -> _Frame:
    """The film's frame with this image's rotation, scale and shift drawn from ``rng``."""
    theta = float(np.clip(rng.normal(0.0, style.rotation_sd), -style.rotation_max, style.rotation_max))
    scale = anatomy_scale * float(rng.uniform(0.95, 1.03)) * style.field
    shift = np.clip(rng.normal(0.0, style.shift_sd, 2), -style.shift_max, style.shift_max)
    return _Frame(kind, mirror, size, scale, theta, shift, style.film_aspect)


def _bones(kind: str, g: Geometry, frame: _Frame, spaces, soft: np.ndarray) -> np.ndarray:
    """Bone thickness per pixel (the array shape and dtype of ``soft``), joint spaces cut out."""
    bone_max = np.zeros_like(soft)
    bone_sum = np.zeros_like(soft)
    r_ref = frame.length(_R_REF)
    clips = _CLIPS[kind]
    for bone in g.bones:
        a, b = frame.point(bone.p0), frame.point(bone.p1)
        r0, rm, r1 = (frame.length(r) for r in (bone.r0, bone.rm, bone.r1))
        box = _box(bone_max.shape, a, b, max(r0, rm, r1) + 1)
        if box is None:
            continue
        sl, xs, ys = box
        d, s = _segment_distance(xs, ys, a, b)
        length = float(np.hypot(*(b - a)))
        r = np.full_like(d, rm)
        if r0 != rm:
            r += (r0 - rm) * _flare(s * (length / r0))
        if r1 != rm:
            r += (r1 - rm) * _flare((1 - s) * (length / r1))
        d2 = d * d
        ri = r * (0.9 - 1.2 * s * (1 - s))  # medulla: 60% of the shaft, thin cortex at the ends
        outer = np.sqrt(np.maximum(r * r - d2, 0.0))
        inner = np.sqrt(np.maximum(ri * ri - d2, 0.0))
        # thickness-weighted attenuation, compressed so big bones do not saturate
        val = (outer - 0.7 * inner) * ((rm / r_ref) ** 0.3 / r)
        val *= _unit_clip(r - d + 0.5)  # anti-aliased outline
        for space_name, side in clips.get(bone.name, ()):
            centre, u, rho, width, _ = spaces[space_name]
            dx, dy = xs - float(centre[0]), ys - float(centre[1])
            dist = np.hypot(dx, dy)
            facing = _unit_clip(dx * float(u[0]) + dy * float(u[1]) + 0.5)
            if side == "inner":
                keep = _unit_clip(rho - width / 2 + 0.5 - dist)
            else:
                keep = _unit_clip(dist - (rho + width / 2 - 0.5))
            val *= 1 - facing * (1 - keep)
        np.maximum(bone_max[sl], val, out=bone_max[sl])
        bone_sum[sl] += val

    return bone_max + 0.35 * (bone_sum - bone_max)  # overlapping bones add up, partly


def _erode(bone: np.ndarray, kind: str, g: Geometry, erosion: dict[str, int], frame: _Frame,
           spaces) -> None:
    """Bite each site's erosions (SvdH grades) out of ``bone``, in place."""
    for site, anchors in g.erosion_anchors.items():
        grade = int(erosion.get(site, 0))
        for k, (anchor, severity) in enumerate(zip(anchors, _split(kind, grade, len(anchors)))):
            for centre, radius in _notches(
                anchor, severity, 1.0 if k == 0 else -1.0, spaces, frame
            ):
                box = _box(bone.shape, centre, centre, radius + 1)
                if box is None:
                    continue
                sl, xs, ys = box
                dist = np.hypot(xs - float(centre[0]), ys - float(centre[1]))
                disc = _unit_clip(radius + 0.5 - dist)
                bone[sl] *= 1 - disc


def _expose(soft: np.ndarray, bone: np.ndarray, mirror: bool, size: int,
            rng: np.random.Generator, profile: ImagingProfile, style: FilmStyle,
            frame: _Frame) -> np.ndarray:
    """The film from tissue and bone: detector response, the site's exposure, collimation,
    side marker, heel effect, blur and noise; float32 in [0, 1]."""
    px = size / 256.0
    texture = gaussian_filter(rng.standard_normal(bone.shape, dtype=np.float32), 0.8 * px)
    bone_density = (1 - np.exp(-1.3 * bone)) * (1 + 0.12 * texture)
    img = 0.04 + profile.soft_tissue * soft + 0.7 * bone_density
    if style.log_response:
        k = style.log_response
        img = np.log1p(k * img) / np.float32(np.log1p(k))
    img = np.clip(profile.gain * img + profile.offset, 0, 1) ** profile.gamma
    insets = _collimate(img, px, rng) if style.collimation else np.zeros(4)
    if style.marker:
        _burn_marker(img, "R" if mirror else "L", insets, px, rng)
    rows = np.linspace(-0.5, 0.5, frame.h, dtype=np.float32)[:, None]
    img = img * (1 + profile.heel * rows)
    img = gaussian_filter(img, profile.blur_px * style.blur_scale * px)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    if style.grain_px:  # correlated (grainy) noise of the same SD
        noise = gaussian_filter(noise, style.grain_px * px)
        noise /= noise.std()
    img = img + noise * (profile.noise * style.noise_scale) * (0.5 + img)
    return _unit_clip(img.astype(np.float32))


def _joint_locations(g: Geometry, frame: _Frame, spaces) -> dict[str, tuple[float, float]]:
    """(x, y) of each SvdH site as fractions of the image width/height."""
    locations = {}
    for site, (what, name) in g.locations.items():
        if what == "space":
            centre, u, rho, _, _ = spaces[name]
            p = centre + u * rho
        else:
            p = frame.point(g.erosion_anchors[name][0].point)
        locations[site] = (float(p[0] / frame.w), float(p[1] / frame.h))
    return locations
