"""The blendshape rig as plain data, and its loaders.

A rig is a neutral mesh b0 (V, 3), its triangles, and K named expression deltas
d_i = b_i - b0 (K, V, 3), optionally with J identity deltas of the same form.
Everything is in the vertex order of the source files: the OBJ reader below reads
``v``/``f`` lines in file order, because trimesh splits the ICT OBJ at UV seams
(28,911 vertices instead of 26,719) whatever flags are passed.

Loaders: the rig shipped in ``meshes/`` (the default), an ``.npz``, or a folder of
OBJ files, one per shape, with a ``manifest.json`` or the neutral named explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from bsviz.files import atomic_path

SHIPPED_RIG = Path(__file__).resolve().parent.parent / "meshes" / "ict_facekit.npz"

# ICT FaceKit's eye shells (tear film, eye blend, ambient occlusion) are made for
# transparent shaders in Unreal; drawn opaque they hide the eyes, so views skip them.
HIDDEN_GROUPS = ("M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion")


REGIONS = ("brows", "eyes", "cheeks", "nose", "jaw", "mouth", "other")


def shape_region(name: str) -> str:
    """The face region an ARKit-style shape name belongs to (``'other'`` if none)."""
    prefix = name.lower()
    for region, starts in (("brows", "brow"), ("eyes", "eye"), ("cheeks", "cheek"),
                           ("nose", "nose"), ("jaw", "jaw"), ("mouth", "mouth")):
        if prefix.startswith(starts):
            return region
    return "other"


def mirror_permutation(names: tuple[str, ...] | list[str]) -> list[int]:
    """Index of each shape's mirror image: ``_L`` <-> ``_R``, ``*Left`` <-> ``*Right``.

    Flipping a face image left-right turns weights ``w`` into ``w[mirror_permutation(names)]``.
    """
    swaps = (("_L", "_R"), ("_R", "_L"), ("Left", "Right"), ("Right", "Left"))
    index = {n: i for i, n in enumerate(names)}
    mirror = []
    for name in names:
        other = next((name[: -len(a)] + b for a, b in swaps if name.endswith(a)), name)
        mirror.append(index.get(other, index[name]))
    return mirror


class RigError(ValueError):
    """A rig file or folder that cannot be used (missing, malformed, mismatched)."""


@dataclass(frozen=True, eq=False)
class Rig:
    """A linear blendshape model: T = neutral + sum_k w_k deltas[k] (+ identity).

    Attributes
    ----------
    neutral : (V, 3) float32, centimetres (ICT: +y up, +z towards the viewer)
    faces : (F, 3) int32 triangles (polygons are fan-triangulated on load)
    names : K expression names, in the order of ``deltas``
    deltas : (K, V, 3) float32 per-vertex displacements b_k - b0
    identity_names : J identity names
    identity_deltas : (J, V, 3) float32
    face_groups : (F,) int16 index into ``group_names`` (the OBJ's ``usemtl``/``g``)
    group_names : names of the face groups
    """

    neutral: np.ndarray
    faces: np.ndarray
    names: tuple[str, ...]
    deltas: np.ndarray
    identity_names: tuple[str, ...] = ()
    identity_deltas: np.ndarray | None = None
    face_groups: np.ndarray | None = None
    group_names: tuple[str, ...] = ("all",)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n_vertices = len(self.neutral)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("neutral", np.ascontiguousarray(self.neutral, dtype=np.float32))
        set_("faces", np.ascontiguousarray(self.faces, dtype=np.int32))
        set_("deltas", np.ascontiguousarray(self.deltas, dtype=np.float32))
        set_("names", tuple(str(n) for n in self.names))
        set_("identity_names", tuple(str(n) for n in self.identity_names))
        identity = self.identity_deltas
        identity = np.zeros((0, n_vertices, 3), np.float32) if identity is None else identity
        set_("identity_deltas", np.ascontiguousarray(identity, dtype=np.float32))
        groups = self.face_groups
        groups = np.zeros(len(self.faces), np.int16) if groups is None else groups
        set_("face_groups", np.asarray(groups, dtype=np.int16))
        set_("group_names", tuple(str(n) for n in self.group_names))
        _validate(self)

    @property
    def n_vertices(self) -> int:
        return len(self.neutral)

    @property
    def n_shapes(self) -> int:
        return len(self.names)

    @cached_property
    def basis(self) -> np.ndarray:
        """(K + 1 + J, 3V) float32: rows [deltas; neutral; identity], flattened.

        Blending is then one matrix product with weights [w, 1, w_id]: the neutral
        rides along as a row with weight 1, so the output is written once.
        """
        rows = [self.deltas.reshape(self.n_shapes, -1), self.neutral.reshape(1, -1),
                self.identity_deltas.reshape(len(self.identity_names), -1)]
        return np.ascontiguousarray(np.concatenate(rows))

    def visible_faces(self, hidden: tuple[str, ...] = HIDDEN_GROUPS) -> np.ndarray:
        """(F', 3) the triangles to draw: all but those in the ``hidden`` groups."""
        hidden_ids = [i for i, n in enumerate(self.group_names) if n in hidden]
        return self.faces[~np.isin(self.face_groups, hidden_ids)]


def _validate(rig: Rig) -> None:
    """Raise RigError unless every array has the shape and values it should."""
    v = rig.n_vertices
    where = f" ({rig.source})" if rig.source else ""
    if rig.neutral.ndim != 2 or rig.neutral.shape[1] != 3 or v == 0:
        raise RigError(f"neutral must be (V, 3), got {rig.neutral.shape}{where}")
    if rig.faces.ndim != 2 or rig.faces.shape[1] != 3:
        raise RigError(f"faces must be (F, 3) triangles, got {rig.faces.shape}{where}")
    if rig.faces.size and (rig.faces.min() < 0 or rig.faces.max() >= v):
        raise RigError(f"faces index vertices outside 0..{v - 1}{where}")
    for label, names, deltas in (("expression", rig.names, rig.deltas),
                                 ("identity", rig.identity_names, rig.identity_deltas)):
        if deltas.shape != (len(names), v, 3):
            raise RigError(f"{label} deltas must be ({len(names)}, {v}, 3) for "
                           f"{len(names)} names, got {deltas.shape}{where}")
        if len(set(names)) != len(names):
            raise RigError(f"duplicate {label} names{where}")
        bad = ~np.isfinite(deltas).all(axis=(1, 2))
        if bad.any():
            raise RigError(f"{label} shape '{names[int(np.argmax(bad))]}' has NaN/inf values{where}")
    if not np.isfinite(rig.neutral).all():
        raise RigError(f"neutral mesh has NaN/inf vertices{where}")
    if rig.face_groups.shape != (len(rig.faces),) or (
            rig.faces.size and rig.face_groups.max() >= len(rig.group_names)):
        raise RigError(f"face_groups must give a group (of {len(rig.group_names)}) per face{where}")


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit smooth normals: the area-weighted mean of the normals of adjacent faces.

    Vertices no face touches get (0, 0, 1).
    """
    tri = vertices[faces]                                        # (F, 3, 3)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    n = np.stack([np.bincount(faces.ravel(), np.repeat(face_n[:, c], 3), len(vertices))
                  for c in range(3)], axis=1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, length, out=np.tile(np.float64([0, 0, 1]), (len(n), 1)), where=length > 0)
    return n.astype(np.float32)


def mesh_report(vertices: np.ndarray, faces: np.ndarray) -> dict[str, object]:
    """Topology checks by open3d: manifoldness, watertightness, components, degenerate faces."""
    import open3d as o3d  # imported here: it is slow to import and only checks need it

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices.astype(np.float64)),
                                     o3d.utility.Vector3iVector(faces.astype(np.int32)))
    clusters, _, _ = mesh.cluster_connected_triangles()
    tri = vertices[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return {
        "vertices": len(vertices), "triangles": len(faces),
        "edge_manifold": mesh.is_edge_manifold(allow_boundary_edges=True),
        "vertex_manifold": mesh.is_vertex_manifold(),
        "watertight": mesh.is_watertight(),
        "connected_components": int(np.asarray(clusters).max() + 1) if len(faces) else 0,
        "degenerate_triangles": int((area2 <= 1e-12).sum()),
        "unreferenced_vertices": int(len(vertices) - len(np.unique(faces))),
    }


# --------------------------------------------------------------------------- OBJ


@dataclass(frozen=True)
class ObjMesh:
    """An OBJ's geometry in file order: vertices (V, 3), triangles (F, 3), a group per triangle."""

    vertices: np.ndarray
    faces: np.ndarray
    face_groups: np.ndarray
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
    faces = np.asarray(triangles, np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n):
        raise RigError(f"faces index vertices outside 1..{n} in {path}")
    verts = np.asarray(vertices, np.float64)
    if verts.shape[1:] != (3,) or not np.isfinite(verts).all():
        raise RigError(f"NaN/inf or incomplete vertices in {path}")
    names = tuple(groups) or ("all",)
    return ObjMesh(verts.astype(np.float32), faces.astype(np.int32),
                   np.asarray(triangle_groups, np.int16), names)


def load_obj_folder(folder: str | Path, neutral: str | None = None,
                    shapes: list[str] | None = None) -> Rig:
    """A rig from one OBJ per shape, all with the neutral's topology.

    The shape list comes from ``folder/manifest.json`` (``{"neutral": "neutral.obj",
    "expressions": {"jawOpen": "jawOpen.obj", ...}, "identities": {...}}``) or, given
    ``neutral``, from every other ``*.obj`` in the folder (name = file stem), sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RigError(f"no such rig folder: {folder}")
    manifest_path = folder / "manifest.json"
    identities: dict[str, str] = {}
    if neutral is None and manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            neutral = manifest["neutral"]
            expressions = dict(manifest["expressions"])
            identities = dict(manifest.get("identities", {}))
        except (ValueError, KeyError, TypeError) as e:
            raise RigError(f"bad manifest {manifest_path}: {e}") from None
    elif neutral is not None:
        stems = shapes if shapes is not None else sorted(
            p.stem for p in folder.glob("*.obj") if p.name != Path(neutral).name)
        expressions = {s: f"{s}.obj" for s in stems}
    else:
        raise RigError(f"{folder} has no manifest.json; name the neutral mesh (--neutral FILE)")
    base = read_obj(folder / neutral)

    def deltas_of(files: dict[str, str]) -> np.ndarray:
        out = np.empty((len(files), len(base.vertices), 3), np.float32)
        for i, (name, file) in enumerate(files.items()):
            mesh = read_obj(folder / file)
            if mesh.vertices.shape != base.vertices.shape:
                raise RigError(f"{folder / file} has {len(mesh.vertices)} vertices, "
                               f"the neutral {neutral} has {len(base.vertices)}")
            out[i] = mesh.vertices - base.vertices
        return out

    return Rig(base.vertices, base.faces, tuple(expressions), deltas_of(expressions),
               tuple(identities), deltas_of(identities), base.face_groups, base.group_names,
               source=str(folder))


# --------------------------------------------------------------------------- npz

_NPZ_KEYS = ("neutral", "faces", "expression_names", "expression_deltas")


def load_npz(path: str | Path, faces_from: str | Path | None = None) -> Rig:
    """A rig from an ``.npz`` with the keys ``save_npz`` writes.

    ``faces``, ``face_groups`` and ``group_names`` may be missing (as in ICT's own
    ``ict_blendshapes.npz``); then ``faces_from`` names an OBJ of the same topology.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RigError(f"no such rig file: {path}") from None
    except (OSError, ValueError) as e:
        raise RigError(f"cannot read rig {path}: {e}") from None
    if "faces" not in data and faces_from is not None:
        mesh = read_obj(faces_from)
        data.update(faces=mesh.faces, face_groups=mesh.face_groups,
                    group_names=np.array(mesh.group_names))
    missing = [k for k in _NPZ_KEYS if k not in data]
    if missing:
        raise RigError(f"rig {path} lacks {', '.join(missing)}"
                       + (" (pass an OBJ with its faces)" if missing == ["faces"] else ""))
    n = len(data["neutral"])
    return Rig(data["neutral"], data["faces"], tuple(data["expression_names"]),
               data["expression_deltas"], tuple(data.get("identity_names", ())),
               data.get("identity_deltas", np.zeros((0, n, 3), np.float32)),
               data.get("face_groups"), tuple(data.get("group_names", ("all",))),
               source=str(path))


def save_npz(rig: Rig, path: str | Path) -> None:
    """Write ``rig`` as a compressed ``.npz`` (atomically: a temp file, then rename)."""
    with atomic_path(path) as tmp:
        np.savez_compressed(
            tmp, neutral=rig.neutral, faces=rig.faces, expression_names=np.array(rig.names),
            expression_deltas=rig.deltas, identity_names=np.array(rig.identity_names, dtype=str),
            identity_deltas=rig.identity_deltas, face_groups=rig.face_groups,
            group_names=np.array(rig.group_names))


def load_rig(source: str | Path | None = None, neutral: str | None = None) -> Rig:
    """The shipped ICT FaceKit rig (``source=None``), an ``.npz`` file, or an OBJ folder."""
    if source is None:
        return load_npz(SHIPPED_RIG)
    source = Path(source)
    if source.is_dir():
        return load_obj_folder(source, neutral=neutral)
    if source.suffix == ".npz":
        return load_npz(source)
    if not source.exists():
        raise RigError(f"no such rig: {source}")
    raise RigError(f"unknown rig format {source} (expected .npz or a folder of OBJ files)")
