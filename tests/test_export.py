import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import trimesh
from conftest import gltf_array

from bsviz.rig.blend import blend
from bsviz.rig.colours import vertex_colours
from bsviz.rig.export import save_mesh, save_rig_glb
from bsviz.rig.obj import read_obj
from bsviz.rig.rig import vertex_normals


@pytest.fixture(scope="module")
def smile(rig):
    return blend(rig, {"mouthSmile_L": 1.0, "jawOpen": 0.5})


@pytest.mark.parametrize("suffix, scale", [(".obj", 1.0), (".ply", 1.0), (".glb", 100.0)])
def test_round_trip_keeps_vertex_order(rig, smile, tmp_path, suffix, scale):
    path = save_mesh(tmp_path / f"face{suffix}", smile, rig.visible_triangles(), vertex_colours(rig))
    loaded = trimesh.load(path, process=False, maintain_order=True, force="mesh")
    np.testing.assert_allclose(loaded.vertices * scale, smile, atol=1e-4)  # GLB is in metres
    np.testing.assert_array_equal(loaded.faces, rig.visible_triangles())


def test_obj_reads_back_with_our_reader(rig, smile, tmp_path):
    save_mesh(tmp_path / "face.obj", smile, rig.triangles)
    mesh = read_obj(tmp_path / "face.obj")
    np.testing.assert_allclose(mesh.vertices, smile, atol=1e-5)
    np.testing.assert_array_equal(mesh.triangles, rig.triangles)


def test_unknown_format(rig, tmp_path):
    with pytest.raises(ValueError, match="unknown mesh format '.stl'"):
        save_mesh(tmp_path / "face.stl", rig.neutral, rig.triangles)
    assert list(tmp_path.iterdir()) == []


def test_rig_glb_has_named_morph_targets_and_animation(rig, tmp_path):
    frames = np.zeros((10, rig.n_shapes), np.float32)
    jaw = rig.names.index("jawOpen")
    frames[:, jaw] = np.linspace(0, 1, 10)
    path = save_rig_glb(tmp_path / "rig.glb", rig, animation=frames, fps=5.0)
    raw = path.read_bytes()
    magic, version, length = struct.unpack("<4sII", raw[:12])
    assert (magic, version, length) == (b"glTF", 2, len(raw))

    gltf = pygltflib.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    mesh = gltf.meshes[0]
    prim = mesh.primitives[0]
    assert len(prim.targets) == 53 and mesh.extras["targetNames"] == list(rig.names)
    assert mesh.weights == [0.0] * 53
    neutral = gltf_array(gltf, blob, prim.attributes.POSITION)
    np.testing.assert_allclose(neutral * 100, rig.neutral, atol=1e-4)
    jaw_target = gltf_array(gltf, blob, prim.targets[jaw]["POSITION"])
    np.testing.assert_allclose(jaw_target * 100, rig.deltas[jaw], atol=1e-4)  # min_delta 1e-5 cm
    acc = gltf.accessors[prim.targets[jaw]["POSITION"]]
    np.testing.assert_allclose(acc.max, jaw_target.max(axis=0), rtol=1e-6)

    anim = gltf.animations[0]
    assert anim.channels[0].target.path == "weights" and anim.channels[0].target.node == 0
    times = gltf_array(gltf, blob, anim.samplers[0].input)[:, 0]
    np.testing.assert_allclose(times, np.arange(10) / 5.0)
    values = gltf_array(gltf, blob, anim.samplers[0].output).reshape(10, 53)
    np.testing.assert_allclose(values, frames)
    # trimesh, a second reader, sees the neutral mesh in the rig's vertex order
    loaded = trimesh.load(path, process=False, force="mesh")
    np.testing.assert_allclose(loaded.vertices * 100, rig.neutral, atol=1e-4)


def test_rig_glb_json_is_valid_gltf_structure(rig, tmp_path):
    path = save_rig_glb(tmp_path / "rig.glb", rig)
    raw = path.read_bytes()
    json_len = struct.unpack("<I", raw[12:16])[0]
    doc = json.loads(raw[20:20 + json_len])
    assert doc["asset"]["version"] == "2.0"
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= doc["buffers"][0]["byteLength"]
    assert "animations" not in doc


