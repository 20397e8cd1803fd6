"""Translate other centres' joint names into this project's (SvdH and Larsen) joint names.

The bundled map (``joint_names.yaml`` in this package) covers the common variants:
``ip1`` for the thumb IP joint, ``capitate`` for capitate-scaphoid-lunate, narrowing
recorded on ``radius`` (radiocarpal) and ``trapezium`` (scaphoid-trapezium), RA2-DREAM
column names (``LH_mcp2_E``, ``mul``, ``nav``, ``capnlun``, ``radcar``, ``mna``) and
Larsen wrist quadrants. A user map with the same layout adds or overrides entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from progression.errors import ConfigError
from progression.scoring import JOINT_NAMES, LARSEN_JOINTS, REGIONS

COMPONENTS = ("erosion", "jsn")
_SEPARATORS = re.compile(r"[\s.\-]+")
_KINDS = ("hand", "foot")
_SVDH_SITES = {kind: {n.split("_", 2)[2] for n in JOINT_NAMES if n.startswith(kind)}
               for kind in _KINDS}  # fmt: skip
_LARSEN_SITES = {kind: {j.site for j in LARSEN_JOINTS if j.region.startswith(kind)}
                 for kind in _KINDS}  # fmt: skip


def normalize(name: str) -> str:
    """Lower case; runs of spaces, dots and dashes -> '_' (``'Left Hand MCP-2'`` ->
    ``'left_hand_mcp_2'``)."""
    return _SEPARATORS.sub("_", str(name).strip().lower()).strip("_")


@dataclass
class JointMap:
    """Aliases by region and site; see :func:`load_joint_map`."""

    regions: dict[str, str] = field(default_factory=dict)  # alias -> region
    svdh: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (kind, part)
    larsen: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> alias -> site

    def split_region(self, name: str) -> tuple[str, str] | None:
        """(region, site part) of a normalized name, or None when no region prefix fits."""
        for alias in sorted(self.regions, key=len, reverse=True):
            if name.startswith(alias + "_") and len(name) > len(alias) + 1:
                return self.regions[alias], name[len(alias) + 1 :]
        return None

    def svdh_joint(self, name: str, component: str) -> str | None:
        """This project's SvdH joint for ``name`` graded on ``component`` (erosion/jsn),
        or None when the name is unknown."""
        split = self.split_region(normalize(name))
        if split is None:
            return None
        region, site = split
        kind = region.split("_")[0]
        site = self.svdh[(kind, component)].get(site) or self.svdh[(kind, "both")].get(site, site)
        joint = f"{region}_{site}"
        return joint if joint in JOINT_NAMES else None

    def larsen_joint(self, name: str) -> str | None:
        """This project's Larsen scoring unit for ``name``, or None when unknown."""
        split = self.split_region(normalize(name))
        if split is None:
            return None
        region, site = split
        site = self.larsen[region.split("_")[0]].get(site, site)
        return f"{region}_{site}" if site in _LARSEN_SITES[region.split("_")[0]] else None


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with regions:, svdh:, larsen:")
    unknown = set(data) - {"regions", "svdh", "larsen"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; a joint map has "
            "regions:, svdh: and larsen: (see the bundled progression/ingest/joint_names.yaml)"
        )
    return data


def _mapping(value, source: str, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {where} must be a mapping 'alias: name'")
    return {normalize(k): normalize(v) for k, v in value.items()}


def _merge(target: JointMap, data: dict, source: str) -> None:
    for region, aliases in (data.get("regions") or {}).items():
        if region not in REGIONS:
            raise ConfigError(
                f"{source}: regions: '{region}' is not a region; use {', '.join(REGIONS)}"
            )
        if isinstance(aliases, str):
            aliases = [aliases]
        for alias in aliases or []:
            target.regions[normalize(alias)] = region
    for kind, parts in (data.get("svdh") or {}).items():
        if kind not in _KINDS or not isinstance(parts, dict):
            raise ConfigError(f"{source}: svdh: '{kind}' must be hand: or foot: with both:, "
                              "erosion:, jsn: mappings")  # fmt: skip
        for part, aliases in parts.items():
            if part not in ("both", *COMPONENTS):
                raise ConfigError(f"{source}: svdh: {kind}: '{part}' is not both, erosion or jsn")
            entries = _mapping(aliases, source, f"svdh: {kind}: {part}")
            for alias, site in entries.items():
                if site not in _SVDH_SITES[kind]:
                    raise ConfigError(
                        f"{source}: svdh: {kind}: {part}: {alias}: '{site}' is not an SvdH "
                        f"{kind} site; use one of {', '.join(sorted(_SVDH_SITES[kind]))}"
                    )
            target.svdh.setdefault((kind, part), {}).update(entries)
    for kind, aliases in (data.get("larsen") or {}).items():
        if kind not in _KINDS:
            raise ConfigError(f"{source}: larsen: '{kind}' must be hand: or foot:")
        entries = _mapping(aliases, source, f"larsen: {kind}")
        for alias, site in entries.items():
            if site not in _LARSEN_SITES[kind]:
                raise ConfigError(
                    f"{source}: larsen: {kind}: {alias}: '{site}' is not a Larsen {kind} unit; "
                    f"use one of {', '.join(sorted(_LARSEN_SITES[kind]))}"
                )
        target.larsen.setdefault(kind, {}).update(entries)


def load_joint_map(user_map: str | Path | None = None) -> JointMap:
    """The bundled map, with ``user_map`` (a YAML file of the same layout) merged over it."""
    joint_map = JointMap(
        regions={region: region for region in REGIONS},
        svdh={(kind, part): {} for kind in _KINDS for part in ("both", *COMPONENTS)},
        larsen={kind: {} for kind in _KINDS},
    )
    bundled = resources.files("progression.ingest").joinpath("joint_names.yaml").read_text()
    _merge(joint_map, _read_yaml(bundled, "bundled joint_names.yaml"), "bundled joint_names.yaml")
    if user_map is not None:
        path = Path(user_map)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--joint-map {user_map}: cannot read ({exc.strerror})") from None
        _merge(joint_map, _read_yaml(text, f"--joint-map {user_map}"), f"--joint-map {user_map}")
    return joint_map
