"""Stylised geometry of a left hand (PA view) and a left foot (DP view) for rendering.

Coordinates are in units of the image height (y grows downwards, x across a width of
``ASPECT[kind]``); fingers/toes point up, the thumb/hallux is on the right. Right
hands and feet are mirrored. Anatomy is exaggerated on purpose (wide joint spaces,
large joints) so that one SvdH grade changes enough pixels to be seen at 128-256 px.

Bones are tapered capsules. A joint is a circular arc (centre ``center``, radius
``rho``) with its convex "inner" bones inside the circle and its concave "outer" bones
outside; the joint space is the band of width ``width`` around the arc, narrowed by
the JSN grade. Erosions are bites out of the bone margin next to a joint surface
(``Anchor`` from a joint side) or at a fixed point on a carpal/forearm bone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ASPECT: dict[str, float] = {"hand": 0.8, "foot": 0.62}


@dataclass(frozen=True)
class Bone:
    name: str
    p0: tuple[float, float]  # proximal end
    p1: tuple[float, float]  # distal end
    r0: float  # radius at p0
    rm: float  # radius of the shaft
    r1: float  # radius at p1


@dataclass(frozen=True)
class Space:
    """A joint: arc through ``center + rho * u``; ``width`` = normal joint space (grade 0)."""

    name: str
    inner: tuple[str, ...]
    outer: tuple[str, ...]
    center: tuple[float, float]
    u: tuple[float, float]  # unit vector from the arc centre towards the joint
    rho: float
    width: float
    half_length: float  # lateral extent of the joint surface (erosion notch placement)


@dataclass(frozen=True)
class Anchor:
    """Where erosion notches go: next to ``space``'s ``side`` surface, or at ``point``."""

    space: str = ""
    side: str = ""  # "inner" or "outer"
    point: tuple[float, float] = (0.0, 0.0)
    inward: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0


@dataclass
class Geometry:
    kind: str
    bones: list[Bone] = field(default_factory=list)
    spaces: list[Space] = field(default_factory=list)
    soft: list[tuple[tuple[float, float], tuple[float, float], float]] = field(
        default_factory=list
    )  # (p0, p1, radius) capsules of soft tissue
    erosion_anchors: dict[str, list[Anchor]] = field(default_factory=dict)
    jsn_space: dict[str, str] = field(default_factory=dict)  # SvdH site -> space name
    locations: dict[str, tuple[str, str]] = field(default_factory=dict)  # site -> (kind, name)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.hypot(*v)


def _add_ray(
    g: Geometry,
    prefix: str,
    base: tuple[float, float],
    joint: tuple[float, float],
    lengths: tuple[float, ...],
    radii: tuple[tuple[float, float, float], ...],
    widths: tuple[float, ...],
    splay: float,
    soft_radius: float,
) -> list[str]:
    """Metacarpal/metatarsal from ``base`` to ``joint`` then phalanges; returns space names."""
    u = _unit(np.subtract(joint, base))
    c, s = np.cos(splay), np.sin(splay)
    u_f = np.array([c * u[0] - s * u[1], s * u[0] + c * u[1]])
    points = [np.asarray(base, float), np.asarray(joint, float)]
    for length in lengths:
        points.append(points[-1] + u_f * length)
    names = [f"{prefix}_b{i}" for i in range(len(points) - 1)]
    spaces = []
    for i, name in enumerate(names):
        p0, p1 = points[i], points[i + 1]
        d = _unit(p1 - p0)
        r0, rm, r1 = radii[i]
        # extend into the neighbouring joint; the joint arc clips the excess
        q0 = p0 - d * (0.4 * r0) if i > 0 else p0
        q1 = p1 + d * (0.6 * r1) if i < len(names) - 1 else p1
        g.bones.append(Bone(name, tuple(q0), tuple(q1), r0, rm, r1))
    for i, width in enumerate(widths):
        jp = points[i + 1]
        d = _unit(points[i + 2] - points[i + 1])
        r_inner = radii[i][2]
        rho = 1.45 * r_inner
        centre = jp - d * rho
        sp = Space(
            f"{prefix}_j{i}", (names[i],), (names[i + 1],), tuple(centre), tuple(d), rho, width,
            1.0 * r_inner,
        )  # fmt: skip
        g.spaces.append(sp)
        spaces.append(sp.name)
    g.soft.append((tuple(points[0]), tuple(points[1]), soft_radius * 1.35))
    g.soft.append((tuple(points[1]), tuple(points[-1]), soft_radius))
    return spaces


