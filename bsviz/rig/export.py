"""Mesh files: OBJ (``obj``), PLY through trimesh, GLB (glTF 2.0 binary) written here.

Vertex order is the rig's in every format (no merging, no seam splitting), so a
file's vertex i is rig vertex i. OBJ and PLY keep the rig's centimetres; GLB is in
metres, as glTF specifies. ``save_rig_glb`` writes the whole rig as morph targets
(neutral + K named targets), optionally with a keyframed weight animation, for
Blender, three.js or any glTF viewer to animate.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from bsviz.files import write_bytes_atomic
from bsviz.rig.obj import obj_bytes
from bsviz.rig.rig import Rig, vertex_normals

GLTF_METRES_PER_UNIT = 0.01  # the rig is in centimetres
MESH_FORMATS = (".obj", ".ply", ".glb")


def save_mesh(path: str | Path, vertices: np.ndarray, triangles: np.ndarray,
              colours: np.ndarray | None = None) -> Path:
    """Write one mesh as OBJ, PLY or GLB, chosen by the file suffix.

    vertices : (V, 3) float, centimetres; triangles : (F, 3) int; colours : (V, 3) in [0, 1].
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format '{path.suffix}' for {path} "
                         f"(choose from {', '.join(MESH_FORMATS)})")
    vertices = np.asarray(vertices, np.float32)
    if suffix == ".glb":
        data = _glb_bytes(vertices, triangles, colours)
    elif suffix == ".obj":
        data = obj_bytes(vertices, triangles, colours)
    else:
        import trimesh  # imported here: only PLY needs it

        rgba = None if colours is None else np.concatenate(
            [np.round(np.asarray(colours) * 255), np.full((len(vertices), 1), 255)], 1
        ).astype(np.uint8)
        data = trimesh.Trimesh(vertices, triangles, vertex_colors=rgba, process=False).export(
            file_type="ply")
    return write_bytes_atomic(path, data)


def save_rig_glb(path: str | Path, rig: Rig, weights: np.ndarray | None = None,
                 animation: np.ndarray | None = None, fps: float = 30.0,
                 triangles: np.ndarray | None = None, colours: np.ndarray | None = None,
                 min_delta: float = 1e-5) -> Path:
    """Write the rig as a GLB: the neutral mesh with one named morph target per shape.

    Parameters
    ----------
    weights : (K,) initial morph weights (default all 0)
    animation : (T, K) weights per frame, played at ``fps`` as a glTF animation
    triangles : (F, 3) triangles to write (default: the rig's visible ones)
    min_delta : displacements shorter than this (cm) are dropped from the sparse targets
    """
    k = rig.n_shapes
    weights = np.zeros(k, np.float32) if weights is None else np.asarray(weights, np.float32)
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {weights.shape}")
    if animation is not None:
        animation = np.asarray(animation, np.float32)
        if animation.ndim != 2 or animation.shape[1] != k or len(animation) < 1:
            raise ValueError(f"animation must have shape (T, {k}), got {animation.shape}")
        if not np.isfinite(animation).all():
            raise ValueError("animation weights contain NaN or inf")
    triangles = rig.visible_triangles() if triangles is None else triangles
    data = _glb_bytes(rig.neutral, triangles, colours, rig.names, rig.deltas, weights, animation,
                      fps, min_delta)
    return write_bytes_atomic(path, data)


class _GltfBuffer:
    """Collects binary data, buffer views and accessors for one glTF buffer."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, array: np.ndarray, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))  # 4-byte alignment
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.blob.extend(np.ascontiguousarray(array).tobytes())
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, type_: str, target: int | None = None,
                 bounds: bool = False) -> int:
        component = {np.dtype(np.float32): 5126, np.dtype(np.uint32): 5125}[array.dtype]
        acc = {"bufferView": self.view(array, target), "componentType": component,
               "count": len(array), "type": type_}
        if bounds:
            acc["min"], acc["max"] = _bounds(array)
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def sparse_vec3(self, dense: np.ndarray, keep: np.ndarray) -> int:
        """A VEC3 float accessor of len(dense) that stores only the rows in ``keep``."""
        idx = np.flatnonzero(keep).astype(np.uint32)
        acc = {"componentType": 5126, "count": len(dense), "type": "VEC3"}
        acc["min"], acc["max"] = _bounds(np.where(keep[:, None], dense, 0).astype(np.float32))
        if len(idx):
            acc["sparse"] = {"count": len(idx),
                             "indices": {"bufferView": self.view(idx), "componentType": 5125},
                             "values": {"bufferView": self.view(dense[idx].astype(np.float32))}}
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _bounds(array: np.ndarray) -> tuple[list[float], list[float]]:
    a = array.reshape(len(array), -1)
    return a.min(axis=0).tolist(), a.max(axis=0).tolist()


def _glb_bytes(vertices, triangles, colours=None, names=(), deltas=None, weights=None,
               animation=None, fps=30.0, min_delta=0.0) -> bytes:
    """The bytes of a GLB holding one mesh, with morph targets when ``names`` are given."""
    scale = GLTF_METRES_PER_UNIT
    buf = _GltfBuffer()
    primitive = {
        "indices": buf.accessor(np.asarray(triangles, np.uint32).ravel(), "SCALAR", target=34963),
        "attributes": {
            "POSITION": buf.accessor(np.asarray(vertices, np.float32) * scale, "VEC3", 34962, True),
            "NORMAL": buf.accessor(vertex_normals(np.asarray(vertices, np.float32), triangles),
                                   "VEC3", 34962),
        },
        "material": 0, "mode": 4,
    }
    if colours is not None:
        primitive["attributes"]["COLOR_0"] = buf.accessor(
            np.clip(np.asarray(colours, np.float32), 0, 1), "VEC3", 34962)
    mesh: dict = {"name": "face", "primitives": [primitive]}
    if len(names):
        moved = np.linalg.norm(deltas, axis=-1) >= min_delta            # (K, V)
        primitive["targets"] = [{"POSITION": buf.sparse_vec3(d * scale, m)}
                                for d, m in zip(deltas, moved)]
        mesh["weights"] = [float(w) for w in weights]
        mesh["extras"] = {"targetNames": list(names)}  # the names Blender and three.js read
    gltf = {
        "asset": {"version": "2.0", "generator": "bsviz"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "face"}],
        "meshes": [mesh],
        "materials": [{"name": "skin", "doubleSided": True, "pbrMetallicRoughness": {
            "baseColorFactor": [1, 1, 1, 1] if colours is not None else [0.86, 0.68, 0.58, 1],
            "metallicFactor": 0.0, "roughnessFactor": 0.7}}],
    }
    if animation is not None:
        times = np.arange(len(animation), dtype=np.float32) / np.float32(fps)
        gltf["animations"] = [{"name": "expression", "samplers": [{
            "input": buf.accessor(times, "SCALAR", bounds=True),
            "output": buf.accessor(animation.reshape(-1), "SCALAR"),
            "interpolation": "LINEAR"}],
            "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}]
    buf.blob.extend(b"\0" * (-len(buf.blob) % 4))
    gltf.update(buffers=[{"byteLength": len(buf.blob)}], bufferViews=buf.views,
                accessors=buf.accessors)
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(buf.blob)
    return b"".join([struct.pack("<4sII", b"glTF", 2, total),
                     struct.pack("<I4s", len(text), b"JSON"), text,
                     struct.pack("<I4s", len(buf.blob), b"BIN\0"), bytes(buf.blob)])
