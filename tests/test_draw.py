"""Drawing over photos: face boxes, and the fitted mesh where the face is."""

import numpy as np
from PIL import Image

from bsviz.assets import example_paths
from bsviz.rig.blend import blend
from bsviz.vision.draw import draw_boxes, draw_mesh
from bsviz.vision.faces import FaceFinder
from bsviz.vision.fit import LandmarkFitter


def test_draw_boxes_scales_the_image_and_draws_the_box_there():
    rgb = np.zeros((100, 200, 3), np.uint8)
    shown = draw_boxes(rgb, [np.array([20, 10, 60, 50])], size=400)  # scale 2
    assert shown.shape == (200, 400, 3)
    green = (shown[..., 1] > 200) & (shown[..., 0] < 50)
    ys, xs = np.nonzero(green)
    assert abs(xs.min() - 40) <= 2 and abs(xs.max() - 120) <= 2
    assert abs(ys.min() - 20) <= 2 and abs(ys.max() - 100) <= 2
    assert not green[60:80, 60:100].any()  # an outline, not a filled box
    assert not rgb.any()  # the input is left alone


def test_boxes_are_numbered_and_the_selected_one_is_green():
    rgb = np.zeros((200, 400, 3), np.uint8)
    shown = draw_boxes(rgb, [np.array([20, 60, 120, 160]), np.array([220, 60, 320, 160])],
                       ["1 happy", "2 sad"], size=400, selected=1)
    green = (shown[..., 1] > 200) & (shown[..., 0] < 50)
    yellow = (shown[..., 0] > 200) & (shown[..., 1] > 150) & (shown[..., 2] < 50)
    assert np.nonzero(green)[1].min() >= 210 and np.nonzero(yellow)[1].max() <= 130
    assert (shown[40:60, 20:80] > 0).any()  # a label above the first box


def test_the_fitted_mesh_is_drawn_over_the_face_only(rig):
    photo = np.asarray(Image.open(example_paths()[0]).convert("RGB"))
    with FaceFinder() as finder:
        face = finder.find(photo)
    fit = LandmarkFitter(rig).fit(face.landmarks)
    points = fit.to_image(blend(rig, fit.weights, fit.identity))
    triangles = rig.triangles[rig.triangle_groups == rig.group_names.index("M_Face")]
    shown = draw_mesh(photo, points, triangles, size=256)
    changed = np.abs(shown.astype(int) - photo.astype(int)).sum(axis=2) > 30
    x0, y0, x1, y1 = face.box
    inside = changed[int(y0):int(y1), int(x0):int(x1)].mean()
    # the rig's skin reaches past the landmarks (forehead, ears, neck), not across the image
    margin = 0.6 * max(x1 - x0, y1 - y0)
    outside = changed.copy()
    outside[max(int(y0 - margin), 0):int(y1 + margin), max(int(x0 - margin), 0):int(x1 + margin)] \
        = False
    assert inside > 0.2 and outside.mean() < 0.005