def test_rig_glb_rejects_bad_animation(rig, tmp_path):
    with pytest.raises(ValueError, match=r"\(T, 53\)"):
        save_rig_glb(tmp_path / "x.glb", rig, animation=np.zeros((4, 52)))
    with pytest.raises(ValueError, match="NaN"):
        save_rig_glb(tmp_path / "x.glb", rig, animation=np.full((4, 53), np.nan))
    assert not (tmp_path / "x.glb").exists()


def strip_triangles(strip: np.ndarray) -> np.ndarray:
    """(F, 3) the triangles a glTF TRIANGLE_STRIP draws (triangle i: (i, i+1, i+2), its first
    two corners swapped when i is odd), without the degenerate ones (a repeated index)."""
    i = np.arange(len(strip) - 2)
    odd = i % 2 == 1
    tri = np.stack([np.where(odd, strip[i + 1], strip[i]), np.where(odd, strip[i], strip[i + 1]),
                    strip[i + 2]], axis=1)
    return tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]


def cyclic(triangles: np.ndarray) -> np.ndarray:
    """Each triangle turned to start at its smallest index (its winding kept)."""
    t = np.asarray(triangles)
    first = t.argmin(axis=1)
    return np.stack([t[np.arange(len(t)), (first + k) % 3] for k in range(3)], axis=1)


def test_compact_glb_keeps_the_used_vertices_in_rig_order_quantised(rig, smile, tmp_path):
    triangles, colours = rig.visible_triangles(), vertex_colours(rig)
    path = save_mesh(tmp_path / "face.glb", smile, triangles, colours, compact=True)
    assert path.stat().st_size < 0.51e6  # 1.57 MB written in full
    gltf = pygltflib.GLTF2().load(str(path))
    blob, node, mesh = gltf.binary_blob(), gltf.nodes[0], gltf.meshes[0]
    assert gltf.extensionsUsed == gltf.extensionsRequired == ["KHR_mesh_quantization"]
    kept = np.concatenate([np.arange(start, stop) for start, stop in mesh.extras["rigVertices"]])
    np.testing.assert_array_equal(kept, np.unique(triangles))  # the used ones, in rig order
    # the flat look's 7 colours are 7 materials, one primitive each, sharing the vertices
    prims = mesh.primitives
    assert len(prims) == len(gltf.materials) == 7
    shared = (prims[0].attributes.POSITION, prims[0].attributes.NORMAL)
    assert all((p.attributes.POSITION, p.attributes.NORMAL) == shared for p in prims)
    assert all(p.attributes.COLOR_0 is None for p in prims)
    assert all(gltf.accessors[p.indices].componentType == 5123 for p in prims)  # uint16
    assert all(p.mode == 5 for p in prims)  # triangle strips
    local = [strip_triangles(gltf_array(gltf, blob, p.indices).astype(np.int64).ravel())
             for p in prims]
    drawn = np.concatenate([kept[t] for t in local])
    # each triangle once, wound as given (the same corners in the same cyclic order)
    assert sorted(map(tuple, cyclic(drawn))) == sorted(map(tuple, cyclic(triangles)))
    assert sum(gltf.accessors[p.indices].count for p in prims) < 1.9 * len(triangles)
    for p, t in zip(prims, local):  # its material is the colour two corners share (or corner 0)
        corners = np.round(colours[kept[t]] * 255)                             # (F, 3, 3)
        agree = (corners[:, 1] == corners[:, 2]).all(axis=1)
        expected = np.where(agree[:, None], corners[:, 1], corners[:, 0])
        rgba = gltf.materials[p.material].pbrMetallicRoughness.baseColorFactor
        np.testing.assert_allclose(expected, np.round(np.array(rgba[:3]) * 255)[None].repeat(
            len(t), 0))
        assert rgba[3] == 1 and gltf.materials[p.material].doubleSided
    # int16 positions times the node's uniform scale plus its translation, in metres: each
    # coordinate within half a step, (the longest side of the box) / 65534 / 2: 2.6 µm here
    assert node.scale == [node.scale[0]] * 3
    half_step = node.scale[0] * 100 / 2
    assert half_step == pytest.approx(np.ptp(smile[kept], axis=0).max() / 65534 / 2)
    assert half_step < 1e-3  # cm: under 0.01 mm
    decoded = gltf_array(gltf, blob, prims[0].attributes.POSITION) * node.scale + node.translation
    np.testing.assert_allclose(decoded * 100, smile[kept], rtol=0, atol=half_step + 1e-6)
    normals = gltf_array(gltf, blob, prims[0].attributes.NORMAL)
    expected = vertex_normals(smile, triangles)[kept]
    np.testing.assert_allclose(normals, expected, atol=0.5 / 127 + 1e-6)
    # trimesh, a second reader, applies the node's transform to the (not normalized) int16s
    loaded = trimesh.load(path, process=False, force="mesh", merge_primitives=True)
    faces = loaded.faces[(loaded.faces[:, [0, 1, 2]] != loaded.faces[:, [1, 2, 0]]).all(axis=1)]
    assert len(faces) == len(triangles)  # drawn, not counting the strips' degenerate joins


