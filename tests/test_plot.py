import numpy as np
import plotly.graph_objects as go

from bsviz.rig.blend import blend, displacement
from bsviz.rig.rig import REGIONS, shape_region
from bsviz.ui.plot import (
    by_region,
    compare_figure,
    heatmap_figure,
    mesh_figure,
    set_vertices,
    timeline_figure,
    weights_figure,
)


def test_mesh_figure_holds_the_mesh(rig):
    faces = rig.visible_triangles()
    fig = mesh_figure(rig.neutral, faces)
    mesh = fig.data[0]
    assert isinstance(mesh, go.Mesh3d) and len(mesh.x) == rig.n_vertices
    np.testing.assert_array_equal(np.asarray(mesh.i), faces[:, 0])


def test_set_vertices_updates_in_place(rig):
    fig = go.FigureWidget(mesh_figure(rig.neutral, rig.visible_triangles()))
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


def test_heatmap_colour_bar_starts_at_zero(rig):
    neutral = heatmap_figure(rig, rig.neutral).data[0]
    assert (neutral.cmin, neutral.cmax) == (0, 0.1)  # not plotly's -0.5..0.5 around the zeros
    fig = go.FigureWidget(heatmap_figure(rig, rig.neutral))
    moved = blend(rig, {"jawOpen": 1.0})
    set_vertices(fig, moved, displacement(rig, moved))
    mesh = fig.data[0]
    assert mesh.cmin == 0 and mesh.cmax == displacement(rig, moved).max() > 1


def test_mesh_figure_paints_vertex_colours(rig):
    colours = np.zeros((rig.n_vertices, 3), np.float32)
    colours[::2] = (1.0, 0.5, 0.0)
    mesh = mesh_figure(rig.neutral, rig.visible_triangles(), colours=colours).data[0]
    assert mesh.color is None and len(mesh.vertexcolor) == rig.n_vertices
    assert list(mesh.vertexcolor[:3]) == ["rgb(255,128,0)", "rgb(0,0,0)", "rgb(255,128,0)"]


def test_weight_charts_group_shapes_by_region(rig):
    weights = np.linspace(0, 1, rig.n_shapes, dtype=np.float32)
    fig = weights_figure(weights, rig.names, top=3)
    bars = {bar.name: bar for bar in fig.data}
    assert list(bars) == [r for r in REGIONS if any(shape_region(n) == r for n in rig.names)]
    assert sorted(x for bar in fig.data for x in bar.x) == sorted(rig.names)
    named = [t for bar in fig.data for t in bar.text if t]
    assert sorted(named) == sorted(rig.names[-3:])  # the 3 largest weights are named
    for bar in fig.data:  # every bar shows its own shape's weight
        for x, y in zip(bar.x, bar.y):
            assert y == weights[rig.names.index(x)]
    order = by_region(rig.names)
    assert sorted(order) == list(range(rig.n_shapes))
    regions = [REGIONS.index(shape_region(rig.names[i])) for i in order]
    assert regions == sorted(regions)
    mediapipe = weights[::-1].copy()
    ours, theirs, fitted = compare_figure(weights, mediapipe, rig.names, weights / 2).data
    assert list(ours.x) == [rig.names[i] for i in order]
    np.testing.assert_array_equal(theirs.y, mediapipe[order])
    np.testing.assert_array_equal(fitted.y, weights[order] / 2)
    for chart in (fig, compare_figure(weights, mediapipe, rig.names, weights / 2)):
        go.Figure(chart.to_dict())  # built unchecked, but every property passes plotly's checks


def test_timeline_marks_frames_without_a_face(rig):
    times = np.arange(5) / 10
    probabilities = np.full((5, 7), 1 / 7)
    weights = np.zeros((5, rig.n_shapes))
    weights[:, 4] = 0.9  # the largest mean comes first
    found = np.array([True, True, False, True, False])
    fig = timeline_figure(times, probabilities, [f"c{i}" for i in range(7)], weights, rig.names,
                          found, top=2)
    names = [trace.name for trace in fig.data]
    assert names[:7] == [f"c{i}" for i in range(7)] and names[7] == rig.names[4]
    assert names[-1] == "no face" and list(fig.data[-1].x) == [0.2, 0.4]
