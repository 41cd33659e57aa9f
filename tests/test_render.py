import numpy as np
import pytest
from PIL import Image

from bsviz.rig.blend import blend, displacement
from bsviz.rig.colours import heat_colours
from bsviz.rig.render import BACKGROUND, Renderer, render_image, save_png

SIZE = 160
WHITE = np.uint8(np.array(BACKGROUND) * 255)


@pytest.fixture(scope="module")
def renderer(rig):
    with Renderer(rig, size=SIZE) as r:
        yield r


def _is_background(pixels):
    return np.all(pixels == WHITE, axis=-1)


@pytest.mark.parametrize("view", ["front", "three_quarter", "profile"])
def test_face_in_the_centre_background_in_the_corners(rig, renderer, view):
    image = renderer.render(rig.neutral, view)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    c = SIZE // 2
    centre = image[c - 8:c + 8, c - 8:c + 8]
    assert not _is_background(centre).any()
    for corner in (image[:6, :6], image[:6, -6:], image[-6:, -6:]):
        assert _is_background(corner).all()
    # skin: red above blue, as the rig's colours are lit
    assert centre[..., 0].mean() > centre[..., 2].mean()
    assert 0.2 < (~_is_background(image)).mean() < 0.8  # the head fills the frame, not all of it


def test_views_differ_and_profile_is_one_sided(rig, renderer):
    front, profile = (renderer.render(rig.neutral, v) for v in ("front", "profile"))
    covered = ~_is_background(front)
    cols = np.flatnonzero(covered.any(axis=0))
    # the front view is left-right symmetric (the rig is), the profile is not
    assert abs((cols[0] + cols[-1]) / 2 - SIZE / 2) < 0.05 * SIZE
    assert (covered != ~_is_background(profile)).mean() > 0.05


def test_jaw_open_changes_the_lower_face_only(rig, renderer):
    neutral = renderer.render(rig.neutral, "front").astype(int)
    jaw = renderer.render(blend(rig, {"jawOpen": 1.0}), "front").astype(int)
    changed = np.abs(jaw - neutral).sum(axis=-1) > 30
    rows = np.flatnonzero(changed.any(axis=1))
    assert changed.sum() > 100
    assert rows.min() > SIZE * 0.3  # the brow and skull stay still


def test_heatmap_colours_show_where_it_moves(rig, renderer):
    moved = blend(rig, {"jawOpen": 1.0})
    image = renderer.render(moved, "front", colours=heat_colours(displacement(rig, moved)))
    upper, lower = image[SIZE // 5:SIZE * 2 // 5], image[SIZE * 3 // 5:SIZE * 4 // 5]
    # viridis: still (dark purple, blue-heavy) on top, moving (yellow-green) at the chin
    assert upper[..., 2].mean() > upper[..., 1].mean()
    assert lower[..., 1].mean() > upper[..., 1].mean()


def test_unknown_view(rig, renderer):
    with pytest.raises(ValueError, match="unknown view 'top'"):
        renderer.render(rig.neutral, "top")


def test_render_image_and_save_png(rig, tmp_path):
    image = render_image(rig, rig.neutral, view=30.0, size=64)
    save_png(tmp_path / "face.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "face.png")), image)
    assert [p.name for p in tmp_path.iterdir()] == ["face.png"]  # no temp file left