def test_compact_glb_of_many_colours_keeps_them_per_vertex(rig, smile, tmp_path):
    triangles = rig.visible_triangles()
    heat = np.random.default_rng(0).random((rig.n_vertices, 3), dtype=np.float32)
    gltf = pygltflib.GLTF2().load(str(save_mesh(tmp_path / "heat.glb", smile, triangles, heat,
                                                compact=True)))
    kept = np.unique(triangles)
    (prim,) = gltf.meshes[0].primitives
    colours = gltf_array(gltf, gltf.binary_blob(), prim.attributes.COLOR_0)
    np.testing.assert_allclose(colours, heat[kept], atol=0.5 / 255 + 1e-6)
    assert gltf.materials[prim.material].pbrMetallicRoughness.baseColorFactor == [1, 1, 1, 1]


def test_compact_glb_of_many_vertices_takes_uint32_indices(tmp_path):
    vertices = np.random.default_rng(0).random((70_000, 3), dtype=np.float32)
    triangles = np.arange(69_999).reshape(-1, 3)[::-1]
    gltf = pygltflib.GLTF2().load(str(save_mesh(tmp_path / "big.glb", vertices, triangles,
                                                compact=True)))
    prim = gltf.meshes[0].primitives[0]
    assert gltf.accessors[prim.indices].componentType == 5125 and prim.attributes.COLOR_0 is None
    assert gltf.meshes[0].extras["rigVertices"] == [[0, 69_999]]
    local = strip_triangles(gltf_array(gltf, gltf.binary_blob(), prim.indices).astype(np.int64).ravel())
    assert sorted(map(tuple, cyclic(local))) == sorted(map(tuple, cyclic(triangles)))


VALIDATOR = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / "gltf-validator"


@pytest.mark.skipif(not (shutil.which("node") and VALIDATOR.is_dir()),
                    reason="node or the Khronos gltf-validator (scripts/setup.sh) is missing")
def test_glb_files_pass_the_khronos_validator(rig, smile, tmp_path):
    frames = np.random.default_rng(0).random((6, rig.n_shapes), dtype=np.float32)
    files = [save_mesh(tmp_path / "face.glb", smile, rig.visible_triangles(), vertex_colours(rig)),
             save_mesh(tmp_path / "compact.glb", smile, rig.visible_triangles(),
                       vertex_colours(rig), compact=True),
             save_rig_glb(tmp_path / "rig.glb", rig, animation=frames)]
    for path in files:
        result = subprocess.run(["node", str(Path(__file__).with_name("gltf_validate.js")),
                                 str(path)], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "NODE_PATH": str(VALIDATOR.parent)})
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
