import json

import numpy as np
import pytest
import trimesh
from conftest import obj_vertices

from bsviz.rig.obj import RigError, read_obj
from bsviz.rig.rig import (
    REGIONS,
    Rig,
    load_npz,
    load_obj_folder,
    load_rig,
    mesh_report,
    save_npz,
    shape_region,
    vertex_normals,
)


def test_shipped_rig_matches_ict_sources(rig, shared, ict_dir):
    ict = np.load(shared / "meshes/ICT-FaceKit/ict_blendshapes.npz")
    assert rig.n_vertices == 26719 and rig.n_shapes == 53 and len(rig.identity_names) == 10
    assert rig.names == tuple(ict["expression_names"])
    np.testing.assert_array_equal(rig.deltas, ict["expression_deltas"])
    np.testing.assert_array_equal(rig.identity_deltas, ict["identity_deltas"])
    np.testing.assert_allclose(rig.neutral, obj_vertices(ict_dir / "generic_neutral_mesh.obj"),
                               atol=1e-5)


def test_read_obj_keeps_file_order_where_trimesh_splits_seams(ict_dir):
    path = ict_dir / "generic_neutral_mesh.obj"
    mesh = read_obj(path)
    assert mesh.vertices.shape == (26719, 3)
    assert len(trimesh.load(path, force="mesh", process=False).vertices) != 26719
    # 25,836 quads and 548 triangles, fan-triangulated
    assert mesh.triangles.shape == (25836 * 2 + 548, 3)
    assert mesh.group_names[:2] == ("M_Face", "M_BackHead") and len(mesh.group_names) == 12
    first = open(path).read().split("\nf ", 1)[1].split("\n", 1)[0]  # "874/1 12/2 871/3 873/4"
    quad = [int(t.split("/")[0]) - 1 for t in first.split()]
    np.testing.assert_array_equal(mesh.triangles[:2], [quad[:3], [quad[0], quad[2], quad[3]]])


def test_obj_folder_with_neutral_named_matches_npz(rig, ict_dir):
    folder_rig = load_obj_folder(ict_dir, neutral="generic_neutral_mesh.obj")
    assert folder_rig.names == ("eyeBlink_L", "jawOpen", "mouthSmile_L")
    for name, delta in zip(folder_rig.names, folder_rig.deltas):
        np.testing.assert_allclose(delta, rig.deltas[rig.names.index(name)], atol=2e-5)


def _write_obj(path, vertices, faces=((1, 2, 3),)):
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + [f"f {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


TRIANGLE = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]


def test_obj_folder_manifest(tmp_path):
    _write_obj(tmp_path / "base.obj", TRIANGLE)
    _write_obj(tmp_path / "up.obj", [(0, 0, 1), (1, 0, 1), (0, 1, 1)])
    _write_obj(tmp_path / "wide.obj", [(0, 0, 0), (2, 0, 0), (0, 1, 0)])
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"neutral": "base.obj", "expressions": {"wide": "wide.obj", "up": "up.obj"}}))
    rig = load_rig(tmp_path)
    assert rig.names == ("wide", "up")  # the manifest's order, not the folder's
    np.testing.assert_allclose(rig.deltas[1], [[0, 0, 1]] * 3)
    np.testing.assert_allclose(rig.deltas[0], [[0, 0, 0], [1, 0, 0], [0, 0, 0]])


def test_obj_folder_refuses_vertex_count_mismatch(tmp_path):
    _write_obj(tmp_path / "base.obj", TRIANGLE)
    _write_obj(tmp_path / "bad.obj", TRIANGLE + [(1, 1, 1)])
    with pytest.raises(RigError, match=r"bad\.obj has 4 vertices"):
        load_obj_folder(tmp_path, neutral="base.obj")


def test_obj_folder_refuses_nan_naming_the_file(tmp_path):
    _write_obj(tmp_path / "base.obj", TRIANGLE)
    _write_obj(tmp_path / "broken.obj", [(0, 0, 0), ("nan", 0, 0), (0, 1, 0)])
    with pytest.raises(RigError, match=r"broken\.obj"):
        load_obj_folder(tmp_path, neutral="base.obj")


def test_obj_folder_refuses_other_triangles_naming_the_file(tmp_path):
    _write_obj(tmp_path / "base.obj", TRIANGLE)
    _write_obj(tmp_path / "flipped.obj", TRIANGLE, faces=((1, 3, 2),))
    with pytest.raises(RigError, match=r"flipped\.obj has other triangles than the neutral"):
        load_obj_folder(tmp_path, neutral="base.obj")


