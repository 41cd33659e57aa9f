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

from bsviz.assets import rig_path
from bsviz.files import atomic_path
from bsviz.rig.obj import RigError, read_obj

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


@dataclass(frozen=True, eq=False)
class Rig:
    """A linear blendshape model: T = neutral + sum_k w_k deltas[k] (+ identity).

    Attributes
    ----------
    neutral : (V, 3) float32, centimetres (ICT: +y up, +z towards the viewer)
    triangles : (F, 3) int32 triangles (polygons are fan-triangulated on load)
    names : K expression names, in the order of ``deltas``
    deltas : (K, V, 3) float32 per-vertex displacements b_k - b0
    identity_names : J identity names
    identity_deltas : (J, V, 3) float32
    triangle_groups : (F,) int16 index into ``group_names`` (the OBJ's ``usemtl``/``g``)
    group_names : names of the face groups
    """

    neutral: np.ndarray
    triangles: np.ndarray
    names: tuple[str, ...]
    deltas: np.ndarray
    identity_names: tuple[str, ...] = ()
    identity_deltas: np.ndarray | None = None
    triangle_groups: np.ndarray | None = None
    group_names: tuple[str, ...] = ("all",)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n_vertices = len(self.neutral)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("neutral", np.ascontiguousarray(self.neutral, dtype=np.float32))
        set_("triangles", np.ascontiguousarray(self.triangles, dtype=np.int32))
        set_("deltas", np.ascontiguousarray(self.deltas, dtype=np.float32))
        set_("names", tuple(str(n) for n in self.names))
        set_("identity_names", tuple(str(n) for n in self.identity_names))
        identity = self.identity_deltas
        identity = np.zeros((0, n_vertices, 3), np.float32) if identity is None else identity
        set_("identity_deltas", np.ascontiguousarray(identity, dtype=np.float32))
        groups = self.triangle_groups
        groups = np.zeros(len(self.triangles), np.int16) if groups is None else groups
        set_("triangle_groups", np.asarray(groups, dtype=np.int16))
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
        flat = 3 * self.n_vertices  # explicit: -1 cannot be inferred for an empty (0, V, 3)
        rows = [self.deltas.reshape(self.n_shapes, flat), self.neutral.reshape(1, flat),
                self.identity_deltas.reshape(len(self.identity_names), flat)]
        return np.ascontiguousarray(np.concatenate(rows))

    def visible_triangles(self, hidden: tuple[str, ...] = HIDDEN_GROUPS) -> np.ndarray:
        """(F', 3) the triangles to draw: all but those in the ``hidden`` groups."""
        hidden_ids = [i for i, n in enumerate(self.group_names) if n in hidden]
        return self.triangles[~np.isin(self.triangle_groups, hidden_ids)]


