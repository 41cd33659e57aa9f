"""The rig fitted to landmarks: the shipped landmark-vertex map, the pose, the weights."""

import json

import numpy as np
import pytest

from bsviz.assets import landmark_vertices_path
from bsviz.fer.synth import painted_colours, pose_matrix
from bsviz.rig.blend import blend
from bsviz.rig.render import Renderer
from bsviz.vision.faces import FaceFinder
from bsviz.vision.fit import FLIP, LandmarkFitter, nme, pose_angles_matrix, similarity


@pytest.fixture(scope="module")
def fitter(rig) -> LandmarkFitter:
    return LandmarkFitter(rig)


@pytest.fixture(scope="module")
def render(rig):
    """render(weights, yaw, pitch, roll) -> MediaPipe's landmarks on the rig rendered so, and the
    renderer's projection of the rig's vertices (x, y pixels)."""
    colours = painted_colours(rig)
    with Renderer(rig, 512) as renderer, FaceFinder() as finder:
        def run(weights: dict, yaw=0.0, pitch=0.0, roll=0.0):
            v = blend(rig, weights)
            v = (v - renderer.target) @ pose_matrix(yaw, pitch, roll).T + renderer.target
            faces = [f for f in finder.find_all(renderer.render(v, "front", colours))
                     if f.landmarks is not None]
            assert faces, "MediaPipe found no face on the render"
            return faces[0].landmarks, renderer.project(v)[:, :2]
        yield run


def test_the_map_names_a_vertex_and_an_offset_per_landmark(rig):
    data = json.loads(landmark_vertices_path().read_text())
    ids, offsets = np.array(data["vertices"]), np.array(data["offsets_cm"])
    assert ids.shape == (478,) and offsets.shape == (478, 3)
    assert ids.min() >= 0 and ids.max() < rig.n_vertices
    skin = np.unique(rig.triangles[rig.triangle_groups == rig.group_names.index("M_Face")])
    assert np.isin(ids[:468], skin).all()  # the face mesh points sit on the skin


def test_landmarks_of_a_render_land_on_their_vertices(rig, fitter, render):
    """MediaPipe's landmarks on a posed, expressive render against where the mapped vertices
    (moved by their offsets, in the rig's frame) project in that render."""
    weights = {"jawOpen": 0.5, "mouthSmile_L": 0.6, "mouthSmile_R": 0.6}
    landmarks, projected = render(weights, yaw=12, pitch=-5)
    on_vertices = projected[fitter.ids]
    error = nme(on_vertices, landmarks[:, :2])
    assert error < 0.06, f"mapped vertices miss the landmarks by {error:.3f} inter-ocular"


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3))
    r = pose_angles_matrix(20, -10, 5)
    scale, rotation, translation = similarity(points, 3 * points @ r.T + [1, 2, 3],
                                              np.ones(50))
    assert scale == pytest.approx(3) and np.allclose(rotation, r) and np.allclose(translation,
                                                                                [1, 2, 3])
    assert np.allclose(pose_angles_matrix(10, 5, -3), pose_matrix(10, 5, -3))


def test_fit_recovers_pose_weights_and_fits_closely(rig, fitter, render):
    landmarks, _ = render({"jawOpen": 0.8, "eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
                          yaw=15, pitch=8, roll=-6)
    fit = fitter.fit(landmarks)
    pose = fit.pose
    assert abs(pose["yaw"] - 15) < 4 and abs(pose["pitch"] - 8) < 4 and abs(pose["roll"] + 6) < 3
    assert fit.nme < 0.03
    w = dict(zip(rig.names, fit.weights))
    # MediaPipe's landmarks follow a render's jaw and lids only part of the way (0.8 and 1.0
    # come out about 0.5 and 0.3): the fit can do no better than the landmarks it is given
    assert w["jawOpen"] > 0.35 and min(w["eyeBlink_L"], w["eyeBlink_R"]) > 0.2
    others = [v for n, v in w.items() if n not in ("jawOpen", "eyeBlink_L", "eyeBlink_R")]
    assert np.mean(others) < 0.08
    neutral = fitter.fit(render({})[0])
    assert neutral.weights.mean() < 0.03 and neutral.weights.max() < 0.3


def test_fit_to_exact_points_recovers_the_weights(rig):
    """Landmarks exactly where the rig's (offset) landmark points go: with the priors nearly
    off, the points are matched and the weights come back on average (single weights can
    trade with look-alike shapes, browInnerUp with browDown, at 478 points)."""
    fitter = LandmarkFitter(rig, expression_penalty=0.05, sparsity=0.0)
    weights = np.zeros(rig.n_shapes, np.float32)
    for name, value in (("jawOpen", 0.7), ("mouthSmile_L", 0.5), ("browInnerUp_R", 0.6)):
        weights[rig.names.index(name)] = value
    shape = fitter.neutral + (fitter.basis[:, :rig.n_shapes] @ weights).reshape(-1, 3)
    landmarks = (25 * shape @ pose_angles_matrix(-10, 4, 2).T + [300, -250, 40]) @ FLIP
    fit = fitter.fit(landmarks)
    assert np.abs(fit.weights - weights).mean() < 0.05 and fit.nme < 0.01
    assert fit.weights[rig.names.index("jawOpen")] > 0.5
    np.testing.assert_allclose(fit.to_image(shape)[:, :2], landmarks[:, :2], atol=0.5)