@pytest.mark.parametrize("entry", ["../outside.obj", "sub/../../outside.obj", "/tmp/outside.obj"])
def test_manifest_paths_must_stay_in_the_folder(tmp_path, entry):
    folder = tmp_path / "rig"
    folder.mkdir()
    _write_obj(folder / "base.obj", TRIANGLE)
    _write_obj(tmp_path / "outside.obj", TRIANGLE)
    for manifest in ({"neutral": "base.obj", "expressions": {"up": entry}},
                     {"neutral": entry, "expressions": {}},
                     {"neutral": "base.obj", "expressions": {}, "identities": {"id": entry}}):
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(RigError, match=rf"manifest\.json: '{entry}' is not a file name inside"):
            load_rig(folder)


def test_basis_of_rigs_without_identity_or_expression_shapes(rig):
    for names in (rig.names[:2], ()):
        bare = Rig(rig.neutral, rig.triangles, names, rig.deltas[:len(names)])
        assert bare.basis.shape == (len(names) + 1, 3 * rig.n_vertices)
        np.testing.assert_array_equal(bare.basis[len(names)], rig.neutral.ravel())


def test_obj_folder_without_manifest_or_neutral(tmp_path):
    _write_obj(tmp_path / "base.obj", TRIANGLE)
    with pytest.raises(RigError, match="name the neutral"):
        load_rig(tmp_path)
    with pytest.raises(RigError, match="cannot read OBJ"):
        load_obj_folder(tmp_path, neutral="missing.obj")


def test_malformed_obj_line(tmp_path):
    (tmp_path / "x.obj").write_text("v 0 0 zero\n")
    with pytest.raises(RigError, match="malformed OBJ line 1"):
        read_obj(tmp_path / "x.obj")


def test_rig_validation_names_the_bad_shape():
    deltas = np.zeros((2, 3, 3), np.float32)
    deltas[1, 0, 0] = np.inf
    with pytest.raises(RigError, match="'b' has NaN/inf"):
        Rig(np.zeros((3, 3)), [[0, 1, 2]], ("a", "b"), deltas)
    with pytest.raises(RigError, match="outside"):
        Rig(np.zeros((3, 3)), [[0, 1, 3]], ("a",), np.zeros((1, 3, 3)))
    with pytest.raises(RigError, match=r"must be \(2, 3, 3\)"):
        Rig(np.zeros((3, 3)), [[0, 1, 2]], ("a", "b"), np.zeros((1, 3, 3)))


def test_npz_round_trip_and_errors(rig, tmp_path):
    save_npz(rig, tmp_path / "r.npz")
    again = load_rig(tmp_path / "r.npz")
    np.testing.assert_array_equal(again.deltas, rig.deltas)
    np.testing.assert_array_equal(again.triangles, rig.triangles)
    assert again.group_names == rig.group_names and again.names == rig.names
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(RigError, match="cannot read rig"):
        load_rig(tmp_path / "corrupt.npz")
    np.savez(tmp_path / "nofaces.npz", neutral=rig.neutral)
    with pytest.raises(RigError, match="lacks faces, expression_names"):
        load_npz(tmp_path / "nofaces.npz")
    with pytest.raises(RigError, match="no such rig"):
        load_rig(tmp_path / "absent.npz")


def test_vertex_normals_match_open3d():
    import open3d as o3d

    sphere = trimesh.creation.icosphere(subdivisions=3)
    ours = vertex_normals(sphere.vertices.astype(np.float32), sphere.faces)
    theirs = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(sphere.vertices),
                                       o3d.utility.Vector3iVector(sphere.faces))
    theirs.compute_vertex_normals()  # area-weighted, like ours
    np.testing.assert_allclose(ours, np.asarray(theirs.vertex_normals), atol=1e-5)
    np.testing.assert_allclose(ours, sphere.vertices / np.linalg.norm(sphere.vertices, axis=1,
                                                                      keepdims=True), atol=2e-2)


def test_mesh_report_tells_closed_from_open():
    box = trimesh.creation.box()
    assert mesh_report(box.vertices, box.faces)["watertight"] is True
    report = mesh_report(box.vertices, box.faces[:-1])
    assert report["watertight"] is False and report["connected_components"] == 1


def test_visible_triangles_hide_eye_shells(rig):
    visible = rig.visible_triangles()
    hidden = [rig.group_names.index(g) for g in ("M_EyeOcclusion", "M_LacrimalFluid")]
    assert len(visible) < len(rig.triangles)
    assert not np.isin(visible, rig.triangles[np.isin(rig.triangle_groups, hidden)]).all(axis=1).any()


def test_every_ict_shape_has_a_region(rig):
    regions = {name: shape_region(name) for name in rig.names}
    assert "other" not in regions.values()
    assert regions["jawOpen"] == "jaw" and regions["mouthSmile_L"] == "mouth"
    assert regions["eyeBlink_R"] == "eyes" and regions["browInnerUp_L"] == "brows"
    assert shape_region("tongueOut") == "other" and set(regions.values()) < set(REGIONS)
