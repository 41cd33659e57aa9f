"""OBJ files in the rig's vertex order: ``read_obj`` parses ``v``/``f`` lines in file order and
``obj_bytes`` writes them the same way (trimesh splits the ICT OBJ at its UV seams on reading,
28,911 vertices instead of 26,719, whatever flags are passed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class RigError(ValueError):
    """A rig file or folder that cannot be used (missing, malformed, mismatched)."""


@dataclass(frozen=True)
class ObjMesh:
    """An OBJ's geometry in file order: vertices (V, 3), triangles (F, 3), a group per triangle."""

    vertices: np.ndarray
    triangles: np.ndarray
    triangle_groups: np.ndarray
    group_names: tuple[str, ...]


def read_obj(path: str | Path) -> ObjMesh:
    """Read ``v`` and ``f`` lines of an OBJ in file order (no seam splitting, no merging).

    Polygons are fan-triangulated; ``vt``/``vn`` references are dropped; a triangle's
    group is the latest ``usemtl`` (or ``g``) line above it.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise RigError(f"cannot read OBJ {path}: {e.strerror or e}") from None
    vertices, polygons, polygon_groups, groups = [], [], [], {}
    group = 0
    for line_no, line in enumerate(text.splitlines(), 1):
        tag, _, rest = line.strip().partition(" ")
        try:
            if tag == "v":
                vertices.append([float(x) for x in rest.split()[:3]])
            elif tag == "f":
                polygons.append([int(token.split("/")[0]) for token in rest.split()])
                polygon_groups.append(group)
            elif tag in ("usemtl", "g"):
                group = groups.setdefault(rest.strip() or "default", len(groups))
        except ValueError:
            raise RigError(f"malformed OBJ line {line_no} in {path}: {line.strip()[:60]!r}") from None
    if not vertices:
        raise RigError(f"no vertices in OBJ {path}")
    n = len(vertices)
    triangles, triangle_groups = [], []
    for polygon, g in zip(polygons, polygon_groups):
        idx = [i - 1 if i > 0 else n + i for i in polygon]  # OBJ is 1-based; negatives count back
        for k in range(1, len(idx) - 1):
            triangles.append((idx[0], idx[k], idx[k + 1]))
            triangle_groups.append(g)
    triangles = np.asarray(triangles, np.int64).reshape(-1, 3)
    if triangles.size and (triangles.min() < 0 or triangles.max() >= n):
        raise RigError(f"triangles index vertices outside 1..{n} in {path}")
    verts = np.asarray(vertices, np.float64)
    if verts.shape[1:] != (3,) or not np.isfinite(verts).all():
        raise RigError(f"NaN/inf or incomplete vertices in {path}")
    names = tuple(groups) or ("all",)
    return ObjMesh(verts.astype(np.float32), triangles.astype(np.int32),
                   np.asarray(triangle_groups, np.int16), names)




def obj_bytes(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray | None = None
              ) -> bytes:
    """An OBJ file's bytes: one ``v`` line per vertex in order (``v x y z r g b`` with colours in
    [0, 1], the common extension), then one ``f`` line per triangle; no normals, no merging."""
    columns = [np.asarray(vertices, np.float64)]
    if colours is not None:
        columns.append(np.clip(np.asarray(colours, np.float64), 0, 1))
    rows = np.hstack(columns)
    out = io.BytesIO()
    np.savetxt(out, rows, fmt="v" + " %.9g" * rows.shape[1])
    np.savetxt(out, np.asarray(triangles, np.int64) + 1, fmt="f %d %d %d")
    return out.getvalue()
