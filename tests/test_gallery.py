import numpy as np
import pytest
from PIL import Image

from bsviz.ui.gallery import label_grid


def _faces(rig, n=3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 48, 48), dtype=np.uint8)
    weights = np.zeros((n, rig.n_shapes), np.float32)
    weights[0, rig.names.index("jawOpen")] = 0.9
    weights[1] = rng.random(rig.n_shapes)
    weights[2] = np.nan  # no face found
    return images, weights


def test_label_grid_has_three_panels_per_face_and_writes_png(rig, tmp_path):
    images, weights = _faces(rig)
    fig = label_grid(images, weights, rig.names, rig, n=8, out=tmp_path / "grid.png",
                     titles=["a", "b", "c"], render_size=64)
    assert len(fig.axes) == 3 * 3  # n is capped at the number of faces
    bars = fig.axes[1]
    assert [t.get_text() for t in bars.get_yticklabels()][-1] == "jawOpen"  # largest on top
    assert len(bars.patches) == 10
    assert fig.axes[0].get_title() == "a"
    png = np.asarray(Image.open(tmp_path / "grid.png"))
    assert png.shape[0] > 400 and (png[..., :3] < 200).mean() > 0.05  # rows with content
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temp file left


def test_label_grid_refuses_mismatched_input(rig):
    images, weights = _faces(rig)
    with pytest.raises(ValueError, match="same N"):
        label_grid(images[:2], weights, rig.names, rig)
    with pytest.raises(ValueError, match="named like the rig"):
        label_grid(images, weights, rig.names[::-1], rig)