def _space(g, name, inner, outer, centre, toward, rho, width, half_length) -> None:
    """A joint whose surface passes through ``toward``; ``rho`` 0 = |toward - centre|."""
    u = _unit(np.subtract(toward, centre))
    rho = rho or float(np.hypot(*np.subtract(toward, centre)))
    g.spaces.append(Space(name, inner, outer, tuple(centre), tuple(u), rho, width, half_length))


def hand_geometry() -> Geometry:
    """Left hand, PA view, thumb on the right."""
    g = Geometry("hand")
    mc = (
        (0.025, 0.016, 0.029),
        (0.026, 0.016, 0.023),
        (0.021, 0.013, 0.018),
        (0.017, 0.010, 0.012),
    )
    fingers = {  # finger: base (CMC), MCP, phalanx lengths, splay (rad), scale
        2: ((0.455, 0.70), (0.505, 0.47), (0.165, 0.10, 0.07), 0.05, 1.0),
        3: ((0.385, 0.705), (0.39, 0.455), (0.185, 0.115, 0.075), 0.0, 1.0),
        4: ((0.315, 0.71), (0.285, 0.47), (0.175, 0.11, 0.07), -0.04, 0.95),
        5: ((0.25, 0.72), (0.19, 0.51), (0.14, 0.085, 0.065), -0.08, 0.85),
    }
    for f, (base, mcp, lengths, splay, scale) in fingers.items():
        radii = tuple(tuple(scale * r for r in rr) for rr in mc)
        sp = _add_ray(
            g, f"f{f}", base, mcp, lengths, radii, (0.024, 0.02, 0.015), splay, 0.038 * scale
        )
        g.jsn_space[f"mcp{f}"] = sp[0]
        g.jsn_space[f"pip{f}"] = sp[1]
        g.erosion_anchors[f"mcp{f}"] = [Anchor(sp[0], "inner"), Anchor(sp[0], "outer")]
        g.erosion_anchors[f"pip{f}"] = [Anchor(sp[1], "inner"), Anchor(sp[1], "outer")]
        g.locations[f"mcp{f}"] = ("space", sp[0])
        g.locations[f"pip{f}"] = ("space", sp[1])
    thumb = ((0.029, 0.019, 0.028), (0.026, 0.017, 0.023), (0.022, 0.013, 0.014))
    sp = _add_ray(
        g, "f1", (0.545, 0.705), (0.645, 0.565), (0.125, 0.085), thumb, (0.024, 0.02), 0.12, 0.04
    )
    g.jsn_space["mcp1"] = sp[0]
    g.erosion_anchors["mcp1"] = [Anchor(sp[0], "inner"), Anchor(sp[0], "outer")]
    g.erosion_anchors["ip"] = [Anchor(sp[1], "inner"), Anchor(sp[1], "outer")]
    g.locations["mcp1"] = ("space", sp[0])
    g.locations["ip"] = ("space", sp[1])
    g.soft.append(((0.50, 0.74), (0.61, 0.60), 0.06))  # thenar eminence
    g.soft.append(((0.37, 0.80), (0.37, 1.25), 0.135))  # wrist and forearm
    g.soft.append(((0.30, 0.70), (0.44, 0.70), 0.075))  # palm base
    carpals = [
        Bone("trapezium", (0.52, 0.745), (0.535, 0.728), 0.025, 0.025, 0.025),
        Bone("trapezoid", (0.44, 0.742), (0.445, 0.722), 0.02, 0.02, 0.02),
        Bone("capitate", (0.385, 0.79), (0.39, 0.72), 0.025, 0.023, 0.024),
        Bone("hamate", (0.33, 0.775), (0.32, 0.725), 0.026, 0.026, 0.024),
        Bone("scaphoid", (0.43, 0.86), (0.458, 0.782), 0.022, 0.019, 0.021),
        Bone("lunate", (0.378, 0.85), (0.378, 0.82), 0.026, 0.026, 0.026),
        Bone("triquetrum", (0.33, 0.832), (0.31, 0.815), 0.02, 0.02, 0.02),
        Bone("pisiform", (0.312, 0.81), (0.31, 0.806), 0.014, 0.014, 0.014),
        Bone("radius", (0.41, 1.2), (0.405, 0.90), 0.04, 0.04, 0.07),
        Bone("styloid_r", (0.46, 0.90), (0.475, 0.865), 0.018, 0.017, 0.014),
        Bone("ulna", (0.28, 1.2), (0.29, 0.915), 0.027, 0.025, 0.03),
        Bone("styloid_u", (0.272, 0.90), (0.268, 0.876), 0.011, 0.009, 0.008),
    ]
    g.bones.extend(carpals)
    # CMC joints: carpal (inner, convex distally) -> metacarpal base (outer)
    _space(g, "cmc1", ("trapezium",), ("f1_b0",), (0.52, 0.745), (0.545, 0.705), 0.0, 0.016, 0.026)
    _space(g, "cmc2", ("trapezoid",), ("f2_b0",), (0.443, 0.735), (0.445, 0.70), 0.0, 0.014, 0.02)
    _space(g, "cmc3", ("capitate",), ("f3_b0",), (0.388, 0.735), (0.386, 0.70), 0.0, 0.016, 0.022)
    _space(g, "cmc4", ("hamate",), ("f4_b0",), (0.33, 0.74), (0.325, 0.705), 0.0, 0.016, 0.02)
    _space(g, "cmc5", ("hamate",), ("f5_b0",), (0.30, 0.745), (0.265, 0.715), 0.0, 0.016, 0.02)
    # scaphoid distal pole (inner) -> trapezium and trapezoid (outer)
    _space(
        g,
        "stt",
        ("scaphoid",),
        ("trapezium", "trapezoid"),
        (0.45, 0.80),
        (0.47, 0.765),
        0.0,
        0.016,
        0.024,
    )
    # capitate head (inner) -> scaphoid and lunate (outer)
    _space(
        g,
        "csl",
        ("capitate",),
        ("scaphoid", "lunate"),
        (0.387, 0.775),
        (0.39, 0.81),
        0.0,
        0.016,
        0.026,
    )
    # proximal carpal row (inner, convex proximally) -> radius (outer)
    _space(
        g,
        "radiocarpal",
        ("scaphoid", "lunate"),
        ("radius", "styloid_r"),
        (0.41, 0.77),
        (0.40, 0.877),
        0.0,
        0.02,
        0.06,
    )
    for site in ("cmc3", "cmc4", "cmc5", "stt", "csl", "radiocarpal"):
        g.jsn_space[site] = site
        g.locations[site] = ("space", site)
    g.erosion_anchors["cmc1"] = [Anchor("cmc1", "outer")]
    g.locations["cmc1"] = ("space", "cmc1")
    explicit = {  # site: (point on the bone margin, inward direction, local half-width)
        "trapezium": ((0.558, 0.735), (-1.0, 0.0), 0.024),
        "scaphoid": ((0.463, 0.822), (-1.0, 0.0), 0.02),
        "lunate": ((0.354, 0.835), (1.0, 0.0), 0.022),
        "radius": ((0.487, 0.875), (-1.0, 0.2), 0.024),
        "ulna": ((0.262, 0.89), (1.0, 0.2), 0.02),
    }
    for site, (point, inward, radius) in explicit.items():
        anchor = Anchor(point=point, inward=tuple(_unit(inward)), radius=radius)
        g.erosion_anchors[site] = [anchor]
        g.locations[site] = ("point", site)
    return g