def _validate(rig: Rig) -> None:
    """Raise RigError unless every array has the shape and values it should."""
    v = rig.n_vertices
    where = f" ({rig.source})" if rig.source else ""
    if rig.neutral.ndim != 2 or rig.neutral.shape[1] != 3 or v == 0:
        raise RigError(f"neutral must be (V, 3), got {rig.neutral.shape}{where}")
    if rig.triangles.ndim != 2 or rig.triangles.shape[1] != 3:
        raise RigError(f"triangles must be (F, 3), got {rig.triangles.shape}{where}")
    if rig.triangles.size and (rig.triangles.min() < 0 or rig.triangles.max() >= v):
        raise RigError(f"triangles index vertices outside 0..{v - 1}{where}")
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
    if rig.triangle_groups.shape != (len(rig.triangles),) or (
            rig.triangles.size and rig.triangle_groups.max() >= len(rig.group_names)):
        raise RigError(f"triangle_groups must give a group (of {len(rig.group_names)}) per "
                       f"triangle{where}")


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) unit smooth normals: the area-weighted mean of the normals of adjacent triangles.

    Vertices no face touches get (0, 0, 1).
    """
    tri = vertices[triangles]                                    # (F, 3, 3)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    n = np.stack([np.bincount(triangles.ravel(), np.repeat(face_n[:, c], 3), len(vertices))
                  for c in range(3)], axis=1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, length, out=np.tile(np.float64([0, 0, 1]), (len(n), 1)), where=length > 0)
    return n.astype(np.float32)


def mesh_report(vertices: np.ndarray, triangles: np.ndarray) -> dict[str, object]:
    """Topology checks by open3d: manifoldness, watertightness, components, degenerate triangles."""
    import open3d as o3d  # imported here: it is slow to import and only checks need it

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices.astype(np.float64)),
                                     o3d.utility.Vector3iVector(triangles.astype(np.int32)))
    clusters, _, _ = mesh.cluster_connected_triangles()
    tri = vertices[triangles]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return {
        "vertices": len(vertices), "triangles": len(triangles),
        "edge_manifold": mesh.is_edge_manifold(allow_boundary_edges=True),
        "vertex_manifold": mesh.is_vertex_manifold(),
        "watertight": mesh.is_watertight(),
        "connected_components": int(np.asarray(clusters).max() + 1) if len(triangles) else 0,
        "degenerate_triangles": int((area2 <= 1e-12).sum()),
        "unreferenced_vertices": int(len(vertices) - len(np.unique(triangles))),
    }


def load_obj_folder(folder: str | Path, neutral: str | None = None,
                    shapes: list[str] | None = None) -> Rig:
    """A rig from one OBJ per shape, all with the neutral's topology.

    The shape list comes from ``folder/manifest.json`` (``{"neutral": "neutral.obj",
    "expressions": {"jawOpen": "jawOpen.obj", ...}, "identities": {...}}``) or, given
    ``neutral``, from every other ``*.obj`` in the folder (name = file stem), sorted.
    The manifest's files must lie inside ``folder`` (no absolute paths, no ``..``), and every
    shape must have the neutral's vertex count and triangles.
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
        for file in (neutral, *expressions.values(), *identities.values()):
            _check_inside(file, manifest_path)
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
            if not np.array_equal(mesh.triangles, base.triangles):
                raise RigError(f"{folder / file} has other triangles than the neutral {neutral} "
                               f"({len(mesh.triangles)} and {len(base.triangles)}); a shape "
                               "must only move the neutral's vertices")
            out[i] = mesh.vertices - base.vertices
        return out

    return Rig(base.vertices, base.triangles, tuple(expressions), deltas_of(expressions),
               tuple(identities), deltas_of(identities), base.triangle_groups, base.group_names,
               source=str(folder))


def _check_inside(file: object, manifest: Path) -> None:
    """Raise RigError unless the manifest entry ``file`` is a relative path inside its folder."""
    if not (isinstance(file, str) and file) or Path(file).is_absolute() or ".." in Path(file).parts:
        raise RigError(f"bad manifest {manifest}: {file!r} is not a file name inside "
                       f"{manifest.parent} (no absolute paths, no '..')")


# --------------------------------------------------------------------------- npz

_NPZ_KEYS = ("neutral", "faces", "expression_names", "expression_deltas")


def load_npz(path: str | Path, triangles_from: str | Path | None = None) -> Rig:
    """A rig from an ``.npz`` with the keys ``save_npz`` writes.

    ``faces`` (the triangles), ``face_groups`` and ``group_names`` may be missing (as in ICT's
    own ``ict_blendshapes.npz``); then ``triangles_from`` names an OBJ of the same topology.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RigError(f"no such rig file: {path}") from None
    except (OSError, ValueError) as e:
        raise RigError(f"cannot read rig {path}: {e}") from None
    if "faces" not in data and triangles_from is not None:
        mesh = read_obj(triangles_from)
        data.update(faces=mesh.triangles, face_groups=mesh.triangle_groups,
                    group_names=np.array(mesh.group_names))
    missing = [k for k in _NPZ_KEYS if k not in data]
    if missing:
        raise RigError(f"rig {path} lacks {', '.join(missing)}"
                       + (" (pass an OBJ with its triangles)" if missing == ["faces"] else ""))
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
            tmp, neutral=rig.neutral, faces=rig.triangles, expression_names=np.array(rig.names),
            expression_deltas=rig.deltas, identity_names=np.array(rig.identity_names, dtype=str),
            identity_deltas=rig.identity_deltas, face_groups=rig.triangle_groups,
            group_names=np.array(rig.group_names))


def load_rig(source: str | Path | None = None, neutral: str | None = None) -> Rig:
    """The shipped ICT FaceKit rig (``source=None``), an ``.npz`` file, or an OBJ folder."""
    if source is None:
        return load_npz(rig_path())
    source = Path(source)
    if source.is_dir():
        return load_obj_folder(source, neutral=neutral)
    if source.suffix == ".npz":
        return load_npz(source)
    if not source.exists():
        raise RigError(f"no such rig: {source}")
    raise RigError(f"unknown rig format {source} (expected .npz or a folder of OBJ files)")
