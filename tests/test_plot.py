import numpy as np
import plotly.graph_objects as go

from bsviz.blend import blend
from bsviz.plot import displacement, heatmap_figure, mesh_figure, set_vertices


def test_mesh_figure_holds_the_mesh(rig):
    faces = rig.visible_faces()
    fig = mesh_figure(rig.neutral, faces)
    mesh = fig.data[0]
    assert isinstance(mesh, go.Mesh3d) and len(mesh.x) == rig.n_vertices
    np.testing.assert_array_equal(np.asarray(mesh.i), faces[:, 0])


def test_set_vertices_updates_in_place(rig):
    fig = go.FigureWidget(mesh_figure(rig.neutral, rig.visible_faces()))
    before = np.asarray(fig.data[0].y).copy()
    moved = blend(rig, {"jawOpen": 1.0})
    trace = fig.data[0]
    set_vertices(fig, moved)
    assert fig.data[0] is trace
    np.testing.assert_allclose(np.asarray(fig.data[0].y), moved[:, 1])
    assert not np.allclose(before, np.asarray(fig.data[0].y))


def test_heatmap_is_the_displacement_from_neutral(rig):
    moved = blend(rig, {"mouthSmile_L": 1.0})
    fig = heatmap_figure(rig, moved)
    expected = np.sqrt(((moved.astype(np.float64) - rig.neutral) ** 2).sum(axis=1))
    np.testing.assert_allclose(np.asarray(fig.data[0].intensity), expected, atol=1e-5)
    assert displacement(rig, rig.neutral).max() == 0
    # a left smile moves the face's left (+x) side, not its right
    left, right = rig.neutral[:, 0] > 1, rig.neutral[:, 0] < -1
    assert expected[left].max() > 5 * expected[right].max()