def foot_geometry() -> Geometry:
    """Left foot, dorsoplantar view, hallux on the right."""
    g = Geometry("foot")
    rays = {  # toe: metatarsal base, MTP, phalanx lengths, splay, radii scale
        1: ((0.405, 0.70), (0.425, 0.405), (0.135, 0.075), 0.02, 1.0),
        2: ((0.345, 0.695), (0.335, 0.37), (0.085, 0.035, 0.03), 0.0, 0.62),
        3: ((0.29, 0.70), (0.265, 0.385), (0.08, 0.033, 0.028), -0.04, 0.6),
        4: ((0.24, 0.71), (0.20, 0.41), (0.075, 0.03, 0.026), -0.08, 0.58),
        5: ((0.195, 0.725), (0.14, 0.45), (0.065, 0.028, 0.024), -0.14, 0.56),
    }
    big = ((0.032, 0.021, 0.036), (0.03, 0.019, 0.026), (0.025, 0.015, 0.016))
    small = ((0.032, 0.02, 0.037), (0.03, 0.018, 0.026), (0.024, 0.015, 0.02), (0.02, 0.014, 0.016))
    for toe, (base, mtp, lengths, splay, scale) in rays.items():
        radii = big if toe == 1 else tuple(tuple(scale * r for r in rr) for rr in small)
        widths = (0.026, 0.018) if toe == 1 else (0.026 * 0.9, 0.011, 0.009)
        sp = _add_ray(
            g, f"t{toe}", base, mtp, lengths, radii, widths, splay, 0.045 if toe == 1 else 0.03
        )
        g.jsn_space[f"mtp{toe}"] = sp[0]
        g.erosion_anchors[f"mtp{toe}"] = [Anchor(sp[0], "inner"), Anchor(sp[0], "outer")]
        g.locations[f"mtp{toe}"] = ("space", sp[0])
        if toe == 1:
            g.jsn_space["ip"] = sp[1]
            g.erosion_anchors["ip"] = [Anchor(sp[1], "inner"), Anchor(sp[1], "outer")]
            g.locations["ip"] = ("space", sp[1])
    g.bones.extend(
        [
            Bone("sesamoid_m", (0.445, 0.43), (0.445, 0.425), 0.012, 0.012, 0.012),
            Bone("sesamoid_l", (0.41, 0.43), (0.41, 0.425), 0.011, 0.011, 0.011),
            Bone("cuneiform_m", (0.41, 0.79), (0.405, 0.715), 0.032, 0.032, 0.03),
            Bone("cuneiform_i", (0.35, 0.765), (0.345, 0.715), 0.024, 0.024, 0.022),
            Bone("cuneiform_l", (0.295, 0.775), (0.29, 0.72), 0.024, 0.024, 0.022),
            Bone("cuboid", (0.235, 0.83), (0.215, 0.745), 0.038, 0.038, 0.032),
            Bone("navicular", (0.32, 0.825), (0.42, 0.82), 0.03, 0.03, 0.03),
            Bone("talus", (0.34, 1.0), (0.37, 0.895), 0.045, 0.04, 0.045),
            Bone("calcaneus", (0.25, 1.1), (0.225, 0.90), 0.06, 0.05, 0.04),
        ]
    )
    _space(
        g, "tmt1", ("cuneiform_m",), ("t1_b0",), (0.405, 0.745), (0.405, 0.70), 0.045, 0.012, 0.03
    )
    _space(
        g, "tmt2", ("cuneiform_i",), ("t2_b0",), (0.345, 0.735), (0.345, 0.695), 0.04, 0.011, 0.02
    )
    _space(g, "tmt3", ("cuneiform_l",), ("t3_b0",), (0.29, 0.74), (0.29, 0.70), 0.04, 0.011, 0.02)
    _space(
        g,
        "tmt45",
        ("cuboid",),
        ("t4_b0", "t5_b0"),
        (0.22, 0.765),
        (0.22, 0.715),
        0.05,
        0.011,
        0.035,
    )
    _space(
        g, "talonavicular", ("talus",), ("navicular",), (0.37, 0.90), (0.37, 0.85), 0.0, 0.012, 0.04
    )
    _space(
        g,
        "calcaneocuboid",
        ("calcaneus",),
        ("cuboid",),
        (0.23, 0.92),
        (0.225, 0.86),
        0.0,
        0.012,
        0.04,
    )
    g.soft.append(((0.30, 0.75), (0.29, 1.2), 0.2))  # midfoot and heel
    g.soft.append(((0.16, 0.50), (0.20, 0.75), 0.055))  # lateral border
    return g


GEOMETRY: dict[str, Geometry] = {"hand": hand_geometry(), "foot": foot_geometry()}
