import json

import numpy as np
import pytest

from bsviz.fer.synth import (
    BROW,
    LIPS,
    load_synth,
    painted_colours,
    pose_matrix,
    render_synthetic,
    sample_scenes,
    sample_weights,
)
from bsviz.rig.rig import Rig

K = 53


def test_sparse_prior_in_range_and_deterministic():
    w = sample_weights(2000, np.random.default_rng(0))
    assert w.shape == (2000, K) and w.dtype == np.float32
    assert w.min() >= 0 and w.max() <= 1
    assert 2 < (w > 0).sum(axis=1).mean() < 4  # a few shapes per face
    np.testing.assert_array_equal(w, sample_weights(2000, np.random.default_rng(0)))
    assert not np.array_equal(w, sample_weights(2000, np.random.default_rng(1)))


def test_prior_centres_on_class_means():
    means = {"happy": np.zeros(K), "surprise": np.zeros(K)}
    means["happy"][45:47] = 0.8  # mouthSmile_L/_R
    means["surprise"][26] = 0.6  # jawOpen
    w = sample_weights(4000, np.random.default_rng(0), means)
    assert w.min() >= 0 and w.max() <= 1
    smile, jaw = w[:, 45] > 0.3, w[:, 26] > 0.3
    assert 0.4 < smile.mean() < 0.6 and 0.4 < jaw.mean() < 0.6  # one class each
    assert (smile & jaw).mean() < 0.05
    assert abs(w[smile, 45].mean() - 0.8) < 0.15  # scaled around the mean, clipped at 1
    np.testing.assert_array_equal(w, sample_weights(4000, np.random.default_rng(0), means))


def test_prior_refuses_bad_means():
    with pytest.raises(ValueError, match="finite"):
        sample_weights(3, np.random.default_rng(0), np.full((2, K), np.nan))


def test_pose_matrix_directions():
    r = pose_matrix(12.0, -5.0, 7.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    forward, right = np.array([0, 0, 1.0]), np.array([1.0, 0, 0])
    assert (pose_matrix(30, 0, 0) @ forward)[0] > 0.4  # yaw: the face turns to its left (+x)
    assert (pose_matrix(0, 30, 0) @ forward)[1] > 0.4  # pitch: up
    assert (pose_matrix(0, 0, 30) @ right)[1] > 0.4  # roll: counter-clockwise


def test_painted_colours(rig):
    colours = painted_colours(rig)
    assert colours.shape == (rig.n_vertices, 3)
    assert 100 < (colours == np.float32(BROW)).all(axis=1).sum() < 1000
    assert 100 < (colours == np.float32(LIPS)).all(axis=1).sum() < 3000
    small = Rig(rig.neutral[:3], [[0, 1, 2]], (), np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="ICT FaceKit topology"):
        painted_colours(small)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    render_synthetic(4, out, seed=3, label_files=(), chunk=2, progress=False)
    return out


def test_render_synthetic_writes_consistent_arrays(synth_dir, rig):
    s = load_synth(synth_dir / "synth.npz")
    n = len(s.index)
    assert n >= 3  # MediaPipe finds (nearly) every render
    assert s.images.shape == (n, 1, 48, 48) and s.images.dtype == np.uint8
    assert s.weights.shape == s.mediapipe_weights.shape == s.render_mediapipe_weights.shape \
        == (n, K)
    assert s.identity.shape == (n, 10) and s.pose.shape == (n, 3) and s.light.shape == (n, 5)
    assert s.names == rig.names
    assert (s.images.reshape(n, -1).std(axis=1) > 10).all()  # crops are not blank
    # the exact weights are the ones sampled for that seed, chunk by chunk
    scenes = [sample_scenes(2, np.random.default_rng([3, c])) for c in range(2)]
    every = np.concatenate([sc.weights for sc in scenes])
    np.testing.assert_array_equal(s.weights, every[s.index])
    assert (np.abs(s.pose) <= [20, 10, 10]).all()


def test_mediapipe_scores_nan_only_where_undetected(synth_dir):
    s = load_synth(synth_dir / "synth.npz")
    missing = np.isnan(s.mediapipe_weights)
    assert (missing.all(axis=1) == missing.any(axis=1)).all()  # a whole row or nothing
    assert np.isfinite(s.render_mediapipe_weights).all()  # kept rows had a face on the render
    assert (s.mediapipe_weights[~missing] >= 0).all() and (s.mediapipe_weights[~missing] <= 1).all()
    summary = json.loads((synth_dir / "synth.json").read_text())
    assert summary["requested"] == 4 and summary["kept"] + summary["dropped"] == 4
    assert summary["kept"] == len(s.index)
    assert summary["crop_detection_rate"] == pytest.approx(1 - missing.any(axis=1).mean())
    crop = summary["mediapipe_crop"]
    assert crop["rows"] == (~missing.any(axis=1)).sum() and 0 <= crop["mae"] < 0.5
    assert set(summary["mediapipe_render"]["mae_per_shape"]) == set(s.names)


def test_rerun_reuses_chunks(synth_dir):
    chunks = sorted((synth_dir / "chunks").iterdir())
    assert len(chunks) == 2
    stamps = [p.stat().st_mtime_ns for p in chunks]
    before = load_synth(synth_dir / "synth.npz")
    again = render_synthetic(4, synth_dir, seed=3, label_files=(), chunk=2, progress=False)
    assert [p.stat().st_mtime_ns for p in chunks] == stamps  # nothing re-rendered
    np.testing.assert_array_equal(again.images, before.images)
    np.testing.assert_array_equal(again.weights, before.weights)


def test_bad_n(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        render_synthetic(0, tmp_path, label_files=())
